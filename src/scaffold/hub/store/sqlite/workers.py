"""Workers in SQLite: who registered, when each was last heard from, and stopping one."""

from __future__ import annotations

from collections.abc import Sequence

from scaffold.hub.core.lifecycle import Decide
from scaffold.hub.core.types import Spent, Worker
from scaffold.hub.store.sqlite.connection import TASK_COLUMNS, Connection, _json_list, _task, _worker
from scaffold.hub.store.sqlite.usage import roll


class WorkerStore(Connection):
    def register_worker(self, session_id: str, role: str, capabilities: Sequence[str], now: float) -> Worker:
        with self._write() as db:
            row = db.execute(
                "INSERT INTO workers (session_id, role, capabilities, registered_at, last_seen, "
                "idle_since) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET role = excluded.role, "
                "capabilities = excluded.capabilities, last_seen = excluded.last_seen, "
                "stopped_at = NULL RETURNING id",
                (session_id, role, _json_list(sorted(set(capabilities))), now, now, now),
            ).fetchone()
            self._event(db, "worker.registered", now, worker_id=row[0], role=role)
            # The session's requests that arrived before it registered are its worker's, between
            # tasks (it could hold none yet): they move off the coordinator's line.
            moved = db.execute(
                "UPDATE usage SET worker_id = ? WHERE session_id = ? AND worker_id IS NULL "
                "RETURNING day, model, input_tokens, output_tokens, cache_read_tokens, "
                "cache_creation_tokens, cost_micros",
                (row[0], session_id),
            ).fetchall()
            for day, model, *numbers in moved:
                spent = Spent(1, *numbers)
                roll(db, day, None, None, model, spent, -1)
                roll(db, day, row[0], None, model, spent)
            return self._worker_by_id(db, int(row[0]))

    def get_worker(self, worker_id: int) -> Worker:
        with self._read() as db:
            return self._worker_by_id(db, worker_id)

    def find_worker_by_session(self, session_id: str) -> Worker | None:
        with self._read() as db:
            row = db.execute(f"{self._WORKER_SELECT} WHERE w.session_id = ?", (session_id,)).fetchone()
        return None if row is None else _worker(row)

    def list_workers(self) -> list[Worker]:
        with self._read() as db:
            return [_worker(row) for row in db.execute(f"{self._WORKER_SELECT} ORDER BY w.id")]

    def touch_worker(self, worker_id: int, now: float) -> Worker:
        with self._write() as db:
            self._worker_by_id(db, worker_id)
            db.execute("UPDATE workers SET last_seen = ? WHERE id = ?", (now, worker_id))
            return self._worker_by_id(db, worker_id)

    def stop_worker(self, worker_id: int, now: float, decide: Decide) -> Worker:
        with self._write() as db:
            if self._worker_by_id(db, worker_id).stopped_at is not None:
                return self._worker_by_id(db, worker_id)  # stopping twice changes nothing
            held = db.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE worker_id = ? AND state = 'claimed' ORDER BY id",
                (worker_id,),
            ).fetchall()
            for task in map(_task, held):
                change = decide(task)
                if change is not None:
                    self._apply(db, task.id, change, now)
            db.execute(
                "UPDATE workers SET stopped_at = ?, last_seen = ? WHERE id = ?",
                (now, now, worker_id),
            )
            self._end_reservations(db, "r.worker_id = ?", (worker_id,), now, "its worker stopped")
            self._event(db, "worker.stopped", now, worker_id=worker_id)
            return self._worker_by_id(db, worker_id)
