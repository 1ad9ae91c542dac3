"""`Services`: the services of one hub, built on one store and shared by its faces.

The REST routes, the MCP tools and the dashboard call these and nothing below them: each face
depends on this container, and the application (scaffold.hub.app) builds it and serves the faces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold.hub.core.lifecycle import same_token
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Clock, Plan, Task, TaskState, Worker
from scaffold.hub.core.wakeup import Wakeup
from scaffold.hub.services.auth import Authenticator, Keys
from scaffold.hub.services.events import EventBus, Events
from scaffold.hub.services.exec import Executor, Outcome, execute
from scaffold.hub.services.files import Files
from scaffold.hub.services.git import GitRepository
from scaffold.hub.services.merge import Gate, MergeQueue
from scaffold.hub.services.messages import Messages
from scaffold.hub.services.plan import Plans
from scaffold.hub.services.queue import Queue, QueueSettings
from scaffold.hub.services.reservations import Reservations
from scaffold.hub.services.team import Team
from scaffold.hub.services.trees import TaskTrees, Tree, Usage
from scaffold.hub.services.usage import Ledger, UsageStatus
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
    trees: Usage
    trees_path: Path
    merged: int
    usage: UsageStatus


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
    trees: TaskTrees
    merges: MergeQueue
    team: Team
    ledger: Ledger

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
        git = GitRepository(settings.workspace, shared_paths=settings.shared_paths)
        executor = Executor.configured(settings)
        messages = Messages(store, clock)
        trees = TaskTrees(git, store, settings)
        gate = Gate(settings.gate, settings.gate_timeout_seconds) if settings.gate else None
        merges = MergeQueue(git, trees, queue, store, messages, executor, settings.data_dir, gate)
        workers = Workers(store, clock, settings.roles, settings.worker_lost_seconds, queue.waiting)
        ledger = Ledger(store, clock, settings, messages)
        if ledger.budgets.fleet_day.set or ledger.budgets.worker_day.set:
            queue.admit = ledger.admit  # no day budget: claims pay nothing for the gate
        ledger.on_stop = queue.signal.notify
        return cls(
            store=store,
            settings=settings,
            clock=clock,
            queue=queue,
            workers=workers,
            messages=messages,
            plans=Plans(store, clock),
            auth=Authenticator(store),
            keys=Keys(store, clock),
            bus=bus,
            events=Events(store, bus),
            git=git,
            executor=executor,
            reservations=reservations,
            files=Files.build(store, settings, clock, reservations),
            trees=trees,
            merges=merges,
            team=Team(store, clock, workers, settings.roles),
            ledger=ledger,
        )

    async def complete_task(self, task_id: int, token: str, result: str) -> Task:
        """Complete the task: its tree's changes become one commit on main (services.merge)."""
        return await self.merges.complete(task_id, token, result)

    async def files_for(self, worker_id: int | None) -> Files:
        """The files a call naming `worker_id` acts on: its task's tree, or main."""
        tree = await self.trees.for_worker(worker_id)
        return self.files if tree.task_id is None else self.files.at(tree.root, tree.task_id)

    async def changed(self, files: Files, paths: list[str], what: str, actor: str) -> None:
        """After a change through the file API: on main, it is committed at once, on its own."""
        if files.task_id is None:
            await self.git.commit_direct(paths, f"workspace: {what}", actor)

    async def run_command(self, request: Mapping[str, Any], actor: str) -> Outcome:
        """Run the command a validated request describes (see exec.execute) in the caller's tree:
        the worker's task's, or the task's whose lease it names, or main. What a command changes
        on main is committed after it, as its own commit."""
        tree = await self._command_tree(request)
        outcome = await execute(
            request,
            actor,
            settings=self.settings,
            executor=self.executor,
            queue=self.queue,
            store=self.store,
            clock=self.clock,
            tree=tree.root if tree.task_id is not None else None,
            readonly=tree.readonly,
            tree_task=tree.task_id,
        )
        if tree.task_id is None:
            command = request.get("shell") or " ".join(request.get("argv") or [])
            await self.git.commit_direct(None, f"workspace: after the command {command[:80]}", actor)
        return outcome

    async def _command_tree(self, request: Mapping[str, Any]) -> Tree:
        if request.get("worker_id") is not None:
            return await self.trees.for_worker(request["worker_id"])
        task_id, token = request.get("task_id"), request.get("lease_token")
        if task_id is not None and token is not None:
            task = self.queue.get(task_id)
            if task.state == "claimed" and same_token(task.lease_token, token):
                return await self.trees.for_task(task)
        return self.trees.main

    async def progress(self) -> Progress:
        """The counts, plan, workers, stuck tasks, ready tasks' needs and trees the status shows."""
        return Progress(
            counts=self.queue.counts(),
            plan=self.plans.get(),
            workers=self.workers.all(),
            stuck=self.queue.stuck(),
            ready_requirements=self.queue.ready_requirements(),
            trees=await self.trees.usage(),
            trees_path=self.trees.path,
            merged=self.merges.merged,
            usage=self.ledger.status(),
        )

    def shutdown(self) -> None:
        """Wake every long poll and stream so they end and the server can stop."""
        self.queue.shutdown()
        self.bus.close()
        self.executor.shutdown()
