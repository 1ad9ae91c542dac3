"""Bad input to /mcp: every malformed MCP message gets a JSON-RPC error, never a 5xx, and the hub's
log holds no traceback, also after a fuzz run.

Against a real hub process, whose stderr is its log. The fuzz draws JSON-RPC messages (valid-looking
and broken), raw bodies with any headers, and tools/call for every tool with arguments drawn from
the tool's own inputSchema (schemathesis's JSON Schema generator, which REST's fuzz uses too) or any
JSON at all. Bounded and reproducible: derandomized, a fixed number of examples (about 30 s).
Exec is off in this hub, so no fuzzed command runs; its arguments are still validated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.jsonschema.builder import build

from scaffold.hub.faces.mcp.tools import TOOLS, Tool
from tests.hubproc import HubProcess, running_hub, write_config

KEY = "mcp-input-admin-key-0123456789abcdef"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "Authorization": f"Bearer {KEY}",
}
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    directory = tmp_path_factory.mktemp("mcp-input")
    # A claim's `wait` may be an hour by its schema: the hub caps it at 50 ms here.
    config = write_config(directory, keys=[("owner", "admin", KEY)], queue={"max_wait_seconds": 0.05})
    config.write_text(config.read_text() + "[exec]\nenabled = false\n")
    with running_hub(config) as running:
        with running.client(KEY) as http:  # something for the ids the generators pick (1, 2, ...) to find
            http.post("/v1/workers", json={"session_id": "fuzz", "role": "backend"}).raise_for_status()
            tasks = [{"title": f"t{n}", "instructions": "i"} for n in range(3)]
            http.post("/v1/tasks", json={"tasks": tasks}).raise_for_status()
            http.post("/v1/tasks/claim", json={"worker_id": 1}).raise_for_status()
        yield running


@pytest.fixture(scope="module")
def http(hub: HubProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=hub.url, timeout=10) as client:
        yield client


def post(http: httpx2.Client, body: bytes, headers: dict[str, str] | None = None) -> httpx2.Response:
    response = http.post("/mcp", content=body, headers=HEADERS if headers is None else headers)
    assert response.status_code < 500, (body[:300], response.status_code, response.text[:300])
    return response


def assert_no_traceback(hub: HubProcess) -> None:
    log = hub.stderr
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


def jsonrpc_error(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC error a response carries (any status but 202, which has no body)."""
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    message = response.json()
    assert message["jsonrpc"] == "2.0" and set(message) == {"jsonrpc", "id", "error"}, message
    error: dict[str, Any] = message["error"]
    assert isinstance(error["code"], int) and isinstance(error["message"], str), message
    return error


def request(method: Any, params: Any = None, request_id: Any = 1) -> bytes:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


# (name, body, headers or None, HTTP status, JSON-RPC code, what the message says)
# One case a row: the table reads better unformatted.
MALFORMED: list[tuple[str, bytes, dict[str, str] | None, int, int, str]] = [
    ("not JSON", b'{"jsonrpc": ', None, 400, PARSE_ERROR, "not valid JSON"),
    ("empty body", b"", None, 400, PARSE_ERROR, "not valid JSON"),
    ("invalid UTF-8", b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', None, 400, PARSE_ERROR,
     "not valid JSON"),
    ("nested too deeply", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, 400, PARSE_ERROR, "recursion"),
    ("a number", b"42", None, 400, INVALID_REQUEST, "a JSON object; got an integer"),
    ("null", b"null", None, 400, INVALID_REQUEST, "a JSON object; got null"),
    ("a batch", b"[" + request("ping") + b"," + request("ping", request_id=2) + b"]", None, 400,
     INVALID_REQUEST, "a batch (a JSON array) is not accepted"),
    ("an empty batch", b"[]", None, 400, INVALID_REQUEST, "batch"),
    ("jsonrpc 1.0", b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', None, 400, INVALID_REQUEST,
     '"jsonrpc" must be "2.0"'),
    ("no jsonrpc", b'{"id": 1, "method": "ping"}', None, 400, INVALID_REQUEST, '"jsonrpc" must be "2.0"'),
    ("no method", b'{"jsonrpc": "2.0", "id": 1}', None, 400, INVALID_REQUEST, 'needs a "method"'),
    ("method a number", request(7), None, 400, INVALID_REQUEST, '"method" must be a method name'),
    ("unknown method", request("tools/nope"), None, 200, METHOD_NOT_FOUND, "Method not found"),
    ("params an array", request("tools/list", [1]), None, 400, INVALID_PARAMS, '"params" must be an object'),
    ("params a string", request("tools/call", "x"), None, 400, INVALID_PARAMS, '"params" must be an object'),
    ("tools/call without params", request("tools/call"), None, 200, INVALID_PARAMS, "params: Field required"),
    ("tool name a number", request("tools/call", {"name": 5}), None, 200, INVALID_PARAMS,
     "params.name: Input should be a valid string"),
    ("arguments an array", request("tools/call", {"name": "get_task", "arguments": [1]}), None, 200,
     INVALID_PARAMS, "params.arguments: Input should be a valid dictionary"),
    ("unknown tool", request("tools/call", {"name": "nope", "arguments": {}}), None, 200, INVALID_PARAMS,
     "no tool 'nope'; tools/list names them"),
    ("id a fraction", request("ping", request_id=1.5), None, 400, INVALID_REQUEST,
     '"id" must be a string or an integer; got a number with a fraction'),
    ("id null", request("ping", request_id=None), None, 400, INVALID_REQUEST, "got null"),
    ("id true", request("ping", request_id=True), None, 400, INVALID_REQUEST, "got a boolean"),
    ("id an object", request("ping", request_id={}), None, 400, INVALID_REQUEST, "got an object"),
    ("id of 5000 digits", b'{"jsonrpc": "2.0", "id": ' + b"9" * 5000 + b', "method": "ping"}', None, 400,
     PARSE_ERROR, "number out of range"),
    ("a response without id", b'{"jsonrpc": "2.0", "result": {}}', None, 400, INVALID_REQUEST,
     'a response needs the "id"'),
    ("a notification with array params", b'{"jsonrpc": "2.0", "method": "notifications/x", "params": []}',
     None, 400, INVALID_PARAMS, '"params" must be an object'),
    ("initialize without params", request("initialize"), None, 200, INVALID_PARAMS, "params: Field required"),
    ("Accept text/html", request("ping"), {**HEADERS, "Accept": "text/html"}, 406, INVALID_REQUEST,
     "must accept application/json"),
    ("Content-Type text/plain", request("ping"), {**HEADERS, "Content-Type": "text/plain"}, 415,
     INVALID_REQUEST, "Content-Type must be application/json; got 'text/plain'"),
    ("no Content-Type", request("ping"), {k: v for k, v in HEADERS.items() if k != "Content-Type"}, 415,
     INVALID_REQUEST, "got 'none'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "says"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_a_malformed_message_gets_a_jsonrpc_error_that_says_what_is_wrong(
    hub: HubProcess,
    http: httpx2.Client,
    body: bytes,
    headers: dict[str, str] | None,
    status: int,
    code: int,
    says: str,
) -> None:
    response = post(http, body, headers)
    assert response.status_code == status, response.text[:300]
    error = jsonrpc_error(response)
    assert error["code"] == code and says in error["message"], error
    if status == 200:  # answered through the SDK: the error is the request's own
        assert response.json()["id"] == 1
    assert_no_traceback(hub)


def test_get_and_other_methods_are_405_not_an_endless_stream(hub: HubProcess, http: httpx2.Client) -> None:
    for method in ("GET", "DELETE", "PUT"):
        response = http.request(method, "/mcp", headers=HEADERS, timeout=5)  # GET used to hang here
        assert response.status_code == 405 and response.headers["allow"] == "POST", response.text
        assert "POST one JSON-RPC message" in jsonrpc_error(response)["message"]
    assert_no_traceback(hub)


def test_what_is_well_formed_is_served(hub: HubProcess, http: httpx2.Client) -> None:
    """The control cases: huge and odd ids, notifications and responses are valid JSON-RPC."""
    for request_id in (10**30, -1, "x" * 10_000, ""):
        response = post(http, request("ping", request_id=request_id))
        assert response.status_code == 200 and response.json() == {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {},
        }
    for message in (
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 7, "result": {}},
    ):
        response = post(http, json.dumps(message).encode())
        assert response.status_code == 202 and response.content == b""
    assert_no_traceback(hub)


# -- fuzz -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
METHODS = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "notifications/initialized",
    "notifications/cancelled",
    "resources/list",
    "prompts/list",
    "logging/setLevel",
    "completion/complete",
]
PARAMS = ["name", "arguments", "_meta", "cursor", "protocolVersion"]
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | JSON,
        "id": st.integers() | st.text(max_size=20) | JSON,
        "method": st.sampled_from(METHODS) | st.text(max_size=20) | JSON,
        "params": st.dictionaries(st.sampled_from(PARAMS), JSON, max_size=3) | JSON,
        "result": JSON,
        "error": JSON,
    },
)
MEDIA = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "*/*",
        "application/json-patch+json",
        "text/event-stream",
        "application/*",
    ]
)


def check(response: httpx2.Response, sent: Any) -> None:
    """Whatever was sent: no 5xx (post), no body but on 202, and every body a JSON-RPC message."""
    if response.status_code == 202:
        assert response.content == b"", response.text
        return
    message = response.json()
    assert message["jsonrpc"] == "2.0" and ("result" in message) != ("error" in message), message
    if "error" in message:
        assert isinstance(message["error"]["code"], int) and message["error"]["message"], message
    elif isinstance(sent, dict) and sent.get("method") == "tools/call" and message["result"].get("isError"):
        assert message["result"]["structuredContent"]["error"]["code"] != "internal", message


@settings(FUZZ, max_examples=300)
@given(message=MESSAGES)
def test_fuzzed_jsonrpc_messages(hub: HubProcess, http: httpx2.Client, message: dict[str, Any]) -> None:
    check(post(http, json.dumps(message).encode()), message)


@settings(FUZZ, max_examples=150)
@given(
    body=st.binary(max_size=200) | JSON.map(lambda value: json.dumps(value).encode()),
    accept=MEDIA,
    content_type=MEDIA,
)
def test_fuzzed_bodies_and_headers(
    hub: HubProcess, http: httpx2.Client, body: bytes, accept: str, content_type: str
) -> None:
    headers = {**HEADERS, "Accept": accept, "Content-Type": content_type}
    response = post(http, body, headers)
    if response.status_code != 202:
        jsonrpc_error(response) if response.status_code >= 400 else check(response, None)


@pytest.mark.parametrize("tool", TOOLS, ids=[tool.name for tool in TOOLS])
@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_fuzzed_tool_calls(hub: HubProcess, http: httpx2.Client, tool: Tool, data: st.DataObject) -> None:
    """Arguments from the tool's inputSchema (mostly valid), or any JSON at all."""
    arguments = data.draw(build(tool.schema, draft=20, formats={}) | JSON, label="arguments")
    sent = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool.name, "arguments": arguments},
    }
    response = post(http, json.dumps(sent).encode())
    check(response, sent)
    assert response.status_code == 200 and response.json()["id"] == 1, response.text[:300]


def test_the_log_holds_no_traceback_after_the_fuzz(hub: HubProcess) -> None:
    """Last in this module: whatever ran above left no traceback and no "unexpected error" in the log."""
    assert "Application startup complete" in hub.stderr  # the log is the hub's, and it is read
    assert_no_traceback(hub)
