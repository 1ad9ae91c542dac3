"""Worker registry: who is working, in which role, with which capabilities, and how alive."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from functools import partial

from scaffold.errors import InvalidRequest, LeaseConflict, NotFound
from scaffold.hub.core import lifecycle
from scaffold.hub.core.types import Clock, Task, Worker
from scaffold.hub.services.queue import CAPABILITY, Queue
from scaffold.hub.store.base import Store


class Workers:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        roles: Mapping[str, Sequence[str]],
        lost_after_seconds: float,
        waiting: Container[int] = frozenset(),
    ) -> None:
        self.store = store
        self.clock = clock
        self.roles = roles
        self.lost_after_seconds = lost_after_seconds
        self.waiting = waiting

    def register(self, session_id: str, role: str, capabilities: Sequence[str] | None) -> Worker:
        """Register a session as a worker; the role's tags from hub.toml unless `capabilities`."""
        if not session_id.strip():
            raise InvalidRequest("session_id is empty")
        if not CAPABILITY.fullmatch(role):
            raise InvalidRequest(f"role {role!r} must be lowercase letters, digits, . _ -")
        if capabilities is None:
            if self.roles and role not in self.roles:
                known = ", ".join(sorted(self.roles))
                raise InvalidRequest(f"unknown role {role!r}; the roles are: {known}")
            capabilities = list(self.roles.get(role, [role]))
        for tag in capabilities:
            if not CAPABILITY.fullmatch(tag):
                raise InvalidRequest(f"capability {tag!r} must be lowercase letters, digits, . _ -")
        return self.store.register_worker(session_id, role, capabilities, self.clock())

    def heartbeat(self, worker_id: int) -> Worker:
        return self.store.touch_worker(worker_id, self.clock())

    def deregister(self, worker_id: int) -> Worker:
        now = self.clock()
        return self.store.stop_worker(worker_id, now, partial(lifecycle.worker_stopped, now=now))

    def status(self, worker: Worker) -> str:
        """`lost` when the worker was not heard from (a heartbeat or a claim) for
        `lost_after_seconds` and no claim of its waits right now; see docs/queue.md "Liveness"."""
        if worker.stopped_at is not None:
            return "stopped"
        if self.clock() - worker.last_seen > self.lost_after_seconds and worker.id not in self.waiting:
            return "lost"
        return "active" if worker.current_task is not None else "idle"

    # -- reading ------------------------------------------------------------------------

    def get(self, worker_id: int) -> Worker:
        return self.store.get_worker(worker_id)

    def by_session(self, session_id: str) -> Worker | None:
        return self.store.find_worker_by_session(session_id)

    def all(self) -> list[Worker]:
        return self.store.list_workers()


def session_tasks(
    workers: Workers, queue: Queue, session_id: str, heartbeat: bool
) -> tuple[Worker, list[Task]]:
    """The worker registered with a Claude Code session and the tasks it holds, leases included.

    Knowing the session id is what entitles the caller to the leases: the hooks of that session
    use this to re-inject, heartbeat or finish the task the model is working on. `heartbeat`
    records activity: the worker is touched and each held lease extended (a stopped worker is
    left as it is).
    """
    worker = workers.by_session(session_id)
    if worker is None:
        raise NotFound("no worker is registered for this session")
    held = queue.page(states=("claimed",), worker_id=worker.id, limit=100)
    if not heartbeat or worker.stopped_at is not None:
        return worker, held
    extended = []
    for task in held:
        try:
            extended.append(queue.heartbeat(task.id, task.lease_token or ""))
        except LeaseConflict:
            continue  # reaped or finished since the read: no longer held
    return workers.heartbeat(worker.id), extended
