"""The event log as a live stream: Server-Sent Events with `Last-Event-ID` resume.

Every state change is already an event row (the store writes it in the same transaction);
this module only wakes readers when rows are appended, and formats them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from scaffold.hub.signals import Signal
from scaffold.hub.store.base import Store
from scaffold.hub.types import Event


class EventBus(Signal):
    """Notified after every committed write; wakes the open streams."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def close(self) -> None:
        self.closing = True
        self.notify()


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


async def stream(
    store: Store, bus: EventBus, after_id: int, keepalive: float = 15.0, batch: int = 500
) -> AsyncIterator[str]:
    """Events after `after_id`, then new ones as they happen, with keep-alive comments."""
    yield "retry: 2000\n\n"
    while not bus.closing:
        events = store.events_after(after_id, batch)
        for event in events:
            yield format_event(event)
            after_id = event.id
        if len(events) == batch:
            continue
        await bus.wait(keepalive)
        if not bus.closing and store.last_event_id() <= after_id:
            yield ": keep-alive\n\n"
