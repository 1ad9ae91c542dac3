"""The team on the hub, over HTTP against a real `scaffold hub serve`: slots joined to their
workers, screens (roles, redaction, limits), the work per role and the runs of headless sessions.

Every answer is checked against the hub's OpenAPI document (tests.test_api.conform), so the
declared shapes are the ones served.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from scaffold.errors import ConfigError
from scaffold.hub.core.settings import load_settings
from tests.hubproc import HubProcess, running_hub, write_config
from tests.test_api import conform

ADMIN, AGENT, VIEWER = (
    "admin-key-of-the-team-test",
    "agent-key-of-the-team-test",
    "viewer-key-of-the-team-test",
)
KEYS = [("owner", "admin", ADMIN), ("agents", "agent", AGENT), ("watcher", "viewer", VIEWER)]
ROLES = '[roles]\nbackend = ["backend", "python"]\nfrontend = ["frontend"]\n'
SESSION = "5b0e3f0c-1d7e-4a53-9a51-6f1f1c2b7d10"


def config(directory: Path, extra: str = "") -> Path:
    path = write_config(directory, keys=KEYS)
    path.write_text(path.read_text(encoding="utf-8") + ROLES + extra, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(config(tmp_path_factory.mktemp("team-hub"))) as running:
        yield running


def client(hub: HubProcess, key: str | None) -> httpx2.Client:
    http = hub.client(key)
    http.event_hooks = {"request": [], "response": [conform]}
    return http


@pytest.fixture
def agent(hub: HubProcess) -> Iterator[httpx2.Client]:
    with client(hub, AGENT) as http:
        assert http.delete("/v1/team").status_code == 200  # each test starts with no slots
        yield http


def refused(response: httpx2.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text
    assert says.lower() in response.json()["error"]["message"].lower(), response.json()


def slots(http: httpx2.Client) -> dict[str, dict[str, Any]]:
    team = http.get("/v1/team")
    assert team.status_code == 200, team.text
    return {view["slot"]: view for view in team.json()["slots"]}


# -- slots ---------------------------------------------------------------------------------------


def test_a_slot_is_kept_as_sent_joined_to_its_worker_and_forgotten(agent: httpx2.Client) -> None:
    sent = {
        "host": "dev@build-1",
        "role": "backend",
        "mode": "headless",
        "state": "idle",
        "session_id": SESSION,
        "pid": 4321,
        "restarts": 2,
        "failures": 1,
        "last_run": {"exit_code": 0, "num_turns": 3},
        "note": "",
    }
    before = time.time()
    put = agent.put("/v1/team/slots/w1", json=sent)
    assert put.status_code == 200, put.text
    view = put.json()
    assert {k: view[k] for k in sent} == sent
    assert view["slot"] == "w1" and view["screen_at"] is None and view["worker"] is None
    assert before - 1 <= view["updated_at"] <= time.time() + 1

    for name in ("w10", "w2", "coordinator"):
        assert agent.put(f"/v1/team/slots/{name}", json={"role": "frontend"}).status_code == 200
    shown = agent.get("/v1/team").json()
    assert [s["slot"] for s in shown["slots"]] == ["coordinator", "w1", "w2", "w10"]
    defaults = shown["slots"][2]
    assert (defaults["host"], defaults["mode"], defaults["state"]) == ("local", "interactive", "starting")
    assert (defaults["restarts"], defaults["failures"], defaults["note"]) == (0, 0, "")
    assert defaults["session_id"] is defaults["pid"] is defaults["last_run"] is None

    worker = agent.post("/v1/workers", json={"session_id": SESSION, "role": "backend"}).json()
    joined = slots(agent)["w1"]["worker"]
    assert joined["id"] == worker["id"] and joined["status"] == "idle" and joined["current_task"] is None
    task = agent.post("/v1/tasks", json={"title": "t", "instructions": "x", "priority": 1_000_000}).json()
    assert agent.post("/v1/tasks/claim", json={"worker_id": worker["id"]}).json()["id"] == task["id"]
    joined = slots(agent)["w1"]["worker"]
    assert (joined["status"], joined["current_task"], joined["idle_seconds"]) == ("active", task["id"], 0.0)

    # A PUT replaces the slot: what it leaves out is back to the default.
    replaced = agent.put("/v1/team/slots/w1", json={"role": "backend", "state": "running"}).json()
    assert replaced["state"] == "running" and replaced["session_id"] is None and replaced["worker"] is None
    agent.delete(f"/v1/workers/{worker['id']}")

    gone = agent.delete("/v1/team/slots/w1")
    assert gone.status_code == 200 and gone.json()["slot"] == "w1"
    refused(agent.delete("/v1/team/slots/w1"), 404, "no team slot 'w1'")
    assert set(slots(agent)) == {"coordinator", "w2", "w10"}
    cleared = agent.delete("/v1/team")
    assert cleared.json() == {"deleted": 3} and slots(agent) == {}


def test_bad_slots_get_a_clear_4xx(agent: httpx2.Client) -> None:
    refused(agent.put("/v1/team/slots/W1", json={"role": "backend"}), 422, "slot must match")
    refused(agent.put("/v1/team/slots/" + "w" * 33, json={"role": "backend"}), 422, "slot must match")
    refused(agent.put("/v1/team/slots/-w", json={"role": "backend"}), 422, "slot must match")
    refused(agent.put("/v1/team/slots/w1", json={"host": "local"}), 422, "role")
    for field, value in (
        ("restarts", "2"),
        ("restarts", -1),
        ("state", "sleeping"),
        ("mode", "daemon"),
        ("pid", 0),
        ("session_id", ""),
        ("note", "x" * 501),
        ("role", "Back End"),
        ("colour", "blue"),
    ):
        response = agent.put("/v1/team/slots/w1", json={"role": "backend", field: value})
        assert response.status_code == 422, (field, value, response.text)
    refused(agent.put("/v1/team/slots/w1", content=b"{role", headers={"content-type": "application/json"}),
            400, "not valid JSON")  # fmt: skip
    big_run = {"role": "backend", "last_run": {"error": "x" * 5000}}
    refused(agent.put("/v1/team/slots/w1", json=big_run), 422, "last_run is larger than 4096 bytes")
    assert slots(agent) == {}, "a refused PUT left a slot"

    refused(agent.put("/v1/team/slots/w1/screen", json={"text": "hi"}), 404, "no team slot 'w1'")
    assert agent.put("/v1/team/slots/w1", json={"role": "backend"}).status_code == 200
    refused(agent.put("/v1/team/slots/w1/screen", json={"text": 42}), 422, "text")
    refused(agent.put("/v1/team/slots/w1/screen", json={"text": "x" * 65_537}), 422, "65536")
    wide = "é" * 40_000  # 40,000 characters, 80,000 bytes as UTF-8
    refused(agent.put("/v1/team/slots/w1/screen", json={"text": wide}), 413, "at most 65536")
    assert agent.put("/v1/team/slots/w1/screen", json={"text": "é" * 32_768}).status_code == 200
    with client_as(agent, ADMIN) as admin:
        refused(admin.get("/v1/team/slots/w2/screen"), 404, "no team slot 'w2'")
        assert agent.put("/v1/team/slots/w2", json={"role": "backend"}).status_code == 200
        refused(admin.get("/v1/team/slots/w2/screen"), 404, "has sent no screen yet")


def test_the_team_holds_at_most_256_slots(agent: httpx2.Client) -> None:
    for number in range(256):
        assert agent.put(f"/v1/team/slots/w{number}", json={"role": "backend"}).status_code == 200
    refused(agent.put("/v1/team/slots/w256", json={"role": "backend"}), 409, "256 slots already")
    assert agent.put("/v1/team/slots/w7", json={"role": "frontend"}).status_code == 200  # a known one
    assert agent.delete("/v1/team").json() == {"deleted": 256}


def client_as(http: httpx2.Client, key: str) -> httpx2.Client:
    other = httpx2.Client(base_url=http.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10.0)
    other.event_hooks = {"request": [], "response": [conform]}
    return other


# -- roles and screens ---------------------------------------------------------------------------


def test_who_may_do_what(hub: HubProcess, agent: httpx2.Client) -> None:
    assert agent.put("/v1/team/slots/w1", json={"role": "backend"}).status_code == 200
    assert agent.put("/v1/team/slots/w1/screen", json={"text": "$ make test"}).status_code == 200
    with client(hub, VIEWER) as viewer, client(hub, ADMIN) as admin, client(hub, None) as nobody:
        assert set(slots(viewer)) == {"w1"}
        assert slots(viewer)["w1"]["screen_at"] is not None
        refused(viewer.put("/v1/team/slots/w2", json={"role": "backend"}), 403, "needs the agent role")
        refused(viewer.put("/v1/team/slots/w1/screen", json={"text": "x"}), 403, "needs the agent role")
        refused(viewer.delete("/v1/team"), 403, "needs the agent role")
        refused(viewer.get("/v1/team/slots/w1/screen"), 403, "needs the admin role")
        refused(agent.get("/v1/team/slots/w1/screen"), 403, "needs the admin role")
        refused(nobody.get("/v1/team"), 401, "send the API key")
        screen = admin.get("/v1/team/slots/w1/screen")
        assert screen.status_code == 200 and screen.json()["text"] == "$ make test"
        assert screen.json()["slot"] == "w1" and screen.json()["at"] == slots(viewer)["w1"]["screen_at"]


def test_screen_role_in_hub_toml_opens_screens_to_another_role(tmp_path: Path) -> None:
    with (
        running_hub(config(tmp_path, '[team]\nscreen_role = "viewer"\n')) as hub,
        client(hub, AGENT) as agent,
    ):
        agent.put("/v1/team/slots/w1", json={"role": "backend"})
        agent.put("/v1/team/slots/w1/screen", json={"text": "hello"})
        with client(hub, VIEWER) as viewer:
            assert viewer.get("/v1/team/slots/w1/screen").json()["text"] == "hello"


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ('screen_role = "root"', "team.screen_role must be one of 'viewer', 'agent', 'admin', got 'root'"),
        ("screen_role = 1", "team.screen_role must be a string, got 1"),
        ('screen = "admin"', "unknown setting team.screen"),
    ],
)
def test_a_bad_screen_role_is_one_clear_error(tmp_path: Path, setting: str, says: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f"[team]\n{setting}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="^" + str(path).replace(".", r"\.") + ": ") as raised:
        load_settings(path)
    assert says in str(raised.value) and "\n" not in str(raised.value)
    path.write_text("", encoding="utf-8")
    assert load_settings(path).screen_role == "admin"


def test_screens_are_redacted_on_write(hub: HubProcess, agent: httpx2.Client) -> None:
    with client(hub, ADMIN) as admin:
        made = admin.post("/v1/keys", json={"name": f"made-{time.monotonic_ns()}", "role": "agent"}).json()
        assert agent.put("/v1/team/slots/w1", json={"role": "backend"}).status_code == 200
        secrets = {
            "agent key as an argument": f"$ vps --key {AGENT} status",
            "admin key after =": f"export HUB_KEY={ADMIN}",
            "a key made through the API": f"curl -s 'http://hub/v1/tasks?k={made['key']}'",
            "a bearer header": "Authorization: Bearer not-a-hub-key.but+secret/anyway=",
            "an X-API-Key header": "x-api-key: some-other-token",
            "an Anthropic key": "ANTHROPIC_API_KEY=sk-ant-api03-AbC_dEf-123",
            "VPS_API_KEY": "export VPS_API_KEY='quoted-secret' && VPS_API_KEY=plain-secret make",
        }
        harmless = "ok: 12 passed in 3.4s; see src/scaffold/hub/services/team.py and a-long-plain-word"
        text = "\n".join([harmless, *secrets.values()])
        assert agent.put("/v1/team/slots/w1/screen", json={"text": text}).status_code == 200
        shown = admin.get("/v1/team/slots/w1/screen").json()["text"]
    lines = shown.split("\n")
    assert lines[0] == harmless
    for secret in (AGENT, ADMIN, made["key"], "not-a-hub-key", "some-other-token", "AbC_dEf", "quoted-secret",
                   "plain-secret"):  # fmt: skip
        assert secret not in shown, secret
    assert lines[1:] == [
        "$ vps --key [redacted] status",
        "export HUB_KEY=[redacted]",
        "curl -s 'http://hub/v1/tasks?k=[redacted]'",
        "Authorization: Bearer [redacted]",
        "x-api-key: [redacted]",
        "ANTHROPIC_API_KEY=[redacted]",
        "export VPS_API_KEY='[redacted]' && VPS_API_KEY=[redacted] make",
    ]
    assert "quoted-secret" not in hub.stderr + hub.stdout


# -- work per role -------------------------------------------------------------------------------


def test_work_per_role_counts_what_its_tags_cover_and_follows_dependencies(tmp_path: Path) -> None:
    with running_hub(config(tmp_path)) as hub, client(hub, AGENT) as agent:
        assert agent.get("/v1/team").json() == {
            "slots": [],
            "work": {"backend": {"ready": 0, "waiting": 0}, "frontend": {"ready": 0, "waiting": 0}},
        }
        batch = [
            {"ref": "api", "title": "api", "instructions": "x", "required_capabilities": ["backend"],
             "priority": 10},
            {"ref": "py", "title": "py", "instructions": "x", "required_capabilities": ["python", "backend"]},
            {"ref": "form", "title": "form", "instructions": "x", "required_capabilities": ["frontend"],
             "priority": 10},
            {"ref": "wire", "title": "wire", "instructions": "x", "required_capabilities": ["backend"],
             "depends_on": ["form"]},
            {"ref": "any", "title": "any", "instructions": "x"},
            {"ref": "both", "title": "both", "instructions": "x",
             "required_capabilities": ["frontend", "backend"]},
        ]  # fmt: skip
        created = agent.post("/v1/tasks", json={"tasks": batch})
        assert created.status_code == 201, created.text
        ids = {task["title"]: task["id"] for task in created.json()["tasks"]}
        backend = agent.post("/v1/workers", json={"session_id": "s-backend", "role": "backend"}).json()
        claimed = agent.post("/v1/tasks/claim", json={"worker_id": backend["id"]}).json()
        assert claimed["id"] == ids["api"]
        agent.put("/v1/team/slots/w1", json={"role": "docs"})  # a role hub.toml does not list
        assert agent.get("/v1/team").json()["work"] == {
            "backend": {"ready": 2, "waiting": 2},  # py, any; wire (blocked), api (claimed)
            "docs": {"ready": 1, "waiting": 0},  # any
            "frontend": {"ready": 2, "waiting": 0},  # form, any
        }
        frontend = agent.post("/v1/workers", json={"session_id": "s-frontend", "role": "frontend"}).json()
        form = agent.post("/v1/tasks/claim", json={"worker_id": frontend["id"]}).json()
        assert form["id"] == ids["form"]
        done = agent.post(f"/v1/tasks/{form['id']}/complete", json={"lease_token": form["lease_token"]})
        assert done.status_code == 200, done.text
        assert agent.get("/v1/team").json()["work"] == {
            "backend": {"ready": 3, "waiting": 1},  # py, wire (now ready), any; api
            "docs": {"ready": 1, "waiting": 0},
            "frontend": {"ready": 1, "waiting": 0},
        }


# -- runs ----------------------------------------------------------------------------------------


def test_runs_are_recorded_as_events_and_listed_newest_first(hub: HubProcess, agent: httpx2.Client) -> None:
    worker = agent.post("/v1/workers", json={"session_id": f"runs-{time.monotonic_ns()}", "role": "backend"})
    worker_id = worker.json()["id"]
    full = {"exit_code": 1, "is_error": True, "num_turns": 7, "duration_ms": 12_345, "cost_usd": 0.0123,
            "subtype": "error_max_turns", "error": "ran out of turns"}  # fmt: skip
    first = agent.post(f"/v1/workers/{worker_id}/runs", json=full)
    assert first.status_code == 201, first.text
    assert {k: first.json()[k] for k in full} == full and first.json()["worker_id"] == worker_id
    second = agent.post(f"/v1/workers/{worker_id}/runs", json={"exit_code": 0, "is_error": False}).json()
    assert (
        second["num_turns"] is second["cost_usd"] is second["error"] is None
        and second["id"] > first.json()["id"]
    )

    with client(hub, VIEWER) as viewer:
        runs = viewer.get(f"/v1/workers/{worker_id}/runs").json()["runs"]
        assert [run["id"] for run in runs] == [second["id"], first.json()["id"]]
        assert runs[1] == first.json()
        after = {"after": str(first.json()["id"] - 1)}
        # A client without the conformance hook, which would read the endless stream to its end.
        with hub.client(VIEWER) as plain, plain.stream("GET", "/v1/events", params=after) as stream:
            event = next(json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:"))
        assert event["type"] == "worker.run" and event["worker_id"] == worker_id
        assert event["data"] == full and event["actor"] == "agents"
        refused(viewer.post(f"/v1/workers/{worker_id}/runs", json=full), 403, "needs the agent role")
        refused(viewer.get("/v1/workers/999999/runs"), 404, "worker")

    refused(agent.post("/v1/workers/999999/runs", json=full), 404, "worker")
    for bad in ({"exit_code": "0", "is_error": False}, {"exit_code": 0}, {**full, "error": "x" * 2001},
                {**full, "cost_usd": -1}, {**full, "extra": 1}):  # fmt: skip
        assert agent.post(f"/v1/workers/{worker_id}/runs", json=bad).status_code == 422, bad
    for _ in range(50):
        agent.post(f"/v1/workers/{worker_id}/runs", json={"exit_code": 0, "is_error": False})
    assert len(agent.get(f"/v1/workers/{worker_id}/runs").json()["runs"]) == 50
