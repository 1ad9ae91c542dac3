"""The REST API under /v1: each endpoint declared once, handled by calling the services."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from scaffold import __version__
from scaffold.errors import InvalidRequest
from scaffold.hub.core import schemas as s
from scaffold.hub.core.limits import MAX_ID, MAX_SLOTS
from scaffold.hub.core.types import TASK_STATES
from scaffold.hub.faces.rest import exec as api_exec
from scaffold.hub.faces.rest import files as api_files
from scaffold.hub.faces.rest import otlp as api_otlp
from scaffold.hub.faces.rest.http import Call, Endpoint, FastJSONResponse, LargeJSONResponse, Param
from scaffold.hub.faces.rest.http import openapi as openapi_document
from scaffold.hub.faces.views import (
    claimed,
    create_batch,
    cursor,
    key_view,
    lease_token,
    message_view,
    plan_view,
    run_view,
    slot_view,
    status_view,
    team_view,
    with_usage,
    worker_view,
)
from scaffold.hub.services.workers import session_tasks

PAGE = Param({"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)")
CURSOR = Param({"type": "string", "pattern": "^[0-9]{1,19}$"}, "next_cursor of the previous page")


def ok(payload: Any, status: int = 200) -> JSONResponse:
    return FastJSONResponse(payload, status)


def leased(call: Call) -> str:
    """The lease token of the body, for the task of the path."""
    return lease_token(call.ids["task_id"], call.body["lease_token"])


# -- health and plan ---------------------------------------------------------------------


async def healthz(call: Call) -> Response:
    return ok({"status": "ok", "version": __version__})


async def get_plan(call: Call) -> Response:
    return ok(plan_view(call.services.plans.get()))


async def put_plan(call: Call) -> Response:
    return ok(plan_view(call.services.plans.set(call.body["goal"], call.body["plan"], call.actor)))


# -- tasks ---------------------------------------------------------------------------------


async def create_tasks(call: Call) -> Response:
    body = dict(call.body)
    key = body.pop("idempotency_key", None)
    batch = "tasks" in body
    raw_tasks = body["tasks"] if batch else [body]
    tasks, created = await create_batch(call.services.queue, raw_tasks, key, call.actor)
    status = 201 if created else 200
    if batch:  # a thousand tasks take a while to render too
        views = {"tasks": [task.public() for task in tasks]}
        return await asyncio.to_thread(LargeJSONResponse, views, status)
    return ok(tasks[0].public(), status)


async def list_tasks(call: Call) -> Response:
    limit = call.query.get("limit", 100)
    tasks = call.services.queue.page(
        states=call.query.get("state", ()),
        worker_id=call.query.get("worker_id"),
        after_id=cursor(call.query.get("cursor")),
        limit=limit,
    )
    next_cursor = str(tasks[-1].id) if len(tasks) == limit else None
    views = with_usage(call.services.ledger, [task.public() for task in tasks])
    return ok({"tasks": views, "next_cursor": next_cursor})


async def get_task(call: Call) -> Response:
    return ok(with_usage(call.services.ledger, [call.services.queue.get(call.ids["task_id"]).public()])[0])


async def claim_task(call: Call) -> Response:
    body = call.body
    task = await call.services.queue.claim(body["worker_id"], body.get("capabilities"), body.get("wait", 0))
    return Response(status_code=204) if task is None else ok(claimed(task))


async def heartbeat_task(call: Call) -> Response:
    return ok(claimed(call.services.queue.heartbeat(call.ids["task_id"], leased(call))))


async def complete_task(call: Call) -> Response:
    task = await call.services.complete_task(call.ids["task_id"], leased(call), call.body.get("result", ""))
    return ok(task.public())


async def fail_task(call: Call) -> Response:
    task = call.services.queue.fail(call.ids["task_id"], leased(call), call.body["error"])
    return ok(task.public())


async def release_task(call: Call) -> Response:
    return ok(call.services.queue.release(call.ids["task_id"], leased(call)).public())


async def cancel_task(call: Call) -> Response:
    return ok(call.services.queue.cancel(call.ids["task_id"], call.actor).public())


# -- workers -------------------------------------------------------------------------------


async def register_worker(call: Call) -> Response:
    body = call.body
    workers = call.services.workers
    worker = workers.register(body["session_id"], body["role"], body.get("capabilities"))
    return ok(worker_view(workers, worker), 201)


async def list_workers(call: Call) -> Response:
    workers = call.services.workers
    session = call.query.get("session_id")
    if session is not None:
        found = workers.by_session(session)
        listed = [found] if found else []
    else:
        listed = workers.all()
    return ok({"workers": [worker_view(workers, worker) for worker in listed]})


async def get_worker(call: Call) -> Response:
    workers = call.services.workers
    return ok(worker_view(workers, workers.get(call.ids["worker_id"])))


async def heartbeat_worker(call: Call) -> Response:
    workers = call.services.workers
    return ok(worker_view(workers, workers.heartbeat(call.ids["worker_id"])))


def session_view(call: Call, heartbeat: bool) -> Response:
    session = call.query["session_id"] if not heartbeat else call.body["session_id"]
    services = call.services
    worker, held = session_tasks(services.workers, services.queue, session, heartbeat)
    rhythm = {
        "idle_timeout_seconds": services.settings.idle_timeout_minutes * 60,
        "heartbeat_seconds": services.settings.heartbeat_seconds,
    }
    ledger = services.ledger
    stopped = ledger.claims_stopped(worker.id)
    return ok(
        {
            "worker": worker_view(services.workers, worker),
            "tasks": [{**claimed(task), "over_budget": ledger.over_budget(task.id)} for task in held],
            "budget": {"claims": "stopped" if stopped else "open", "reason": stopped},
            **rhythm,
        }
    )


async def get_session(call: Call) -> Response:
    return session_view(call, heartbeat=False)


async def heartbeat_session(call: Call) -> Response:
    return session_view(call, heartbeat=True)


async def deregister_worker(call: Call) -> Response:
    worker = call.services.workers.deregister(call.ids["worker_id"])
    call.services.queue.signal.notify()  # its tasks went back to the queue
    return ok(worker_view(call.services.workers, worker))


async def record_run(call: Call) -> Response:
    event = call.services.team.record_run(call.ids["worker_id"], call.body, call.actor)
    return ok(run_view(event), 201)


async def list_runs(call: Call) -> Response:
    return ok({"runs": [run_view(event) for event in call.services.team.runs(call.ids["worker_id"])]})


# -- the team --------------------------------------------------------------------------------


async def put_slot(call: Call) -> Response:
    team = call.services.team
    return ok(slot_view(team, team.put(call.names["slot"], call.body)))


async def delete_slot(call: Call) -> Response:
    team = call.services.team
    return ok(slot_view(team, team.delete(call.names["slot"])))


async def clear_team(call: Call) -> Response:
    return ok({"deleted": call.services.team.clear()})


async def get_team(call: Call) -> Response:
    return ok(team_view(call.services.team))


async def put_screen(call: Call) -> Response:
    screen = call.services.team.put_screen(call.names["slot"], call.body["text"])
    return ok({"slot": call.names["slot"], "at": screen.at})


async def get_screen(call: Call) -> Response:
    screen = call.services.team.screen(call.names["slot"])
    return ok({"slot": call.names["slot"], "text": screen.text, "at": screen.at})


# -- messages, status, events, keys --------------------------------------------------------


async def send_message(call: Call) -> Response:
    body = call.body
    sender = body.get("sender") or call.actor
    message = call.services.messages.send(sender, body["to"], body.get("kind", "message"), body["body"])
    return ok(message_view(message), 201)


async def read_messages(call: Call) -> Response:
    after = cursor(call.query.get("cursor"))
    messages = call.services.messages.read(call.query.get("for"), after, call.query.get("limit", 100))
    next_cursor = str(messages[-1].id) if messages else str(after)
    return ok({"messages": [message_view(m) for m in messages], "next_cursor": next_cursor})


async def status(call: Call) -> Response:
    return ok(status_view(await call.services.progress(), call.services.workers))


async def events(call: Call) -> Response:
    header = call.request.headers.get("last-event-id", "").strip()
    if header and not (header.isascii() and header.isdigit() and len(header) <= 19 and int(header) <= MAX_ID):
        raise InvalidRequest(f"Last-Event-ID must be an event id, got {header[:40]!r}")
    feed = call.services.events
    after = int(header) if header else call.query.get("after", feed.newest())
    return StreamingResponse(
        feed.stream(after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@cache
def document() -> dict[str, Any]:
    """This API's OpenAPI document, made once: it depends only on the declarations below."""
    return openapi_document(ENDPOINTS, __version__, s.COMPONENTS)


async def openapi(call: Call) -> Response:
    return ok(document())


async def list_keys(call: Call) -> Response:
    return ok({"keys": [key_view(key) for key in call.services.keys.all()]})


async def add_key(call: Call) -> Response:
    record, key = call.services.keys.create(call.body["name"], call.body["role"])
    return ok({**key_view(record), "key": key}, 201)


async def revoke_key(call: Call) -> Response:
    return ok(key_view(call.services.keys.revoke(call.body["name"])))


STATE = Param({"type": "array", "items": {"enum": list(TASK_STATES)}}, "task states", repeated=True)
TASK_ID_PATH = "/v1/tasks/{task_id}"
SLOT_PATH = "/v1/team/slots/{slot}"
SLOT = {"slot": s.described(s.SLOT_NAME, "coordinator, w1, w2, ...")}
R = s.ref

# A table, one endpoint per entry with its summary and answers beside it: kept as written (fmt: skip).
ENDPOINTS: list[Endpoint] = [
    # The hot path first: Starlette tries routes in order.
    Endpoint("POST", "/v1/tasks/claim", claim_task,
             "Claim the best ready task the worker can do; wait up to `wait` s for one", "agent",
             body=s.CLAIM,
             responses={200: ("The task, with its lease_token", s.TASK),
                        204: ("No task came within `wait`", None),
                        409: ("The worker is stopped, or a day budget is spent (`budget_exhausted`: the "
                              "message says which)", R("Error"))}),
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
    Endpoint("POST", "/v1/workers/{worker_id}/runs", record_run,
             "Record the result of one headless session of the worker (event `worker.run`)", "agent",
             body=s.RUN, responses={201: ("The run as recorded", s.RUN_VIEW)}),
    Endpoint("GET", "/v1/workers/{worker_id}/runs", list_runs, "The worker's latest runs, newest first",
             "viewer", responses={200: ("The runs", s.RUNS)}),
    Endpoint("GET", "/v1/team", get_team, "The team's slots, each with its worker, and the work per role",
             "viewer", responses={200: ("The team", s.TEAM)}),
    Endpoint("DELETE", "/v1/team", clear_team, "Forget every slot and screen", "agent",
             responses={200: ("How many slots there were",
                              s.obj(["deleted"], deleted={"type": "integer"}))}),
    Endpoint("PUT", SLOT_PATH, put_slot, "Set a slot's state (its runner sends it every 10 s)", "agent",
             names=SLOT, body=s.TEAM_SLOT,
             responses={200: ("The slot", R("Slot")),
                        409: (f"A new slot beyond the {MAX_SLOTS} the hub keeps", R("Error"))}),
    Endpoint("DELETE", SLOT_PATH, delete_slot, "Forget a slot and its screen", "agent", names=SLOT,
             responses={200: ("The slot as it was", R("Slot"))}),
    Endpoint("PUT", SLOT_PATH + "/screen", put_screen,
             "Set a slot's screen (secrets are redacted before it is kept)", "agent", names=SLOT,
             body=s.SCREEN,
             responses={200: ("Kept", s.obj(["slot", "at"], slot=s.SLOT_NAME, at={"type": "number"}))}),
    Endpoint("GET", SLOT_PATH + "/screen", get_screen,
             "A slot's screen: what its terminal shows, secrets redacted", "admin",
             role_setting="screen_role", names=SLOT,
             responses={200: ("The screen", s.SCREEN_VIEW)}),
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
ENDPOINTS += api_otlp.ENDPOINTS
