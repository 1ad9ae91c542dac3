"""Raw SQLite claims, without the hub: the floor every other number is compared with.

A fresh database gets the hub's schema from SQLiteStore and `count` ready tasks of the bench's
size (a title and ~500 bytes of instructions); then either one bare statement + commit per
claim, or SQLiteStore.claim() itself, runs in a loop bounded in count and time.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from scaffold.hub.core import lifecycle
from scaffold.hub.store.sqlite import TASK_COLUMNS, SQLiteStore

BARE_CLAIM = f"""
UPDATE tasks
   SET state = 'claimed', worker_id = :worker, lease_token = :token,
       lease_expires_at = :until, claimed_at = :now, updated_at = :now
 WHERE id = (SELECT id FROM tasks WHERE state = 'ready' ORDER BY priority DESC, id LIMIT 1)
RETURNING {TASK_COLUMNS}
"""  # noqa: S608 - constant fragments only
FILLER = (
    "Read the module named in the title, write the missing function with its docstring, add a "
    "test next to the existing ones, run the suite, and report what changed and why. Keep the "
    "public interface as it is; if a caller needs more, say so in the result instead of "
    "changing it. Do not touch generated files. "
) * 3


def task_text(number: int) -> tuple[str, str]:
    """(title, instructions) of task `number`: the same size for the hub and the JSON file."""
    prefix = f"Task {number}: "
    return f"bench task {number}", prefix + FILLER[: 500 - len(prefix)]


def raw_database(path: Path, count: int) -> int:
    """A fresh hub database (schema by SQLiteStore) holding `count` ready tasks; a worker id."""
    store = SQLiteStore(path)
    worker = store.register_worker("raw", "bench", ["bench"], time.time())
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    now = time.time()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO tasks (title, instructions, priority, state, depends_on, required_capabilities, "
        "unmet, max_attempts, created_at, updated_at) VALUES (?, ?, 0, 'ready', '[]', '[]', 0, 3, ?, ?)",
        ((*task_text(number), now, now) for number in range(1, count + 1)),
    )
    db.execute("COMMIT")
    db.close()
    return worker.id


@dataclass(frozen=True)
class Rate:
    """A timed run of claims: wall time and the claiming process's CPU time."""

    claims: int
    wall: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.claims / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        """CPU microseconds per claim: what a claim costs, whatever else the machine runs."""
        return self.cpu / self.claims * 1e6 if self.claims else 0.0


def time_statement(path: Path, statement: str, worker: int, seconds: float, limit: int) -> Rate:
    """One bare statement + commit per claim, the way the store runs a write."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    count = 0
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    while count < limit and time.perf_counter() < end:
        now = time.time()
        token = secrets.token_urlsafe(24)
        params = {"worker": worker, "token": token, "until": now + 300.0, "now": now, "caps": '["bench"]'}
        # The store's statement takes the claim rule's values, named after the task's fields.
        params |= lifecycle.claim(worker, ("bench",), token, now + 300.0, now).take.changes
        db.execute("BEGIN IMMEDIATE")
        row = db.execute(statement, params).fetchone()
        db.execute("COMMIT")
        if row is None:
            break
        count += 1
    rate = Rate(count, time.perf_counter() - start, time.process_time() - cpu)
    db.close()
    return rate


def time_store(store: SQLiteStore, worker: int, seconds: float, limit: int) -> Rate:
    count = 0
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    while count < limit and time.perf_counter() < end:
        now = time.time()
        if store.claim(worker, ("bench",), secrets.token_urlsafe(24), now + 300.0, now) is None:
            break
        count += 1
    return Rate(count, time.perf_counter() - start, time.process_time() - cpu)
