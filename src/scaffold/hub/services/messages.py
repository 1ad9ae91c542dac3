"""Messages between agents: to one worker, a role, the coordinator or all; read by cursor."""

from __future__ import annotations

import re

from scaffold.errors import InvalidRequest
from scaffold.hub.core.types import Clock, Message
from scaffold.hub.store.base import Store

TARGET = re.compile(r"all|coordinator|role:[a-z0-9][a-z0-9._-]{0,63}|worker:[1-9][0-9]{0,17}")
MAX_BODY = 64 * 1024


class Messages:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def send(self, sender: str, to: str | int, kind: str, body: str) -> Message:
        target = f"worker:{to}" if isinstance(to, int) or str(to).isdigit() else str(to)
        if not TARGET.fullmatch(target):
            raise InvalidRequest(f"cannot send to {to!r}: use a worker id, role:<name>, coordinator or all")
        if target.startswith("worker:"):
            self.store.get_worker(int(target.removeprefix("worker:")))  # NotFound for a bad id
        if kind not in ("message", "discovery"):
            raise InvalidRequest(f"kind is message or discovery, not {kind!r}")
        if not body.strip():
            raise InvalidRequest("the message is empty")
        if len(body) > MAX_BODY:
            raise InvalidRequest(f"a message holds at most {MAX_BODY} characters")
        return self.store.add_message(sender, target, kind, body, self.clock())

    def read(self, reader: str | None, after_id: int, limit: int) -> list[Message]:
        """Messages after the cursor for `reader` (worker:<id> or coordinator); None: all."""
        if reader is None:
            return self.store.read_messages(None, after_id, limit)
        if reader == "coordinator":
            return self.store.read_messages(["all", "coordinator"], after_id, limit)
        if not reader.startswith("worker:") or not reader[7:].isdigit():
            raise InvalidRequest(f"cannot read for {reader!r}: use worker:<id> or coordinator")
        worker = self.store.get_worker(int(reader[7:]))
        return self.store.read_messages(["all", f"role:{worker.role}", reader], after_id, limit)
