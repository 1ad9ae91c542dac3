"""What the REST API and the MCP tools share: the JSON views of the hub's objects, the parsers of
their arguments, and the calls both make the same way.

Both faces answer with these views and read their arguments with these parsers, so a task, a
cursor or a lease token means the same over HTTP and over MCP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fastjsonschema

from scaffold.errors import InvalidRequest, LeaseConflict
from scaffold.hub.core.limits import DEFAULT_TTL, MAX_ID
from scaffold.hub.core.types import ApiKey, Event, Message, NewTask, Plan, Reservation, Spent, Task, Worker
from scaffold.hub.services.container import Progress, Services
from scaffold.hub.services.queue import Queue
from scaffold.hub.services.reservations import Reservations
from scaffold.hub.services.team import Slot, Team
from scaffold.hub.services.usage import Ledger, UsageStatus
from scaffold.hub.services.walk import Entry
from scaffold.hub.services.workers import Workers

# -- views ---------------------------------------------------------------------------------


def claimed(task: Task) -> dict[str, Any]:
    """A task as its holder sees it: with its lease token."""
    return {**task.public(), "lease_token": task.lease_token}


def listed(task: Task) -> dict[str, Any]:
    """A task in an MCP listing: a page of full instructions would flood the caller's context."""
    view = task.public()
    del view["instructions"]
    return view


def plan_view(plan: Plan) -> dict[str, Any]:
    return {"goal": plan.goal, "plan": plan.plan, "updated_at": plan.updated_at}


def worker_view(workers: Workers, worker: Worker) -> dict[str, Any]:
    now = workers.clock()
    status = workers.status(worker)
    return {
        "id": worker.id,
        "session_id": worker.session_id,
        "role": worker.role,
        "capabilities": list(worker.capabilities),
        "status": status,
        "current_task": worker.current_task,
        "registered_at": worker.registered_at,
        "last_seen": worker.last_seen,
        "idle_seconds": round(now - worker.idle_since, 3) if status == "idle" else 0.0,
    }


def slot_view(team: Team, slot: Slot) -> dict[str, Any]:
    """A team slot: what its runner sent, and the worker its session registered (if any)."""
    worker = team.worker(slot)
    joined = None
    if worker is not None:
        view = worker_view(team.workers, worker)
        joined = {name: view[name] for name in ("id", "status", "current_task", "idle_seconds")}
    return {
        "slot": slot.name,
        **slot.fields,
        "updated_at": slot.updated_at,
        "screen_at": team.screen_at(slot.name),
        "worker": joined,
    }


def team_view(team: Team) -> dict[str, Any]:
    work = {role: {"ready": w.ready, "waiting": w.waiting} for role, w in team.work().items()}
    return {"slots": [slot_view(team, slot) for slot in team.slots()], "work": work}


def run_view(event: Event) -> dict[str, Any]:
    return {"id": event.id, "at": event.at, "worker_id": event.worker_id, **event.data}


def message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "created_at": message.created_at,
        "sender": message.sender,
        "to": message.target,
        "kind": message.kind,
        "body": message.body,
    }


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "role": key.role,
        "source": key.source,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


def reservation_view(reservation: Reservation) -> dict[str, object]:
    return {
        "id": reservation.id,
        "worker_id": reservation.worker_id,
        "role": reservation.role,
        "glob": reservation.pattern,
        "exclusive": reservation.exclusive,
        "task_id": reservation.task_id,
        "created_at": reservation.created_at,
        "expires_at": reservation.expires_at,
    }


def entry_view(entry: Entry) -> dict[str, Any]:
    return {"path": entry.path, "type": entry.type, "size": entry.size}


def written_view(path: str, size: int, etag: str) -> dict[str, Any]:
    return {"path": path, "size": size, "etag": etag}


LIVE = ("active", "idle")


def status_view(progress: Progress, workers: Workers) -> dict[str, Any]:
    counts = progress.counts
    total = sum(counts.values())
    finished = counts["done"] + counts["cancelled"]
    plan = progress.plan
    views = [worker_view(workers, worker) for worker in progress.workers]
    return {
        "progress": {
            "total": total,
            "done": counts["done"],
            "percent": round(100.0 * finished / total, 1) if total else 0.0,
            "counts": counts,
        },
        "stuck": progress.stuck,
        "unclaimable": unclaimable(progress.ready_requirements, [w for w in views if w["status"] in LIVE]),
        "workers": views,
        "plan": plan_view(plan),
        "trees": {
            "active": progress.trees.trees,
            "spare": progress.trees.spares,
            "bytes": progress.trees.bytes,
            "path": str(progress.trees_path),
            "merged": progress.merged,
        },
        "usage": usage_status_view(progress.usage),
    }


def spent_view(spent: Spent) -> dict[str, Any]:
    return {
        "requests": spent.requests,
        "input_tokens": spent.input_tokens,
        "output_tokens": spent.output_tokens,
        "cache_read_tokens": spent.cache_read_tokens,
        "cache_creation_tokens": spent.cache_creation_tokens,
        "tokens": spent.tokens,
        "cost_usd": round(spent.cost_usd, 6),
    }


def usage_status_view(usage: UsageStatus) -> dict[str, Any]:
    """Compact: the status is what agents read most (MCP get_status)."""
    budgets = usage.budgets
    return {
        "today": {
            "requests": usage.today.requests,
            "tokens": usage.today.tokens,
            "cost_usd": round(usage.today.cost_usd, 6),
        },
        "burn_usd_per_hour": round(usage.last_hour.cost_usd, 6),
        "budget": {
            "claims": "stopped" if usage.claims_stopped else "open",
            "reason": usage.claims_stopped,
            "fleet_day": budgets.fleet_day.view(),
            "worker_day": budgets.worker_day.view(),
            "task": budgets.task.view(),
            "task_action": budgets.task_action,
        },
    }


def with_usage(ledger: Ledger, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Task views, each with what its task spent (zeros when nothing)."""
    spent = ledger.tasks([view["id"] for view in views])
    for view in views:
        view["usage"] = spent_view(spent.get(view["id"], Spent()))
    return views


def unclaimable(ready: list[tuple[int, tuple[str, ...]]], live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready tasks that no live worker can claim, each with the tags it needs that are missing.

    A worker claims a task only with all of its tags, so `missing` is what the live worker that
    comes closest lacks (every tag when no worker is live): starting a worker of the role that
    has them, or changing what the task requires, lets it run."""
    held = [frozenset(worker["capabilities"]) for worker in live]
    missing_of: dict[tuple[str, ...], list[str]] = {}
    found = []
    for task_id, needs in ready:
        if needs not in missing_of:
            gaps = [[tag for tag in needs if tag not in tags] for tags in held] or [list(needs)]
            missing_of[needs] = min(gaps, key=len)
        if missing_of[needs]:
            found.append({"id": task_id, "required_capabilities": list(needs), "missing": missing_of[needs]})
    return found


def dumps_sharing_gil(value: Any, *, sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    """JSON text as JSONResponse writes it, made by json's pure-Python encoder.

    For a large value in a worker thread: the C encoder writes a whole document in one call that
    holds the GIL (tens of ms for a few MB), which stops the event loop as surely as running on it.
    """
    encoder = json.JSONEncoder(
        ensure_ascii=ensure_ascii, allow_nan=False, separators=(",", ":"), sort_keys=sort_keys
    )
    return "".join(encoder.iterencode(value))  # not one-shot: the pure-Python generator


# -- parsers -------------------------------------------------------------------------------


def validated(validate: Callable[[Any], Any], value: Any, where: str) -> Any:
    """`value` checked by a compiled JSON Schema; InvalidRequest naming `where` if it fails."""
    try:
        return validate(value)
    except fastjsonschema.JsonSchemaValueException as error:
        # fastjsonschema names the value "data"; each message (or alternative) starts with it
        message = re.sub(r"(^|; or )data", lambda found: found[1] + where, error.message)
        raise InvalidRequest(message) from None
    except (ValueError, TypeError, RecursionError) as error:  # pathological input
        raise InvalidRequest(f"{where} is not acceptable: {error}") from None


def cursor(text: str | None) -> int:
    """A page cursor (a string of digits the schema let through); absent: the start."""
    value = int(text or "0")
    if value > MAX_ID:  # 19 digits pass the pattern; SQLite cannot compare with more than this
        raise InvalidRequest(f"cursor {value} is not a cursor this hub gave out")
    return value


def lease_token(task_id: int, token: str) -> str:
    if not token.isascii():  # never one the hub gave out; hmac.compare_digest refuses non-ASCII text
        raise LeaseConflict(f"task {task_id}: this lease token is not its current lease")
    return token


def new_task(raw: Mapping[str, Any]) -> NewTask:
    return NewTask(
        title=raw["title"],
        instructions=raw["instructions"],
        priority=raw.get("priority", 0),
        depends_on=tuple(raw.get("depends_on", ())),
        ref=raw.get("ref"),
        required_capabilities=tuple(raw.get("required_capabilities", ())),
        max_attempts=raw.get("max_attempts"),
    )


# -- calls both faces make -----------------------------------------------------------------


async def create_batch(
    queue: Queue, raw_tasks: Sequence[Mapping[str, Any]], key: str | None, actor: str
) -> tuple[list[Task], bool]:
    """Create validated tasks; the idempotency key is bound to what was asked (REST and MCP alike).

    In a worker thread: a batch of 1,000 tasks takes a tenth of a second, which the event loop
    would otherwise spend on it alone. The store is thread-safe (one lock, and sqlite3 lets go of
    the GIL while it writes), and its listeners wake the event loop from any thread."""

    def create() -> tuple[list[Task], bool]:
        idempotency = None
        if key is not None:
            fingerprint = dumps_sharing_gil(raw_tasks, sort_keys=True, ensure_ascii=True).encode()
            idempotency = (key, hashlib.sha256(fingerprint).hexdigest())
        return queue.create([new_task(t) for t in raw_tasks], actor, idempotency)

    return await asyncio.to_thread(create)


def reserve(reservations: Reservations, args: Mapping[str, Any]) -> list[Reservation]:
    return reservations.reserve(
        args["worker_id"],
        args["globs"],
        exclusive=args.get("exclusive", True),
        ttl_seconds=args.get("ttl_seconds", DEFAULT_TTL),
        task_id=args.get("task_id"),
    )


async def edited(services: Services, args: Mapping[str, Any], actor: str) -> dict[str, Any]:
    """Edit a file as REST and MCP both ask for it (in the caller's tree); the answer both return."""
    workspace = await services.files_for(args.get("worker_id"))
    edit = await asyncio.to_thread(
        lambda: workspace.edit(
            args["path"],
            args["old"],
            args["new"],
            writer=args.get("worker_id"),
            if_match=args.get("etag"),
            replace_all=args.get("replace_all", False),
            actor=actor,
        )
    )
    await services.changed(workspace, [edit.path], f"edit {edit.path}", actor)
    return {**written_view(edit.path, edit.size, edit.etag), "replacements": edit.replacements}


async def deleted(services: Services, args: Mapping[str, Any], actor: str) -> dict[str, Any]:
    workspace = await services.files_for(args.get("worker_id"))
    gone = await asyncio.to_thread(
        lambda: workspace.delete(
            args["path"], writer=args.get("worker_id"), if_match=args.get("etag"), actor=actor
        )
    )
    await services.changed(workspace, [gone.path], f"delete {gone.path}", actor)
    return {"path": gone.path, "type": gone.type}


async def moved(services: Services, args: Mapping[str, Any], actor: str) -> dict[str, Any]:
    workspace = await services.files_for(args.get("worker_id"))
    move = await asyncio.to_thread(
        lambda: workspace.move(
            args["from"],
            args["to"],
            writer=args.get("worker_id"),
            overwrite=args.get("overwrite", False),
            actor=actor,
        )
    )
    what = f"move {move.source} to {move.destination}"
    await services.changed(workspace, [move.source, move.destination], what, actor)
    return {"from": move.source, "to": move.destination, "type": move.type}


async def grepped(services: Services, args: Mapping[str, Any]) -> dict[str, Any]:
    workspace = await services.files_for(args.get("worker_id"))
    found = await asyncio.to_thread(
        lambda: workspace.grep(
            args["pattern"],
            args.get("path", ""),
            args.get("glob"),
            max_matches=args.get("max_matches", 100),
            max_bytes=args.get("max_bytes"),
            ignore_case=args.get("ignore_case", False),
            fixed_string=args.get("fixed_string", False),
        )
    )
    matches = [{"path": m.path, "line": m.line, "column": m.column, "text": m.text} for m in found.matches]
    return {
        "matches": matches,
        "truncated": found.truncated,
        "files_searched": found.files_searched,
        "files_skipped": found.files_skipped,
        "bytes_searched": found.bytes_searched,
    }
