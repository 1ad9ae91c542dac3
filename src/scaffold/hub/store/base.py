"""The store: the hub's persistence as a small set of domain operations.

Every operation that changes state is atomic, appends its events to the event log in the same
transaction, and takes `now` from the caller (the services own the clock). The store knows
nothing of HTTP, nor of the queue's rules: it applies the transitions `scaffold.hub.core.lifecycle`
decides. Any store (SQLite here, PostgreSQL later) must pass `tests/store_contract.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from scaffold.errors import HubError
from scaffold.hub.core import lifecycle
from scaffold.hub.core.lifecycle import ClaimRequest, ClaimTerms, Decide, DecideClaim
from scaffold.hub.core.otlp import ApiRequest, MetricPoint
from scaffold.hub.core.types import (
    ApiKey,
    Charge,
    Event,
    Message,
    NewTask,
    Plan,
    Reservation,
    Role,
    Spent,
    Task,
    TaskState,
    Worker,
)

UsageGroup = Literal["task", "worker", "role", "model", "day"]


@dataclass(frozen=True)
class UsageRow:
    """One group of requests. `key`: a task id, "between-tasks" (a worker's requests outside any
    task) or "coordinator" (sessions that are no worker) by task; a worker id or "coordinator"
    by worker; a role or "coordinator" by role; a model; a day (YYYY-MM-DD, UTC)."""

    key: int | str
    spent: Spent
    outside_tasks: Spent
    """The part of `spent` made outside any task (by worker; empty otherwise)."""


@dataclass(frozen=True)
class TaskFilter:
    states: tuple[TaskState, ...] = ()
    worker_id: int | None = None
    after_id: int = 0
    limit: int = 100


class Store(ABC):
    """Domain operations of the hub. Methods raise `scaffold.errors` for bad ids or leases."""

    # -- lifecycle ------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    # -- keys -----------------------------------------------------------------------------

    @abstractmethod
    def add_key(self, name: str, role: Role, sha256: str, source: str, now: float) -> ApiKey:
        """Add a key; Conflict if the name or hash exists (a revoked name may be reused)."""

    @abstractmethod
    def sync_config_keys(self, keys: Sequence[tuple[str, Role, str]], now: float) -> None:
        """Make the keys of hub.toml (name, role, sha256) present; a key revoked stays revoked."""

    @abstractmethod
    def find_key(self, sha256: str) -> ApiKey | None:
        """The active key with this hash, if any."""

    @abstractmethod
    def list_keys(self) -> list[ApiKey]: ...

    @abstractmethod
    def revoke_key(self, name: str, now: float) -> ApiKey:
        """Revoke an active key by name; NotFound if there is none."""

    # -- plan -----------------------------------------------------------------------------

    @abstractmethod
    def get_plan(self) -> Plan: ...

    @abstractmethod
    def set_plan(self, goal: str, plan: str, actor: str, now: float) -> Plan: ...

    # -- tasks ----------------------------------------------------------------------------

    @abstractmethod
    def create_tasks(
        self,
        tasks: Sequence[NewTask],
        default_max_attempts: int,
        actor: str,
        now: float,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[list[Task], bool]:
        """Create a batch atomically: refs and ids in `depends_on` resolved, unknown ids refused.

        The caller has checked the batch for cycles. `idempotency` is (key, request hash): a
        repeated key with the same hash returns the first batch and False; with another hash it
        is a Conflict. Returns the tasks and whether they were created now.
        """

    @abstractmethod
    def get_task(self, task_id: int) -> Task:
        """NotFound if there is no such task."""

    @abstractmethod
    def list_tasks(self, task_filter: TaskFilter) -> list[Task]:
        """Tasks with id > after_id matching the filter, in id order, at most `limit`."""

    @abstractmethod
    def count_tasks(self) -> dict[TaskState, int]: ...

    @abstractmethod
    def stuck_tasks(self) -> list[int]:
        """Blocked tasks with a dependency that can no longer finish (dead or cancelled)."""

    @abstractmethod
    def ready_requirements(self) -> list[tuple[int, tuple[str, ...]]]:
        """(id, required capabilities) of every ready task that requires some, in id order."""

    @abstractmethod
    def requirement_counts(self, states: Sequence[TaskState]) -> list[tuple[TaskState, tuple[str, ...], int]]:
        """(state, required capabilities, how many tasks) for the tasks in `states`, one row per
        distinct pair: what the team's work per role is counted from."""

    # The queue's transitions: the store reads the task and applies the `Transition` that a
    # rule of `scaffold.hub.core.lifecycle` decides, all in one write transaction (events included).
    # It decides nothing itself, so a second store holds no rule of the queue.

    @abstractmethod
    def transition(self, task_id: int, decide: Decide, now: float) -> tuple[Task, bool]:
        """Read the task, decide, apply, in one write transaction; the task as it is after, and
        whether anything changed (`decide` gave None: nothing written). NotFound for an unknown
        id; an error `decide` raises leaves everything as it was."""

    @abstractmethod
    def take(self, terms: ClaimTerms, now: float) -> Task | None:
        """Pick the best ready task (highest priority, then lowest id) whose required
        capabilities are all in `terms.capabilities`, and apply `terms.take` to it, as one atomic
        step: two claims never get the same task. None if there is no such task."""

    @abstractmethod
    def claim_batch(
        self, requests: Sequence[ClaimRequest], decide: DecideClaim, now: float
    ) -> list[Task | HubError | None]:
        """Several claims in one transaction, in order; one result per request.

        For each request, `decide` gets the worker as a `Claimant` (None if there is no such
        worker) and gives the terms `take` applies; the HubError it raises is that request's
        result. No two requests of a batch get the same task.
        """

    @abstractmethod
    def expire_leases(self, now: float, decide: Decide) -> list[Task]:
        """Apply `decide` to each claimed task whose lease ended before `now`, and delete the
        reservations expired at `now` (a `reservation.expired` event each); the tasks changed,
        as they are after. A pass with nothing due writes nothing."""

    # -- workers --------------------------------------------------------------------------

    @abstractmethod
    def register_worker(self, session_id: str, role: str, capabilities: Sequence[str], now: float) -> Worker:
        """Register, or re-register the same session (role and capabilities updated)."""

    @abstractmethod
    def get_worker(self, worker_id: int) -> Worker: ...

    @abstractmethod
    def find_worker_by_session(self, session_id: str) -> Worker | None: ...

    @abstractmethod
    def list_workers(self) -> list[Worker]: ...

    @abstractmethod
    def touch_worker(self, worker_id: int, now: float) -> Worker:
        """Record that the worker is alive."""

    @abstractmethod
    def stop_worker(self, worker_id: int, now: float, decide: Decide) -> Worker:
        """Mark the worker stopped, apply `decide` to each task it holds (claimed), and end its
        reservations; stopping a stopped worker changes nothing."""

    # -- reservations ---------------------------------------------------------------------
    # A reservation is active while expires_at > now. One held for a task ends when that task
    # is completed, failed, released, reaped or cancelled, in the same transaction; all of a
    # worker's end when it stops; `reap` deletes the expired ones.

    @abstractmethod
    def reserve(
        self,
        worker_id: int,
        patterns: Sequence[str],
        exclusive: bool,
        task_id: int | None,
        expires_at: float,
        now: float,
    ) -> list[Reservation]:
        """Reserve normalized globs for a worker, all or none, one reservation per pattern.

        NotFound for an unknown worker or task; Conflict for a stopped worker or a task that
        worker does not hold. An exclusive pattern that overlaps (`scaffold.hub.core.globs.overlap`)
        an active exclusive reservation of another worker is Reserved, naming it. A pattern the
        worker already holds is renewed (its kind, task and expiry replaced) instead of doubled.
        """

    @abstractmethod
    def list_reservations(self, now: float, worker_id: int | None = None) -> list[Reservation]:
        """The active reservations (of one worker), in id order."""

    @abstractmethod
    def renew_reservation(
        self, reservation_id: int, worker_id: int, expires_at: float, now: float
    ) -> Reservation:
        """Move an active reservation's expiry; NotFound if it is not active, Conflict if
        another worker holds it."""

    @abstractmethod
    def release_reservation(self, reservation_id: int, worker_id: int, now: float) -> Reservation:
        """End an active reservation; NotFound if it is not active, Conflict if another worker
        holds it."""

    # -- messages -------------------------------------------------------------------------

    @abstractmethod
    def add_message(self, sender: str, target: str, kind: str, body: str, now: float) -> Message: ...

    @abstractmethod
    def read_messages(self, targets: Sequence[str] | None, after_id: int, limit: int) -> list[Message]:
        """Messages with id > after_id to any of `targets` (None: all messages)."""

    # -- events ---------------------------------------------------------------------------

    @abstractmethod
    def append_event(
        self,
        event_type: str,
        now: float,
        actor: str | None = None,
        *,
        task_id: int | None = None,
        worker_id: int | None = None,
        **data: object,
    ) -> Event:
        """An event that no other operation records (a command run, a file change), with the
        task and worker it concerns in their own columns."""

    @abstractmethod
    def events_after(self, after_id: int, limit: int) -> list[Event]: ...

    @abstractmethod
    def last_event_id(self) -> int: ...

    @abstractmethod
    def worker_events(self, worker_id: int, event_type: str, limit: int) -> list[Event]:
        """The latest events of one type about a worker (its `worker_id` column), newest first."""

    # -- usage ----------------------------------------------------------------------------
    # One row per model request. `since`/`until` bound the requests' times (None: unbounded).

    @abstractmethod
    def record_requests(self, requests: Sequence[ApiRequest]) -> list[Charge]:
        """Store each request not stored yet (key: session and sequence), in one transaction,
        attributed to its session's worker and to the task that worker held at the request's
        time: its latest claim with no end (completed, failed, expired, released, cancelled)
        between the claim and the request. A session that is no worker gets none. Returns the
        requests stored now; one seen before is skipped."""

    @abstractmethod
    def record_metric_points(self, points: Sequence[MetricPoint]) -> int:
        """Keep each point once: a delta point's window once; a cumulative series (series,
        start) at its latest value. How many rows were added or moved on."""

    @abstractmethod
    def usage_by(self, group: UsageGroup, since: float | None, until: float | None) -> list[UsageRow]:
        """The requests of whole UTC days (those holding `since` .. `until`, until excluded)
        summed per task, worker, role, model or day; see `UsageRow.key`."""

    @abstractmethod
    def usage_total(self, since: float | None, until: float | None, worker_id: int | None = None) -> Spent:
        """The requests in the window (of one worker) summed."""

    @abstractmethod
    def task_usage(self, task_ids: Sequence[int]) -> dict[int, Spent]:
        """What each task spent (tasks with no request are absent)."""

    @abstractmethod
    def metric_totals(self, since: float | None, until: float | None) -> tuple[float, float]:
        """(cost in USD, tokens) from the metrics whose points end in the window."""

    @abstractmethod
    def run_totals(self) -> dict[int, tuple[int, float]]:
        """Worker id -> (runs, their cost in USD) from the headless runs' `worker.run` events."""

    # -- conveniences: the lifecycle's rules through the primitives ---------------------------
    # Written once here for every store; the Queue passes its rules with its clock.

    def claim(
        self, worker_id: int, capabilities: Sequence[str], token: str, lease_until: float, now: float
    ) -> Task | None:
        """One claim with exactly these capabilities (no check of the worker)."""
        return self.take(lifecycle.claim(worker_id, tuple(capabilities), token, lease_until, now), now)

    def reap(self, now: float, decide: Decide | None = None) -> list[Task]:
        """`expire_leases` with `decide`, the lifecycle's expiry rule when not given (the hub's
        reaper pass, under the name its tests count)."""
        return self.expire_leases(now, decide or partial(lifecycle.expire, now=now))
