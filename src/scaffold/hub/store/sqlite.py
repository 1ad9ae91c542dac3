"""The embedded store: one SQLite file in WAL mode, one writer.

Each state change is one `BEGIN IMMEDIATE` transaction that also appends its events, so the
event log and the tables never disagree, and a hub killed at any instant restarts on a
consistent database. `synchronous=NORMAL` in WAL loses no committed transaction when the
process dies (only, at worst, the last ones on a power cut).
"""

from __future__ import annotations

import hmac
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from scaffold.hub.errors import (
    Conflict,
    HubError,
    InvalidRequest,
    LeaseConflict,
    NotFound,
    Reserved,
    StoreClosed,
)
from scaffold.hub.globs import overlap
from scaffold.hub.store.base import ClaimRequest, Store, TaskFilter
from scaffold.hub.store.migrations import MIGRATIONS
from scaffold.hub.types import (
    TASK_STATES,
    ApiKey,
    Event,
    Message,
    NewTask,
    Plan,
    Reservation,
    Role,
    Task,
    TaskState,
    Worker,
)

DB_FILE = "hub.sqlite3"

TASK_COLUMNS = (
    "id, title, instructions, priority, state, depends_on, required_capabilities, attempts, "
    "max_attempts, worker_id, lease_token, lease_expires_at, result, error, created_at, "
    "updated_at, claimed_at, finished_at, commit_sha"
)

# One statement picks and takes the task, so two claimers can never get the same one.
_CLAIM = f"""
UPDATE tasks
   SET state = 'claimed', worker_id = :worker, lease_token = :token,
       lease_expires_at = :until, claimed_at = :now, updated_at = :now
 WHERE id = (
       SELECT id FROM tasks INDEXED BY tasks_ready
        WHERE state = 'ready'
          AND (required_capabilities = '[]' OR NOT EXISTS (
                SELECT 1 FROM json_each(tasks.required_capabilities) AS need
                 WHERE need.value NOT IN (SELECT value FROM json_each(:caps))))
        ORDER BY priority DESC, id
        LIMIT 1)
RETURNING {TASK_COLUMNS}
"""


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


class SQLiteStore(Store):
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

    @classmethod
    def in_dir(cls, data_dir: Path) -> SQLiteStore:
        return cls(data_dir / DB_FILE)

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
            (now, event_type, task_id, worker_id, actor, json.dumps(data, separators=(",", ":"))),
        )
        event = Event(int(cursor.lastrowid or 0), now, event_type, task_id, worker_id, actor, dict(data))
        self._appended.append(event)
        return event

    # -- keys -----------------------------------------------------------------------------

    def add_key(self, name: str, role: Role, sha256: str, source: str, now: float) -> ApiKey:
        with self._write() as db:
            existing = db.execute("SELECT revoked_at FROM keys WHERE name = ?", (name,)).fetchone()
            if existing is not None and existing["revoked_at"] is None:
                raise Conflict(f"a key named {name!r} exists; revoke it first or choose another name")
            if db.execute("SELECT 1 FROM keys WHERE sha256 = ?", (sha256,)).fetchone():
                raise Conflict("that key is already registered under another name")
            db.execute("DELETE FROM keys WHERE name = ?", (name,))
            db.execute(
                "INSERT INTO keys (name, role, sha256, source, created_at) VALUES (?, ?, ?, ?, ?)",
                (name, role, sha256, source, now),
            )
            self._event(db, "key.added", now, name=name, role=role, source=source)
        return ApiKey(name, role, sha256, source, now)

    def sync_config_keys(self, keys: Sequence[tuple[str, Role, str]], now: float) -> None:
        with self._write() as db:
            for name, role, sha256 in keys:
                row = db.execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
                if row is not None and row["source"] != "config":
                    raise Conflict(
                        f"hub.toml names key {name!r}, which was added with `scaffold hub keys add`; "
                        "rename one of them"
                    )
                if row is not None and row["sha256"] == sha256:
                    if row["role"] != role and row["revoked_at"] is None:
                        db.execute("UPDATE keys SET role = ? WHERE name = ?", (role, name))
                        self._event(db, "key.changed", now, name=name, role=role)
                    continue  # unchanged, or revoked: a revoked hash never comes back
                clash = db.execute(
                    "SELECT name FROM keys WHERE sha256 = ? AND name != ?", (sha256, name)
                ).fetchone()
                if clash is not None:
                    raise Conflict(f"hub.toml key {name!r} has the same hash as key {clash[0]!r}")
                # A new key, or a new hash for the name (a rotation, even of a revoked key).
                db.execute("DELETE FROM keys WHERE name = ?", (name,))
                db.execute(
                    "INSERT INTO keys (name, role, sha256, source, created_at) VALUES (?, ?, ?, 'config', ?)",
                    (name, role, sha256, now),
                )
                self._event(db, "key.added", now, name=name, role=role, source="config")
            # A key taken out of hub.toml stops working.
            names = [name for name, _, _ in keys]
            removed = db.execute(
                f"UPDATE keys SET revoked_at = ? WHERE source = 'config' AND revoked_at IS NULL "
                f"AND name NOT IN ({','.join('?' * len(names))}) RETURNING name",
                (now, *names),
            ).fetchall()
            for (name,) in removed:
                self._event(db, "key.revoked", now, name=name)

    def find_key(self, sha256: str) -> ApiKey | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM keys WHERE sha256 = ? AND revoked_at IS NULL", (sha256,)
            ).fetchone()
        # The lookup is by digest; comparing it again in constant time costs nothing.
        if row is None or not hmac.compare_digest(row["sha256"].encode(), sha256.encode()):
            return None
        return _key(row)

    def list_keys(self) -> list[ApiKey]:
        with self._read() as db:
            return [_key(row) for row in db.execute("SELECT * FROM keys ORDER BY created_at, name")]

    def revoke_key(self, name: str, now: float) -> ApiKey:
        with self._write() as db:
            row = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING *",
                (now, name),
            ).fetchone()
            if row is None:
                raise NotFound(f"no active key named {name!r}")
            self._event(db, "key.revoked", now, name=name)
        return _key(row)

    # -- plan -----------------------------------------------------------------------------

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

    # -- tasks ----------------------------------------------------------------------------

    def create_tasks(
        self,
        tasks: Sequence[NewTask],
        default_max_attempts: int,
        actor: str,
        now: float,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[list[Task], bool]:
        with self._write() as db:
            if idempotency is not None:
                key, request_hash = idempotency
                row = db.execute(
                    "SELECT request_hash, task_ids FROM idempotency WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    if row["request_hash"] != request_hash:
                        raise Conflict(f"idempotency key {key!r} was used for a different request")
                    first = json.loads(row["task_ids"])
                    return [self._task_by_id(db, task_id) for task_id in first], False
            refs = {task.ref: index for index, task in enumerate(tasks) if task.ref is not None}
            existing = self._dependency_states(db, tasks)
            ids: list[int] = []
            for task in tasks:
                cursor = db.execute(
                    "INSERT INTO tasks (title, instructions, priority, state, depends_on, "
                    "required_capabilities, unmet, max_attempts, created_at, updated_at) "
                    "VALUES (?, ?, ?, 'blocked', '[]', ?, 0, ?, ?, ?)",
                    (
                        task.title,
                        task.instructions,
                        task.priority,
                        _json_list(sorted(set(task.required_capabilities))),
                        task.max_attempts or default_max_attempts,
                        now,
                        now,
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
            # Sets and one sorted executemany: a batch's edges cost O(E log E), not O(E x tasks).
            new_ids = set(ids)
            edges: list[tuple[int, int]] = []
            for index, task in enumerate(tasks):
                deps = sorted({ids[refs[d]] if isinstance(d, str) else d for d in task.depends_on})
                unmet = sum(1 for d in deps if d in new_ids or existing.get(d) != "done")
                edges.extend((dep, ids[index]) for dep in deps)
                state = "ready" if unmet == 0 else "blocked"
                db.execute(
                    "UPDATE tasks SET depends_on = ?, unmet = ?, state = ? WHERE id = ?",
                    (_json_list(deps), unmet, state, ids[index]),
                )
                self._event(db, "task.created", now, task_id=ids[index], actor=actor, state=state)
            edges.sort()  # in primary-key order: each insert lands next to the previous one
            db.executemany("INSERT INTO task_deps (depends_on, task_id) VALUES (?, ?)", edges)
            if idempotency is not None:
                db.execute(
                    "INSERT INTO idempotency (key, request_hash, task_ids, created_at) VALUES (?, ?, ?, ?)",
                    (idempotency[0], idempotency[1], _json_list(ids), now),
                )
            return self._tasks_by_ids(db, ids), True

    def _dependency_states(self, db: sqlite3.Connection, tasks: Sequence[NewTask]) -> dict[int, str]:
        """States of the existing tasks the batch depends on; unknown or hopeless ones refused."""
        wanted = sorted({d for task in tasks for d in task.depends_on if isinstance(d, int)})
        states: dict[int, str] = {}
        for chunk in range(0, len(wanted), 500):
            part = wanted[chunk : chunk + 500]
            marks = ",".join("?" * len(part))
            for row in db.execute(f"SELECT id, state FROM tasks WHERE id IN ({marks})", part):
                states[row[0]] = row[1]
        for number, task in enumerate(tasks, start=1):
            for dep in task.depends_on:
                if isinstance(dep, int) and dep not in states:
                    raise InvalidRequest(f"task {number} depends on task {dep}, which does not exist")
                if isinstance(dep, int) and states[dep] in ("dead", "cancelled"):
                    raise InvalidRequest(
                        f"task {number} depends on task {dep}, which is {states[dep]} and can never finish"
                    )
        return states

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

    def get_task(self, task_id: int) -> Task:
        with self._read() as db:
            return self._task_by_id(db, task_id)

    def list_tasks(self, task_filter: TaskFilter) -> list[Task]:
        clauses, params = ["id > ?"], list[object]([task_filter.after_id])
        if task_filter.states:
            clauses.append(f"state IN ({','.join('?' * len(task_filter.states))})")
            params.extend(task_filter.states)
        if task_filter.worker_id is not None:
            clauses.append("worker_id = ?")
            params.append(task_filter.worker_id)
        params.append(task_filter.limit)
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?"
        with self._read() as db:
            return [_task(row) for row in db.execute(sql, params)]

    def count_tasks(self) -> dict[TaskState, int]:
        counts: dict[TaskState, int] = dict.fromkeys(TASK_STATES, 0)
        with self._read() as db:
            for state, count in db.execute("SELECT state, count(*) FROM tasks GROUP BY state"):
                counts[state] = count
        return counts

    def stuck_tasks(self) -> list[int]:
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT d.task_id FROM task_deps d "
                "JOIN tasks dep ON dep.id = d.depends_on AND dep.state IN ('dead', 'cancelled') "
                "JOIN tasks t ON t.id = d.task_id AND t.state = 'blocked' ORDER BY d.task_id"
            ).fetchall()
        return [row[0] for row in rows]

    def ready_requirements(self) -> list[tuple[int, tuple[str, ...]]]:
        # The partial index of ready tasks keeps this cheap; instructions are never read.
        with self._read() as db:
            rows = db.execute(
                "SELECT id, required_capabilities FROM tasks INDEXED BY tasks_ready "
                "WHERE state = 'ready' AND required_capabilities != '[]' ORDER BY id"
            ).fetchall()
        return [(row[0], tuple(json.loads(row[1]))) for row in rows]

    def claim(
        self,
        worker_id: int,
        capabilities: Sequence[str],
        token: str,
        lease_until: float,
        now: float,
    ) -> Task | None:
        with self._write() as db:
            return self._claim_in(db, worker_id, capabilities, token, lease_until, now)

    def claim_batch(
        self, requests: Sequence[ClaimRequest], lease_until: float, now: float
    ) -> list[Task | HubError | None]:
        # One transaction for the claims that arrive together: the commit and its WAL pages
        # are paid once for all of them.
        results: list[Task | HubError | None] = []
        with self._write() as db:
            for request in requests:
                worker = db.execute(
                    "SELECT capabilities, stopped_at FROM workers WHERE id = ?", (request.worker_id,)
                ).fetchone()
                if worker is None:
                    results.append(NotFound(f"no worker {request.worker_id}"))
                    continue
                if worker["stopped_at"] is not None:
                    results.append(
                        Conflict(f"worker {request.worker_id} is stopped; register again to take tasks")
                    )
                    continue
                caps = json.loads(worker["capabilities"])
                if request.capabilities is not None:
                    caps = [tag for tag in caps if tag in set(request.capabilities)]
                results.append(self._claim_in(db, request.worker_id, caps, request.token, lease_until, now))
        return results

    def _claim_in(
        self,
        db: sqlite3.Connection,
        worker_id: int,
        capabilities: Sequence[str],
        token: str,
        lease_until: float,
        now: float,
    ) -> Task | None:
        row = db.execute(
            _CLAIM,
            {"worker": worker_id, "token": token, "until": lease_until, "now": now,
             "caps": _json_list(capabilities)},
        ).fetchone()  # fmt: skip
        if row is None:
            return None
        db.execute("UPDATE workers SET last_seen = ?, idle_since = ? WHERE id = ?", (now, now, worker_id))
        self._event(db, "task.claimed", now, task_id=row["id"], worker_id=worker_id)
        return _task(row)

    def _leased(self, db: sqlite3.Connection, task_id: int, token: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        if row["state"] != "claimed" or not _same_token(row["lease_token"], token):
            raise LeaseConflict(
                f"task {task_id} is {row['state']} and this lease token is not its current lease; "
                "stop working on it"
            )
        return row

    def heartbeat(self, task_id: int, token: str, lease_until: float, now: float) -> Task:
        with self._write() as db:
            row = self._leased(db, task_id, token)
            db.execute(
                "UPDATE tasks SET lease_expires_at = ?, updated_at = ? WHERE id = ?",
                (lease_until, now, task_id),
            )
            db.execute("UPDATE workers SET last_seen = ? WHERE id = ?", (now, row["worker_id"]))
            return self._task_by_id(db, task_id)

    def complete(self, task_id: int, token: str, result: str, now: float) -> tuple[Task, bool]:
        with self._write() as db:
            row = db.execute("SELECT state, lease_token FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is not None and row["state"] == "done" and _same_token(row["lease_token"], token):
                return self._task_by_id(db, task_id), False
            leased = self._leased(db, task_id, token)
            db.execute(
                "UPDATE tasks SET state = 'done', result = ?, lease_expires_at = NULL, "
                "finished_at = ?, updated_at = ? WHERE id = ?",
                (result, now, now, task_id),
            )
            self._event(db, "task.completed", now, task_id=task_id, worker_id=leased["worker_id"])
            self._end_reservations(db, "r.task_id = ?", (task_id,), now, "its task was completed")
            self._unblock_dependents(db, task_id, now)
            self._worker_finished(db, leased["worker_id"], now)
            return self._task_by_id(db, task_id), True

    def _unblock_dependents(self, db: sqlite3.Connection, task_id: int, now: float) -> None:
        db.execute(
            "UPDATE tasks SET unmet = unmet - 1 "
            "WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = ?)",
            (task_id,),
        )
        ready = db.execute(
            "UPDATE tasks SET state = 'ready', updated_at = ? WHERE state = 'blocked' AND unmet = 0 "
            "AND id IN (SELECT task_id FROM task_deps WHERE depends_on = ?) RETURNING id",
            (now, task_id),
        ).fetchall()
        for (ready_id,) in ready:
            self._event(db, "task.ready", now, task_id=ready_id, after=task_id)

    def _worker_finished(self, db: sqlite3.Connection, worker_id: int | None, now: float) -> None:
        if worker_id is not None:
            db.execute(
                "UPDATE workers SET last_seen = ?, idle_since = ? WHERE id = ?",
                (now, now, worker_id),
            )

    def fail(self, task_id: int, token: str, error: str, now: float) -> Task:
        with self._write() as db:
            leased = self._leased(db, task_id, token)
            state = self._retry_or_bury(db, task_id, error, now)
            self._event(db, "task.failed", now, task_id=task_id, worker_id=leased["worker_id"], state=state)
            self._end_reservations(db, "r.task_id = ?", (task_id,), now, "its task failed")
            self._worker_finished(db, leased["worker_id"], now)
            return self._task_by_id(db, task_id)

    def _retry_or_bury(self, db: sqlite3.Connection, task_id: int, error: str, now: float) -> str:
        row = db.execute(
            "UPDATE tasks SET attempts = attempts + 1, error = ?, worker_id = NULL, "
            "lease_token = NULL, lease_expires_at = NULL, updated_at = ?, "
            "state = CASE WHEN attempts + 1 >= max_attempts THEN 'dead' ELSE 'ready' END, "
            "finished_at = CASE WHEN attempts + 1 >= max_attempts THEN ? END "
            "WHERE id = ? RETURNING state",
            (error, now, now, task_id),
        ).fetchone()
        return str(row[0])

    def release(self, task_id: int, token: str, now: float) -> Task:
        with self._write() as db:
            leased = self._leased(db, task_id, token)
            self._requeue(db, task_id, now)
            self._event(db, "task.released", now, task_id=task_id, worker_id=leased["worker_id"])
            self._end_reservations(db, "r.task_id = ?", (task_id,), now, "its task was released")
            self._worker_finished(db, leased["worker_id"], now)
            return self._task_by_id(db, task_id)

    def _requeue(self, db: sqlite3.Connection, task_id: int, now: float) -> None:
        db.execute(
            "UPDATE tasks SET state = 'ready', worker_id = NULL, lease_token = NULL, "
            "lease_expires_at = NULL, updated_at = ? WHERE id = ?",
            (now, task_id),
        )

    def cancel(self, task_id: int, actor: str, now: float) -> Task:
        with self._write() as db:
            task = self._task_by_id(db, task_id)
            if task.state in ("done", "dead", "cancelled"):
                raise Conflict(f"task {task_id} is already {task.state}")
            db.execute(
                "UPDATE tasks SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL, "
                "finished_at = ?, updated_at = ? WHERE id = ?",
                (now, now, task_id),
            )
            self._event(db, "task.cancelled", now, task_id=task_id, worker_id=task.worker_id, actor=actor)
            self._end_reservations(db, "r.task_id = ?", (task_id,), now, "its task was cancelled")
            self._worker_finished(db, task.worker_id, now)
            return self._task_by_id(db, task_id)

    def reap(self, now: float) -> list[Task]:
        # Runs every second: a read through the two expiry indexes first, so a pass with nothing
        # to reap takes no write lock and commits nothing.
        with self._read() as db:
            due = db.execute(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'claimed' AND lease_expires_at < ?) "
                "OR EXISTS (SELECT 1 FROM reservations WHERE expires_at <= ?)",
                (now, now),
            ).fetchone()[0]
        if not due:
            return []
        with self._write() as db:
            expired = db.execute(
                "SELECT id, worker_id FROM tasks WHERE state = 'claimed' AND lease_expires_at < ?",
                (now,),
            ).fetchall()
            for task_id, worker_id in expired:
                state = self._retry_or_bury(db, task_id, "lease expired", now)
                self._event(db, "task.expired", now, task_id=task_id, worker_id=worker_id, state=state)
                self._end_reservations(db, "r.task_id = ?", (task_id,), now, "its task's lease expired")
                # Idle from now on, but not seen: a lost worker must still look lost.
                db.execute("UPDATE workers SET idle_since = ? WHERE id = ?", (now, worker_id))
            gone = db.execute(
                "DELETE FROM reservations WHERE expires_at <= ? RETURNING id, worker_id, task_id", (now,)
            ).fetchall()
            for reservation_id, worker_id, task_id in gone:
                self._event(db, "reservation.expired", now, task_id=task_id, worker_id=worker_id,
                            id=reservation_id)  # fmt: skip
            return [self._task_by_id(db, task_id) for task_id, _ in expired]

    def set_commit(self, task_id: int, commit: str) -> None:
        with self._write() as db:
            db.execute("UPDATE tasks SET commit_sha = ? WHERE id = ?", (commit, task_id))

    # -- workers --------------------------------------------------------------------------

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
            return self._worker_by_id(db, int(row[0]))

    _WORKER_SELECT = (
        "SELECT w.*, (SELECT id FROM tasks t WHERE t.worker_id = w.id AND t.state = 'claimed' "
        "ORDER BY t.claimed_at DESC LIMIT 1) AS current_task FROM workers w"
    )

    def _worker_by_id(self, db: sqlite3.Connection, worker_id: int) -> Worker:
        row = db.execute(f"{self._WORKER_SELECT} WHERE w.id = ?", (worker_id,)).fetchone()
        if row is None:
            raise NotFound(f"no worker {worker_id}")
        return _worker(row)

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

    def stop_worker(self, worker_id: int, now: float) -> Worker:
        with self._write() as db:
            if self._worker_by_id(db, worker_id).stopped_at is not None:
                return self._worker_by_id(db, worker_id)  # stopping twice changes nothing
            held = db.execute(
                "SELECT id FROM tasks WHERE worker_id = ? AND state = 'claimed'", (worker_id,)
            ).fetchall()
            for (task_id,) in held:
                self._requeue(db, task_id, now)
                self._event(db, "task.released", now, task_id=task_id, worker_id=worker_id)
            db.execute(
                "UPDATE workers SET stopped_at = ?, last_seen = ? WHERE id = ?",
                (now, now, worker_id),
            )
            self._end_reservations(db, "r.worker_id = ?", (worker_id,), now, "its worker stopped")
            self._event(db, "worker.stopped", now, worker_id=worker_id)
            return self._worker_by_id(db, worker_id)

    # -- reservations ---------------------------------------------------------------------

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
            self._event(db, "reservation.released", now, task_id=reservation.task_id,
                        worker_id=reservation.worker_id, id=reservation.id, reason=reason)  # fmt: skip
        return ended

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
                    self._event(db, "reservation.renewed", now, task_id=task_id, worker_id=worker_id,
                                id=row[0], expires_at=expires_at)  # fmt: skip
                    ids.append(int(row[0]))
                    continue
                cursor = db.execute(
                    "INSERT INTO reservations (worker_id, pattern, exclusive, task_id, created_at, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (worker_id, pattern, int(exclusive), task_id, now, expires_at),
                )
                ids.append(int(cursor.lastrowid or 0))
                self._event(db, "reservation.created", now, task_id=task_id, worker_id=worker_id, id=ids[-1],
                            pattern=pattern, exclusive=exclusive, expires_at=expires_at)  # fmt: skip
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
            self._event(db, "reservation.renewed", now, task_id=held.task_id, worker_id=worker_id,
                        id=reservation_id, expires_at=expires_at)  # fmt: skip
            return self._reservation_by_id(db, reservation_id)

    def release_reservation(self, reservation_id: int, worker_id: int, now: float) -> Reservation:
        with self._write() as db:
            self._held(db, reservation_id, worker_id, now)
            (ended,) = self._end_reservations(db, "r.id = ?", (reservation_id,), now, "released")
            return ended

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

    def append_event(self, event_type: str, now: float, actor: str | None = None, **data: object) -> Event:
        with self._write() as db:
            return self._event(db, event_type, now, actor=actor, data=data)

    def events_after(self, after_id: int, limit: int) -> list[Event]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            ).fetchall()
        return [
            Event(
                r["id"],
                r["at"],
                r["type"],
                r["task_id"],
                r["worker_id"],
                r["actor"],
                json.loads(r["data"]),
            )
            for r in rows
        ]

    def last_event_id(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])


def _same_token(stored: str | None, presented: str) -> bool:
    """Constant-time comparison; as bytes, so any text a client sends compares (unequal)."""
    return stored is not None and hmac.compare_digest(stored.encode(), presented.encode())


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (no semicolons appear inside them)."""
    for part in script.split(";"):
        lines = [line for line in part.splitlines() if not line.strip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            yield statement


def _json_list(values: Sequence[Any]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        row["name"], row["role"], row["sha256"], row["source"], row["created_at"], row["revoked_at"]
    )


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
