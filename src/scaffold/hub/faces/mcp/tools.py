"""The hub's MCP tools: the REST API's services, as tools (served by scaffold.hub.faces.mcp.endpoint).

Each tool is declared once, as data, like the REST endpoints: name, description, the role it
needs, the JSON Schema of its arguments and a handler that calls the services. Where REST has a
request body the arguments are that body's schema (plus the task id of the path), checked by
the same validators, so both adapters take the same input and explain bad input the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from scaffold.errors import InvalidRequest
from scaffold.hub.core import schemas as s
from scaffold.hub.core import workspace_schemas as w
from scaffold.hub.core.types import TASK_STATES, ApiKey, Role
from scaffold.hub.faces.views import (
    claimed,
    create_batch,
    cursor,
    deleted,
    edited,
    entry_view,
    grepped,
    lease_token,
    listed,
    message_view,
    moved,
    plan_view,
    reservation_view,
    reserve,
    status_view,
    with_usage,
    written_view,
)
from scaffold.hub.services.container import Services


@dataclass(frozen=True)
class ToolCall:
    """What a tool's handler gets: the services, the caller's key and the validated arguments."""

    services: Services
    key: ApiKey
    args: dict[str, Any]

    @property
    def actor(self) -> str:
        return self.key.name


Handler = Callable[[ToolCall], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    role: Role
    schema: dict[str, Any]
    handler: Handler


# -- argument schemas ----------------------------------------------------------------------

NO_ARGS = s.obj([])
TASK_ID = s.obj(["task_id"], task_id=s.ID)
CURSOR = {"type": "string", "pattern": "^[0-9]{1,19}$"}
LIMIT = s.described({"type": "integer", "minimum": 1, "maximum": 1000}, "default 100")
# REST's body is argv or shell (a oneOf); a tool's schema must be one object, so it takes both
# and execute() refuses anything but exactly one of them, as it does for REST.
COMMAND = s.obj([], **w.EXEC_FIELDS)
LIST_FILES = s.obj(
    [],
    path=w.PATH,
    glob=w.GLOB,
    limit=s.described({"type": "integer", "minimum": 1, "maximum": 10_000}, "default 1000"),
    worker_id=w.READER_ID,
)
READ_FILE = s.obj(["path"], path=w.PATH, worker_id=w.READER_ID)
WRITE_FILE = s.obj(
    ["path", "content"],
    path=w.PATH,
    content=s.described(w.CONTENT, "UTF-8 text"),
    etag=s.described(w.ETAG, "the etag read_file returned; omit it to create a new file"),
    worker_id=w.WORKER_ID,
)
RELEASE_PATHS = s.obj(
    ["worker_id"],
    worker_id=s.ID,
    reservation_ids=s.described(
        {"type": "array", "items": s.ID, "minItems": 1, "maxItems": 1000}, "default: all of the worker's"
    ),
)


def on_task(body: dict[str, Any]) -> dict[str, Any]:
    """A REST body sent to /v1/tasks/{task_id}/...: the task id joins the arguments."""
    return {
        **body,
        "properties": {"task_id": s.ID, **body["properties"]},
        "required": ["task_id", *body["required"]],
    }


# -- handlers: thin adapters over the same services and views as the REST API --------------


def leased(call: ToolCall) -> str:
    return lease_token(call.args["task_id"], call.args["lease_token"])


async def get_plan(call: ToolCall) -> dict[str, Any]:
    return plan_view(call.services.plans.get())


async def set_plan(call: ToolCall) -> dict[str, Any]:
    return plan_view(call.services.plans.set(call.args["goal"], call.args["plan"], call.actor))


async def create_tasks(call: ToolCall) -> dict[str, Any]:
    args = call.args
    tasks, created = await create_batch(
        call.services.queue, args["tasks"], args.get("idempotency_key"), call.actor
    )
    return {"tasks": [task.public() for task in tasks], "created": created}


async def list_tasks(call: ToolCall) -> dict[str, Any]:
    limit = call.args.get("limit", 100)
    tasks = call.services.queue.page(
        states=call.args.get("state", ()),
        worker_id=call.args.get("worker_id"),
        after_id=cursor(call.args.get("cursor")),
        limit=limit,
    )
    next_cursor = str(tasks[-1].id) if len(tasks) == limit else None
    return {"tasks": [listed(task) for task in tasks], "next_cursor": next_cursor}


async def get_task(call: ToolCall) -> dict[str, Any]:
    return with_usage(call.services.ledger, [call.services.queue.get(call.args["task_id"]).public()])[0]


async def claim_task(call: ToolCall) -> dict[str, Any]:
    args = call.args
    wait = args.get("wait", 0)
    task = await call.services.queue.claim(args["worker_id"], args.get("capabilities"), wait)
    if task is None:
        return {
            "task": None,
            "message": f"no ready task for worker {args['worker_id']} (waited up to {wait:g} s)",
        }
    return claimed(task)


async def heartbeat_task(call: ToolCall) -> dict[str, Any]:
    return claimed(call.services.queue.heartbeat(call.args["task_id"], leased(call)))


async def complete_task(call: ToolCall) -> dict[str, Any]:
    task = await call.services.complete_task(call.args["task_id"], leased(call), call.args.get("result", ""))
    return task.public()


async def fail_task(call: ToolCall) -> dict[str, Any]:
    return call.services.queue.fail(call.args["task_id"], leased(call), call.args["error"]).public()


async def release_task(call: ToolCall) -> dict[str, Any]:
    return call.services.queue.release(call.args["task_id"], leased(call)).public()


async def cancel_task(call: ToolCall) -> dict[str, Any]:
    return call.services.queue.cancel(call.args["task_id"], call.actor).public()


async def get_status(call: ToolCall) -> dict[str, Any]:
    return status_view(await call.services.progress(), call.services.workers)


async def send_message(call: ToolCall) -> dict[str, Any]:
    args = call.args
    sender = args.get("sender") or call.actor
    message = call.services.messages.send(sender, args["to"], args.get("kind", "message"), args["body"])
    return message_view(message)


async def run_command(call: ToolCall) -> dict[str, Any]:
    return (await call.services.run_command(call.args, call.actor)).view()


async def list_files(call: ToolCall) -> dict[str, Any]:
    args = call.args
    files = await call.services.files_for(args.get("worker_id"))
    listing = await asyncio.to_thread(
        files.list, args.get("path", ""), args.get("glob"), args.get("limit", 1000)
    )
    return {"entries": [entry_view(entry) for entry in listing.entries], "truncated": listing.truncated}


async def read_file(call: ToolCall) -> dict[str, Any]:
    path = call.args["path"]
    files = await call.services.files_for(call.args.get("worker_id"))
    content, etag = await asyncio.to_thread(files.read, path)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"{path[:200]} is not UTF-8 text; the MCP tools read text (GET /v1/files/content reads bytes)"
        ) from None
    return {"path": path, "content": text, "etag": etag, "size": len(content)}


async def write_file(call: ToolCall) -> dict[str, Any]:
    args = call.args
    etag = args.get("etag")
    files = await call.services.files_for(args.get("worker_id"))
    written = await asyncio.to_thread(
        lambda: files.write(
            args["path"],
            args["content"].encode(),
            writer=args.get("worker_id"),
            if_match=etag,
            if_none_match=None if etag else "*",
            actor=call.actor,
        )
    )
    await call.services.changed(files, [written.path], f"write {written.path}", call.actor)
    return {**written_view(written.path, written.size, written.etag), "created": written.created}


async def edit_file(call: ToolCall) -> dict[str, Any]:
    return await edited(call.services, call.args, call.actor)


async def delete_file(call: ToolCall) -> dict[str, Any]:
    return await deleted(call.services, call.args, call.actor)


async def move_file(call: ToolCall) -> dict[str, Any]:
    return await moved(call.services, call.args, call.actor)


async def grep_files(call: ToolCall) -> dict[str, Any]:
    return await grepped(call.services, call.args)


async def reserve_paths(call: ToolCall) -> dict[str, Any]:
    made = reserve(call.services.reservations, call.args)
    return {"reservations": [reservation_view(reservation) for reservation in made]}


async def release_paths(call: ToolCall) -> dict[str, Any]:
    reservations, worker = call.services.reservations, call.args["worker_id"]
    ids = call.args.get("reservation_ids") or [held.id for held in reservations.active(worker)]
    return {"released": [reservation_view(reservations.release(number, worker)) for number in ids]}


async def read_messages(call: ToolCall) -> dict[str, Any]:
    after = cursor(call.args.get("since"))
    messages = call.services.messages.read(call.args.get("reader"), after, call.args.get("limit", 100))
    next_cursor = str(messages[-1].id) if messages else str(after)
    return {"messages": [message_view(m) for m in messages], "next_cursor": next_cursor}


# -- the tool list -------------------------------------------------------------------------

# A table, one tool per entry with its summary and answers beside it: kept as written (fmt: skip).
TOOLS: list[Tool] = [
    Tool("get_plan", "The goal and master plan.", "viewer", NO_ARGS, get_plan),
    Tool("set_plan", "Replace the goal and master plan (markdown).", "agent", s.PLAN, set_plan),
    Tool("create_tasks",
         "Queue a batch of tasks. The same idempotency_key again returns the first result.",
         "agent", s.CREATE_TASKS["oneOf"][0], create_tasks),
    Tool("list_tasks",
         "Tasks in id order, without instructions (get_task has them). Next page: cursor=next_cursor.",
         "viewer",
         s.obj([], state={"type": "array", "items": {"enum": list(TASK_STATES)}},
               worker_id=s.ID, cursor=CURSOR, limit=LIMIT),
         list_tasks),
    Tool("get_task", "One task with its instructions.", "viewer", TASK_ID, get_task),
    Tool("claim_task",
         "Claim the best ready task for the worker, waiting up to `wait` s. Returns the task with "
         "its lease_token, or task null.",
         "agent", s.CLAIM, claim_task),
    Tool("heartbeat_task", "Extend the lease of a claimed task.", "agent", on_task(s.LEASE), heartbeat_task),
    Tool("complete_task", "Mark a claimed task done with a result summary; unblocks dependents.",
         "agent", on_task(s.COMPLETE), complete_task),
    Tool("fail_task", "Report a claimed task failed: retried until max_attempts, then dead.",
         "agent", on_task(s.FAIL), fail_task),
    Tool("release_task", "Give a claimed task back to the queue without using an attempt.",
         "agent", on_task(s.LEASE), release_task),
    Tool("cancel_task", "Cancel an unfinished task (admin key).", "admin", TASK_ID, cancel_task),
    Tool("get_status", "Progress, stuck and unclaimable tasks, workers and the plan.", "viewer", NO_ARGS,
         get_status),
    Tool("send_message", "Send a message or a discovery.", "agent", s.SEND, send_message),
    Tool("read_messages",
         "Messages after the cursor `since` (default: all) for reader worker:<id> or coordinator; "
         "keep next_cursor.",
         "viewer",
         s.obj([], reader={"type": "string", "pattern": "^(coordinator|worker:[1-9][0-9]{0,17})$"},
               since=CURSOR, limit=LIMIT),
         read_messages),
    Tool("list_files", "List a directory, or with glob every path below it that matches.", "viewer",
         LIST_FILES, list_files),
    Tool("read_file", "Read a UTF-8 text file: its content and etag.", "viewer", READ_FILE, read_file),
    Tool("write_file",
         "Write a whole text file atomically: with the etag from read_file it replaces that version, "
         "without one it only creates. Stale etag: read again.",
         "agent", WRITE_FILE, write_file),
    Tool("edit_file", "Replace an exact string in a text file, like Edit.", "agent", w.EDIT, edit_file),
    Tool("delete_file", "Delete a file or an empty directory.", "agent", w.DELETE, delete_file),
    Tool("move_file", "Move or rename a file or directory.", "agent", w.MOVE, move_file),
    Tool("grep_files", "Search text files for lines matching a regular expression.", "viewer", w.GREP,
         grep_files),
    Tool("reserve_paths",
         "Reserve paths or globs for a worker; exclusive ones stop others' writes (reserved).", "agent",
         w.RESERVE, reserve_paths),
    Tool("release_paths", "End a worker's reservations.", "agent", RELEASE_PATHS, release_paths),
    Tool("run_command",
         "Run a command in the workspace root or cwd: argv (no shell) or shell. Returns exit_code, stdout, "
         "stderr.",
         "agent", COMMAND, run_command),
]  # fmt: skip
