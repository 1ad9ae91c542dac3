"""The hub's REST API over HTTP: auth, roles, the task life, workers, messages, keys, errors, SSE.

Every response any test here receives is checked against the OpenAPI document the app serves:
its status must be declared for the operation and its body must match the declared schema, and
every 4xx/5xx must be `{"error": {"code", "message"}}`. The SSE stream and a lying
Content-Length are tested against a real uvicorn on 127.0.0.1, which TestClient cannot stand in for.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import jsonschema
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from scaffold import __version__
from scaffold.hub.core.schemas import COMPONENTS
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.faces import dashboard
from scaffold.hub.faces.rest.http import Endpoint, openapi
from scaffold.hub.faces.rest.routes import ENDPOINTS
from scaffold.hub.services.container import Services
from tests.conftest import FakeClock, Keys, MakeHub

DOC = openapi(ENDPOINTS, __version__, COMPONENTS)
MAX_BODY = 16 * 1024
TIMEOUT = 10.0  # seconds: the bound of every wait on a socket or a thread in this file


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def app(make_hub: MakeHub) -> Starlette:
    return make_hub(max_body_bytes=MAX_BODY).app


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        conforming(test_client)
        yield test_client


def conforming(test_client: TestClient) -> TestClient:
    test_client.event_hooks = {"request": [], "response": [conform]}
    return test_client


def from_address(app: Starlette, address: str) -> TestClient:
    """A client calling from another address (auth failures are counted per address)."""
    return conforming(TestClient(app, client=(address, 40000)))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def hub_of(app: Starlette) -> Services:
    hub = app.state.services
    assert isinstance(hub, Services)
    return hub


@contextlib.contextmanager
def unchanged(app: Starlette) -> Iterator[None]:
    """Every change appends an event in the same transaction: no new event, no change."""
    before = hub_of(app).store.last_event_id()
    yield
    assert hub_of(app).store.last_event_id() == before, "a refused request changed the hub's state"


def assert_error(response: httpx2.Response, status: int, code: str | None = None, says: str = "") -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    assert says.lower() in error["message"].lower(), error
    return str(error["message"])


def _operation(method: str, path: str) -> dict[str, Any] | None:
    # Literal paths first: POST /v1/tasks/claim is not POST /v1/tasks/{task_id}.
    for template in sorted(DOC["paths"], key=lambda p: p.count("{")):
        pattern = re.sub(r"\{[^/]+\}", "[^/]+", template)
        if re.fullmatch(pattern, path) and method.lower() in DOC["paths"][template]:
            operation: dict[str, Any] = DOC["paths"][template][method.lower()]
            return operation
    return None


def conform(response: httpx2.Response) -> None:
    """The response is what the OpenAPI document says this operation answers."""
    response.read()
    method, path = response.request.method, response.request.url.path
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message"}, body
        assert body["error"]["message"].strip(), body
    operation = _operation(method, path)
    if operation is None:
        return
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, f"{method} {path} answered {response.status_code}, not in its OpenAPI"
    if "content" not in declared:
        assert response.content == b""
        return
    ((media, content),) = declared["content"].items()
    assert response.headers["content-type"].split(";")[0] == media
    if media == "application/json":
        assert_matches(content["schema"], response.json())


def assert_matches(schema: dict[str, Any], value: Any) -> None:
    validator = jsonschema.Draft202012Validator({**schema, "components": DOC["components"]})
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert not problems, problems


def register(client: TestClient, key: str, session: str, role: str = "backend", **extra: Any) -> int:
    response = client.post(
        "/v1/workers", json={"session_id": session, "role": role, **extra}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def create(client: TestClient, key: str, **task: Any) -> dict[str, Any]:
    body = {"title": "a task", "instructions": "do it", **task}
    response = client.post("/v1/tasks", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def claim(client: TestClient, key: str, worker: int) -> dict[str, Any]:
    response = client.post("/v1/tasks/claim", json={"worker_id": worker}, headers=bearer(key))
    assert response.status_code == 200, response.text
    claimed: dict[str, Any] = response.json()
    return claimed


def get_task(client: TestClient, key: str, task_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}", headers=bearer(key))
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def minimal_body(endpoint: Endpoint) -> dict[str, str] | None:
    """A body with the required fields of the endpoint (all of them strings where it matters here)."""
    if endpoint.body is None:
        return None
    return {name: "t" for name in endpoint.body["required"]}


def sample_path(template: str) -> str:
    return re.sub(r"\{[^/]+\}", "1", template)


# -- authentication and roles -------------------------------------------------------------


def test_healthz_is_open(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


PROTECTED = [(e.method, e.path) for e in ENDPOINTS if e.role is not None]


def test_every_route_but_healthz_needs_a_key() -> None:
    assert {(e.method, e.path) for e in ENDPOINTS if e.role is None} == {("GET", "/healthz")}
    assert len(PROTECTED) >= 20


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_no_key_or_a_wrong_key_is_401(app: Starlette, method: str, path: str) -> None:
    anonymous = from_address(app, f"198.51.100.{PROTECTED.index((method, path)) + 1}")
    url = sample_path(path)
    with unchanged(app):
        assert_error(anonymous.request(method, url), 401, "unauthorized", "API key")
        wrong = {"Authorization": "Bearer not-a-key"}
        assert_error(anonymous.request(method, url, headers=wrong), 401, "unauthorized", "not valid")
        assert_error(anonymous.request(method, url, headers={"X-API-Key": "nope"}), 401, "unauthorized")
        assert_error(anonymous.request(method, url, headers={"Authorization": "Basic abc"}), 401)


def test_bearer_and_x_api_key_both_work(client: TestClient, keys: Keys) -> None:
    assert client.get("/v1/status", headers=bearer(keys.viewer)).status_code == 200
    assert client.get("/v1/status", headers={"X-API-Key": keys.viewer}).status_code == 200
    assert client.get("/v1/status", headers={"Authorization": f"bearer  {keys.viewer} "}).status_code == 200


def test_viewer_reads_but_may_not_write(app: Starlette, client: TestClient, keys: Keys) -> None:
    for path in ("/v1/tasks", "/v1/workers", "/v1/messages", "/v1/status", "/v1/plan", "/openapi.json"):
        assert client.get(path, headers=bearer(keys.viewer)).status_code == 200, path
    with unchanged(app):
        response = client.post(
            "/v1/tasks", json={"title": "t", "instructions": "i"}, headers=bearer(keys.viewer)
        )
        assert_error(response, 403, "forbidden", "needs the agent role")
        response = client.put("/v1/plan", json={"goal": "g", "plan": "p"}, headers=bearer(keys.viewer))
        assert_error(response, 403, "forbidden")
        assert_error(client.get("/v1/keys", headers=bearer(keys.viewer)), 403, "forbidden", "admin")


def test_agent_may_not_cancel_or_manage_keys_but_admin_may(
    app: Starlette, client: TestClient, keys: Keys
) -> None:
    task = create(client, keys.agent)
    with unchanged(app):
        cancel = f"/v1/tasks/{task['id']}/cancel"
        assert_error(client.post(cancel, headers=bearer(keys.agent)), 403, "forbidden", "admin")
        assert_error(client.get("/v1/keys", headers=bearer(keys.agent)), 403, "forbidden")
        new = {"name": "x", "role": "admin"}
        assert_error(client.post("/v1/keys", json=new, headers=bearer(keys.agent)), 403, "forbidden")
        revoke = {"name": "admin-key"}
        assert_error(client.post("/v1/keys/revoke", json=revoke, headers=bearer(keys.agent)), 403)
    assert get_task(client, keys.viewer, task["id"])["state"] == "ready"
    response = client.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer(keys.admin))
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert client.get("/v1/keys", headers=bearer(keys.admin)).status_code == 200


def test_repeated_failures_from_one_address_are_slowed_down(app: Starlette, keys: Keys) -> None:
    attacker = from_address(app, "203.0.113.7")
    for attempt in range(20):
        response = attacker.get("/v1/status", headers=bearer(f"guess-{attempt}"))
        assert response.status_code == 401, attempt
    response = attacker.get("/v1/status", headers=bearer("guess-20"))
    assert_error(response, 429, "too_many_requests", "too many failed")
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert attacker.get("/v1/status").status_code == 429, "no key at all is a failure too"
    # A valid key from the same address still works: workers sharing an address (all of a
    # local deployment's are 127.0.0.1) are not locked out by one misconfigured neighbour.
    assert attacker.get("/v1/status", headers=bearer(keys.viewer)).status_code == 200
    # Another address is not affected.
    assert from_address(app, "203.0.113.8").get("/v1/status", headers=bearer(keys.viewer)).status_code == 200


def test_forbidden_is_not_a_failed_authentication(app: Starlette, keys: Keys) -> None:
    viewer = from_address(app, "203.0.113.9")
    for _ in range(25):
        assert viewer.get("/v1/keys", headers=bearer(keys.viewer)).status_code == 403
    assert viewer.get("/v1/status", headers=bearer(keys.viewer)).status_code == 200


# -- the task life --------------------------------------------------------------------------


def test_task_life_over_http(app: Starlette, client: TestClient, keys: Keys) -> None:
    agent = keys.agent
    worker = register(client, agent, "session-1")
    setup = create(client, agent, title="setup")
    batch = client.post(
        "/v1/tasks",
        json={
            "tasks": [
                {"ref": "build", "title": "build", "instructions": "make", "priority": 5},
                {
                    "ref": "test",
                    "title": "test",
                    "instructions": "check",
                    "depends_on": ["build", setup["id"]],
                },
            ]
        },
        headers=bearer(agent),
    )
    assert batch.status_code == 201, batch.text
    build, test = batch.json()["tasks"]
    assert (build["state"], test["state"]) == ("ready", "blocked")
    assert test["depends_on"] == sorted([build["id"], setup["id"]])

    first = claim(client, agent, worker)  # priority 5 before the older priority-0 setup
    assert first["id"] == build["id"]
    assert first["state"] == "claimed" and first["worker_id"] == worker and first["lease_token"]
    second = claim(client, agent, worker)
    assert second["id"] == setup["id"] and second["lease_token"] != first["lease_token"]
    none = client.post("/v1/tasks/claim", json={"worker_id": worker}, headers=bearer(agent))
    assert none.status_code == 204 and none.content == b""

    beat = client.post(
        f"/v1/tasks/{build['id']}/heartbeat",
        json={"lease_token": first["lease_token"]},
        headers=bearer(agent),
    )
    assert beat.status_code == 200
    assert beat.json()["lease_expires_at"] >= first["lease_expires_at"]
    assert "lease_token" in beat.json()

    # A stale token: 409 lease_conflict, and nothing changes.
    before = get_task(client, keys.viewer, build["id"])
    with unchanged(app):
        for action, body in (
            ("heartbeat", {}),
            ("complete", {"result": "x"}),
            ("fail", {"error": "x"}),
            ("release", {}),
        ):
            stale = client.post(
                f"/v1/tasks/{build['id']}/{action}",
                json={"lease_token": second["lease_token"], **body},
                headers=bearer(agent),
            )
            assert_error(stale, 409, "lease_conflict", "lease token")
    assert get_task(client, keys.viewer, build["id"]) == before

    done = client.post(
        f"/v1/tasks/{build['id']}/complete",
        json={"lease_token": first["lease_token"], "result": "built"},
        headers=bearer(agent),
    )
    assert done.status_code == 200
    assert done.json()["state"] == "done" and done.json()["result"] == "built"
    assert "lease_token" not in done.json()
    with unchanged(app):  # completing again with the same token is idempotent
        again = client.post(
            f"/v1/tasks/{build['id']}/complete",
            json={"lease_token": first["lease_token"], "result": "other"},
            headers=bearer(agent),
        )
        assert again.status_code == 200 and again.json()["result"] == "built"
    assert get_task(client, keys.viewer, test["id"])["state"] == "blocked"  # setup is not done yet
    client.post(
        f"/v1/tasks/{setup['id']}/complete",
        json={"lease_token": second["lease_token"]},
        headers=bearer(agent),
    ).raise_for_status()
    assert get_task(client, keys.viewer, test["id"])["state"] == "ready"
    assert claim(client, agent, worker)["id"] == test["id"]


def test_fail_retries_until_dead(client: TestClient, keys: Keys) -> None:
    worker = register(client, keys.agent, "session-fail")
    task = create(client, keys.agent, max_attempts=2)
    first = claim(client, keys.agent, worker)
    failed = client.post(
        f"/v1/tasks/{task['id']}/fail",
        json={"lease_token": first["lease_token"], "error": "boom"},
        headers=bearer(keys.agent),
    )
    assert failed.status_code == 200
    assert (failed.json()["state"], failed.json()["attempts"], failed.json()["error"]) == ("ready", 1, "boom")
    assert failed.json()["worker_id"] is None
    second = claim(client, keys.agent, worker)
    assert second["id"] == task["id"]
    dead = client.post(
        f"/v1/tasks/{task['id']}/fail",
        json={"lease_token": second["lease_token"], "error": "boom again"},
        headers=bearer(keys.agent),
    )
    assert (dead.json()["state"], dead.json()["attempts"]) == ("dead", 2)
    assert dead.json()["finished_at"] is not None
    response = client.post("/v1/tasks/claim", json={"worker_id": worker}, headers=bearer(keys.agent))
    assert response.status_code == 204


def test_release_gives_the_task_back_without_an_attempt(client: TestClient, keys: Keys) -> None:
    worker = register(client, keys.agent, "session-release")
    task = create(client, keys.agent)
    held = claim(client, keys.agent, worker)
    released = client.post(
        f"/v1/tasks/{task['id']}/release",
        json={"lease_token": held["lease_token"]},
        headers=bearer(keys.agent),
    )
    assert released.status_code == 200
    assert (released.json()["state"], released.json()["attempts"], released.json()["worker_id"]) == (
        "ready",
        0,
        None,
    )
    stale = client.post(
        f"/v1/tasks/{task['id']}/heartbeat",
        json={"lease_token": held["lease_token"]},
        headers=bearer(keys.agent),
    )
    assert_error(stale, 409, "lease_conflict")
    assert claim(client, keys.agent, worker)["lease_token"] != held["lease_token"]


def test_cancel_makes_the_holders_token_stale(app: Starlette, client: TestClient, keys: Keys) -> None:
    worker = register(client, keys.agent, "session-cancel")
    task = create(client, keys.agent)
    held = claim(client, keys.agent, worker)
    cancelled = client.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer(keys.admin))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    with unchanged(app):
        stale = client.post(
            f"/v1/tasks/{task['id']}/complete",
            json={"lease_token": held["lease_token"]},
            headers=bearer(keys.agent),
        )
        assert_error(stale, 409, "lease_conflict", "cancelled")
        assert_error(
            client.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer(keys.admin)),
            409,
            "conflict",
            "already cancelled",
        )
    assert get_task(client, keys.viewer, task["id"])["state"] == "cancelled"


def test_idempotency_key_replays_and_refuses_reuse(app: Starlette, client: TestClient, keys: Keys) -> None:
    single = {"title": "once", "instructions": "i", "idempotency_key": "create-once"}
    first = client.post("/v1/tasks", json=single, headers=bearer(keys.agent))
    assert first.status_code == 201
    with unchanged(app):
        replay = client.post("/v1/tasks", json=single, headers=bearer(keys.agent))
        assert replay.status_code == 200
        assert replay.json() == first.json()
        other = client.post("/v1/tasks", json={**single, "title": "twice"}, headers=bearer(keys.agent))
        assert_error(other, 409, "conflict", "")

    batch = {
        "tasks": [{"title": "a", "instructions": "i"}, {"title": "b", "instructions": "i"}],
        "idempotency_key": "batch-once",
    }
    made = client.post("/v1/tasks", json=batch, headers=bearer(keys.agent))
    assert made.status_code == 201
    with unchanged(app):
        again = client.post("/v1/tasks", json=batch, headers=bearer(keys.agent))
        assert again.status_code == 200
        assert [t["id"] for t in again.json()["tasks"]] == [t["id"] for t in made.json()["tasks"]]
    listed = client.get("/v1/tasks", headers=bearer(keys.viewer)).json()["tasks"]
    assert len(listed) == 3


def test_list_pages_with_a_cursor_and_filters_by_state(client: TestClient, keys: Keys) -> None:
    worker = register(client, keys.agent, "session-list")
    ids = [create(client, keys.agent, title=f"t{n}")["id"] for n in range(5)]
    held = claim(client, keys.agent, worker)
    blocked = create(client, keys.agent, title="blocked", depends_on=[ids[0]])
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(10):  # bounded: 6 tasks, 2 a page
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/tasks", params=params, headers=bearer(keys.viewer)).json()
        assert len(page["tasks"]) <= 2
        seen += [task["id"] for task in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [*ids, blocked["id"]]
    assert cursor is None

    def states(*wanted: str) -> list[int]:
        query = httpx2.QueryParams([("state", state) for state in wanted])
        response = client.get("/v1/tasks", params=query, headers=bearer(keys.viewer))
        assert response.status_code == 200
        assert all(task["state"] in wanted for task in response.json()["tasks"])
        return [task["id"] for task in response.json()["tasks"]]

    assert states("claimed") == [held["id"]]
    assert states("blocked") == [blocked["id"]]
    assert states("claimed", "blocked") == [held["id"], blocked["id"]]
    assert states("done") == []
    by_worker = client.get("/v1/tasks", params={"worker_id": worker}, headers=bearer(keys.viewer))
    assert [task["id"] for task in by_worker.json()["tasks"]] == [held["id"]]


# -- workers, messages, status, plan, keys --------------------------------------------------


def test_workers_register_list_find_heartbeat_and_deregister(client: TestClient, keys: Keys) -> None:
    worker = register(client, keys.agent, "session-w", role="frontend")
    assert register(client, keys.agent, "session-w", role="frontend") == worker  # again: same worker
    other = register(client, keys.agent, "session-other", capabilities=["python", "sql"])

    listed = client.get("/v1/workers", headers=bearer(keys.viewer)).json()["workers"]
    assert [w["id"] for w in listed] == [worker, other]
    found = client.get("/v1/workers", params={"session_id": "session-other"}, headers=bearer(keys.viewer))
    assert [w["id"] for w in found.json()["workers"]] == [other]
    assert found.json()["workers"][0]["capabilities"] == ["python", "sql"]
    missing = client.get("/v1/workers", params={"session_id": "nobody"}, headers=bearer(keys.viewer))
    assert missing.json() == {"workers": []}

    shown = client.get(f"/v1/workers/{worker}", headers=bearer(keys.viewer)).json()
    assert (shown["role"], shown["status"], shown["current_task"]) == ("frontend", "idle", None)
    beat = client.post(f"/v1/workers/{worker}/heartbeat", headers=bearer(keys.agent))
    assert beat.status_code == 200 and beat.json()["last_seen"] >= shown["last_seen"]

    task = create(client, keys.agent)
    held = claim(client, keys.agent, worker)
    assert (
        client.get(f"/v1/workers/{worker}", headers=bearer(keys.viewer)).json()["current_task"] == task["id"]
    )
    stopped = client.delete(f"/v1/workers/{worker}", headers=bearer(keys.agent))
    assert stopped.status_code == 200
    assert (stopped.json()["status"], stopped.json()["current_task"]) == ("stopped", None)
    back = get_task(client, keys.viewer, task["id"])
    assert (back["state"], back["worker_id"], back["attempts"]) == ("ready", None, 0)
    stale = client.post(
        f"/v1/tasks/{task['id']}/complete",
        json={"lease_token": held["lease_token"]},
        headers=bearer(keys.agent),
    )
    assert_error(stale, 409, "lease_conflict")
    refused = client.post("/v1/tasks/claim", json={"worker_id": worker}, headers=bearer(keys.agent))
    assert_error(refused, 409, "conflict", "stopped")
    assert claim(client, keys.agent, other)["id"] == task["id"]


def test_session_route_gives_the_hooks_the_worker_and_its_leases(client: TestClient, keys: Keys) -> None:
    worker = register(client, keys.agent, "session-hooks")
    nobody = client.get("/v1/session", params={"session_id": "unknown"}, headers=bearer(keys.agent))
    assert_error(nobody, 404, "not_found", "no worker")
    viewer = client.get("/v1/session", params={"session_id": "session-hooks"}, headers=bearer(keys.viewer))
    assert_error(viewer, 403, "forbidden")  # it hands out lease tokens: agents only

    idle = client.get("/v1/session", params={"session_id": "session-hooks"}, headers=bearer(keys.agent))
    assert idle.json()["worker"]["id"] == worker and idle.json()["tasks"] == []
    assert idle.json()["idle_timeout_seconds"] == 600  # [queue] idle_timeout_minutes, 10 by default

    create(client, keys.agent)
    held = claim(client, keys.agent, worker)
    seen = client.get("/v1/session", params={"session_id": "session-hooks"}, headers=bearer(keys.agent))
    [task] = seen.json()["tasks"]
    assert (task["id"], task["lease_token"]) == (held["id"], held["lease_token"])
    assert task["lease_expires_at"] == held["lease_expires_at"]  # a read extends nothing

    time.sleep(0.01)
    mine = {"session_id": "session-hooks"}
    beat = client.post("/v1/session/heartbeat", json=mine, headers=bearer(keys.agent))
    assert beat.status_code == 200
    [extended] = beat.json()["tasks"]
    assert extended["lease_token"] == held["lease_token"]
    assert extended["lease_expires_at"] > held["lease_expires_at"]
    assert beat.json()["worker"]["last_seen"] > idle.json()["worker"]["last_seen"]
    done = client.post(
        f"/v1/tasks/{held['id']}/complete",
        json={"lease_token": held["lease_token"]},
        headers=bearer(keys.agent),
    )
    assert done.status_code == 200
    after = client.post("/v1/session/heartbeat", json=mine, headers=bearer(keys.agent))
    assert after.json()["tasks"] == []
    empty = client.post("/v1/session/heartbeat", json={"session_id": ""}, headers=bearer(keys.agent))
    assert_error(empty, 422, "invalid_request")

    client.delete(f"/v1/workers/{worker}", headers=bearer(keys.agent))
    stopped = client.post("/v1/session/heartbeat", json=mine, headers=bearer(keys.agent))
    assert stopped.json()["worker"]["status"] == "stopped"  # a heartbeat does not revive it


def test_messages_reach_exactly_their_readers(app: Starlette, client: TestClient, keys: Keys) -> None:
    backend = register(client, keys.agent, "session-b", role="backend")
    frontend = register(client, keys.agent, "session-f", role="frontend")

    def send(to: str | int, body: str, kind: str = "message") -> dict[str, Any]:
        response = client.post(
            "/v1/messages", json={"to": to, "body": body, "kind": kind}, headers=bearer(keys.agent)
        )
        assert response.status_code == 201, response.text
        sent: dict[str, Any] = response.json()
        return sent

    to_backend = send(backend, "for backend")
    to_frontend = send(str(frontend), "for frontend")
    to_role = send("role:backend", "for the backend role", kind="discovery")
    to_other_role = send("role:frontend", "for the frontend role")
    to_coordinator = send("coordinator", "for the coordinator")
    to_all = send("all", "for everyone")
    assert to_backend["to"] == f"worker:{backend}" and to_frontend["to"] == f"worker:{frontend}"
    assert to_backend["sender"] == "agent-key" and to_role["kind"] == "discovery"
    with unchanged(app):
        response = client.post("/v1/messages", json={"to": 424242, "body": "x"}, headers=bearer(keys.agent))
        assert_error(response, 404, "not_found", "424242")
        response = client.post(
            "/v1/messages", json={"to": "everyone", "body": "x"}, headers=bearer(keys.agent)
        )
        assert_error(response, 422, "invalid_request", "cannot send to")

    def read(reader: str | None, cursor: str | None = None, limit: int = 100) -> dict[str, Any]:
        params = {
            "limit": str(limit),
            **({"for": reader} if reader else {}),
            **({"cursor": cursor} if cursor else {}),
        }
        response = client.get("/v1/messages", params=params, headers=bearer(keys.viewer))
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    def ids(*messages: dict[str, Any]) -> list[int]:
        return [m["id"] for m in messages]

    assert ids(*read(f"worker:{backend}")["messages"]) == ids(to_backend, to_role, to_all)
    assert ids(*read(f"worker:{frontend}")["messages"]) == ids(to_frontend, to_other_role, to_all)
    assert ids(*read("coordinator")["messages"]) == ids(to_coordinator, to_all)
    assert len(read(None)["messages"]) == 6

    collected: list[int] = []
    cursor = None
    for _ in range(10):  # bounded: three messages, one a page
        page = read(f"worker:{backend}", cursor, limit=1)
        if not page["messages"]:
            assert page["next_cursor"] == cursor
            break
        collected += ids(*page["messages"])
        cursor = page["next_cursor"]
    assert collected == ids(to_backend, to_role, to_all)
    assert read(f"worker:{backend}", str(to_all["id"]))["messages"] == []
    assert_error(
        client.get("/v1/messages", params={"for": "worker:424242"}, headers=bearer(keys.viewer)), 404
    )
    assert_error(
        client.get("/v1/messages", params={"for": "frontend"}, headers=bearer(keys.viewer)),
        422,
        "invalid_request",
        "for must match",
    )


def test_status_counts_progress_and_reports_stuck_tasks(client: TestClient, keys: Keys) -> None:
    empty = client.get("/v1/status", headers=bearer(keys.viewer)).json()
    assert empty["progress"] == {
        "total": 0,
        "done": 0,
        "percent": 0.0,
        "counts": dict.fromkeys(["blocked", "ready", "claimed", "done", "dead", "cancelled"], 0),
    }
    assert empty["stuck"] == [] and empty["workers"] == []
    worker = register(client, keys.agent, "session-status")
    doomed = create(client, keys.agent, title="doomed", max_attempts=1)
    waiting = create(client, keys.agent, title="waiting", depends_on=[doomed["id"]])
    finished = create(client, keys.agent, title="finished", priority=-1)
    held = claim(client, keys.agent, worker)
    assert held["id"] == doomed["id"]
    client.post(
        f"/v1/tasks/{doomed['id']}/fail",
        json={"lease_token": held["lease_token"], "error": "no"},
        headers=bearer(keys.agent),
    ).raise_for_status()
    done = claim(client, keys.agent, worker)
    assert done["id"] == finished["id"]
    client.post(
        f"/v1/tasks/{done['id']}/complete",
        json={"lease_token": done["lease_token"]},
        headers=bearer(keys.agent),
    ).raise_for_status()

    status = client.get("/v1/status", headers=bearer(keys.viewer)).json()
    assert status["stuck"] == [waiting["id"]]
    assert status["progress"]["total"] == 3 and status["progress"]["done"] == 1
    assert status["progress"]["percent"] == pytest.approx(33.3)
    assert status["progress"]["counts"]["dead"] == 1 and status["progress"]["counts"]["blocked"] == 1
    assert [w["id"] for w in status["workers"]] == [worker]
    assert set(status["plan"]) == {"goal", "plan", "updated_at"}
    assert status["unclaimable"] == []


def test_status_names_ready_tasks_no_live_worker_can_claim(make_hub: MakeHub, keys: Keys) -> None:
    clock = FakeClock(1000.0)
    with conforming(TestClient(make_hub(clock=clock).app)) as client:

        def unclaimable() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = client.get("/v1/status", headers=bearer(keys.viewer)).json()[
                "unclaimable"
            ]
            return found

        anyone = create(client, keys.agent, title="anyone")
        qa = create(client, keys.agent, title="qa", required_capabilities=["qa", "testing"])
        both = create(client, keys.agent, title="two roles", required_capabilities=["api", "docs"])
        api = create(client, keys.agent, title="api", required_capabilities=["api"])
        assert [task["id"] for task in unclaimable()] == [qa["id"], both["id"], api["id"]], "no worker yet"

        register(client, keys.agent, "backend", capabilities=["backend", "api"])
        register(client, keys.agent, "writer", capabilities=["docs", "writing"])
        gone = register(client, keys.agent, "tester", capabilities=["testing", "qa"])
        client.delete(f"/v1/workers/{gone}", headers=bearer(keys.agent)).raise_for_status()
        assert unclaimable() == [
            {"id": qa["id"], "required_capabilities": ["qa", "testing"], "missing": ["qa", "testing"]},
            {"id": both["id"], "required_capabilities": ["api", "docs"], "missing": ["docs"]},
        ], "a stopped worker is not live; tags split over two workers do not add up"
        assert anyone["id"] not in [task["id"] for task in unclaimable()]

        register(client, keys.agent, "tester-2", capabilities=["testing", "qa"])
        assert [task["id"] for task in unclaimable()] == [both["id"]]
        clock.advance(HubSettings().worker_lost_seconds + 1)  # nobody heard from: every worker is lost
        assert [task["id"] for task in unclaimable()] == [qa["id"], both["id"], api["id"]]


def test_plan_get_and_put(app: Starlette, client: TestClient, keys: Keys) -> None:
    assert client.get("/v1/plan", headers=bearer(keys.viewer)).json() == {
        "goal": "",
        "plan": "",
        "updated_at": None,
    }
    put = client.put(
        "/v1/plan", json={"goal": "Ship v1", "plan": "# Plan\n- a\n"}, headers=bearer(keys.agent)
    )
    assert put.status_code == 200 and put.json()["updated_at"] is not None
    got = client.get("/v1/plan", headers=bearer(keys.viewer)).json()
    assert (got["goal"], got["plan"]) == ("Ship v1", "# Plan\n- a\n")
    with unchanged(app):
        missing = client.put("/v1/plan", json={"goal": "only a goal"}, headers=bearer(keys.agent))
        assert_error(missing, 422, "invalid_request", "plan")


def test_keys_are_shown_once_authenticate_and_can_be_revoked(
    app: Starlette, client: TestClient, keys: Keys
) -> None:
    made = client.post("/v1/keys", json={"name": "ci-bot", "role": "agent"}, headers=bearer(keys.admin))
    assert made.status_code == 201
    new = made.json()["key"]
    assert made.json()["role"] == "agent" and made.json()["source"] == "api" and len(new) >= 32
    listed = client.get("/v1/keys", headers=bearer(keys.admin)).json()["keys"]
    assert "ci-bot" in [key["name"] for key in listed]
    assert new not in json.dumps(listed)  # never shown again, not even its hash
    assert create(client, new, title="by the new key")["title"] == "by the new key"
    assert_error(client.get("/v1/keys", headers=bearer(new)), 403)  # an agent key
    with unchanged(app):
        taken = client.post("/v1/keys", json={"name": "ci-bot", "role": "viewer"}, headers=bearer(keys.admin))
        assert_error(taken, 409, "conflict", "ci-bot")
        bad_name = client.post("/v1/keys", json={"name": "-bad", "role": "agent"}, headers=bearer(keys.admin))
        assert_error(bad_name, 422, "invalid_request", "body.name")
        bad_role = client.post("/v1/keys", json={"name": "x", "role": "root"}, headers=bearer(keys.admin))
        assert_error(bad_role, 422, "invalid_request", "body.role")

    revoked = client.post("/v1/keys/revoke", json={"name": "ci-bot"}, headers=bearer(keys.admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_error(client.get("/v1/status", headers=bearer(new)), 401, "unauthorized", "not valid")
    assert_error(client.post("/v1/keys/revoke", json={"name": "ci-bot"}, headers=bearer(keys.admin)), 404)
    assert_error(client.post("/v1/keys/revoke", json={"name": "nobody"}, headers=bearer(keys.admin)), 404)


# -- the OpenAPI document -------------------------------------------------------------------


def test_openapi_is_served_and_valid(app: Starlette, client: TestClient, keys: Keys) -> None:
    served = client.get("/openapi.json", headers=bearer(keys.viewer))
    assert served.status_code == 200
    doc = served.json()
    assert doc == DOC
    assert doc["openapi"].startswith("3.1.")
    # openapi-spec-validator when it is installed (it is not a dependency); always the OpenAPI 3.1
    # meta-schema that schemathesis bundles.
    with contextlib.suppress(ModuleNotFoundError):
        importlib.import_module("openapi_spec_validator").validate(doc)
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    jsonschema.Draft202012Validator(definitions.OPENAPI_31).validate(doc)
    broken = {**doc, "paths": {"/v1/x": {"get": {"responses": {"200": {}}}}}}  # no description
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(definitions.OPENAPI_31).validate(broken)
    # Every schema in it is a valid JSON Schema 2020-12 (the dialect of OpenAPI 3.1).
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len({op["operationId"] for _, _, op in operations}) == len(operations)
    for _path, _method, operation in operations:
        for response in operation["responses"].values():
            for content in response.get("content", {}).values():
                jsonschema.Draft202012Validator.check_schema(content["schema"])
        if "requestBody" in operation:
            for content in operation["requestBody"]["content"].values():
                jsonschema.Draft202012Validator.check_schema(content["schema"])


def test_every_declared_operation_is_routed(app: Starlette, keys: Keys) -> None:
    routed = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    declared = {(method.upper(), path) for path, item in DOC["paths"].items() for method in item}
    assert declared <= routed
    static = {route.path for route in dashboard.ROUTES}  # the dashboard's files: not the API
    assert {(m, p) for m, p in routed if m != "HEAD" and p not in static} == declared


def test_an_undeclared_status_fails_the_conformance_check() -> None:
    """The check every test relies on does catch a drift (so passing tests mean something)."""
    request = httpx2.Request("GET", "http://testserver/v1/status")
    wrong_status = httpx2.Response(418, json={"error": {"code": "x", "message": "y"}}, request=request)
    with pytest.raises(AssertionError, match="418"):
        conform(wrong_status)
    wrong_body = httpx2.Response(200, json={"progress": {}}, request=request)
    with pytest.raises(AssertionError):
        conform(wrong_body)


def test_the_conformance_check_sees_every_response(
    client: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(DOC["paths"]["/v1/status"]["get"]["responses"], "200")
    with pytest.raises(AssertionError, match="answered 200, not in its OpenAPI"):
        client.get("/v1/status", headers=bearer(keys.viewer))


# -- bad input: a 4xx that says what was wrong, and no change -------------------------------


# One row per body: the table reads better unformatted.
@pytest.mark.parametrize(
    ("content", "status", "code", "says"),
    [
        (b'{"title": "t", "instructions":', 400, "malformed_json", "not valid JSON"),
        (b"", 400, "malformed_json", "empty"),
        (b"   \n", 400, "malformed_json", "empty"),
        (b"\xff\xfe{}", 400, "malformed_json", "not valid JSON"),
        (b'{"title": "t", "instructions": "i", "priority": NaN}', 400, "malformed_json", "NaN"),
        (b'{"title": "\\ud800", "instructions": "i"}', 400, "malformed_json", "surrogate"),
        (b"[]", 422, "invalid_request", "body must be object"),
        (b"[" * 5000 + b"]" * 5000, 400, "malformed_json", "too deeply"),
        (b'{"title": "t", "instructions": "i", "depends_on": ' + b"[" * 3000 + b"]" * 3000 + b"}", 400,
         "malformed_json", "too deeply"),
        (b'"a string"', 422, "invalid_request", "body must be object"),
        (b'{"title": 5, "instructions": "i"}', 422, "invalid_request", "body.title must be string"),
        (b'{"title": "t", "instructions": "i", "priority": "high"}', 422, "invalid_request", "body.priority"),
        (b'{"title": "t", "instructions": "i", "colour": "red"}', 422, "invalid_request", "colour"),
        (b'{"title": "t"}', 422, "invalid_request", "instructions"),
        (b"{}", 422, "invalid_request", "tasks"),
        (b'{"tasks": []}', 422, "invalid_request", "body.tasks must contain at least 1"),
        (b'{"tasks": [{"title": "t"}]}', 422, "invalid_request", "body.tasks[0] must contain"),
        (b'{"title": "t", "instructions": "i", "depends_on": [9223372036854775808]}', 422, "invalid_request",
         "depends_on"),
        (b'{"title": "t", "instructions": "i", "depends_on": [424242]}', 422, "invalid_request", "424242"),
        (b'{"title": "t", "instructions": "i", "depends_on": ["nowhere"]}', 422, "invalid_request",
         "nowhere"),
        (b'{"tasks": [{"title": "a", "instructions": "i", "ref": "a", "depends_on": ["b"]},'
         b' {"title": "b", "instructions": "i", "ref": "b", "depends_on": ["a"]}]}', 422, "invalid_request",
         "cycle"),
        (b'{"title": "t", "instructions": "i", "required_capabilities": ["Not A Tag"]}', 422,
         "invalid_request", "required_capabilities"),
    ],
)  # fmt: skip
def test_bad_task_bodies_are_refused(
    app: Starlette, client: TestClient, keys: Keys, content: bytes, status: int, code: str, says: str
) -> None:
    with unchanged(app):
        response = client.post("/v1/tasks", content=content, headers=bearer(keys.agent))
        assert_error(response, status, code, says)


@pytest.mark.parametrize(
    ("method", "path", "body", "says"),
    [
        ("POST", "/v1/workers", {"session_id": "s", "role": "backend", "extra": 1}, "extra"),
        ("POST", "/v1/workers", {"session_id": "", "role": "backend"}, "body.session_id"),
        ("POST", "/v1/workers", {"session_id": "s", "role": "Back End"}, "body.role"),
        ("POST", "/v1/workers", {"session_id": "s"}, "role"),
        ("POST", "/v1/tasks/claim", {"worker_id": "1"}, "body.worker_id must be integer"),
        ("POST", "/v1/tasks/claim", {"worker_id": 0}, "body.worker_id"),
        ("POST", "/v1/tasks/claim", {"worker_id": 1, "wait": -1}, "body.wait"),
        ("POST", "/v1/tasks/claim", {"worker_id": 1, "wait": 3601}, "body.wait"),
        ("POST", "/v1/tasks/1/heartbeat", {"lease_token": ""}, "body.lease_token"),
        ("POST", "/v1/tasks/1/fail", {"lease_token": "t"}, "error"),
        ("POST", "/v1/tasks/1/complete", {"lease_token": "t", "result": 5}, "body.result"),
        ("POST", "/v1/messages", {"to": "all", "body": "x", "kind": "shout"}, "body.kind"),
        ("POST", "/v1/messages", {"to": "all", "body": ""}, "body.body"),
        ("PUT", "/v1/plan", {"goal": 1, "plan": "p"}, "body.goal"),
        ("POST", "/v1/keys", {"name": "n", "role": "agent", "key": "chosen"}, "key"),
    ],
)
def test_bad_bodies_are_refused(
    app: Starlette, client: TestClient, keys: Keys, method: str, path: str, body: Any, says: str
) -> None:
    with unchanged(app):
        response = client.request(method, path, json=body, headers=bearer(keys.admin))
        assert_error(response, 422, "invalid_request", says)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/tasks/424242",
        "/v1/tasks/424242/heartbeat",
        "/v1/tasks/424242/complete",
        "/v1/tasks/424242/fail",
        "/v1/tasks/424242/release",
        "/v1/tasks/424242/cancel",
        "/v1/workers/424242",
        "/v1/workers/424242/heartbeat",
    ],
)
def test_unknown_ids_are_404(app: Starlette, client: TestClient, keys: Keys, path: str) -> None:
    endpoint = next(e for e in ENDPOINTS if re.fullmatch(re.sub(r"\{[^/]+\}", "[0-9]+", e.path), path))
    body = minimal_body(endpoint)
    with unchanged(app):
        response = client.request(endpoint.method, path, json=body, headers=bearer(keys.admin))
        assert_error(response, 404, "not_found", "424242")


def test_unknown_worker_ids_are_404(app: Starlette, client: TestClient, keys: Keys) -> None:
    with unchanged(app):
        assert_error(client.delete("/v1/workers/424242", headers=bearer(keys.admin)), 404, "not_found")
        response = client.post("/v1/tasks/claim", json={"worker_id": 424242}, headers=bearer(keys.agent))
        assert_error(response, 404, "not_found", "424242")


@pytest.mark.parametrize(
    "raw_id",
    [
        "abc",
        "-1",
        "0",
        "1.5",
        "1e3",
        "0x10",
        "%20",
        "99999999999999999999",
        "9223372036854775808",
        "9" * 5000,
        "%C2%B2",
        "%D9%A3",
        "1%00",
    ],
)
def test_ids_that_are_not_ids_are_404(app: Starlette, client: TestClient, keys: Keys, raw_id: str) -> None:
    register(client, keys.agent, "session-ids")  # worker 1 exists (so do tasks 1 to 3)
    for _ in range(3):
        create(client, keys.agent)
    with unchanged(app):
        # Paths with ids only: a name in a path ({slot}) is tested with its endpoints (test_team_hub.py).
        for template in {e.path for e in ENDPOINTS if "{" in e.path and not e.names}:
            endpoint = next(e for e in ENDPOINTS if e.path == template)
            url = re.sub(r"\{[^/]+\}", raw_id, template)
            body = minimal_body(endpoint)
            response = client.request(endpoint.method, url, json=body, headers=bearer(keys.admin))
            assert_error(response, 404, "not_found", "positive integer id")


def test_a_lease_token_that_is_not_ascii_is_stale(app: Starlette, client: TestClient, keys: Keys) -> None:
    worker = register(client, keys.agent, "session-token")
    task = create(client, keys.agent)
    claim(client, keys.agent, worker)
    with unchanged(app):
        for action in ("heartbeat", "complete", "release", "fail"):
            body = {"lease_token": "t\u00f6k\u00e9n", **({"error": "e"} if action == "fail" else {})}
            response = client.post(f"/v1/tasks/{task['id']}/{action}", json=body, headers=bearer(keys.agent))
            assert_error(response, 409, "lease_conflict", "not its current lease")


def test_an_integral_number_is_an_integer(client: TestClient, keys: Keys) -> None:
    """JSON Schema reads 7.0 as the integer 7, so the hub must too (not as a ref, not as a float)."""
    worker = register(client, keys.agent, "session-float")
    first = create(client, keys.agent)
    response = client.post(
        "/v1/tasks",
        content=f'{{"title": "t", "instructions": "i", "depends_on": [{first["id"]}.0], '
        '"priority": 2e0, "max_attempts": 1.0}',
        headers=bearer(keys.agent),
    )
    assert response.status_code == 201, response.text
    second = response.json()
    assert (second["depends_on"], second["priority"], second["max_attempts"]) == ([first["id"]], 2, 1)
    assert second["state"] == "blocked"
    response = client.post(
        "/v1/tasks/claim", content=f'{{"worker_id": {worker}.0}}', headers=bearer(keys.agent)
    )
    assert response.status_code == 200 and response.json()["worker_id"] == worker
    refused = client.post(
        "/v1/tasks",
        content=b'{"title": "t", "instructions": "i", "priority": 1.5}',
        headers=bearer(keys.agent),
    )
    assert_error(refused, 422, "invalid_request", "body.priority must be integer")


def test_largest_sqlite_id_is_just_not_found(client: TestClient, keys: Keys) -> None:
    assert_error(
        client.get("/v1/tasks/9223372036854775807", headers=bearer(keys.viewer)), 404, "not_found", "no task"
    )


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/v1/tasks", [("cursor", "abc")], "cursor"),
        ("/v1/tasks", [("cursor", "-1")], "cursor"),
        ("/v1/tasks", [("cursor", "9999999999999999999")], "cursor"),  # 19 digits, past SQLite's range
        ("/v1/tasks", [("cursor", "99999999999999999999")], "cursor"),
        ("/v1/messages", [("cursor", "9999999999999999999")], "cursor"),
        ("/v1/tasks", [("limit", "0")], "limit"),
        ("/v1/tasks", [("limit", "1001")], "limit"),
        ("/v1/tasks", [("limit", "ten")], "limit"),
        ("/v1/tasks", [("limit", "--5")], "limit"),
        ("/v1/tasks", [("limit", "\u00b2")], "limit"),
        ("/v1/tasks", [("limit", "9" * 5000)], "limit"),
        ("/v1/tasks", [("state", "finished")], "state[0]"),
        ("/v1/tasks", [("worker_id", "0")], "worker_id"),
        ("/v1/tasks", [("worker_id", "9223372036854775808")], "worker_id"),
        ("/v1/tasks", [("colour", "red")], "unknown query parameter 'colour'"),
        ("/v1/status", [("verbose", "1")], "unknown query parameter 'verbose'"),
        ("/v1/tasks", [("limit", "1"), ("limit", "2")], "'limit' is given more than once"),
        ("/v1/messages", [("for", "worker:1"), ("for", "coordinator")], "'for' is given more than once"),
        ("/v1/workers", [("session_id", "")], "session_id"),
    ],
)
def test_bad_query_parameters_are_422(
    client: TestClient, keys: Keys, path: str, params: list[tuple[str, str]], says: str
) -> None:
    response = client.get(path, params=tuple(params), headers=bearer(keys.viewer))
    assert_error(response, 422, "invalid_request", says)


def test_a_body_over_max_body_bytes_is_413(app: Starlette, client: TestClient, keys: Keys) -> None:
    big = {"title": "t", "instructions": "x" * (MAX_BODY + 1)}
    with unchanged(app):
        response = client.post("/v1/tasks", json=big, headers=bearer(keys.agent))
        assert_error(response, 413, "payload_too_large", f"larger than {MAX_BODY} bytes")
        # Without a Content-Length (chunked), the limit holds while the body streams in.
        chunks = iter([b'{"title": "t", "instructions": "', b"x" * MAX_BODY, b'"}'])
        response = client.post("/v1/tasks", content=chunks, headers=bearer(keys.agent))
        assert_error(response, 413, "payload_too_large")
    just_fits = {"title": "t", "instructions": "x" * (MAX_BODY - 100)}
    assert client.post("/v1/tasks", json=just_fits, headers=bearer(keys.agent)).status_code == 201


@pytest.mark.parametrize(
    ("length", "status", "says"),
    [
        ("abc", 400, "not a number"),
        ("-1", 400, "not a number"),
        ("1e3", 400, "not a number"),
        (str(MAX_BODY + 1), 413, "larger than"),
        ("9" * 5000, 413, "larger than"),
    ],
)
def test_a_content_length_that_is_not_a_number_or_too_big(
    app: Starlette, client: TestClient, keys: Keys, length: str, status: int, says: str
) -> None:
    with unchanged(app):
        response = client.post(
            "/v1/tasks",
            content=b'{"title": "t", "instructions": "i"}',
            headers={**bearer(keys.agent), "Content-Length": length},
        )
        assert_error(response, status, None, says)


def test_wrong_method_is_405_and_unknown_route_is_404(client: TestClient, keys: Keys) -> None:
    response = client.delete("/v1/tasks", headers=bearer(keys.admin))
    assert_error(response, 405, "method_not_allowed", "DELETE is not allowed on /v1/tasks")
    assert_error(client.put("/v1/status", headers=bearer(keys.admin)), 405, "method_not_allowed")
    assert_error(client.get("/v1/tasks/1/complete", headers=bearer(keys.admin)), 405)
    assert_error(
        client.get("/v1/nothing-here", headers=bearer(keys.admin)), 404, "not_found", "/v1/nothing-here"
    )
    assert_error(client.get("/v1", headers=bearer(keys.admin)), 404, "not_found")
    assert_error(client.post("/v2/tasks"), 404, "not_found")


def test_last_event_id_must_be_an_event_id(client: TestClient, keys: Keys) -> None:
    for bad in ("abc", "-1", "1.5", "99999999999999999999", "0" * 20 + "9" * 20, "9" * 5000):
        response = client.get("/v1/events", headers={**bearer(keys.viewer), "Last-Event-ID": bad})
        assert_error(response, 422, "invalid_request", "Last-Event-ID")
    latin1 = [(b"authorization", f"Bearer {keys.viewer}".encode()), (b"last-event-id", b"\xb2")]  # "²"
    response = client.get("/v1/events", headers=latin1)
    assert_error(response, 422, "invalid_request", "Last-Event-ID")
    assert_error(
        client.get("/v1/events", params={"after": "-1"}, headers=bearer(keys.viewer)),
        422,
        "invalid_request",
        "after",
    )


# -- a real server: SSE, long polls and a lying Content-Length ------------------------------


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Run the app on uvicorn in a thread, on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def live(app: Starlette) -> Iterator[str]:
    with serving(app) as url:
        yield url


@dataclass
class Sse:
    id: int
    type: str
    data: dict[str, Any]


def sse_events(lines: Iterator[str], count: int) -> list[Sse]:
    """Read `count` events (each read is bounded by the client's timeout)."""
    events: list[Sse] = []
    fields: dict[str, str] = {}
    for _ in range(count * 10 + 20):
        line = next(lines)
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "id" in fields:
            events.append(Sse(int(fields["id"]), fields["event"], json.loads(fields["data"])))
            if len(events) == count:
                return events
        fields = {}
    raise AssertionError(f"only {len(events)} of {count} events came")


def test_events_stream_replays_after_an_id_and_resumes(live: str, keys: Keys) -> None:
    with httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.admin)) as http:
        for n in range(3):
            http.post("/v1/tasks", json={"title": f"t{n}", "instructions": "i"}).raise_for_status()
        http.put("/v1/plan", json={"goal": "g", "plan": "p"}).raise_for_status()

        with http.stream("GET", "/v1/events", params={"after": "0"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            history = sse_events(stream.iter_lines(), 7)
        assert [e.id for e in history] == list(range(1, 8))
        types = ["key.added"] * 3 + ["task.created"] * 3 + ["plan.updated"]  # keys of hub.toml first
        assert [e.type for e in history] == types
        created = [e for e in history if e.type == "task.created"]
        assert [e.data["task_id"] for e in created] == [1, 2, 3]
        assert history[-1].data["actor"] == "admin-key"

        resume_from = created[0].id
        expected = [e.id for e in history if e.id > resume_from]
        with http.stream("GET", "/v1/events", headers={"Last-Event-ID": str(resume_from)}) as stream:
            assert [e.id for e in sse_events(stream.iter_lines(), len(expected))] == expected
        with http.stream("GET", "/v1/events", params={"after": str(resume_from)}) as stream:
            assert [e.id for e in sse_events(stream.iter_lines(), len(expected))] == expected


def test_events_stream_delivers_new_events_live(live: str, keys: Keys) -> None:
    with (
        httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.viewer)) as watcher,
        httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.agent)) as agent,
        watcher.stream("GET", "/v1/events") as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")  # the stream is open; it starts at "now"
        sent = agent.post("/v1/messages", json={"to": "all", "body": "hello"})
        sent.raise_for_status()
        (event,) = sse_events(lines, 1)
        assert event.type == "message.sent"
        assert event.data["data"]["id"] == sent.json()["id"]
        agent.post("/v1/tasks", json={"title": "live", "instructions": "i"}).raise_for_status()
        (event,) = sse_events(lines, 1)
        assert event.type == "task.created" and event.data["task_id"] == 1


def test_a_long_poll_claim_is_woken_by_a_new_task(live: str, keys: Keys) -> None:
    with httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.agent)) as http:
        worker = http.post("/v1/workers", json={"session_id": "poller", "role": "backend"}).json()["id"]
        answer: list[httpx2.Response] = []

        def poll() -> None:
            with httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.agent)) as poller:
                answer.append(poller.post("/v1/tasks/claim", json={"worker_id": worker, "wait": 8}))

        started = time.monotonic()
        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.3)  # let the claim start waiting
        task = http.post("/v1/tasks", json={"title": "wake up", "instructions": "i"}).json()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5, "the claim was not woken; it waited out its time"
        assert answer[0].status_code == 200 and answer[0].json()["id"] == task["id"]


def raw_request(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as conn:
        conn.sendall(request)
        received = b""
        for _ in range(1000):  # until the server closes (Connection: close)
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def test_a_lying_content_length_is_refused(app: Starlette, live: str, keys: Keys) -> None:
    body = b'{"title": "t", "instructions": "i"}'
    head = (
        f"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {keys.agent}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
    ).encode()
    with unchanged(app):
        # Shorter than the body: the hub reads 5 bytes, which are not JSON.
        answer = raw_request(live, head + b"Content-Length: 5\r\n\r\n" + body)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"400", answer
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "malformed_json"
        # Longer than the limit, whatever the body: refused before it is read.
        answer = raw_request(live, head + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode() + body)
        assert answer.split(b"\r\n", 1)[0].split()[1] == b"413", answer
    with httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.viewer)) as http:
        assert http.get("/v1/tasks").json()["tasks"] == []


def test_a_client_gone_before_its_body_is_not_a_hub_failure(
    app: Starlette, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"title": "t", "instructions": "i"}'
    with unchanged(app), serving(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as conn:
            conn.sendall(
                f"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {keys.agent}\r\n"
                "Content-Length: 1000\r\n\r\n".encode()
                + body
            )
            conn.shutdown(socket.SHUT_WR)  # 35 of the 1000 bytes announced, then gone
            assert conn.recv(65536) == b""
    # The server has stopped, so the request has been handled: nothing was logged as a failure.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
