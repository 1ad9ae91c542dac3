"""The REST API under /v1: each endpoint declared once, handled by calling the services."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from scaffold import __version__
from scaffold.hub import api_exec, api_files
from scaffold.hub import schemas as s
from scaffold.hub.auth import new_key
from scaffold.hub.errors import InvalidRequest, LeaseConflict
from scaffold.hub.events import stream
from scaffold.hub.http import MAX_ID, Call, Endpoint, LargeJSONResponse, Param, dumps_sharing_gil
from scaffold.hub.store.base import TaskFilter
from scaffold.hub.types import TASK_STATES, Message, NewTask, Task
from scaffold.hub.workers import session_tasks

if TYPE_CHECKING:
    from scaffold.hub.app import Hub

PAGE = Param({"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)")
CURSOR = Param({"type": "string", "pattern": "^[0-9]{1,19}$"}, "next_cursor of the previous page")


def ok(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status)


def claimed(task: Task) -> dict[str, Any]:
    return {**task.public(), "lease_token": task.lease_token}


def message_view(message: Message) -> dict[str, Any]:
    return {"id": message.id, "created_at": message.created_at, "sender": message.sender,
            "to": message.target, "kind": message.kind, "body": message.body}  # fmt: skip


def cursor_of(call: Call) -> int:
    cursor = int(call.query.get("cursor", "0"))
    if cursor > MAX_ID:  # 19 digits pass the pattern; SQLite cannot compare with more than this
        raise InvalidRequest(f"cursor {cursor} is not a cursor this hub gave out")
    return cursor


# -- health and plan ---------------------------------------------------------------------


async def healthz(call: Call) -> Response:
    return ok({"status": "ok", "version": __version__})


async def get_plan(call: Call) -> Response:
    plan = call.hub.store.get_plan()
    return ok({"goal": plan.goal, "plan": plan.plan, "updated_at": plan.updated_at})


async def put_plan(call: Call) -> Response:
    plan = call.hub.store.set_plan(call.body["goal"], call.body["plan"], call.actor, call.hub.clock())
    return ok({"goal": plan.goal, "plan": plan.plan, "updated_at": plan.updated_at})


# -- tasks ---------------------------------------------------------------------------------


def _new_task(raw: dict[str, Any]) -> NewTask:
    return NewTask(
        title=raw["title"],
        instructions=raw["instructions"],
        priority=raw.get("priority", 0),
        depends_on=tuple(raw.get("depends_on", ())),
        ref=raw.get("ref"),
        required_capabilities=tuple(raw.get("required_capabilities", ())),
        max_attempts=raw.get("max_attempts"),
    )


async def create_batch(
    hub: Hub, raw_tasks: list[dict[str, Any]], key: str | None, actor: str
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
        return hub.queue.create([_new_task(t) for t in raw_tasks], actor, idempotency)

    return await asyncio.to_thread(create)


async def create_tasks(call: Call) -> Response:
    body = dict(call.body)
    key = body.pop("idempotency_key", None)
    batch = "tasks" in body
    raw_tasks = body["tasks"] if batch else [body]
    tasks, created = await create_batch(call.hub, raw_tasks, key, call.actor)
    status = 201 if created else 200
    if batch:  # a thousand tasks take a while to render too
        views = {"tasks": [task.public() for task in tasks]}
        return await asyncio.to_thread(LargeJSONResponse, views, status)
    return ok(tasks[0].public(), status)


async def list_tasks(call: Call) -> Response:
    limit = call.query.get("limit", 100)
    tasks = call.hub.store.list_tasks(
        TaskFilter(
            states=tuple(call.query.get("state", ())),
            worker_id=call.query.get("worker_id"),
            after_id=cursor_of(call),
            limit=limit,
        )
    )
    next_cursor = str(tasks[-1].id) if len(tasks) == limit else None
    return ok({"tasks": [task.public() for task in tasks], "next_cursor": next_cursor})


async def get_task(call: Call) -> Response:
    return ok(call.hub.store.get_task(call.ids["task_id"]).public())


async def claim_task(call: Call) -> Response:
    body = call.body
    task = await call.hub.queue.claim(body["worker_id"], body.get("capabilities"), body.get("wait", 0))
    return Response(status_code=204) if task is None else ok(claimed(task))


def lease_token(call: Call) -> str:
    token: str = call.body["lease_token"]
    if not token.isascii():  # never one the hub gave out; hmac.compare_digest refuses non-ASCII text
        raise LeaseConflict(f"task {call.ids['task_id']}: this lease token is not its current lease")
    return token


async def heartbeat_task(call: Call) -> Response:
    return ok(claimed(call.hub.queue.heartbeat(call.ids["task_id"], lease_token(call))))


async def complete_task(call: Call) -> Response:
    task = await call.hub.complete_task(call.ids["task_id"], lease_token(call), call.body.get("result", ""))
    return ok(task.public())


async def fail_task(call: Call) -> Response:
    task = call.hub.queue.fail(call.ids["task_id"], lease_token(call), call.body["error"])
    return ok(task.public())


async def release_task(call: Call) -> Response:
    return ok(call.hub.queue.release(call.ids["task_id"], lease_token(call)).public())


async def cancel_task(call: Call) -> Response:
    return ok(call.hub.queue.cancel(call.ids["task_id"], call.actor).public())


# -- workers -------------------------------------------------------------------------------


async def register_worker(call: Call) -> Response:
    body = call.body
    worker = call.hub.workers.register(body["session_id"], body["role"], body.get("capabilities"))
    return ok(call.hub.workers.view(worker), 201)


async def list_workers(call: Call) -> Response:
    session = call.query.get("session_id")
    if session is not None:
        found = call.hub.store.find_worker_by_session(session)
        workers = [found] if found else []
    else:
        workers = call.hub.store.list_workers()
    return ok({"workers": [call.hub.workers.view(worker) for worker in workers]})


async def get_worker(call: Call) -> Response:
    return ok(call.hub.workers.view(call.hub.store.get_worker(call.ids["worker_id"])))


async def heartbeat_worker(call: Call) -> Response:
    return ok(call.hub.workers.view(call.hub.workers.heartbeat(call.ids["worker_id"])))


def session_view(call: Call, heartbeat: bool) -> Response:
    session = call.query["session_id"] if not heartbeat else call.body["session_id"]
    hub = call.hub
    worker, held = session_tasks(hub.store, hub.workers, hub.queue, session, heartbeat)
    rhythm = {"idle_timeout_seconds": hub.settings.idle_timeout_minutes * 60,
              "heartbeat_seconds": hub.settings.heartbeat_seconds}  # fmt: skip
    return ok({"worker": hub.workers.view(worker), "tasks": [claimed(task) for task in held], **rhythm})


async def get_session(call: Call) -> Response:
    return session_view(call, heartbeat=False)


async def heartbeat_session(call: Call) -> Response:
    return session_view(call, heartbeat=True)


async def deregister_worker(call: Call) -> Response:
    worker = call.hub.workers.deregister(call.ids["worker_id"])
    call.hub.queue.signal.notify()  # its tasks went back to the queue
    return ok(call.hub.workers.view(worker))


# -- messages, status, events, keys --------------------------------------------------------


async def send_message(call: Call) -> Response:
    body = call.body
    sender = body.get("sender") or call.actor
    message = call.hub.messages.send(sender, body["to"], body.get("kind", "message"), body["body"])
    return ok(message_view(message), 201)


async def read_messages(call: Call) -> Response:
    after = cursor_of(call)
    messages = call.hub.messages.read(call.query.get("for"), after, call.query.get("limit", 100))
    next_cursor = str(messages[-1].id) if messages else str(after)
    return ok({"messages": [message_view(m) for m in messages], "next_cursor": next_cursor})


def status_view(hub: Hub) -> dict[str, Any]:
    store = hub.store
    counts = store.count_tasks()
    total = sum(counts.values())
    finished = counts["done"] + counts["cancelled"]
    plan = store.get_plan()
    workers = [hub.workers.view(worker) for worker in store.list_workers()]
    return {
        "progress": {
            "total": total,
            "done": counts["done"],
            "percent": round(100.0 * finished / total, 1) if total else 0.0,
            "counts": counts,
        },
        "stuck": store.stuck_tasks(),
        "unclaimable": unclaimable(store.ready_requirements(), [w for w in workers if w["status"] in LIVE]),
        "workers": workers,
        "plan": {"goal": plan.goal, "plan": plan.plan, "updated_at": plan.updated_at},
    }  # fmt: skip


LIVE = ("active", "idle")


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


async def status(call: Call) -> Response:
    return ok(status_view(call.hub))


async def events(call: Call) -> Response:
    header = call.request.headers.get("last-event-id", "").strip()
    if header and not (header.isascii() and header.isdigit() and len(header) <= 19 and int(header) <= MAX_ID):
        raise InvalidRequest(f"Last-Event-ID must be an event id, got {header[:40]!r}")
    after = int(header) if header else call.query.get("after", call.hub.store.last_event_id())
    return StreamingResponse(
        stream(call.hub.store, call.hub.bus, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def openapi(call: Call) -> Response:
    return ok(call.hub.openapi)


def key_view(key: Any) -> dict[str, Any]:
    return {"name": key.name, "role": key.role, "source": key.source,
            "created_at": key.created_at, "revoked_at": key.revoked_at}  # fmt: skip


async def list_keys(call: Call) -> Response:
    return ok({"keys": [key_view(key) for key in call.hub.store.list_keys()]})


async def add_key(call: Call) -> Response:
    key, digest = new_key()
    record = call.hub.store.add_key(call.body["name"], call.body["role"], digest, "api", call.hub.clock())
    return ok({**key_view(record), "key": key}, 201)


async def revoke_key(call: Call) -> Response:
    return ok(key_view(call.hub.store.revoke_key(call.body["name"], call.hub.clock())))


STATE = Param({"type": "array", "items": {"enum": list(TASK_STATES)}}, "task states", repeated=True)
TASK_ID_PATH = "/v1/tasks/{task_id}"
R = s.ref

ENDPOINTS: list[Endpoint] = [
    # The hot path first: Starlette tries routes in order.
    Endpoint("POST", "/v1/tasks/claim", claim_task,
             "Claim the best ready task the worker can do; wait up to `wait` s for one", "agent",
             body=s.CLAIM,
             responses={200: ("The task, with its lease_token", s.TASK),
                        204: ("No task came within `wait`", None),
                        409: ("The worker is stopped", R("Error"))}),
    Endpoint("GET", "/healthz", healthz, "Liveness (no key needed)", None,
             responses={200: ("The hub is up", s.obj(["status", "version"], status={"const": "ok"},
                                                      version={"type": "string"}))}),
    Endpoint("GET", "/openapi.json", openapi, "This API's OpenAPI document", "viewer",
             responses={200: ("OpenAPI 3.1", {"type": "object"})}),
    Endpoint("GET", "/v1/plan", get_plan, "The goal and master plan", "viewer",
             responses={200: ("The plan", R("Plan"))}),
    Endpoint("PUT", "/v1/plan", put_plan, "Set the goal and master plan (markdown)", "agent",
             body=s.PLAN, responses={200: ("The new plan", R("Plan"))}),
    Endpoint("POST", "/v1/tasks", create_tasks,
             "Create one task, or a batch as {tasks: [...]}; optional idempotency_key", "agent",
             body=s.CREATE_TASKS,
             responses={201: ("Created: the task, or {tasks} for a batch", {"oneOf": [s.TASK, s.BATCH]}),
                        200: ("The idempotency key was seen: the first result again",
                              {"oneOf": [s.TASK, s.BATCH]}),
                        409: ("The idempotency key was used for another request", R("Error"))}),
    Endpoint("GET", "/v1/tasks", list_tasks, "List tasks in id order, by state or worker", "viewer",
             query={"state": STATE, "worker_id": Param(s.ID, "tasks held by this worker"),
                    "cursor": CURSOR, "limit": PAGE},
             responses={200: ("A page of tasks", s.TASKS_PAGE)}),
    Endpoint("GET", TASK_ID_PATH, get_task, "One task", "viewer",
             responses={200: ("The task", s.TASK)}),
    Endpoint("POST", TASK_ID_PATH + "/heartbeat", heartbeat_task, "Extend the lease", "agent",
             body=s.LEASE, responses={200: ("The task, lease extended", s.TASK),
                                      409: ("The lease token is stale", R("Error"))}),
    Endpoint("POST", TASK_ID_PATH + "/complete", complete_task,
             "Mark done (idempotent for the same token); unblocks dependents", "agent",
             body=s.COMPLETE, responses={200: ("The finished task", s.TASK),
                                         409: ("The lease token is stale", R("Error"))}),
    Endpoint("POST", TASK_ID_PATH + "/fail", fail_task,
             "Report failure: retried until max_attempts, then dead", "agent",
             body=s.FAIL, responses={200: ("The task, ready again or dead", s.TASK),
                                     409: ("The lease token is stale", R("Error"))}),
    Endpoint("POST", TASK_ID_PATH + "/release", release_task,
             "Give the task back to the queue without using an attempt", "agent",
             body=s.LEASE, responses={200: ("The task, ready again", s.TASK),
                                      409: ("The lease token is stale", R("Error"))}),
    Endpoint("POST", TASK_ID_PATH + "/cancel", cancel_task, "Cancel a task that is not finished",
             "admin", responses={200: ("The cancelled task", s.TASK),
                                 409: ("The task is already finished", R("Error"))}),
    Endpoint("POST", "/v1/workers", register_worker,
             "Register a Claude Code session as a worker (again: same worker)", "agent",
             body=s.REGISTER, responses={201: ("The worker", s.WORKER)}),
    Endpoint("GET", "/v1/workers", list_workers, "Workers with status, current task, idle time",
             "viewer", query={"session_id": Param(s.SESSION_ID, "find by session id")},
             responses={200: ("The workers", s.obj(["workers"], workers={"type": "array",
                                                                         "items": s.WORKER}))}),
    Endpoint("GET", "/v1/workers/{worker_id}", get_worker, "One worker", "viewer",
             responses={200: ("The worker", s.WORKER)}),
    Endpoint("POST", "/v1/workers/{worker_id}/heartbeat", heartbeat_worker,
             "Record that the worker is alive", "agent", responses={200: ("The worker", s.WORKER)}),
    Endpoint("DELETE", "/v1/workers/{worker_id}", deregister_worker,
             "Stop the worker; its tasks go back to the queue", "agent",
             responses={200: ("The stopped worker", s.WORKER)}),
    Endpoint("GET", "/v1/session", get_session,
             "A session's worker and the tasks it holds, with their lease tokens (for its hooks)",
             "agent", query={"session_id": Param(s.SESSION_ID, "the Claude Code session id",
                                                 required=True)},
             responses={200: ("The worker and its claimed tasks", s.SESSION),
                        404: ("No worker is registered for this session", R("Error"))}),
    Endpoint("POST", "/v1/session/heartbeat", heartbeat_session,
             "The session's worker is active: touch it and extend the leases it holds", "agent",
             body=s.obj(["session_id"], session_id=s.SESSION_ID),
             responses={200: ("The worker and its claimed tasks", s.SESSION),
                        404: ("No worker is registered for this session", R("Error"))}),
    Endpoint("POST", "/v1/messages", send_message,
             "Send to a worker id, role:<name>, coordinator or all", "agent", body=s.SEND,
             responses={201: ("The message", R("Message"))}),
    Endpoint("GET", "/v1/messages", read_messages, "Messages after a cursor", "viewer",
             query={"for": Param({"type": "string", "pattern": "^(coordinator|worker:[1-9][0-9]{0,17})$"},
                                 "worker:<id> or coordinator: only what they should read"),
                    "cursor": CURSOR, "limit": PAGE},
             responses={200: ("A page of messages", s.MESSAGES_PAGE)}),
    Endpoint("GET", "/v1/status", status, "Progress, stuck and unclaimable tasks, workers and the plan",
             "viewer",
             responses={200: ("The status", s.STATUS)}),
    Endpoint("GET", "/v1/events", events,
             "Server-Sent Events of every change; resume with Last-Event-ID", "viewer",
             query={"after": Param({"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                                   "start after this event id (default: now)")},
             responses={200: ("An event stream", {"type": "string"})},
             content_type="text/event-stream"),
    Endpoint("GET", "/v1/keys", list_keys, "API keys (names and roles, never the keys)", "admin",
             responses={200: ("The keys", s.obj(["keys"], keys={"type": "array",
                                                                "items": R("Key")}))}),
    Endpoint("POST", "/v1/keys", add_key, "Create a key; the answer shows it once", "admin",
             body=s.NEW_KEY,
             responses={201: ("The key", s.KEY_CREATED),
                        409: ("The name is taken", R("Error"))}),
    Endpoint("POST", "/v1/keys/revoke", revoke_key, "Revoke a key by name", "admin",
             body=s.REVOKE_KEY, responses={200: ("The revoked key", R("Key"))}),
]  # fmt: skip
ENDPOINTS += api_exec.ENDPOINTS
ENDPOINTS += api_files.ENDPOINTS
