"""The life of a task: every transition of the queue decided here, and only here.

Each rule is a pure function of the task as it is now (with the token, result or error the
caller brings, and the time): it returns a `Transition`, the whole change to make, or raises
the domain error. A store reads the task and applies the decided change in one write
transaction; it holds no rule of its own, so a second store needs none either. `Queue`
(scaffold.hub.services.queue) calls these rules with its clock. See docs/queue.md, "Where the rules live".
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import NamedTuple

from scaffold.errors import Conflict, LeaseConflict, NotFound
from scaffold.hub.core.types import Task

# The life of a task, as (from, to, when). docs/queue.md is generated from this table.
TRANSITIONS: tuple[tuple[str, str, str], ...] = (
    ("(new)", "ready", "created with no dependency left to finish"),
    ("(new)", "blocked", "created with a dependency that is not done"),
    ("blocked", "ready", "its last unfinished dependency is completed"),
    (
        "ready",
        "claimed",
        "a claim picks it: the best ready task (highest priority, then oldest) whose required "
        "capabilities the worker has; a fresh lease",
    ),
    ("claimed", "claimed", "heartbeat with the lease token: the lease is extended"),
    (
        "claimed",
        "done",
        "complete with the lease token, its tree merged into main as one commit (the same token "
        "again is a no-op)",
    ),
    (
        "claimed",
        "ready",
        "fail, the lease expires, or a completion whose merge conflicts or whose gate fails, with "
        "attempts left (attempts + 1); or release, or the worker stops (no attempt used)",
    ),
    (
        "claimed",
        "dead",
        "the same failures, on the last attempt; or its usage passes the task budget with "
        '[budget] task_action = "fail" (not retried: another attempt would spend again)',
    ),
    ("blocked, ready, claimed", "cancelled", "cancel (admin key); a holder's token goes stale"),
)

FINISHED = ("done", "dead", "cancelled")
"""Final states: nothing moves a task out of them."""

_NO_DATA: Mapping[str, object] = MappingProxyType({})

# The decided values are named tuples: a claim builds three of them, and a tuple is built in a
# fraction of a frozen dataclass's time.


class NewEvent(NamedTuple):
    """An event a transition appends for its task (the store gives it an id and the time)."""

    type: str
    worker_id: int | None = None
    actor: str | None = None
    data: Mapping[str, object] = _NO_DATA


def event(
    event_type: str, worker_id: int | None = None, actor: str | None = None, **data: object
) -> NewEvent:
    return NewEvent(event_type, worker_id, actor, data)


class Transition(NamedTuple):
    """One decided change of one task. A store applies all of it in one transaction, in this
    order: the task's fields, its event, the end of its reservations, the count-down of its
    dependents, the worker's liveness."""

    changes: Mapping[str, object]
    """Task fields (named as on `Task`) and their new values; `state` and `updated_at` always."""
    event: NewEvent | None = None
    """The event appended for the task, if any."""
    end_reservations: str | None = None
    """End the task's reservations, each with a `reservation.released` event with this reason."""
    dependents: Callable[[Task], Transition | None] | None = None
    """Count this task down in each dependent; apply this rule to each one with none left."""
    worker: int | None = None
    """The worker whose liveness changes: `last_seen` if `seen`, `idle_since` if `idle`."""
    seen: bool = False
    idle: bool = False


Decide = Callable[[Task], Transition | None]
"""A rule bound to its arguments: the current task in, the change (None: nothing to do) out."""


@dataclass(frozen=True)
class ClaimRequest:
    """One claim of a batch: the worker, an optional narrowing of its tags, a fresh token."""

    worker_id: int
    capabilities: tuple[str, ...] | None
    token: str


class Claimant(NamedTuple):
    """The worker behind a claim, as the claim rule needs it (None when there is no such worker)."""

    capabilities: tuple[str, ...]
    stopped_at: float | None


class ClaimTerms(NamedTuple):
    """How a claim takes a task. The store picks the task (its best ready one whose required
    capabilities are all among `capabilities`) and applies `take` to it in the same statement."""

    capabilities: tuple[str, ...]
    take: Transition


DecideClaim = Callable[[ClaimRequest, Claimant | None], ClaimTerms]
"""The claim rule bound to the time: raises the HubError that is the request's answer."""


def same_token(stored: str | None, presented: str) -> bool:
    """Constant-time comparison; as bytes, so any text a client sends compares (unequal)."""
    return stored is not None and hmac.compare_digest(stored.encode(), presented.encode())


def _leased(task: Task, token: str) -> int | None:
    """The holder of the task's lease, if `token` is that lease; else a LeaseConflict."""
    if task.state != "claimed" or not same_token(task.lease_token, token):
        raise LeaseConflict(
            f"task {task.id} is {task.state} and this lease token is not its current lease; "
            "stop working on it"
        )
    return task.worker_id


# -- ready -> claimed -------------------------------------------------------------------------


def claim(
    worker_id: int, capabilities: tuple[str, ...], token: str, lease_until: float, now: float
) -> ClaimTerms:
    """The best ready task these capabilities cover, under a fresh lease; the worker is seen."""
    take = Transition(
        {
            "state": "claimed",
            "worker_id": worker_id,
            "lease_token": token,
            "lease_expires_at": lease_until,
            "claimed_at": now,
            "updated_at": now,
        },
        event=event("task.claimed", worker_id),
        worker=worker_id,
        seen=True,
        idle=True,
    )
    return ClaimTerms(capabilities, take)


def claim_for(request: ClaimRequest, claimant: Claimant | None, lease_until: float, now: float) -> ClaimTerms:
    """A worker's claim: it must exist and not be stopped; its registered capabilities, narrowed
    by the request's when given (never widened)."""
    if claimant is None:
        raise NotFound(f"no worker {request.worker_id}")
    if claimant.stopped_at is not None:
        raise Conflict(f"worker {request.worker_id} is stopped; register again to take tasks")
    capabilities = claimant.capabilities
    if request.capabilities is not None:
        narrowed = set(request.capabilities)
        capabilities = tuple(tag for tag in capabilities if tag in narrowed)
    return claim(request.worker_id, capabilities, request.token, lease_until, now)


# -- claimed -> ... ---------------------------------------------------------------------------


def heartbeat(task: Task, token: str, lease_until: float, now: float) -> Transition:
    """claimed -> claimed: the lease runs until `lease_until`; the holder is seen."""
    holder = _leased(task, token)
    return Transition(
        {"state": "claimed", "lease_expires_at": lease_until, "updated_at": now}, worker=holder, seen=True
    )


def complete(task: Task, token: str, result: str, now: float, commit: str | None = None) -> Transition | None:
    """claimed -> done, with the commit its work became on main (None: it changed nothing); done
    already with this token is a no-op (None). The token is kept, so that a retried complete is
    recognised."""
    if task.state == "done" and same_token(task.lease_token, token):
        return None
    holder = _leased(task, token)
    return Transition(
        {
            "state": "done",
            "result": result,
            "commit": commit,
            "lease_expires_at": None,
            "finished_at": now,
            "updated_at": now,
        },
        event=event("task.completed", holder),
        end_reservations="its task was completed",
        dependents=partial(unblock, after=task.id, now=now),
        worker=holder,
        seen=True,
        idle=True,
    )


def _retry_or_bury(task: Task, error: str, now: float) -> dict[str, object]:
    """attempts + 1: back to ready, or dead on the last attempt; the lease ends."""
    attempts = task.attempts + 1
    dead = attempts >= task.max_attempts
    return {
        "state": "dead" if dead else "ready",
        "attempts": attempts,
        "error": error,
        "worker_id": None,
        "lease_token": None,
        "lease_expires_at": None,
        "finished_at": now if dead else None,
        "updated_at": now,
    }


def fail(task: Task, token: str, error: str, now: float) -> Transition:
    """claimed -> ready (attempts left) or dead (the last one)."""
    holder = _leased(task, token)
    changes = _retry_or_bury(task, error, now)
    return Transition(
        changes,
        event=event("task.failed", holder, state=changes["state"]),
        end_reservations="its task failed",
        worker=holder,
        seen=True,
        idle=True,
    )


def expire(task: Task, now: float) -> Transition | None:
    """claimed -> ready or dead, as a failure, once the lease has run out. The worker becomes
    idle but is not seen: a lost worker must still look lost."""
    if task.state != "claimed" or task.lease_expires_at is None or task.lease_expires_at >= now:
        return None
    changes = _retry_or_bury(task, "lease expired", now)
    return Transition(
        changes,
        event=event("task.expired", task.worker_id, state=changes["state"]),
        end_reservations="its task's lease expired",
        worker=task.worker_id,
        idle=True,
    )


def over_budget(task: Task, error: str, now: float) -> Transition | None:
    """claimed -> dead with `error`, whatever attempts are left: the task spent its budget. Any
    other state stays as it is (usage that arrives after the task finished is reported only)."""
    if task.state != "claimed":
        return None
    changes = {**_retry_or_bury(task, error, now), "state": "dead", "finished_at": now}
    return Transition(
        changes,
        event=event("task.failed", task.worker_id, state="dead", reason="budget"),
        end_reservations="its task went over its budget",
        worker=task.worker_id,
        idle=True,
    )


def _requeue(now: float) -> dict[str, object]:
    return {
        "state": "ready",
        "worker_id": None,
        "lease_token": None,
        "lease_expires_at": None,
        "updated_at": now,
    }


def release(task: Task, token: str, now: float) -> Transition:
    """claimed -> ready without using an attempt."""
    holder = _leased(task, token)
    return Transition(
        _requeue(now),
        event=event("task.released", holder),
        end_reservations="its task was released",
        worker=holder,
        seen=True,
        idle=True,
    )


def worker_stopped(task: Task, now: float) -> Transition | None:
    """claimed -> ready without an attempt, for each task of a worker that stops (the store ends
    the worker's reservations and marks it stopped in the same transaction)."""
    if task.state != "claimed":
        return None
    return Transition(_requeue(now), event=event("task.released", task.worker_id))


# -- any unfinished state -----------------------------------------------------------------------


def cancel(task: Task, actor: str, now: float) -> Transition:
    """blocked, ready or claimed -> cancelled; a holder's token goes stale (the worker stays
    recorded). A finished task is a Conflict."""
    if task.state in FINISHED:
        raise Conflict(f"task {task.id} is already {task.state}")
    return Transition(
        {
            "state": "cancelled",
            "lease_token": None,
            "lease_expires_at": None,
            "finished_at": now,
            "updated_at": now,
        },
        event=event("task.cancelled", task.worker_id, actor),
        end_reservations="its task was cancelled",
        worker=task.worker_id,
        seen=True,
        idle=True,
    )


def unblock(task: Task, after: int, now: float) -> Transition | None:
    """blocked -> ready when its last unfinished dependency (`after`) is done; a dependent that
    is no longer blocked (cancelled meanwhile) stays as it is."""
    if task.state != "blocked":
        return None
    return Transition({"state": "ready", "updated_at": now}, event=event("task.ready", after=after))
