"""The task queue: what may be created, claims and their long polls, and each transition.

The REST routes and the MCP tools both call `Queue`. It checks what is created, then has each
transition decided by the rules of `scaffold.hub.core.lifecycle` and applied atomically by the
store. Time comes from an injected clock, so tests move it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from scaffold.errors import HubError, InvalidRequest
from scaffold.hub.core import lifecycle
from scaffold.hub.core.lifecycle import TRANSITIONS as TRANSITIONS
from scaffold.hub.core.lifecycle import ClaimRequest
from scaffold.hub.core.limits import MAX_BATCH, MAX_BATCH_DEPENDENCIES
from scaffold.hub.core.types import Clock, NewTask, Task, TaskState
from scaffold.hub.core.wakeup import Wakeup
from scaffold.hub.store.base import Store, TaskFilter

log = logging.getLogger("scaffold.hub")

CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class QueueSettings:
    lease_seconds: float = 300.0
    max_attempts: int = 3
    max_wait_seconds: float = 600.0
    max_batch: int = MAX_BATCH
    max_batch_dependencies: int = MAX_BATCH_DEPENDENCIES


class Queue:
    def __init__(
        self, store: Store, clock: Clock, settings: QueueSettings, signal: Wakeup | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.signal = signal or Wakeup()
        self.closing = False
        self.waiting: Counter[int] = Counter()
        """Worker id -> its claims waiting right now (long polls)."""
        self.admit: Callable[[int], None] = _admit_all
        """Raises the HubError that refuses a worker's claim before it is tried (the budgets)."""
        self._batches: dict[
            asyncio.AbstractEventLoop, list[tuple[ClaimRequest, asyncio.Future[Task | HubError | None]]]
        ] = {}

    # -- creating -------------------------------------------------------------------------

    def create(
        self,
        tasks: Sequence[NewTask],
        actor: str,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[list[Task], bool]:
        """Create a batch; refuse bad capabilities, unknown refs and cycles before writing."""
        if not tasks:
            raise InvalidRequest("give at least one task")
        if len(tasks) > self.settings.max_batch:
            raise InvalidRequest(f"at most {self.settings.max_batch} tasks in one request")
        edges = sum(len(task.depends_on) for task in tasks)
        if edges > self.settings.max_batch_dependencies:
            raise InvalidRequest(
                f"the tasks name {edges} dependencies in all; at most "
                f"{self.settings.max_batch_dependencies} in one request (send the batch in parts: "
                "a later part can depend on the ids of an earlier one)"
            )
        refs: dict[str, int] = {}
        for number, task in enumerate(tasks, start=1):
            if not task.title.strip():
                raise InvalidRequest(f"task {number}: the title is empty")
            for tag in task.required_capabilities:
                if not CAPABILITY.fullmatch(tag):
                    raise InvalidRequest(
                        f"task {number}: capability {tag!r} must be lowercase letters, digits, . _ -"
                    )
            if task.ref is not None:
                if task.ref in refs:
                    raise InvalidRequest(f"task {number}: ref {task.ref!r} is used twice")
                refs[task.ref] = number - 1
        for number, task in enumerate(tasks, start=1):
            for dep in task.depends_on:
                if isinstance(dep, bool) or not isinstance(dep, int | str):
                    raise InvalidRequest(f"task {number}: depends_on holds task ids or refs, not {dep!r}")
                if isinstance(dep, str) and dep not in refs:
                    raise InvalidRequest(f"task {number} depends on ref {dep!r}, which no task has")
        _refuse_cycles(tasks, refs)
        created, new = self.store.create_tasks(
            tasks, self.settings.max_attempts, actor, self.clock(), idempotency
        )
        if new and any(task.state == "ready" for task in created):
            self.signal.notify()
        return created, new

    # -- working --------------------------------------------------------------------------

    async def claim(self, worker_id: int, capabilities: Sequence[str] | None, wait: float) -> Task | None:
        """The best ready task this worker can do, waiting up to `wait` seconds for one.

        `capabilities` narrows what the worker registered with (never widens it). The worker
        is checked on every attempt: one stopped while it waits must not take a task.
        """
        wait = wait if math.isfinite(wait) else 0.0
        deadline = self.clock() + min(max(wait, 0.0), self.settings.max_wait_seconds)
        narrowed = None if capabilities is None else tuple(capabilities)
        self.waiting[worker_id] += 1  # an open long poll says the worker is alive (Workers.status)
        try:
            while True:
                self.admit(worker_id)
                task = await self._claim_once(ClaimRequest(worker_id, narrowed, secrets.token_urlsafe(24)))
                if task is not None:
                    return task
                remaining = deadline - self.clock()
                if remaining <= 0 or self.closing:
                    self.store.touch_worker(worker_id, self.clock())
                    return None
                await self.signal.wait(remaining)
        finally:
            self.waiting[worker_id] -= 1
            if not self.waiting[worker_id]:
                del self.waiting[worker_id]

    async def _claim_once(self, request: ClaimRequest) -> Task | None:
        """Join this loop turn's batch of claims; one transaction serves them all."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Task | HubError | None] = loop.create_future()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = []
            loop.call_soon(self._run_batch, loop)
        batch.append((request, result))
        outcome = await result
        if isinstance(outcome, HubError):
            raise outcome
        return outcome

    def _run_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._batches.pop(loop, [])
        now = self.clock()
        decide = partial(lifecycle.claim_for, lease_until=now + self.settings.lease_seconds, now=now)
        try:
            outcomes = self.store.claim_batch([request for request, _ in batch], decide, now)
        except Exception as error:  # noqa: BLE001 - handed to every claimer of the batch
            for _, result in batch:
                if not result.done():
                    result.set_exception(error)
            return
        for (_, result), outcome in zip(batch, outcomes, strict=True):
            if not result.done():
                result.set_result(outcome)

    def heartbeat(self, task_id: int, token: str) -> Task:
        now = self.clock()
        lease_until = now + self.settings.lease_seconds
        return self.store.transition(
            task_id, partial(lifecycle.heartbeat, token=token, lease_until=lease_until, now=now), now
        )[0]

    def complete(self, task_id: int, token: str, result: str, commit: str | None = None) -> tuple[Task, bool]:
        now = self.clock()
        task, changed = self.store.transition(
            task_id, partial(lifecycle.complete, token=token, result=result, now=now, commit=commit), now
        )
        if changed:
            self.signal.notify()  # dependents may be ready now
        return task, changed

    async def hold(self, task_id: int, token: str) -> None:
        """Heartbeat the task every lease/3 until cancelled, or until the lease is lost: a command
        or a merge that takes long must not lose the lease it runs for."""
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                self.heartbeat(task_id, token)
            except HubError as error:
                log.warning("task %s: stopped keeping its lease: %s", task_id, error.message)
                return

    def fail(self, task_id: int, token: str, error: str) -> Task:
        now = self.clock()
        task, _ = self.store.transition(
            task_id, partial(lifecycle.fail, token=token, error=error, now=now), now
        )
        if task.state == "ready":
            self.signal.notify()
        return task

    def release(self, task_id: int, token: str) -> Task:
        now = self.clock()
        task, _ = self.store.transition(task_id, partial(lifecycle.release, token=token, now=now), now)
        self.signal.notify()
        return task

    def cancel(self, task_id: int, actor: str) -> Task:
        now = self.clock()
        return self.store.transition(task_id, partial(lifecycle.cancel, actor=actor, now=now), now)[0]

    def reap(self) -> list[Task]:
        """Return expired leases to the queue; the hub calls this every second."""
        now = self.clock()
        expired = self.store.reap(now, partial(lifecycle.expire, now=now))
        if any(task.state == "ready" for task in expired):
            self.signal.notify()
        return expired

    def shutdown(self) -> None:
        """Let every waiting claim return now (with no task)."""
        self.closing = True
        self.signal.notify()

    # -- reading --------------------------------------------------------------------------

    def get(self, task_id: int) -> Task:
        """NotFound if there is no such task."""
        return self.store.get_task(task_id)

    def page(
        self,
        states: Sequence[TaskState] = (),
        worker_id: int | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[Task]:
        """Tasks with id > after_id in these states (any when none), in id order, at most `limit`."""
        return self.store.list_tasks(TaskFilter(tuple(states), worker_id, after_id, limit))

    def counts(self) -> dict[TaskState, int]:
        return self.store.count_tasks()

    def stuck(self) -> list[int]:
        """Blocked tasks with a dependency that can no longer finish (dead or cancelled)."""
        return self.store.stuck_tasks()

    def ready_requirements(self) -> list[tuple[int, tuple[str, ...]]]:
        """(id, required capabilities) of every ready task that requires some, in id order."""
        return self.store.ready_requirements()


def _admit_all(worker_id: int) -> None:
    """No gate: every claim is tried."""


def _refuse_cycles(tasks: Sequence[NewTask], refs: dict[str, int]) -> None:
    """Tasks may name later tasks of the same batch by ref, so a batch can hold a cycle."""
    edges = {
        index: [refs[dep] for dep in task.depends_on if isinstance(dep, str)]
        for index, task in enumerate(tasks)
    }
    done: set[int] = set()
    for start in edges:
        path: list[int] = []
        on_path: set[int] = set()
        stack: list[tuple[int, int]] = [(start, 0)]
        while stack:
            node, child = stack.pop()
            if child == 0:
                if node in done:
                    continue
                path.append(node)
                on_path.add(node)
            if child < len(edges[node]):
                stack.append((node, child + 1))
                nxt = edges[node][child]
                if nxt in on_path:
                    cycle = [*path[path.index(nxt) :], nxt]
                    names = " -> ".join(tasks[i].ref or str(i + 1) for i in cycle)
                    raise InvalidRequest(f"the dependencies form a cycle: {names}")
                if nxt not in done:
                    stack.append((nxt, 0))
            else:
                path.pop()
                on_path.discard(node)
                done.add(node)
