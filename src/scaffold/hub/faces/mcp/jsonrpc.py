"""What the MCP endpoint answers before and around the SDK: JSON-RPC errors that say what was wrong.

The SDK answers most bad input itself, but not all of it well: an `id` of 1.5, null, true or {}
makes a request a "notification" it acknowledges with 202 and never answers; a batch or a
message that fits no JSON-RPC form gets a pydantic dump as its message; a wrong Content-Type
gets plain text; a GET opens an event stream that a stateless server never writes to; params
that fail its models get "Invalid request parameters" and no detail. `refused_request` and
`envelope_error` answer those before the SDK sees the message, and `ExplainedParams` names the
field that failed.

Every answer about the message on /mcp (its size, syntax, envelope, headers, method) is a
JSON-RPC error (`id` null when the request's own id is unusable), also when the HTTP status
says it (413, 415, 405): an MCP client relays a JSON-RPC error body's message to its caller,
while any other body becomes "Server returned an error response". The hub's own code
(`payload_too_large`, ...) rides in `error.data.code`. Refusing the key (401, 429) is not about
the message and keeps the REST API's shape, as on every route.
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
import pydantic_core
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope

from scaffold.errors import HubError
from scaffold.hub.faces.rest.http import error_response

PATH = "/mcp"
RequestId = str | int | None


def jsonrpc_error(
    status: int,
    code: int,
    message: str,
    request_id: RequestId = None,
    *,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error}, status, headers=headers)


def hub_error(error: HubError) -> JSONResponse:
    """A hub error refused at the HTTP level, as a JSON-RPC error with the REST API's status and code."""
    return jsonrpc_error(error.status, types.INVALID_REQUEST, error.message, data={"code": error.code})


def http_error(scope: Scope, error: HubError) -> Response:
    """How the whole app answers an error met before routing (a body limit): JSON-RPC on /mcp."""
    return hub_error(error) if scope.get("path") == PATH else error_response(error)


def parsed(body: bytes) -> tuple[Any, JSONResponse | None]:
    """The body parsed as the SDK parses it (so both see the same value), or the error to answer."""
    try:
        return pydantic_core.from_json(body), None
    except ValueError as error:
        return None, jsonrpc_error(400, types.PARSE_ERROR, f"the body is not valid JSON: {error}")


def envelope_error(message: Any) -> JSONResponse | None:
    """The JSON-RPC error for a message that is not one JSON-RPC 2.0 request, notification or
    response as MCP has them (ids are strings or integers, params an object); None if it is."""
    if isinstance(message, list):
        return _invalid("a batch (a JSON array) is not accepted: send one JSON-RPC message per request")
    if not isinstance(message, dict):
        return _invalid(f"the body must be one JSON-RPC message, a JSON object; got {_kind(message)}")
    request_id = message.get("id")
    usable_id = request_id if _is_id(request_id) else None
    if message.get("jsonrpc") != "2.0":
        return _invalid('"jsonrpc" must be "2.0"', usable_id)
    if "id" in message and usable_id is None:
        return _invalid(f'"id" must be a string or an integer; got {_kind(request_id)}')
    if "method" in message:
        method, params = message["method"], message.get("params", {})
        if not isinstance(method, str) or not method:
            return _invalid(f'"method" must be a method name (a string); got {_kind(method)}', usable_id)
        if not isinstance(params, dict):
            problem = f'"params" must be an object; got {_kind(params)}'
            return jsonrpc_error(400, types.INVALID_PARAMS, problem, usable_id)
        return None
    if "result" in message or "error" in message:
        if usable_id is None:
            return _invalid('a response needs the "id" of the request it answers')
        return None
    return _invalid(
        'a JSON-RPC message needs a "method" (a request or a notification), or a "result" or '
        'an "error" (a response)',
        usable_id,
    )


def refused_request(request: Request) -> Response | None:
    """What the SDK would refuse from the headers alone, answered in JSON-RPC (the SDK's
    Content-Type refusal is plain text, and its GET opens an event stream that a stateless
    server never writes to, which would hold the connection until the client gives up)."""
    if request.method != "POST":
        message = (
            f"{request.method} is not served on {PATH}: POST one JSON-RPC message "
            "(the server is stateless: no event stream, no session)"
        )
        return jsonrpc_error(405, types.INVALID_REQUEST, message, headers={"Allow": "POST"})
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        message = f"Content-Type must be application/json; got {media_type[:100] or 'none'!r}"
        return jsonrpc_error(415, types.INVALID_REQUEST, message)
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, for the SDK to read again; then the connection's own messages
    (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _invalid(message: str, request_id: RequestId = None) -> JSONResponse:
    return jsonrpc_error(400, types.INVALID_REQUEST, message, request_id)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number with a fraction",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


class ExplainedParams:
    """SDK middleware: params that fail the SDK's models name the field and the rule.

    The SDK answers them with "Invalid request parameters" and empty data; the message here is
    what pydantic found, without the input (which may be large), like the REST API's 422s.
    """

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        try:
            return await call_next(ctx)
        except ValidationError as error:
            problems = [
                f"{_where(problem['loc'])}: {problem['msg']}"
                for problem in error.errors(include_url=False, include_input=False)[:3]
            ]
            message = f"invalid params for {ctx.method}: {'; '.join(problems)}"
            raise MCPError(types.INVALID_PARAMS, message) from None


def _where(loc: tuple[int | str, ...]) -> str:
    # Spec methods are validated as the whole request (loc starts at "params"), others as params.
    parts = [str(part) for part in loc]
    return ".".join(parts if parts[:1] == ["params"] else ["params", *parts])
