"""The team: the slots that run Claude Code sessions, their screens, and the runs of headless ones.

Slots and screens live in memory only, a live view: each slot's runner sends its state again every
10 s and on every change, so a restarted hub sees the whole team within seconds and keeps nothing
stale. A run's result is an event (`worker.run`), kept with the worker's history.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scaffold.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from scaffold.hub.core.limits import MAX_RUNS, MAX_SCREEN_BYTES, MAX_SLOTS
from scaffold.hub.core.types import Clock, Event, TaskState, Worker
from scaffold.hub.services.workers import Workers
from scaffold.hub.store.base import Store

SLOT_DEFAULTS: Mapping[str, Any] = {
    "host": "local",
    "mode": "interactive",
    "state": "starting",
    "session_id": None,
    "pid": None,
    "restarts": 0,
    "failures": 0,
    "last_run": None,
    "note": "",
}
RUN_DEFAULTS: Mapping[str, Any] = dict.fromkeys(("num_turns", "duration_ms", "cost_usd", "subtype", "error"))
MAX_LAST_RUN_BYTES = 4096
"""A slot's `last_run` as JSON: the run's numbers and a short error fit many times over."""
WAITING: tuple[TaskState, ...] = ("blocked", "claimed")

REDACTED = "[redacted]"
# Secrets a terminal may show, in the forms the hub can recognize without knowing them: a bearer
# token or an X-API-Key header (how the hub's keys travel), an Anthropic API key, and the
# variable the project's hooks read the hub's key from. The name before a value is kept.
_SECRET_FORMS = re.compile(
    r"(?P<keep>\bBearer\s+|\bX-API-Key\s*:\s*|\bVPS_API_KEY\s*[=:]\s*['\"]?)[^\s'\"]+"
    r"|\bsk-ant-[A-Za-z0-9_-]+",
    re.IGNORECASE,
)
# The hub keeps only its keys' SHA-256, so a key is found by hashing each word that could be one:
# a run of URL-safe characters (how the hub makes keys) and, for keys written in hub.toml, a
# longer run that may hold . ~ + / = as well.
_KEY_CANDIDATES = (re.compile(r"[A-Za-z0-9_-]{8,256}"), re.compile(r"[A-Za-z0-9._~+/=-]{8,256}"))


@dataclass(frozen=True)
class Slot:
    name: str
    fields: Mapping[str, Any]
    """What the slot's runner last sent, with SLOT_DEFAULTS for what it left out."""
    updated_at: float


@dataclass(frozen=True)
class Screen:
    text: str
    at: float


@dataclass(frozen=True)
class Work:
    ready: int
    waiting: int


def redact(text: str, is_key: Callable[[str], bool]) -> str:
    """`text` with every secret it shows replaced by [redacted]; `is_key` says whether a word is
    one of the hub's keys."""

    def form(match: re.Match[str]) -> str:
        return (match["keep"] or "") + REDACTED

    text = _SECRET_FORMS.sub(form, text)
    for candidates in _KEY_CANDIDATES:
        text = candidates.sub(lambda m: REDACTED if is_key(m[0]) else m[0], text)
    return text


def _natural(name: str) -> tuple[bool, list[int | str]]:
    """The coordinator first, then w2 before w10."""
    return name != "coordinator", [int(p) if p.isdigit() else p for p in re.split(r"([0-9]+)", name)]


class Team:
    def __init__(
        self, store: Store, clock: Clock, workers: Workers, roles: Mapping[str, Iterable[str]]
    ) -> None:
        self.store = store
        self.clock = clock
        self.workers = workers
        self.roles = roles
        self._slots: dict[str, Slot] = {}
        self._screens: dict[str, Screen] = {}

    # -- slots ----------------------------------------------------------------------------

    def put(self, name: str, fields: Mapping[str, Any]) -> Slot:
        """Replace the slot (its screen stays); a new one beyond MAX_SLOTS is refused."""
        if name not in self._slots and len(self._slots) >= MAX_SLOTS:
            raise Conflict(f"the team has {MAX_SLOTS} slots already; DELETE some before adding {name!r}")
        last_run = fields.get("last_run")
        if last_run is not None and len(json.dumps(last_run)) > MAX_LAST_RUN_BYTES:
            raise InvalidRequest(
                f"last_run is larger than {MAX_LAST_RUN_BYTES} bytes as JSON; send the run's numbers"
            )
        slot = Slot(name, {**SLOT_DEFAULTS, **fields}, self.clock())
        self._slots[name] = slot
        return slot

    def get(self, name: str) -> Slot:
        slot = self._slots.get(name)
        if slot is None:
            raise NotFound(f"no team slot {name!r}")
        return slot

    def delete(self, name: str) -> Slot:
        slot = self.get(name)
        del self._slots[name]
        self._screens.pop(name, None)
        return slot

    def clear(self) -> int:
        """Forget every slot and screen; how many slots there were."""
        count = len(self._slots)
        self._slots.clear()
        self._screens.clear()
        return count

    def slots(self) -> list[Slot]:
        return [self._slots[name] for name in sorted(self._slots, key=_natural)]

    def worker(self, slot: Slot) -> Worker | None:
        """The worker registered with the session the slot runs now, if it has registered."""
        session = slot.fields["session_id"]
        return self.workers.by_session(session) if session else None

    # -- screens --------------------------------------------------------------------------

    def put_screen(self, name: str, text: str) -> Screen:
        self.get(name)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_SCREEN_BYTES:
            raise PayloadTooLarge(f"the screen is {size} bytes as UTF-8; at most {MAX_SCREEN_BYTES} are kept")
        digests = {key.sha256 for key in self.store.list_keys()}
        screen = Screen(redact(text, lambda word: _digest(word) in digests), self.clock())
        self._screens[name] = screen
        return screen

    def screen(self, name: str) -> Screen:
        self.get(name)
        screen = self._screens.get(name)
        if screen is None:
            raise NotFound(f"team slot {name!r} has sent no screen yet")
        return screen

    def screen_at(self, name: str) -> float | None:
        screen = self._screens.get(name)
        return screen.at if screen else None

    # -- work -----------------------------------------------------------------------------

    def work(self) -> dict[str, Work]:
        """For each role of hub.toml and of every slot: the ready tasks its tags cover, and the
        waiting ones (blocked or claimed) it covers. A role not in hub.toml has its own name as
        its one tag, as when a worker registers with it."""
        names = sorted({*self.roles, *(slot.fields["role"] for slot in self._slots.values())})
        counts = self.store.requirement_counts(("ready", *WAITING))
        work = {}
        for role in names:
            tags = set(self.roles.get(role, (role,)))
            ready = waiting = 0
            for state, required, count in counts:
                if set(required) <= tags:
                    ready += count if state == "ready" else 0
                    waiting += count if state in WAITING else 0
            work[role] = Work(ready, waiting)
        return work

    # -- runs -----------------------------------------------------------------------------

    def record_run(self, worker_id: int, run: Mapping[str, Any], actor: str) -> Event:
        """Record the result of one headless session of the worker, as a `worker.run` event."""
        self.workers.get(worker_id)
        return self.store.append_event(
            "worker.run", self.clock(), actor, worker_id=worker_id, **{**RUN_DEFAULTS, **run}
        )

    def runs(self, worker_id: int) -> list[Event]:
        self.workers.get(worker_id)
        return self.store.worker_events(worker_id, "worker.run", MAX_RUNS)


def _digest(word: str) -> str:
    return hashlib.sha256(word.encode()).hexdigest()
