"""The hub's MCP endpoint at /mcp (streamable HTTP): the REST API's services, as tools.

Each tool is declared once, as data, like the REST endpoints: name, description, the role it
needs, the JSON Schema of its arguments and a handler that calls the services. Where REST has a
request body the arguments are that body's schema (plus the task id of the path), checked by
the same validators, so both adapters take the same input and explain bad input the same way.

A request is authenticated before the SDK sees it, with the REST API's keys and error shape
(401 without or with a bad key). Its body is then read (within the body limit) and its JSON-RPC
envelope checked (jsonrpc.py), so a malformed message gets a JSON-RPC error that says what is
wrong and never reaches the SDK. The key travels with the request to the tool call, which checks
the tool's role. An unknown tool is a JSON-RPC error (the MCP spec's protocol error); a refusal,
bad arguments and every hub error come back as a tool error (`isError`) carrying the hub's code
and message, so the model can correct itself, never as a crash of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastjsonschema
import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from scaffold import __version__
from scaffold.hub import api_files as f
from scaffold.hub import schemas as s
from scaffold.hub.api import claimed, create_batch, message_view, status_view
from scaffold.hub.api_exec import EXEC_FIELDS
from scaffold.hub.auth import ROLE_RANK
from scaffold.hub.errors import Forbidden, HubError, InvalidRequest, LeaseConflict, StoreClosed
from scaffold.hub.exec import execute
from scaffold.hub.http import MAX_ID, _validated, error_response
from scaffold.hub.jsonrpc import PATH, ExplainedParams, envelope_error, parsed, refused_request, replay
from scaffold.hub.reservations import DEFAULT_TTL
from scaffold.hub.reservations import view as reservation_view
from scaffold.hub.store.base import TaskFilter
from scaffold.hub.types import TASK_STATES, ApiKey, Plan, Role, Task

if TYPE_CHECKING:
    from scaffold.hub.app import Hub

log = logging.getLogger("scaffold.hub")
_KEY = "scaffold.api_key"  # where the ASGI wrapper leaves the caller's key in the request scope


@dataclass(frozen=True)
class ToolCall:
    """What a tool's handler gets: the services, the caller's key and the validated arguments."""

    hub: Hub
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
COMMAND = s.obj([], **EXEC_FIELDS)
LIST_FILES = s.obj([], path=f.PATH, glob=f.GLOB, limit=s.described(
    {"type": "integer", "minimum": 1, "maximum": 10_000}, "default 1000"))  # fmt: skip
READ_FILE = s.obj(["path"], path=f.PATH)
WRITE_FILE = s.obj(
    ["path", "content"],
    path=f.PATH,
    content=s.described(f.CONTENT, "UTF-8 text"),
    etag=s.described(f.ETAG, "the etag read_file returned; omit it to create a new file"),
    worker_id=f.WORKER_ID,
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
    return {**body, "properties": {"task_id": s.ID, **body["properties"]},
            "required": ["task_id", *body["required"]]}  # fmt: skip


# -- handlers: thin adapters over the same services as api.py ------------------------------


def plan_view(plan: Plan) -> dict[str, Any]:
    return {"goal": plan.goal, "plan": plan.plan, "updated_at": plan.updated_at}


def cursor(text: str | None) -> int:
    value = int(text or "0")
    if value > MAX_ID:
        raise InvalidRequest(f"cursor {value} is not a cursor this hub gave out")
    return value


def lease_token(call: ToolCall) -> str:
    token: str = call.args["lease_token"]
    if not token.isascii():  # never one the hub gave out; hmac.compare_digest refuses non-ASCII text
        raise LeaseConflict(f"task {call.args['task_id']}: this lease token is not its current lease")
    return token


async def get_plan(call: ToolCall) -> dict[str, Any]:
    return plan_view(call.hub.store.get_plan())


async def set_plan(call: ToolCall) -> dict[str, Any]:
    args = call.args
    return plan_view(call.hub.store.set_plan(args["goal"], args["plan"], call.actor, call.hub.clock()))


async def create_tasks(call: ToolCall) -> dict[str, Any]:
    tasks, created = await create_batch(
        call.hub, call.args["tasks"], call.args.get("idempotency_key"), call.actor
    )
    return {"tasks": [task.public() for task in tasks], "created": created}


def listed(task: Task) -> dict[str, Any]:
    view = task.public()
    del view["instructions"]  # a page of full instructions would flood the caller's context
    return view


async def list_tasks(call: ToolCall) -> dict[str, Any]:
    limit = call.args.get("limit", 100)
    tasks = call.hub.store.list_tasks(
        TaskFilter(
            states=tuple(call.args.get("state", ())),
            worker_id=call.args.get("worker_id"),
            after_id=cursor(call.args.get("cursor")),
            limit=limit,
        )
    )
    next_cursor = str(tasks[-1].id) if len(tasks) == limit else None
    return {"tasks": [listed(task) for task in tasks], "next_cursor": next_cursor}


async def get_task(call: ToolCall) -> dict[str, Any]:
    return call.hub.store.get_task(call.args["task_id"]).public()


async def claim_task(call: ToolCall) -> dict[str, Any]:
    args = call.args
    wait = args.get("wait", 0)
    task = await call.hub.queue.claim(args["worker_id"], args.get("capabilities"), wait)
    if task is None:
        return {
            "task": None,
            "message": f"no ready task for worker {args['worker_id']} (waited up to {wait:g} s)",
        }
    return claimed(task)


async def heartbeat_task(call: ToolCall) -> dict[str, Any]:
    return claimed(call.hub.queue.heartbeat(call.args["task_id"], lease_token(call)))


async def complete_task(call: ToolCall) -> dict[str, Any]:
    task = await call.hub.complete_task(call.args["task_id"], lease_token(call), call.args.get("result", ""))
    return task.public()


async def fail_task(call: ToolCall) -> dict[str, Any]:
    return call.hub.queue.fail(call.args["task_id"], lease_token(call), call.args["error"]).public()


async def release_task(call: ToolCall) -> dict[str, Any]:
    return call.hub.queue.release(call.args["task_id"], lease_token(call)).public()


async def cancel_task(call: ToolCall) -> dict[str, Any]:
    return call.hub.queue.cancel(call.args["task_id"], call.actor).public()


async def get_status(call: ToolCall) -> dict[str, Any]:
    return status_view(call.hub)


async def send_message(call: ToolCall) -> dict[str, Any]:
    args = call.args
    sender = args.get("sender") or call.actor
    return message_view(call.hub.messages.send(sender, args["to"], args.get("kind", "message"), args["body"]))


async def run_command(call: ToolCall) -> dict[str, Any]:
    return (await execute(call.hub, call.args, call.actor)).view()


async def list_files(call: ToolCall) -> dict[str, Any]:
    args = call.args
    listing = await asyncio.to_thread(
        call.hub.workspace.list, args.get("path", ""), args.get("glob"), args.get("limit", 1000)
    )
    return {"entries": [f.entry_view(entry) for entry in listing.entries], "truncated": listing.truncated}


async def read_file(call: ToolCall) -> dict[str, Any]:
    path = call.args["path"]
    content, etag = await asyncio.to_thread(call.hub.workspace.read, path)
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
    written = await asyncio.to_thread(
        lambda: call.hub.workspace.write(
            args["path"],
            args["content"].encode(),
            writer=args.get("worker_id"),
            if_match=etag,
            if_none_match=None if etag else "*",
            actor=call.actor,
        )
    )
    return {**f.written_view(written.path, written.size, written.etag), "created": written.created}


async def edit_file(call: ToolCall) -> dict[str, Any]:
    return await f.edited(call.hub, call.args, call.actor)


async def delete_file(call: ToolCall) -> dict[str, Any]:
    return await f.deleted(call.hub, call.args, call.actor)


async def move_file(call: ToolCall) -> dict[str, Any]:
    return await f.moved(call.hub, call.args, call.actor)


async def grep_files(call: ToolCall) -> dict[str, Any]:
    return await f.grepped(call.hub, call.args)


async def reserve_paths(call: ToolCall) -> dict[str, Any]:
    args = call.args
    made = call.hub.reservations.reserve(
        args["worker_id"],
        args["globs"],
        exclusive=args.get("exclusive", True),
        ttl_seconds=args.get("ttl_seconds", DEFAULT_TTL),
        task_id=args.get("task_id"),
    )
    return {"reservations": [reservation_view(reservation) for reservation in made]}


async def release_paths(call: ToolCall) -> dict[str, Any]:
    reservations, worker = call.hub.reservations, call.args["worker_id"]
    ids = call.args.get("reservation_ids") or [held.id for held in reservations.active(worker)]
    return {"released": [reservation_view(reservations.release(number, worker)) for number in ids]}


async def read_messages(call: ToolCall) -> dict[str, Any]:
    after = cursor(call.args.get("since"))
    messages = call.hub.messages.read(call.args.get("reader"), after, call.args.get("limit", 100))
    next_cursor = str(messages[-1].id) if messages else str(after)
    return {"messages": [message_view(m) for m in messages], "next_cursor": next_cursor}


# -- the tool list -------------------------------------------------------------------------

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
    Tool("edit_file", "Replace an exact string in a text file, like Edit.", "agent", f.EDIT, edit_file),
    Tool("delete_file", "Delete a file or an empty directory.", "agent", f.DELETE, delete_file),
    Tool("move_file", "Move or rename a file or directory.", "agent", f.MOVE, move_file),
    Tool("grep_files", "Search text files for lines matching a regular expression.", "viewer", f.GREP,
         grep_files),
    Tool("reserve_paths",
         "Reserve paths or globs for a worker; exclusive ones stop others' writes (reserved).", "agent",
         f.RESERVE, reserve_paths),
    Tool("release_paths", "End a worker's reservations.", "agent", RELEASE_PATHS, release_paths),
    Tool("run_command",
         "Run a command in the workspace root or cwd: argv (no shell) or shell. Returns exit_code, stdout, "
         "stderr.",
         "agent", COMMAND, run_command),
]  # fmt: skip


# -- serving -------------------------------------------------------------------------------


class McpEndpoint:
    """The ASGI app at /mcp: authenticate the key, then let the SDK serve the request.

    Stateless, JSON answers: every call stands alone, so a restarted hub loses no session and
    each request is authenticated on its own.
    """

    def __init__(self, hub: Hub, tools: Sequence[Tool] = TOOLS) -> None:
        self.hub = hub
        self.tools = {tool.name: tool for tool in tools}
        self.validators = {tool.name: fastjsonschema.compile(tool.schema) for tool in tools}
        self.listing = types.ListToolsResult(
            tools=[types.Tool(name=tool.name, description=tool.description, input_schema=tool.schema)
                   for tool in tools]
        )  # fmt: skip
        self.server: Server[Any] = Server(
            "vps", version=__version__, on_list_tools=self.list_tools, on_call_tool=self.call_tool
        )
        self.server.middleware.append(ExplainedParams())
        self.app: Starlette | None = None  # the SDK's app, while the hub's lifespan runs

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve MCP for as long as the block runs (the hub's lifespan). The SDK's session
        manager runs only once, so each lifespan (tests start several on one app) gets its own."""
        app = self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=self.hub.settings.max_body_bytes,
            # The SDK's DNS-rebinding guard would admit only Host: 127.0.0.1 and refuse the hub
            # behind its proxy; the API key is the guard here, as on the REST routes.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        async with self.server.session_manager.run():
            self.app = app
            try:
                yield
            finally:
                self.app = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        address = request.client.host if request.client else "unknown"
        try:
            key = self.hub.auth.authenticate(request.headers, address, "viewer")
        except HubError as error:
            await error_response(error)(scope, receive, send)
            return
        if self.app is None:
            await error_response(StoreClosed("MCP is served while the hub runs"))(scope, receive, send)
            return
        refusal = refused_request(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            body = await request.body()  # past the body limit: PayloadTooLarge, which BodyLimit answers
        except ClientDisconnect:  # nobody to answer
            return
        message, refusal = parsed(body)
        refusal = refusal or envelope_error(message)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope[_KEY] = key
        await self.app(scope, replay(body, receive), send)

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return self.listing

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = self.tools.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"no tool {params.name!r}; tools/list names them")
        try:
            key = caller(ctx)
            if ROLE_RANK[key.role] < ROLE_RANK[tool.role]:
                raise Forbidden(f"{tool.name} needs the {tool.role} role; key {key.name!r} is {key.role}")
            args = _validated(self.validators[tool.name], arguments(params.arguments), "arguments")
            payload = await tool.handler(ToolCall(self.hub, key, args))
        except HubError as error:
            return refusal(error.code, error.message)
        except Exception:  # one bad call must answer, as a REST route does with 500
            log.exception("MCP tool %s failed unexpectedly", params.name)
            return refusal("internal", "the hub failed unexpectedly; see its log")
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=payload)


def caller(ctx: ServerRequestContext[Any]) -> ApiKey:
    """The key McpEndpoint authenticated for this HTTP request (the SDK hands the request on)."""
    request = ctx.request
    key = request.scope.get(_KEY) if isinstance(request, Request) else None
    if not isinstance(key, ApiKey):  # only reachable if the SDK is served without McpEndpoint
        raise Forbidden("this call did not come through the hub's authenticated /mcp endpoint")
    return key


def refusal(code: str, message: str) -> types.CallToolResult:
    """A tool error in the REST API's shape, as text for the model and as structured content."""
    return types.CallToolResult(
        content=[types.TextContent(text=f"{code}: {message}")],
        structured_content={"error": {"code": code, "message": message}},
        is_error=True,
    )


def arguments(raw: dict[str, Any] | None) -> dict[str, Any]:
    try:
        args: dict[str, Any] = plain(raw or {})
    except RecursionError:
        raise InvalidRequest("arguments nest arrays or objects too deeply") from None
    return args


def plain(value: Any) -> Any:
    """Arguments as the REST API parses a body: integral floats are ints (46.0 is task 46), and
    NaN, infinities and lone surrogates, which JSON does not have, are refused."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"arguments hold {value}, which is not a JSON number")
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidRequest("arguments hold a lone surrogate (\\ud800-\\udfff) in a string") from None
        return value
    if isinstance(value, dict):
        return {plain(name): plain(item) for name, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
