"""The core shapes the hub passes around, as plain frozen dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Clock = Callable[[], float]
"""Seconds since the epoch; injected so tests move time instead of sleeping."""

Role = Literal["viewer", "agent", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "agent", "admin")

TaskState = Literal["blocked", "ready", "claimed", "done", "dead", "cancelled"]
TASK_STATES: tuple[TaskState, ...] = ("blocked", "ready", "claimed", "done", "dead", "cancelled")


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: Role
    sha256: str
    source: str  # "config" (hub.toml), "cli" or "generated"
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class NewTask:
    """A task as a client asks for it. `depends_on` holds task ids or refs of the same batch."""

    title: str
    instructions: str
    priority: int = 0
    depends_on: tuple[int | str, ...] = ()
    ref: str | None = None
    required_capabilities: tuple[str, ...] = ()
    max_attempts: int | None = None


@dataclass(frozen=True)
class Task:
    id: int
    title: str
    instructions: str
    priority: int
    state: TaskState
    depends_on: tuple[int, ...]
    required_capabilities: tuple[str, ...]
    attempts: int
    max_attempts: int
    worker_id: int | None
    lease_token: str | None
    lease_expires_at: float | None
    result: str | None
    error: str | None
    created_at: float
    updated_at: float
    claimed_at: float | None
    finished_at: float | None
    commit: str | None = None

    def public(self) -> dict[str, Any]:
        """The task as any reader may see it: everything but the lease token."""
        return {
            "id": self.id,
            "title": self.title,
            "instructions": self.instructions,
            "priority": self.priority,
            "state": self.state,
            "depends_on": list(self.depends_on),
            "required_capabilities": list(self.required_capabilities),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "worker_id": self.worker_id,
            "lease_expires_at": self.lease_expires_at,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "claimed_at": self.claimed_at,
            "finished_at": self.finished_at,
            "commit": self.commit,
        }


@dataclass(frozen=True)
class Worker:
    id: int
    session_id: str
    role: str
    capabilities: tuple[str, ...]
    registered_at: float
    last_seen: float
    idle_since: float
    stopped_at: float | None
    current_task: int | None = None


@dataclass(frozen=True)
class Message:
    id: int
    created_at: float
    sender: str
    target: str
    kind: Literal["message", "discovery"]
    body: str


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    type: str
    task_id: int | None = None
    worker_id: int | None = None
    actor: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    goal: str
    plan: str
    updated_at: float | None


@dataclass(frozen=True)
class Reservation:
    """A worker's lease on a glob of workspace paths: exclusive (others may not write there)
    or shared (an announcement); it ends at `expires_at`, on release, or with its task."""

    id: int
    worker_id: int
    role: str  # the holder's role, to name it in a refusal
    pattern: str
    exclusive: bool
    task_id: int | None
    created_at: float
    expires_at: float

    def holder(self, now: float) -> str:
        """`worker 3 (backend) holds 'src/**' exclusively (reservation 7, 120 s left)`."""
        kind = "exclusively" if self.exclusive else "shared"
        left = max(0, round(self.expires_at - now))
        return (
            f"worker {self.worker_id} ({self.role}) holds {self.pattern!r} {kind} "
            f"(reservation {self.id}, {left} s left)"
        )


@dataclass(frozen=True, slots=True)
class Spent:
    """Model usage summed: requests, the four kinds of tokens and the cost in micro-dollars
    (integers, so sums are exact)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_micros: int = 0

    @property
    def tokens(self) -> int:
        """Every token the model processed: what a token budget counts."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            self.cost_micros + other.cost_micros,
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """One model request as the store recorded it: whose it was and what it spent."""

    worker_id: int | None
    task_id: int | None
    at: float
    spent: Spent
