"""`Services`: the services of one hub, built on one store and shared by its faces.

The REST routes, the MCP tools and the dashboard call these and nothing below them: each face
depends on this container, and the application (scaffold.hub.app) builds it and serves the faces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Clock, Plan, Task, TaskState, Worker
from scaffold.hub.core.wakeup import Wakeup
from scaffold.hub.services.auth import Authenticator, Keys
from scaffold.hub.services.events import EventBus, Events
from scaffold.hub.services.exec import Executor, Outcome, execute
from scaffold.hub.services.files import Files
from scaffold.hub.services.git import GitRepository
from scaffold.hub.services.messages import Messages
from scaffold.hub.services.plan import Plans
from scaffold.hub.services.queue import Queue, QueueSettings
from scaffold.hub.services.reservations import Reservations
from scaffold.hub.services.workers import Workers
from scaffold.hub.store.base import Store

log = logging.getLogger("scaffold.hub")


@dataclass(frozen=True)
class Progress:
    """What the status shows, read from the services in one go."""

    counts: dict[TaskState, int]
    plan: Plan
    workers: list[Worker]
    stuck: list[int]
    ready_requirements: list[tuple[int, tuple[str, ...]]]


@dataclass
class Services:
    """The services of one hub, shared by the REST routes and the MCP tools."""

    store: Store
    settings: HubSettings
    clock: Clock
    queue: Queue
    workers: Workers
    messages: Messages
    plans: Plans
    auth: Authenticator
    keys: Keys
    bus: EventBus
    events: Events
    git: GitRepository
    executor: Executor
    reservations: Reservations
    files: Files

    @classmethod
    def build(cls, store: Store, settings: HubSettings, clock: Clock = time.time) -> Services:
        queue_settings = QueueSettings(
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            max_wait_seconds=settings.max_wait_seconds,
        )
        reservations = Reservations(store, clock, settings.workspace)
        queue = Queue(store, clock, queue_settings, Wakeup())
        bus = EventBus(store.last_event_id())
        return cls(
            store=store,
            settings=settings,
            clock=clock,
            queue=queue,
            workers=Workers(store, clock, settings.roles, settings.worker_lost_seconds, queue.waiting),
            messages=Messages(store, clock),
            plans=Plans(store, clock),
            auth=Authenticator(store),
            keys=Keys(store, clock),
            bus=bus,
            events=Events(store, bus),
            git=GitRepository(settings.workspace),
            executor=Executor.configured(settings),
            reservations=reservations,
            files=Files.build(store, settings, clock, reservations),
        )

    async def complete_task(self, task_id: int, token: str, result: str) -> Task:
        """Complete the task, then commit what changed in the workspace during it (services.git).

        Only a new completion commits (the same token again returns the task as it is). A git
        failure is logged and leaves `commit` null: the completion itself is never lost.
        """
        task, new = self.queue.complete(task_id, token, result)
        if not new:
            return task
        # shielded: a client that hangs up must not cut the commit off half-way
        return await asyncio.shield(self._commit(task))

    async def _commit(self, task: Task) -> Task:
        try:
            worker = self.store.get_worker(task.worker_id) if task.worker_id is not None else None
            sha = await self.git.commit_task(task, worker)
            if sha is None:
                return task
            self.store.set_commit(task.id, sha)
            return self.store.get_task(task.id)
        except Exception:  # the task is done, whatever happens to its commit
            log.exception("task %s: recording its commit failed", task.id)
            return task

    async def run_command(self, request: Mapping[str, Any], actor: str) -> Outcome:
        """Run the command a validated request describes, in the workspace (see exec.execute)."""
        return await execute(
            request,
            actor,
            settings=self.settings,
            executor=self.executor,
            queue=self.queue,
            store=self.store,
            clock=self.clock,
        )

    def progress(self) -> Progress:
        """The counts, plan, workers, stuck tasks and ready tasks' needs that the status shows."""
        return Progress(
            counts=self.queue.counts(),
            plan=self.plans.get(),
            workers=self.workers.all(),
            stuck=self.queue.stuck(),
            ready_requirements=self.queue.ready_requirements(),
        )

    def shutdown(self) -> None:
        """Wake every long poll and stream so they end and the server can stop."""
        self.queue.shutdown()
        self.bus.close()
        self.executor.shutdown()
