"""How an endpoint is declared and served: auth, validation, one error shape, OpenAPI.

Each route is an `Endpoint`: method, path, required role, JSON Schemas of its body, query and
responses, and an async handler. The same declaration validates requests (compiled once with
fastjsonschema) and generates the OpenAPI document, so the API reference cannot drift.
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaffold.errors import (
    HubError,
    InvalidRequest,
    MalformedJSON,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
)
from scaffold.hub.core.limits import MAX_ID
from scaffold.hub.core.types import ApiKey, Role
from scaffold.hub.faces.views import dumps_sharing_gil, validated
from scaffold.hub.services.container import Services

log = logging.getLogger("scaffold.hub")
# ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() refuses or reads.
_DIGITS = re.compile(r"[0-9]{1,19}")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
JSON_IN_THREAD_BYTES = 64 * 1024
"""Bodies larger than this are parsed and validated in a worker thread: for a 10 MiB body that
takes a few hundred ms, which every other request would wait for on the event loop."""


@dataclass
class Call:
    """What a handler gets: the validated request and the hub's services."""

    services: Services
    request: Request
    key: ApiKey | None
    body: Any
    query: dict[str, Any]
    ids: dict[str, int]
    names: dict[str, str] = field(default_factory=dict)
    """Path segments that are names (Endpoint.names), not ids."""

    @property
    def actor(self) -> str:
        return self.key.name if self.key else "anonymous"


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    """A query parameter: `schema` is its JSON Schema (integers are parsed from the text)."""

    schema: dict[str, Any]
    description: str
    repeated: bool = False
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {name} segments are positive integer ids, unless `names` gives their schema
    handler: Handler
    summary: str
    role: Role | None  # None: open to anyone
    role_setting: str | None = None
    """A HubSettings field that names the role instead (a hub.toml setting); `role` is its default."""
    names: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Path segments that are names: each one's schema, a string with a pattern."""
    body: dict[str, Any] | None = None
    query: Mapping[str, Param] = field(default_factory=dict)
    responses: Mapping[int, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)
    content_type: str = "application/json"  # of the successful answers; errors are always JSON
    raw_body: bool = False  # the body is bytes (application/octet-stream), given as is in `call.body`


class FastJSONResponse(JSONResponse):
    """JSONResponse's bytes from one encoder made once (json.dumps with Starlette's options builds
    a new encoder for every answer: a few microseconds of each claim)."""

    ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    def render(self, content: Any) -> bytes:
        return self.ENCODER.encode(content).encode("utf-8")


class LargeJSONResponse(JSONResponse):
    """A JSONResponse to build in a worker thread (see dumps_sharing_gil)."""

    def render(self, content: Any) -> bytes:
        return dumps_sharing_gil(content).encode("utf-8")


def error_response(error: HubError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, TooManyRequests) else None
    body = {"error": {"code": error.code, "message": error.message, **error.details}}
    return FastJSONResponse(body, error.status, headers=headers)


def route(services: Services, endpoint: Endpoint) -> Route:
    """A Starlette route that authenticates, validates and calls the endpoint's handler."""
    validate_body = _body_validator(endpoint.body) if endpoint.body is not None else None
    validate_query = {name: fastjsonschema.compile(param.schema) for name, param in endpoint.query.items()}
    segments = [part[1:-1] for part in endpoint.path.split("/") if part.startswith("{")]
    id_names = [name for name in segments if name not in endpoint.names]
    patterns = {name: re.compile(schema["pattern"]) for name, schema in endpoint.names.items()}
    role: Role | None = endpoint.role
    if endpoint.role_setting is not None:
        role = getattr(services.settings, endpoint.role_setting)

    async def serve(request: Request) -> Response:
        try:
            key = None
            if role is not None:
                address = request.client.host if request.client else "unknown"
                key = services.auth.authenticate(request.headers, address, role)
            ids = {name: _parse_id(name, request.path_params[name]) for name in id_names}
            names = {name: _parse_name(name, request.path_params[name], patterns[name]) for name in patterns}
            query = _parse_query(request, endpoint.query, validate_query)
            body = None
            if endpoint.raw_body:
                body = await _read_bytes(request)
            elif validate_body is not None:
                body = await _read_json(request, validate_body)
            return await endpoint.handler(Call(services, request, key, body, query, ids, names))
        except HubError as error:
            return error_response(error)

    return Route(endpoint.path, serve, methods=[endpoint.method])


async def _read_bytes(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:  # nobody to answer; not an error of the hub
        raise HubError("the client closed the connection before sending the whole body") from None


async def _read_json(request: Request, validate: Callable[[Any], Any]) -> Any:
    """The body parsed and validated; a large one in a worker thread, off the event loop."""
    raw = await _read_bytes(request)
    if len(raw) > JSON_IN_THREAD_BYTES:
        return await asyncio.to_thread(_parsed, raw, validate, _yielding_decoder())
    return _parsed(raw, validate, _DECODER)


def _yielding_decoder() -> json.JSONDecoder:
    """A decoder that shares the GIL while it parses.

    json's C scanner parses a whole document in one call that holds the GIL (~15-70 ms per MB),
    so even in a worker thread it stops the event loop. Its pure-Python scanner is slower but runs
    as bytecode, which hands the GIL over every switch interval; strings are still read by the C
    function, one string per call (the pure-Python one holds the GIL longer on a long string).
    """
    decoder = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_number)
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder


def _parsed(raw: bytes, validate: Callable[[Any], Any], decoder: json.JSONDecoder) -> Any:
    if not raw.strip():
        raise MalformedJSON("the request body is empty; send a JSON object")
    try:
        value = decoder.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
        # A \ud800 escape parses to a lone surrogate, which no UTF-8 store can hold. Looking for
        # one costs as much as the parse, so only a body that may hold one (UTF-8 with a
        # surrogate escape, or another encoding) is looked through.
        if json.detect_encoding(raw) != "utf-8" or _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False).encode()
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedJSON(f"the request body is not valid JSON: {error}") from None
    except UnicodeEncodeError:
        raise MalformedJSON("the request body holds a lone surrogate (\\ud800-\\udfff) in a string") from None
    except RecursionError:
        raise MalformedJSON("the request body nests arrays or objects too deeply") from None
    return validated(validate, value, "body")


def _number(text: str) -> int | float:
    # JSON Schema counts 46.0 as the integer 46, so the validators accept it where an id goes;
    # make it one, or the services would take the float for something else (a ref, a new id).
    value = float(text)
    return int(value) if value.is_integer() else value


def _not_a_number(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have; NaN passes every
    # minimum/maximum check (a claim's `wait: NaN` would wait forever).
    raise MalformedJSON(f"the request body is not valid JSON: {name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_number)
"""For small bodies, on the event loop: the C scanner."""


def _body_validator(schema: dict[str, Any]) -> Callable[[Any], Any]:
    """Validate a body; when it matches no form of a `oneOf`, say what is wrong in the form it meant.

    fastjsonschema only says "must be valid exactly by one definition (0 matches found)". The
    form the client meant is the one whose required fields it sent (a batch sends `tasks`).
    """
    validate = fastjsonschema.compile(schema)
    forms = [(form, fastjsonschema.compile(form)) for form in schema.get("oneOf", [])]
    if not forms:
        return validate

    def validate_forms(value: Any) -> Any:
        try:
            return validate(value)
        except fastjsonschema.JsonSchemaValueException as error:
            if error.rule != "oneOf" or error.path != ["data"]:
                raise
            problems: list[fastjsonschema.JsonSchemaValueException] = []
            for form, validate_form in forms:
                try:
                    validate_form(value)
                except fastjsonschema.JsonSchemaValueException as problem:
                    if isinstance(value, dict) and set(form.get("required", ())) <= set(value):
                        raise problem from None
                    problems.append(problem)
            if len(problems) < len(forms):
                raise  # one form matched, so several did: the original message says so
            messages = list(dict.fromkeys(problem.message for problem in problems))
            raise fastjsonschema.JsonSchemaValueException("; or ".join(messages)) from None

    return validate_forms


def _parse_id(name: str, text: str) -> int:
    if not _DIGITS.fullmatch(text) or not 0 < int(text) <= MAX_ID:
        raise NotFound(f"{name} must be a positive integer id, got {text!r}")
    return int(text)


def _parse_name(name: str, text: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(text):
        raise InvalidRequest(f"{name} must match {pattern.pattern}, got {text[:40]!r}")
    return text


def _parse_query(
    request: Request,
    params: Mapping[str, Param],
    validators: Mapping[str, Callable[[Any], Any]],
) -> dict[str, Any]:
    unknown = sorted(set(request.query_params) - set(params))
    if unknown:
        allowed = ", ".join(params) or "none"
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}; allowed: {allowed}")
    values: dict[str, Any] = {}
    for name, param in params.items():
        texts = request.query_params.getlist(name)
        if not texts:
            if param.required:
                raise InvalidRequest(f"query parameter {name!r} is required")
            continue
        if not param.repeated and len(texts) > 1:
            raise InvalidRequest(f"query parameter {name!r} is given more than once")
        schema = param.schema["items"] if param.repeated else param.schema
        parsed = [_coerce(name, text, schema) for text in texts]
        values[name] = validated(validators[name], parsed if param.repeated else parsed[0], name)
    return values


def _coerce(name: str, text: str, schema: Mapping[str, Any]) -> Any:
    if schema.get("type") == "integer":
        stripped = text.strip()
        if not _INTEGER.fullmatch(stripped):
            raise InvalidRequest(f"query parameter {name!r} must be an integer, got {text!r}")
        return int(stripped)
    return text


Render = Callable[[Scope, HubError], Response]
"""How an error met before routing is answered on a path."""


class BodyLimit:
    """Refuses bodies over `max_bytes` with 413, by Content-Length or while streaming.

    Past the limit, receive() raises PayloadTooLarge in whatever app is reading: the REST routes
    answer it as any HubError, and when an app lets it out (the MCP endpoint does, and the SDK
    would) it is answered here, so no body limit is ever a 500. `render` gives each path its
    error shape (JSON-RPC on /mcp).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, render: Render | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.render: Render = render or (lambda scope, error: error_response(error))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    error = HubError("the Content-Length header is not a number")
                    await self.render(scope, error)(scope, receive, send)
                    return
                if len(value) > 19 or int(value) > self.max_bytes:  # int() refuses 4300+ digits
                    await self.render(scope, too_large)(scope, receive, send)
                    return
        seen = 0
        answering = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise too_large
            return message

        async def sent(message: Message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sent)
        except PayloadTooLarge as error:
            if error is not too_large:
                raise
            if answering:  # too late for a status; the connection just ends
                log.warning(
                    "%s %s: the body passed %d bytes after the answer began",
                    scope["method"],
                    scope["path"],
                    self.max_bytes,
                )
                return
            await self.render(scope, too_large)(scope, receive, send)


def openapi(endpoints: list[Endpoint], version: str, components: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the endpoints."""
    paths: dict[str, dict[str, Any]] = {}
    error_ref = {"$ref": "#/components/schemas/Error"}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": _operation_id(endpoint),
            "responses": {},
        }
        id_schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
        parameters = [
            {
                "name": part[1:-1],
                "in": "path",
                "required": True,
                "schema": endpoint.names.get(part[1:-1], id_schema),
            }
            for part in endpoint.path.split("/")
            if part.startswith("{")
        ]
        for name, param in endpoint.query.items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": param.required,
                    "description": param.description,
                    "schema": param.schema,
                    **({"explode": True} if param.repeated else {}),
                }
            )
        if parameters:
            operation["parameters"] = parameters
        if endpoint.raw_body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        elif endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": endpoint.body}},
            }
        for status, (description, schema) in endpoint.responses.items():
            response: dict[str, Any] = {"description": description}
            if schema is not None:
                media = endpoint.content_type if status < 400 else "application/json"
                response["content"] = {media: {"schema": schema}}
            operation["responses"][str(status)] = response
        errors = {400: "Malformed request", 404: "Not found", 413: "Body too large", 422: "Invalid request"}
        if endpoint.role is not None:
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            errors |= {
                401: "Missing or wrong API key",
                403: "The key's role may not do this",
                429: "Too many failed authentications",
            }
        for status, description in errors.items():
            operation["responses"].setdefault(
                str(status),
                {
                    "description": description,
                    "content": {"application/json": {"schema": error_ref}},
                },
            )
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "vps-agent-scaffold hub", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _operation_id(endpoint: Endpoint) -> str:
    words = [p for p in endpoint.path.split("/") if p and not p.startswith("{") and p != "v1"]
    return "_".join([endpoint.method.lower(), *words]) + ("_one" if "{" in endpoint.path else "")
