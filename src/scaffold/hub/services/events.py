"""The event log as a live stream: Server-Sent Events with `Last-Event-ID` resume.

Every state change is already an event row (the store writes it in the same transaction);
this module only wakes readers when rows are appended, and formats them.

An open stream costs nothing while nothing happens: the store hands the bus the events of each
commit that appended some, so the bus always knows the newest id without a query, a stream
sleeps until there is an event newer than the last it sent (or its keep-alive is due), and
commits that append nothing (a reaper pass that reaps nothing) wake nobody. The bus also keeps
the latest events, each formatted once, so a stream that is keeping up reads them from memory;
only a stream further behind queries the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from functools import cached_property

from scaffold.hub.core.types import Event
from scaffold.hub.core.wakeup import wake
from scaffold.hub.store.base import Store

KEEPALIVE_SECONDS = 15.0
"""A `: keep-alive` comment goes out after this many seconds with nothing sent (docs/api.md)."""
RECENT_EVENTS = 1024
"""How many of the latest events the bus keeps for streams that are keeping up."""


class _Recent:
    def __init__(self, event: Event) -> None:
        self.event = event

    @cached_property
    def text(self) -> str:  # formatted on the first read, once for every stream
        return format_event(self.event)


class EventBus:
    """The newest committed event and the latest ones; wakes the streams that have not sent it.

    Streams wait by the id they last sent: an appended event wakes only the streams behind it,
    so one parked beyond the newest id (a `Last-Event-ID` from the future) sleeps through it.
    """

    def __init__(
        self, newest: int = 0, keepalive: float = KEEPALIVE_SECONDS, keep: int = RECENT_EVENTS
    ) -> None:
        self.closing = False
        self.keepalive = keepalive
        self.newest = newest
        self._lock = threading.Lock()  # the store may commit on another thread than the streams'
        self._waiting: dict[int, set[asyncio.Future[None]]] = {}  # by the id each stream sent last
        self._keep = keep
        self._recent: deque[_Recent] = deque()
        self._floor = newest  # every event after this id is in _recent

    def publish(self, events: Sequence[Event]) -> None:
        """The store's listener: `events` (in id order) were just committed."""
        if not events:
            return
        with self._lock:
            self._recent.extend(_Recent(event) for event in events)
            while len(self._recent) > self._keep:
                self._floor = self._recent.popleft().event.id
            self.newest = max(self.newest, events[-1].id)
            behind = [sent for sent in self._waiting if sent < self.newest]  # few: most share one
            woken = [waiter for sent in behind for waiter in self._waiting.pop(sent)]
        wake(woken)

    def recent_after(self, after_id: int) -> tuple[list[str], int] | None:
        """The formatted events after `after_id` and the newest id, if the bus holds them all.

        The ids must follow each other: another process writing to the database (the `scaffold
        hub key` commands) appends events the bus never hears of, and a stream must not skip them.
        """
        with self._lock:
            if after_id < self._floor:
                return None
            newer: list[_Recent] = []
            for entry in reversed(self._recent):
                if entry.event.id <= after_id:
                    break
                newer.append(entry)
            newest = self.newest
        newer.reverse()
        if any(entry.event.id != after_id + 1 + number for number, entry in enumerate(newer)):
            return None
        return [entry.text for entry in newer], newest

    async def wait_beyond(self, after_id: int, timeout: float) -> None:
        """Return when there is an event after `after_id` or the bus closes, or after `timeout` s."""
        waiter = asyncio.get_running_loop().create_future()
        with self._lock:  # checked under the lock `publish` takes, so no event slips in between
            if self.closing or self.newest > after_id:
                return
            self._waiting.setdefault(after_id, set()).add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            with self._lock:
                group = self._waiting.get(after_id)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._waiting[after_id]

    def close(self) -> None:
        with self._lock:
            self.closing = True
            woken = [waiter for group in self._waiting.values() for waiter in group]
            self._waiting.clear()
        wake(woken)


class Events:
    """The event log as clients read it: the id of the newest event, and a live stream."""

    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    def newest(self) -> int:
        """Read from the store: another process may have appended events the bus never heard of."""
        return self.store.last_event_id()

    def stream(self, after_id: int) -> AsyncIterator[str]:
        return stream(self.store, self.bus, after_id)


def format_event(event: Event) -> str:
    payload = {
        "id": event.id,
        "at": event.at,
        "type": event.type,
        "task_id": event.task_id,
        "worker_id": event.worker_id,
        "actor": event.actor,
        "data": event.data,
    }
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(payload)}\n\n"


async def stream(store: Store, bus: EventBus, after_id: int, batch: int = 500) -> AsyncIterator[str]:
    """Events after `after_id`, then new ones as they happen, with keep-alive comments."""
    yield "retry: 2000\n\n"
    quiet_until = time.monotonic() + bus.keepalive
    while not bus.closing:
        if bus.newest > after_id:
            texts, after_id = _newer(store, bus, after_id, batch)
            if texts:
                yield "".join(texts)
                quiet_until = time.monotonic() + bus.keepalive
            continue
        remaining = quiet_until - time.monotonic()
        if remaining <= 0:
            yield ": keep-alive\n\n"
            quiet_until = time.monotonic() + bus.keepalive
            continue
        await bus.wait_beyond(after_id, remaining)


def _newer(store: Store, bus: EventBus, after_id: int, batch: int) -> tuple[list[str], int]:
    """Up to `batch` formatted events after `after_id` (from memory when it can), and the new cursor."""
    recent = bus.recent_after(after_id)
    if recent is not None:
        return recent
    newest = bus.newest
    events = store.events_after(after_id, batch)
    if len(events) == batch:
        return [format_event(event) for event in events], events[-1].id
    # Every event up to `newest` was committed before the bus heard of it, so this read saw
    # them all: the cursor moves to `newest` even if the log has gaps, and the loop cannot spin.
    return [format_event(event) for event in events], max(after_id, newest)
