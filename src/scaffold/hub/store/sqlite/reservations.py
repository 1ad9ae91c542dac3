"""Reservations in SQLite: the path globs a worker holds, exclusive or shared, until they expire."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from scaffold.errors import Conflict, NotFound, Reserved
from scaffold.hub.core.globs import overlap
from scaffold.hub.core.types import Reservation
from scaffold.hub.store.sqlite.connection import Connection, _reservation


class ReservationStore(Connection):
    def reserve(
        self,
        worker_id: int,
        patterns: Sequence[str],
        exclusive: bool,
        task_id: int | None,
        expires_at: float,
        now: float,
    ) -> list[Reservation]:
        with self._write() as db:
            if self._worker_by_id(db, worker_id).stopped_at is not None:
                raise Conflict(f"worker {worker_id} is stopped; register again to reserve paths")
            if task_id is not None:
                task = self._task_by_id(db, task_id)
                if task.state != "claimed" or task.worker_id != worker_id:
                    raise Conflict(
                        f"task {task_id} is not claimed by worker {worker_id}; reserve for a task it holds"
                    )
            if exclusive:
                others = self._reservations(db, now, "r.exclusive = 1 AND r.worker_id != ?", (worker_id,))
                for held in others:
                    for pattern in patterns:
                        if overlap(held.pattern, pattern):
                            raise Reserved(f"{pattern!r} overlaps a reservation: {held.holder(now)}")
            ids: list[int] = []
            for pattern in dict.fromkeys(patterns):
                row = db.execute(
                    "SELECT id FROM reservations WHERE worker_id = ? AND pattern = ? AND expires_at > ?",
                    (worker_id, pattern, now),
                ).fetchone()
                if row is not None:
                    db.execute(
                        "UPDATE reservations SET exclusive = ?, task_id = ?, expires_at = ? WHERE id = ?",
                        (int(exclusive), task_id, expires_at, row[0]),
                    )
                    self._event(
                        db,
                        "reservation.renewed",
                        now,
                        task_id=task_id,
                        worker_id=worker_id,
                        id=row[0],
                        expires_at=expires_at,
                    )
                    ids.append(int(row[0]))
                    continue
                cursor = db.execute(
                    "INSERT INTO reservations (worker_id, pattern, exclusive, task_id, created_at, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (worker_id, pattern, int(exclusive), task_id, now, expires_at),
                )
                ids.append(int(cursor.lastrowid or 0))
                self._event(
                    db,
                    "reservation.created",
                    now,
                    task_id=task_id,
                    worker_id=worker_id,
                    id=ids[-1],
                    pattern=pattern,
                    exclusive=exclusive,
                    expires_at=expires_at,
                )
            return [self._reservation_by_id(db, reservation_id) for reservation_id in ids]

    def _reservation_by_id(self, db: sqlite3.Connection, reservation_id: int) -> Reservation:
        row = db.execute(f"{self._RESERVATION_SELECT} WHERE r.id = ?", (reservation_id,)).fetchone()
        if row is None:
            raise NotFound(f"no reservation {reservation_id}")
        return _reservation(row)

    def _held(self, db: sqlite3.Connection, reservation_id: int, worker_id: int, now: float) -> Reservation:
        """The active reservation, held by this worker."""
        found = self._reservations(db, now, "r.id = ?", (reservation_id,))
        if not found:
            raise NotFound(f"no active reservation {reservation_id} (it ended, or never was)")
        if found[0].worker_id != worker_id:
            raise Conflict(
                f"reservation {reservation_id} is held by worker {found[0].worker_id}, not {worker_id}"
            )
        return found[0]

    def list_reservations(self, now: float, worker_id: int | None = None) -> list[Reservation]:
        with self._read() as db:
            if worker_id is None:
                return self._reservations(db, now)
            return self._reservations(db, now, "r.worker_id = ?", (worker_id,))

    def renew_reservation(
        self, reservation_id: int, worker_id: int, expires_at: float, now: float
    ) -> Reservation:
        with self._write() as db:
            held = self._held(db, reservation_id, worker_id, now)
            db.execute("UPDATE reservations SET expires_at = ? WHERE id = ?", (expires_at, reservation_id))
            self._event(
                db,
                "reservation.renewed",
                now,
                task_id=held.task_id,
                worker_id=worker_id,
                id=reservation_id,
                expires_at=expires_at,
            )
            return self._reservation_by_id(db, reservation_id)

    def release_reservation(self, reservation_id: int, worker_id: int, now: float) -> Reservation:
        with self._write() as db:
            self._held(db, reservation_id, worker_id, now)
            (ended,) = self._end_reservations(db, "r.id = ?", (reservation_id,), now, "released")
            return ended
