"""Every route that reads a body answers 413 past `server.max_body_bytes`, in its error shape, whether
the size is declared (Content-Length) or found while the body streams in (chunked), and the hub's
log holds no traceback. Against a real hub process, whose stderr is its log."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from scaffold.hub.faces.rest.routes import ENDPOINTS
from tests.hubproc import HOST, HubProcess, running_hub, write_config

KEY = "body-limit-admin-key-0123456789abcdef"
LIMIT = 64 * 1024
CHUNK = 16 * 1024
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
# Each route that reads a body: the REST routes that declare one, the raw upload, and /mcp.
READERS = [
    (endpoint.method, re.sub(r"\{[a-z_]+\}", "1", endpoint.path))  # "1" is an id and a slot name
    for endpoint in ENDPOINTS
    if endpoint.body is not None or endpoint.raw_body
] + [("POST", "/mcp")]
QUERY = {"/v1/files/content": {"path": "big.bin"}}


def start(tmp_path: Path, *, limit: int | None) -> Iterator[HubProcess]:
    config = write_config(tmp_path, keys=[("owner", "admin", KEY)])
    if limit is not None:  # a file may not be larger than a body
        workspace = 'path = "workspace"\n'
        text = config.read_text().replace(workspace, f"{workspace}max_file_bytes = {limit}\n")
        config.write_text(text + f"[server]\nmax_body_bytes = {limit}\n")
    with running_hub(config) as hub:
        yield hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    yield from start(tmp_path_factory.mktemp("limit"), limit=LIMIT)


def chunks(total: int) -> Iterator[bytes]:
    """`total` bytes in pieces, with no Content-Length: the hub learns the size only by reading."""
    sent = 0
    while sent < total:
        piece = min(CHUNK, total - sent)
        sent += piece
        yield b"x" * piece


def assert_413(response: httpx2.Response, path: str, limit: int) -> None:
    assert response.status_code == 413, (path, response.status_code, response.text[:300])
    body = response.json()
    if path == "/mcp":  # a JSON-RPC error, so an MCP client relays the message; the hub's code in data
        assert (body["jsonrpc"], body["id"], body["error"]["code"]) == ("2.0", None, -32600), body
        error: dict[str, Any] = {"code": body["error"]["data"]["code"], "message": body["error"]["message"]}
    else:
        error = body["error"]
    assert error["code"] == "payload_too_large", body
    assert f"larger than {limit} bytes" in error["message"], body


def assert_no_traceback(hub: HubProcess) -> None:
    log = hub.stderr
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


@pytest.mark.parametrize(("method", "path"), READERS, ids=[f"{m} {p}" for m, p in READERS])
def test_every_body_over_the_limit_is_413_declared_or_streamed(
    hub: HubProcess, method: str, path: str
) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {KEY}"}
    with httpx2.Client(base_url=hub.url, headers=headers, timeout=10) as http:
        declared = http.request(method, path, params=QUERY.get(path), content=b"x" * (LIMIT + 1))
        assert declared.request.headers["content-length"] == str(LIMIT + 1)
        assert_413(declared, path, LIMIT)
        streamed = http.request(method, path, params=QUERY.get(path), content=chunks(LIMIT + CHUNK))
        assert "content-length" not in streamed.request.headers
        assert streamed.request.headers["transfer-encoding"] == "chunked"
        assert_413(streamed, path, LIMIT)
    assert_no_traceback(hub)


def test_a_body_within_the_limit_is_served(hub: HubProcess) -> None:
    """The control case: the limit refuses only what is over it, on /mcp (streamed) and REST alike."""
    request = {"jsonrpc": "2.0", "id": "x" * (LIMIT - 200), "method": "ping"}
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {KEY}"}
    with httpx2.Client(base_url=hub.url, headers=headers, timeout=10) as http:
        raw = json.dumps(request).encode()
        response = http.post("/mcp", content=iter([raw[:CHUNK], raw[CHUNK:]]))
        assert response.status_code == 200 and response.json()["result"] == {}, response.text[:300]
        upload = http.put("/v1/files/content", params={"path": "fits.bin"}, content=chunks(LIMIT - 1))
        assert upload.status_code == 201 and upload.json()["size"] == LIMIT - 1, upload.text
    assert_no_traceback(hub)


def test_a_client_gone_mid_body_is_not_a_hub_failure(hub: HubProcess) -> None:
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {KEY}\r\n"
        "Accept: application/json\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    with socket.create_connection((HOST, hub.port), timeout=10) as conn:
        conn.sendall(head.encode() + b'{"jsonrpc": "2.0", ')
    with httpx2.Client(base_url=hub.url, timeout=10) as http:  # the hub still serves
        assert http.get("/healthz").status_code == 200
    assert_no_traceback(hub)


def test_the_reported_11_mib_chunked_body_to_mcp_is_413(tmp_path: Path) -> None:
    """The reported case with the default limit (10 MiB): it was a 500 and a traceback."""
    for hub in start(tmp_path, limit=None):
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {KEY}"}
        with httpx2.Client(base_url=hub.url, headers=headers, timeout=30) as http:
            megabyte = b"x" * (1024 * 1024)
            assert_413(http.post("/mcp", content=iter([megabyte] * 11)), "/mcp", 10 * 1024 * 1024)
            assert_413(http.post("/mcp", content=megabyte * 11), "/mcp", 10 * 1024 * 1024)
        assert_no_traceback(hub)
