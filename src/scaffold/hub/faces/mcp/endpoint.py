"""The hub's MCP endpoint at /mcp (streamable HTTP), serving the tools of scaffold.hub.faces.mcp.tools.

A request is authenticated before the SDK sees it, with the REST API's keys and error shape
(401 without or with a bad key). Its body is then read (within the body limit) and its JSON-RPC
envelope checked (jsonrpc.py), so a malformed message gets a JSON-RPC error that says what is
wrong and never reaches the SDK. The key travels with the request to the tool call, which checks
the tool's role. An unknown tool is a JSON-RPC error (the MCP spec's protocol error); a refusal,
bad arguments and every hub error come back as a tool error (`isError`) carrying the hub's code
and message, so the model can correct itself, never as a crash of the call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

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
from scaffold.errors import Forbidden, HubError, InvalidRequest, StoreClosed
from scaffold.hub.core.types import ApiKey
from scaffold.hub.faces.mcp.jsonrpc import (
    PATH,
    ExplainedParams,
    envelope_error,
    parsed,
    refused_request,
    replay,
)
from scaffold.hub.faces.mcp.tools import TOOLS, Tool, ToolCall
from scaffold.hub.faces.rest.http import error_response
from scaffold.hub.faces.views import validated
from scaffold.hub.services.auth import ROLE_RANK
from scaffold.hub.services.container import Services

log = logging.getLogger("scaffold.hub")
_KEY = "scaffold.api_key"  # where the ASGI wrapper leaves the caller's key in the request scope


class McpEndpoint:
    """The ASGI app at /mcp: authenticate the key, then let the SDK serve the request.

    Stateless, JSON answers: every call stands alone, so a restarted hub loses no session and
    each request is authenticated on its own.
    """

    def __init__(self, services: Services, tools: Sequence[Tool] = TOOLS) -> None:
        self.services = services
        self.tools = {tool.name: tool for tool in tools}
        self.validators = {tool.name: fastjsonschema.compile(tool.schema) for tool in tools}
        self.listing = types.ListToolsResult(
            tools=[
                types.Tool(name=tool.name, description=tool.description, input_schema=tool.schema)
                for tool in tools
            ]
        )
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
            max_request_body_size=self.services.settings.max_body_bytes,
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
            key = self.services.auth.authenticate(request.headers, address, "viewer")
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
            args = validated(self.validators[tool.name], arguments(params.arguments), "arguments")
            payload = await tool.handler(ToolCall(self.services, key, args))
        except HubError as error:
            return refusal(error.code, error.message, error.details)
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


def refusal(code: str, message: str, details: Mapping[str, object] | None = None) -> types.CallToolResult:
    """A tool error in the REST API's shape, as text for the model and as structured content."""
    return types.CallToolResult(
        content=[types.TextContent(text=f"{code}: {message}")],
        structured_content={"error": {"code": code, "message": message, **(details or {})}},
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
