"""The shared record in SQLite: the plan, the messages between agents, and the event log."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from scaffold.hub.core.types import Event, Message, Plan
from scaffold.hub.store.sqlite.connection import Connection


class RecordStore(Connection):
    def get_plan(self) -> Plan:
        with self._read() as db:
            row = db.execute("SELECT goal, plan, updated_at FROM plan WHERE id = 1").fetchone()
        return Plan("", "", None) if row is None else Plan(row[0], row[1], row[2])

    def set_plan(self, goal: str, plan: str, actor: str, now: float) -> Plan:
        with self._write() as db:
            db.execute(
                "INSERT INTO plan (id, goal, plan, updated_at) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET goal = excluded.goal, plan = excluded.plan, "
                "updated_at = excluded.updated_at",
                (goal, plan, now),
            )
            self._event(db, "plan.updated", now, actor=actor)
        return Plan(goal, plan, now)

    # -- messages -------------------------------------------------------------------------

    def add_message(self, sender: str, target: str, kind: str, body: str, now: float) -> Message:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO messages (created_at, sender, target, kind, body) VALUES (?, ?, ?, ?, ?)",
                (now, sender, target, kind, body),
            )
            message_id = int(cursor.lastrowid or 0)
            self._event(db, "message.sent", now, actor=sender, id=message_id, target=target, kind=kind)
        return Message(message_id, now, sender, target, kind, body)  # type: ignore[arg-type]

    def read_messages(self, targets: Sequence[str] | None, after_id: int, limit: int) -> list[Message]:
        sql, params = "SELECT * FROM messages WHERE id > ?", list[object]([after_id])
        if targets is not None:
            sql += f" AND target IN ({','.join('?' * len(targets))})"
            params.extend(targets)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._read() as db:
            return [
                Message(r["id"], r["created_at"], r["sender"], r["target"], r["kind"], r["body"])
                for r in db.execute(sql, params)
            ]

    # -- events ---------------------------------------------------------------------------

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
        with self._write() as db:
            fields = {"task_id": task_id, "worker_id": worker_id}
            return self._event(db, event_type, now, actor=actor, data=data, **fields)

    def events_after(self, after_id: int, limit: int) -> list[Event]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            ).fetchall()
        return [_event(r) for r in rows]

    def worker_events(self, worker_id: int, event_type: str, limit: int) -> list[Event]:
        # events_by_worker: a seek to the worker, then its events newest first.
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM events WHERE worker_id = ? AND type = ? ORDER BY id DESC LIMIT ?",
                (worker_id, event_type, limit),
            ).fetchall()
        return [_event(r) for r in rows]

    def last_event_id(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])


def _event(row: sqlite3.Row) -> Event:
    return Event(
        row["id"],
        row["at"],
        row["type"],
        row["task_id"],
        row["worker_id"],
        row["actor"],
        json.loads(row["data"]),
    )
