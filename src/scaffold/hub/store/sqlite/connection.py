"""The embedded store's plumbing: one SQLite file in WAL mode, one writer, and the rows as types.

Each state change is one `BEGIN IMMEDIATE` transaction that also appends its events, so the
event log and the tables never disagree, and a hub killed at any instant restarts on a
consistent database. `synchronous=NORMAL` in WAL loses no committed transaction when the
process dies (only, at worst, the last ones on a power cut). The domains (tasks, workers,
reservations, keys, the shared record) are mixins over `Connection`, composed in `SQLiteStore`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from scaffold.errors import HubError, NotFound, StoreClosed
from scaffold.hub.core.lifecycle import Transition
from scaffold.hub.core.types import Event, Reservation, Task, Worker
from scaffold.hub.store.base import Store
from scaffold.hub.store.migrations import MIGRATIONS

DB_FILE = "hub.sqlite3"

TASK_COLUMNS = (
    "id, title, instructions, priority, state, depends_on, required_capabilities, attempts, "
    "max_attempts, worker_id, lease_token, lease_expires_at, result, error, created_at, "
    "updated_at, claimed_at, finished_at, commit_sha"
)


class _Checkpointer:
    """Checkpoints the WAL from a background thread, off the request path.

    A PASSIVE checkpoint never waits for the writer or readers; sqlite3 releases the GIL while it
    copies and fsyncs, so the event loop keeps serving."""

    INTERVAL = 0.25
    MIN_WAL_BYTES = 1 << 20

    def __init__(self, path: Path) -> None:
        self._wal = path.with_name(path.name + "-wal")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.INTERVAL):
            try:
                if self._wal.stat().st_size >= self.MIN_WAL_BYTES:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except (OSError, sqlite3.Error):
                continue  # the next round retries; the WAL only grows meanwhile

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._db.close()


class Connection(Store):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        # Checkpoints copy the WAL into the database and fsync: tens of ms on a slow disk. Left to
        # SQLite they run inside whichever commit crosses the threshold, stalling every request
        # queued behind it, so a thread with its own connection does them instead.
        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        self.on_commit: list[Callable[[], None]] = []
        self.on_events: list[Callable[[Sequence[Event]], None]] = []
        """Called with the events of each commit that appended some, in commit order."""
        self._appended: list[Event] = []
        self._migrate()
        self._checkpointer = _Checkpointer(self.path)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreClosed("the hub is shutting down")
        return self._db

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            self._conn.close()
            self._db = None
            raise HubError(
                f"{self.path} was written by a newer hub (schema {version}, this hub knows "
                f"{len(MIGRATIONS)}); upgrade vps-agent-scaffold"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._write() as db:
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            self._appended = []
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            appended, self._appended = self._appended, []
            # Still under the lock, so listeners hear the events of concurrent commits in id order.
            if appended:
                for event_listener in self.on_events:
                    event_listener(appended)
        for listener in self.on_commit:
            listener()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    def close(self) -> None:
        self._checkpointer.stop()
        with self._lock:
            if self._db is not None:
                with suppress(sqlite3.Error):  # best effort; the WAL is replayed on next open
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None

    def _event(
        self,
        db: sqlite3.Connection,
        event_type: str,
        now: float,
        *,
        task_id: int | None = None,
        worker_id: int | None = None,
        actor: str | None = None,
        data: dict[str, object] | None = None,
        **fields: object,
    ) -> Event:
        data = {**(data or {}), **fields}
        cursor = db.execute(
            "INSERT INTO events (at, type, task_id, worker_id, actor, data) VALUES (?, ?, ?, ?, ?, ?)",
            (now, event_type, task_id, worker_id, actor, _COMPACT.encode(data)),
        )
        event = Event(int(cursor.lastrowid or 0), now, event_type, task_id, worker_id, actor, dict(data))
        self._appended.append(event)
        return event

    # -- rows every domain reads ------------------------------------------------------------

    def _tasks_by_ids(self, db: sqlite3.Connection, ids: Sequence[int]) -> list[Task]:
        """The tasks, in the order of `ids`, read 500 at a time (SQLite's limit on parameters)."""
        rows: dict[int, Task] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            query = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({','.join('?' * len(part))})"
            rows.update((task.id, task) for task in map(_task, db.execute(query, part)))
        return [rows[task_id] for task_id in ids]

    def _task_by_id(self, db: sqlite3.Connection, task_id: int) -> Task:
        row = db.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return _task(row)

    _WORKER_SELECT = (
        "SELECT w.*, (SELECT id FROM tasks t WHERE t.worker_id = w.id AND t.state = 'claimed' "
        "ORDER BY t.claimed_at DESC LIMIT 1) AS current_task FROM workers w"
    )

    def _worker_by_id(self, db: sqlite3.Connection, worker_id: int) -> Worker:
        row = db.execute(f"{self._WORKER_SELECT} WHERE w.id = ?", (worker_id,)).fetchone()
        if row is None:
            raise NotFound(f"no worker {worker_id}")
        return _worker(row)

    _RESERVATION_SELECT = (
        "SELECT r.id, r.worker_id, w.role, r.pattern, r.exclusive, r.task_id, r.created_at, "
        "r.expires_at FROM reservations r JOIN workers w ON w.id = r.worker_id"
    )

    def _reservations(
        self, db: sqlite3.Connection, now: float, where: str = "1", params: Sequence[object] = ()
    ) -> list[Reservation]:
        rows = db.execute(
            f"{self._RESERVATION_SELECT} WHERE r.expires_at > ? AND ({where}) ORDER BY r.id", (now, *params)
        )
        return [_reservation(row) for row in rows]

    def _end_reservations(
        self, db: sqlite3.Connection, where: str, params: Sequence[object], now: float, reason: str
    ) -> list[Reservation]:
        """Delete the reservations matching `where` (active or not yet reaped), with an event each."""
        rows = db.execute(f"{self._RESERVATION_SELECT} WHERE {where} ORDER BY r.id", params).fetchall()
        ended = [_reservation(row) for row in rows]
        for reservation in ended:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))
            self._event(
                db,
                "reservation.released",
                now,
                task_id=reservation.task_id,
                worker_id=reservation.worker_id,
                id=reservation.id,
                reason=reason,
            )
        return ended

    # -- applying a decided transition ------------------------------------------------------

    def _apply(self, db: sqlite3.Connection, task_id: int, change: Transition, now: float) -> None:
        """Write a transition the lifecycle decided: its fields, then its effects."""
        sets = ", ".join(f"{_COLUMN[name]} = ?" for name in change.changes)
        db.execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*change.changes.values(), task_id))
        self._effects(db, task_id, change, now)

    def _effects(self, db: sqlite3.Connection, task_id: int, change: Transition, now: float) -> None:
        """Everything but the task's own fields, in the order `Transition` documents."""
        if change.event is not None:
            new = change.event
            self._event(
                db,
                new.type,
                now,
                task_id=task_id,
                worker_id=new.worker_id,
                actor=new.actor,
                data=dict(new.data),
            )
        if change.end_reservations is not None:
            self._end_reservations(db, "r.task_id = ?", (task_id,), now, change.end_reservations)
        if change.dependents is not None:
            # The stored count of unfinished dependencies keeps readiness a lookup, not a scan.
            db.execute(
                "UPDATE tasks SET unmet = unmet - 1 "
                "WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = ?)",
                (task_id,),
            )
            rows = db.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE unmet = 0 "
                "AND id IN (SELECT task_id FROM task_deps WHERE depends_on = ?) ORDER BY id",
                (task_id,),
            ).fetchall()
            for dependent in map(_task, rows):
                decided = change.dependents(dependent)
                if decided is not None:
                    self._apply(db, dependent.id, decided, now)
        if change.worker is not None and (change.seen or change.idle):
            db.execute(_WORKER_MARKS[change.seen, change.idle], {"id": change.worker, "now": now})


_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""json.dumps(..., separators=...) builds an encoder per call; a claim writes JSON twice."""

_COLUMN = {name: name for name in TASK_COLUMNS.split(", ")[1:-1]} | {"commit": "commit_sha"}
"""Task field -> its column: the fields a transition may set."""

_WORKER_MARKS = {
    (True, True): "UPDATE workers SET last_seen = :now, idle_since = :now WHERE id = :id",
    (True, False): "UPDATE workers SET last_seen = :now WHERE id = :id",
    (False, True): "UPDATE workers SET idle_since = :now WHERE id = :id",
}


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (no semicolons appear inside them)."""
    for part in script.split(";"):
        lines = [line for line in part.splitlines() if not line.strip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            yield statement


def _json_list(values: Sequence[Any]) -> str:
    return _COMPACT.encode(list(values))


def _task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        title=row["title"],
        instructions=row["instructions"],
        priority=row["priority"],
        state=row["state"],
        depends_on=tuple(json.loads(row["depends_on"])),
        required_capabilities=tuple(json.loads(row["required_capabilities"])),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        worker_id=row["worker_id"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        result=row["result"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        claimed_at=row["claimed_at"],
        finished_at=row["finished_at"],
        commit=row["commit_sha"],
    )


def _reservation(row: sqlite3.Row) -> Reservation:
    return Reservation(
        id=row["id"],
        worker_id=row["worker_id"],
        role=row["role"],
        pattern=row["pattern"],
        exclusive=bool(row["exclusive"]),
        task_id=row["task_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def _worker(row: sqlite3.Row) -> Worker:
    return Worker(
        id=row["id"],
        session_id=row["session_id"],
        role=row["role"],
        capabilities=tuple(json.loads(row["capabilities"])),
        registered_at=row["registered_at"],
        last_seen=row["last_seen"],
        idle_since=row["idle_since"],
        stopped_at=row["stopped_at"],
        current_task=row["current_task"],
    )
