"""Usage in SQLite: each model request once, attributed as it is stored, and the metrics beside.

A request is attributed by the hub's own record of claims (the `events_by_worker` index): the
worker's newest claim or end of a claim at or before the request's time. A claim means the
request served that task; an end, or nothing, means it came between tasks.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence

from scaffold.hub.core.otlp import ApiRequest, MetricPoint
from scaffold.hub.core.types import Charge, Spent
from scaffold.hub.store.base import UsageGroup, UsageRow
from scaffold.hub.store.sqlite.connection import Connection

_CLAIM_EVENTS = (
    "'task.claimed', 'task.completed', 'task.failed', 'task.expired', 'task.released', 'task.cancelled'"
)
_HELD_AT = (
    f"SELECT type, task_id FROM events WHERE worker_id = ? AND type IN ({_CLAIM_EVENTS}) AND at <= ? "
    "ORDER BY id DESC LIMIT 1"
)
_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_micros")
_SUMS = "count(*), " + ", ".join(f"coalesce(sum({column}), 0)" for column in _COLUMNS)
_DAILY_SUMS = ", ".join(f"coalesce(sum(d.{column}), 0)" for column in ("requests", *_COLUMNS))
_DAILY_OUTSIDE = ", ".join(
    f"coalesce(sum(CASE WHEN d.task_id = 0 THEN d.{column} END), 0)" for column in ("requests", *_COLUMNS)
)
_KEYS: dict[str, str] = {
    "task": "CASE WHEN d.task_id != 0 THEN d.task_id WHEN d.worker_id = 0 THEN 'coordinator' "
    "ELSE 'between-tasks' END",
    "worker": "CASE WHEN d.worker_id = 0 THEN 'coordinator' ELSE d.worker_id END",
    "role": "coalesce(w.role, 'coordinator')",
    "model": "d.model",
    "day": "d.day",
}
_ROLL = (
    f"INSERT INTO usage_daily (day, worker_id, task_id, model, requests, {', '.join(_COLUMNS)}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, worker_id, task_id, model) DO UPDATE SET "
    + ", ".join(f"{column} = {column} + excluded.{column}" for column in ("requests", *_COLUMNS))
)


def roll(
    db: sqlite3.Connection,
    day: str,
    worker_id: int | None,
    task_id: int | None,
    model: str,
    spent: Spent,
    sign: int = 1,
) -> None:
    """Add (or with sign -1 take back) `spent` to the day's sums of that worker, task and model."""
    numbers = (
        spent.requests,
        spent.input_tokens,
        spent.output_tokens,
        spent.cache_read_tokens,
        spent.cache_creation_tokens,
        spent.cost_micros,
    )
    db.execute(_ROLL, (day, worker_id or 0, task_id or 0, model, *(sign * number for number in numbers)))


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def _spent(row: Sequence[int]) -> Spent:
    return Spent(*(int(value) for value in row))


def _window(since: float | None, until: float | None, column: str = "u.at") -> tuple[str, list[float]]:
    where, params = [], []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)
    return (" AND ".join(where) or "1"), params


class UsageStore(Connection):
    def record_requests(self, requests: Sequence[ApiRequest]) -> list[Charge]:
        charged: list[Charge] = []
        workers: dict[str, int | None] = {}
        with self._write() as db:
            for request in requests:
                if request.session_id not in workers:
                    row = db.execute("SELECT id FROM workers WHERE session_id = ?", (request.session_id,))
                    found = row.fetchone()
                    workers[request.session_id] = None if found is None else int(found[0])
                worker_id = workers[request.session_id]
                task_id = self._held_at(db, worker_id, request.at) if worker_id is not None else None
                spent = Spent(
                    1,
                    request.input_tokens,
                    request.output_tokens,
                    request.cache_read_tokens,
                    request.cache_creation_tokens,
                    request.cost_micros,
                )
                stored = db.execute(
                    "INSERT INTO usage (session_id, seq, at, day, worker_id, task_id, model, input_tokens, "
                    "output_tokens, cache_read_tokens, cache_creation_tokens, cost_micros) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                    (
                        request.session_id,
                        request.sequence,
                        request.at,
                        _day(request.at),
                        worker_id,
                        task_id,
                        request.model,
                        *(
                            spent.input_tokens,
                            spent.output_tokens,
                            spent.cache_read_tokens,
                            spent.cache_creation_tokens,
                            spent.cost_micros,
                        ),
                    ),
                ).fetchone()
                if stored is not None:
                    roll(db, _day(request.at), worker_id, task_id, request.model, spent)
                    charged.append(Charge(worker_id, task_id, request.at, spent))
        return charged

    @staticmethod
    def _held_at(db: sqlite3.Connection, worker_id: int, at: float) -> int | None:
        row = db.execute(_HELD_AT, (worker_id, at)).fetchone()
        return int(row[1]) if row is not None and row[0] == "task.claimed" else None

    def record_metric_points(self, points: Sequence[MetricPoint]) -> int:
        moved = 0
        with self._write() as db:
            for point in points:
                part = 0 if point.cumulative else point.end_ns
                cursor = db.execute(
                    "INSERT INTO metric_points (series, start_ns, part, end_ns, metric, session_id, model, "
                    "kind, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (metric, series, start_ns, part) DO UPDATE SET end_ns = excluded.end_ns, "
                    "value = excluded.value WHERE excluded.end_ns > metric_points.end_ns",
                    (
                        point.series,
                        point.start_ns,
                        part,
                        point.end_ns,
                        point.metric,
                        point.session_id,
                        point.model,
                        point.kind,
                        point.value,
                    ),
                )
                moved += cursor.rowcount
        return moved

    def usage_by(self, group: UsageGroup, since: float | None, until: float | None) -> list[UsageRow]:
        where, params = [], []
        if since is not None:
            where.append("d.day >= ?")
            params.append(_day(since))
        if until is not None:
            where.append("d.day <= ?")  # the day holding the window's last instant
            params.append(_day(math.nextafter(until, -math.inf)))
        join = " LEFT JOIN workers w ON w.id = d.worker_id" if group == "role" else ""
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_KEYS[group]}, {_DAILY_SUMS}, {_DAILY_OUTSIDE} FROM usage_daily d{join} "
                f"WHERE {' AND '.join(where) or '1'} GROUP BY 1 HAVING sum(d.requests) > 0",
                params,
            ).fetchall()
        return [
            UsageRow(row[0], _spent(row[1:7]), _spent(row[7:13]) if group == "worker" else Spent())
            for row in rows
        ]

    def usage_total(self, since: float | None, until: float | None, worker_id: int | None = None) -> Spent:
        where, params = _window(since, until)
        if worker_id is not None:
            where += " AND u.worker_id = ?"
            params.append(worker_id)
        with self._read() as db:
            return _spent(db.execute(f"SELECT {_SUMS} FROM usage u WHERE {where}", params).fetchone())

    def task_usage(self, task_ids: Sequence[int]) -> dict[int, Spent]:
        found: dict[int, Spent] = {}
        with self._read() as db:
            for chunk in range(0, len(task_ids), 500):
                part = list(task_ids[chunk : chunk + 500])
                rows = db.execute(
                    f"SELECT task_id, {_SUMS} FROM usage WHERE task_id IN ({','.join('?' * len(part))}) "
                    "GROUP BY task_id",
                    part,
                )
                found.update((int(row[0]), _spent(row[1:])) for row in rows)
        return found

    def metric_totals(self, since: float | None, until: float | None) -> tuple[float, float]:
        where, params = _window(
            None if since is None else since * 1e9, None if until is None else until * 1e9, "end_ns"
        )
        with self._read() as db:
            rows = dict(
                db.execute(
                    f"SELECT metric, coalesce(sum(value), 0) FROM metric_points WHERE {where} "
                    "GROUP BY metric",
                    params,
                ).fetchall()
            )
        return float(rows.get("cost", 0.0)), float(rows.get("tokens", 0.0))

    def run_totals(self) -> dict[int, tuple[int, float]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT worker_id, count(*), coalesce(sum(json_extract(data, '$.cost_usd')), 0) FROM events "
                "WHERE type = 'worker.run' GROUP BY worker_id"
            ).fetchall()
        return {int(row[0]): (int(row[1]), float(row[2])) for row in rows}
