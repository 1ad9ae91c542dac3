"""Tasks in SQLite: creating them, reading them, and applying the transitions the lifecycle decides.

No rule of the queue is written here: which state follows which, the lease, the fencing and the
errors all come from `scaffold.hub.core.lifecycle` as `Transition` values. What stays is storage: the
SQL, the transaction, and the claim's pick of the best ready task by its partial index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from functools import cache

from scaffold.errors import Conflict, HubError, InvalidRequest
from scaffold.hub.core.lifecycle import Claimant, ClaimRequest, ClaimTerms, Decide, DecideClaim, claim
from scaffold.hub.core.types import TASK_STATES, NewTask, Task, TaskState
from scaffold.hub.store.base import TaskFilter
from scaffold.hub.store.sqlite.connection import (
    _COLUMN,
    TASK_COLUMNS,
    Connection,
    _json_list,
    _task,
)


@cache
def claim_statement(fields: tuple[str, ...]) -> str:
    """One statement picks and takes the task, so two claimers can never get the same one.

    The task fields it sets, and their values, are the claim rule's (`:field` parameters);
    the pick is the store's: the best ready task, by the `tasks_ready` index, whose required
    capabilities are all in `:caps`."""
    sets = ", ".join(f"{_COLUMN[name]} = :{name}" for name in fields)
    return f"""
UPDATE tasks
   SET {sets}
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


_CLAIM = claim_statement(tuple(claim(0, (), "", 0.0, 0.0).take.changes))
"""The statement for the claim rule's fields (the bench and the query-plan test run it bare)."""


class TaskStore(Connection):
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

    def requirement_counts(self, states: Sequence[TaskState]) -> list[tuple[TaskState, tuple[str, ...], int]]:
        # required_capabilities is stored sorted, so equal sets group together.
        marks = ",".join("?" * len(states))
        with self._read() as db:
            rows = db.execute(
                f"SELECT state, required_capabilities, count(*) FROM tasks WHERE state IN ({marks}) "
                "GROUP BY state, required_capabilities",
                tuple(states),
            ).fetchall()
        return [(row[0], tuple(json.loads(row[1])), row[2]) for row in rows]

    # -- transitions ----------------------------------------------------------------------

    def take(self, terms: ClaimTerms, now: float) -> Task | None:
        with self._write() as db:
            return self._take(db, terms, now)

    def claim_batch(
        self, requests: Sequence[ClaimRequest], decide: DecideClaim, now: float
    ) -> list[Task | HubError | None]:
        # One transaction for the claims that arrive together: the commit and its WAL pages
        # are paid once for all of them.
        results: list[Task | HubError | None] = []
        with self._write() as db:
            for request in requests:
                row = db.execute(
                    "SELECT capabilities, stopped_at FROM workers WHERE id = ?", (request.worker_id,)
                ).fetchone()
                claimant = None if row is None else Claimant(tuple(json.loads(row[0])), row[1])
                try:
                    terms = decide(request, claimant)
                except HubError as refused:
                    results.append(refused)
                    continue
                results.append(self._take(db, terms, now))
        return results

    def _take(self, db: sqlite3.Connection, terms: ClaimTerms, now: float) -> Task | None:
        changes = terms.take.changes
        params = {**changes, "caps": _json_list(terms.capabilities)}
        row = db.execute(claim_statement(tuple(changes)), params).fetchone()
        if row is None:
            return None
        self._effects(db, row["id"], terms.take, now)
        return _task(row)

    def transition(self, task_id: int, decide: Decide, now: float) -> tuple[Task, bool]:
        with self._write() as db:
            task = self._task_by_id(db, task_id)
            change = decide(task)
            if change is None:
                return task, False
            self._apply(db, task_id, change, now)
            return self._task_by_id(db, task_id), True

    def expire_leases(self, now: float, decide: Decide) -> list[Task]:
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
            rows = db.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'claimed' AND lease_expires_at < ?",
                (now,),
            ).fetchall()
            expired: list[int] = []
            for task in map(_task, rows):
                change = decide(task)
                if change is not None:
                    self._apply(db, task.id, change, now)
                    expired.append(task.id)
            gone = db.execute(
                "DELETE FROM reservations WHERE expires_at <= ? RETURNING id, worker_id, task_id", (now,)
            ).fetchall()
            for reservation_id, worker_id, task_id in gone:
                self._event(
                    db, "reservation.expired", now, task_id=task_id, worker_id=worker_id, id=reservation_id
                )
            return [self._task_by_id(db, task_id) for task_id in expired]
