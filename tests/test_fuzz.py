"""Fuzz the hub's REST API from its own OpenAPI document: no request, valid or not, gets a 5xx.

schemathesis generates requests for every operation (the schemas' boundaries, undeclared
methods, and random valid and invalid data) and sends them in-process to the ASGI app with an
admin key. Besides `not_a_server_error`, each answer's status, content type and body must be
what the document declares. Bounded and reproducible: 100 random examples per operation (about
30 s on 2 cores), from a fixed seed, so CI sends the same requests every time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.testclient import TestClient

from scaffold import __version__
from scaffold.hub.core.schemas import COMPONENTS
from scaffold.hub.faces.rest.http import openapi
from scaffold.hub.faces.rest.routes import ENDPOINTS
from tests.conftest import built_hub

# A fixed key keeps the run reproducible; its name is one the generator will not produce, so a
# fuzzed POST /v1/keys/revoke cannot revoke it halfway through.
KEY = "fuzz-admin-key-for-tests-only-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
KEY_NAME = "fuzz_admin._the_key_of_this_run_"

DOC = openapi(ENDPOINTS, __version__, COMPONENTS)
# GET /v1/events is an endless stream: each call would only end at its read timeout, and it has
# no input but `after`/Last-Event-ID, which tests/test_api.py covers against a real server.
# A fixed seed: CI sends the same requests every run (derandomize below does too, without it).
SEED = schemathesis.Config.from_dict({"seed": 20251121})
schema = schemathesis.openapi.from_dict(openapi(ENDPOINTS, __version__, COMPONENTS), config=SEED).exclude(
    path="/v1/events"
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def hub_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    with built_hub(
        tmp_path_factory.mktemp("fuzz"),
        roles=(),
        more_keys=[(KEY_NAME, "admin", KEY)],
        # A claim's `wait` may be up to 3600 s by the schema; the hub caps it at max_wait_seconds,
        # so a fuzzed long poll costs at most 50 ms (and still runs the waiting code).
        max_wait_seconds=0.05,
        max_body_bytes=256 * 1024,
        # Without bubblewrap every command would be refused with 503, a server error by the
        # fuzzer's rules; switched off, /v1/exec still validates each request (403 after that).
        exec_enabled=shutil.which("bwrap") is not None,
    ) as made:
        _seed(TestClient(made.app))  # no `with`: schemathesis runs the lifespan, which runs once per hub
        try:
            yield made.app
        finally:
            asgi.shutdown_lifespans()  # schemathesis started the app's lifespan (its lease reaper)


def _seed(client: TestClient) -> None:
    """Some state for the ids the generator picks (1, 2, ...) to find: tasks, workers, a lease."""
    for session, role in (("fuzz-1", "backend"), ("fuzz-2", "frontend")):
        client.post(
            "/v1/workers", json={"session_id": session, "role": role}, headers=AUTH
        ).raise_for_status()
    tasks: list[dict[str, Any]] = [
        {"ref": "a", "title": "first", "instructions": "do a"},
        {"ref": "b", "title": "second", "instructions": "do b", "depends_on": ["a"]},
        {"title": "third", "instructions": "do c", "priority": 3},
    ]
    client.post("/v1/tasks", json={"tasks": tasks}, headers=AUTH).raise_for_status()
    client.post("/v1/tasks/claim", json={"worker_id": 1}, headers=AUTH).raise_for_status()
    client.post("/v1/messages", json={"to": "all", "body": "hello"}, headers=AUTH).raise_for_status()


def test_the_fuzzed_document_is_the_served_one(hub_app: Starlette) -> None:
    assert TestClient(hub_app).get("/openapi.json", headers=AUTH).json() == DOC
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    fuzzed = {(operation.method.upper(), operation.path) for operation in operations}
    declared = {(method.upper(), path) for path, item in DOC["paths"].items() for method in item}
    assert fuzzed == declared - {("GET", "/v1/events")}


@schema.parametrize()
@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_no_request_makes_the_hub_fail(case: schemathesis.Case[Any], hub_app: Starlette) -> None:
    case.call_and_validate(app=hub_app, headers=AUTH, checks=CHECKS)
