"""Usage: Claude Code's telemetry in (OTLP/HTTP JSON under /otlp), what it cost out (/v1/usage).

Claude Code's exporter is pointed at `<hub>/otlp` (`OTEL_EXPORTER_OTLP_ENDPOINT`) and appends the
standard paths `/v1/logs` and `/v1/metrics` itself. The rules live in scaffold.hub.services.usage.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from typing import Any

from starlette.responses import Response

from scaffold.errors import InvalidRequest
from scaffold.hub.core import otlp
from scaffold.hub.core import schemas as s
from scaffold.hub.faces.rest.http import Call, Endpoint, FastJSONResponse, Param
from scaffold.hub.faces.views import spent_view
from scaffold.hub.services.usage import DAY, Report
from scaffold.hub.store.base import UsageRow

BODY_IN_THREAD_BYTES = 64 * 1024
"""Larger exports are decoded in a worker thread (see faces/rest/http.py, JSON_IN_THREAD_BYTES)."""
DATE = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
LABELS = {"between-tasks": "between tasks", "coordinator": "coordinator and other sessions"}


async def _document(call: Call) -> Any:
    raw: bytes = call.body
    headers = call.request.headers
    args = (raw, headers.get("content-type"), headers.get("content-encoding"))
    if len(raw) > BODY_IN_THREAD_BYTES:
        return await asyncio.to_thread(otlp.decode, *args)
    return otlp.decode(*args)


async def export_logs(call: Call) -> Response:
    await call.services.ledger.take_logs(await _document(call))
    return FastJSONResponse({"partialSuccess": {}})


async def export_metrics(call: Call) -> Response:
    await call.services.ledger.take_metrics(await _document(call))
    return FastJSONResponse({"partialSuccess": {}})


def _day(text: str, name: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d")))
    except ValueError:
        raise InvalidRequest(f"{name} must be a date YYYY-MM-DD, got {text!r}") from None


async def usage(call: Call) -> Response:
    query = call.query
    first = query.get("day") or query.get("from")
    last = query.get("day") or query.get("to")
    if "day" in query and ("from" in query or "to" in query):
        raise InvalidRequest("give day, or from and to, not both")
    since = _day(first, "from") if first else None
    until = _day(last, "to") + DAY if last else None
    if since is not None and until is not None and since >= until:
        raise InvalidRequest(f"from ({first}) is after to ({last})")
    report = call.services.ledger.report(query.get("by", "task"), since, until)
    rows = [_row(call, report, row) for row in report.rows[: query.get("limit", 100)]]
    runs = list(report.runs.values())
    return FastJSONResponse(
        {
            "by": report.by,
            "from": first,
            "to": last,
            "rows": rows,
            "total": spent_view(report.total),
            "metrics": {"cost_usd": round(report.metrics[0], 6), "tokens": round(report.metrics[1])},
            "runs": {"count": sum(n for n, _ in runs), "cost_usd": round(sum(c for _, c in runs), 6)},
        }
    )


def _row(call: Call, report: Report, row: UsageRow) -> dict[str, Any]:
    view: dict[str, Any] = {
        "key": row.key,
        "label": LABELS.get(str(row.key), str(row.key)),
        **spent_view(row.spent),
    }
    if not isinstance(row.key, int):
        if report.by == "worker":
            view["role"] = None
        return view
    if report.by == "task":
        task = call.services.queue.get(row.key)
        view.update(label=task.title, state=task.state, worker_id=task.worker_id)
    elif report.by == "worker":
        worker = call.services.workers.get(row.key)
        count, cost = report.runs.get(row.key, (0, 0.0))
        view.update(
            label=f"worker {worker.id} ({worker.role})",
            role=worker.role,
            tasks_cost_usd=round((row.spent.cost_micros - row.outside_tasks.cost_micros) / 1e6, 6),
            between_tasks_cost_usd=round(row.outside_tasks.cost_usd, 6),
            runs={"count": count, "cost_usd": round(cost, 6)},
        )
    return view


OTLP_ANSWERS: dict[int, tuple[str, dict[str, Any] | None]] = {
    200: ("Taken (a request or point seen before changes nothing)", s.OTLP_ACCEPTED),
    400: ("Not JSON, or not the OTLP shape: the message names where", s.ref("Error")),
    413: (f"Over {otlp.MAX_OTLP_BYTES // (1024 * 1024)} MiB, compressed or not", s.ref("Error")),
    415: ("Not application/json (set OTEL_EXPORTER_OTLP_PROTOCOL=http/json), or an encoding other "
          "than gzip", s.ref("Error")),
}  # fmt: skip

# A table, one endpoint per entry with its summary and answers beside it: kept as written (fmt: skip).
ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/otlp/v1/logs", export_logs,
             "OTLP/HTTP JSON logs from Claude Code: each `claude_code.api_request` is one model request, "
             "attributed to the task its session's worker held", "agent", raw_body=True,
             responses=OTLP_ANSWERS),
    Endpoint("POST", "/otlp/v1/metrics", export_metrics,
             "OTLP/HTTP JSON metrics from Claude Code: cost and token sums (delta or cumulative), kept as "
             "a cross-check", "agent", raw_body=True, responses=OTLP_ANSWERS),
    Endpoint("GET", "/v1/usage", usage, "What the team spent, by task, worker, role, model or day",
             "viewer",
             query={"by": Param({"enum": ["task", "worker", "role", "model", "day"]},
                                "how to group (default task)"),
                    "day": Param(DATE, "one UTC day"),
                    "from": Param(DATE, "first UTC day (default: the first request)"),
                    "to": Param(DATE, "last UTC day, included (default: now)"),
                    "limit": Param({"type": "integer", "minimum": 1, "maximum": 1000},
                                   "rows at most (default 100); the total counts every row")},
             responses={200: ("Spend per group, highest cost first, with the total and the cross-checks",
                              s.USAGE)}),
]  # fmt: skip
