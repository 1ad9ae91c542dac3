"""The dashboard at the hub's root: served safely, and its script works against a real hub.

The script runs in node (tests/js/dashboard_shim.mjs gives it the few DOM calls it makes), so
its requests, the key handling and the event-stream parsing are exercised for real. Spend is fed
through the hub's real OTLP endpoint, in the shape Claude Code 2.1.329 exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from scaffold.hub.faces.rest.routes import ENDPOINTS
from tests.conftest import REPO
from tests.hubproc import HubProcess, running_hub, write_config
from tests.test_usage import Req, logs

DASHBOARD = REPO / "src/scaffold/hub/faces/dashboard"
SHIM = REPO / "tests/js/dashboard_shim.mjs"
# The shim prints the board's original elements; this wraps it to print the spend section's too.
SPEND = [
    "spend-today",
    "budget",
    "budgets",
    "spend-problem",
    "spend-tasks",
    "spend-more",
    "spend-workers",
    "spend-total",
]
WITH_SPEND = f"""
import {{ pathToFileURL }} from "node:url";
const print = console.log;
console.log = (line) => {{
  const shown = JSON.parse(line);
  for (const id of {json.dumps(SPEND)}) shown[id] = document.getElementById(id).text();
  shown.budgetClass = document.getElementById("budget").className;
  print(JSON.stringify(shown));
}};
await import(pathToFileURL({json.dumps(str(SHIM))}).href);
"""
AGENT, VIEWER = "agent-key-for-the-dashboard", "viewer-key-for-the-dashboard"
ADMIN = "admin-key-for-the-dashboard"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    directory = tmp_path_factory.mktemp("hub")
    keys = [("agent", "agent", AGENT), ("viewer", "viewer", VIEWER), ("admin", "admin", ADMIN)]
    with running_hub(write_config(directory, keys=keys)) as running:
        yield running


def test_the_page_and_its_files_are_served_with_a_strict_policy(hub: HubProcess) -> None:
    with hub.client() as http:  # no key: the files hold no data
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and page.headers["x-content-type-options"] == "nosniff"
        for link in re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page.text):
            asset = http.get(link)
            assert asset.status_code == 200 and asset.content
        assert http.get("/dashboard/index.html").status_code == 404
        assert http.get("/dashboard/..%2F__init__.py").status_code == 404
        assert http.get("/v1/status").status_code == 401  # the data still needs a key


def test_the_script_uses_only_get_routes_a_viewer_may_read_and_never_parses_html() -> None:
    script = (DASHBOARD / "dashboard.js").read_text(encoding="utf-8")
    readable = {
        endpoint.path for endpoint in ENDPOINTS if endpoint.method == "GET" and endpoint.role == "viewer"
    }
    # Screens need the role hub.toml names (admin by default): the script asks, and a refusal
    # only hides them. A path with a name in it is written up to the name.
    readable |= {
        endpoint.path.split("{")[0]
        for endpoint in ENDPOINTS
        if endpoint.method == "GET" and endpoint.role_setting == "screen_role"
    }
    used = set(re.findall(r'"(/v1/[a-z/]+)', script))
    assert used and used <= readable, used - readable
    assert "/v1/team/slots/" in used
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(", script)
    assert "localStorage" not in script  # the key lives only as long as the tab


def test_every_element_the_script_names_is_on_the_page() -> None:
    script = (DASHBOARD / "dashboard.js").read_text(encoding="utf-8")
    page = (DASHBOARD / "index.html").read_text(encoding="utf-8")
    named = set(re.findall(r'\$\("([a-z-]+)"\)', script))
    assert set(SPEND) <= named
    assert named <= set(re.findall(r'id="([a-z-]+)"', page)), named


Request = tuple[int, int, int, int, int]  # input, output, cache read, cache creation tokens; micro-dollars


def api_requests(session: str, requests: Sequence[Request], first: int = 1) -> dict[str, Any]:
    """An OTLP logs export as Claude Code sends it: one `claude_code.api_request` record per
    request, made now, numbered from `first` (the hub keeps one request per session and number)."""
    now = time.time()
    made = [Req(session, sequence, now, *numbers) for sequence, numbers in enumerate(requests, start=first)]
    return logs(made, model="claude-opus-5-5")


def export(hub: HubProcess, key: str, session: str, requests: Sequence[Request], first: int = 1) -> None:
    with hub.client(key) as otlp:
        sent = otlp.post("/otlp/v1/logs", json=api_requests(session, requests, first))
    assert sent.status_code == 200 and sent.json() == {"partialSuccess": {}}, sent.text


def watch(hub: HubProcess, key: str, tmp_path: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is needed to run the dashboard's script"
    harness = tmp_path / "with_spend.mjs"
    harness.write_text(WITH_SPEND, encoding="utf-8")
    done = subprocess.run(
        [node, str(harness), hub.url, key, str(DASHBOARD / "dashboard.js")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert key not in done.stderr
    return dict(json.loads(done.stdout))


def test_the_dashboard_shows_progress_workers_tasks_and_live_events(hub: HubProcess, tmp_path: Path) -> None:
    with hub.client(AGENT) as rest:
        rest.put("/v1/plan", json={"goal": "Ship the login page\nwith tests", "plan": "1. form"})
        worker = rest.post("/v1/workers", json={"session_id": "dash-1", "role": "frontend"}).json()
        for title, tag in (("<img src=x onerror=alert(1)> form", "frontend"), ("Write the tests", "nobody")):
            made = rest.post(
                "/v1/tasks", json={"title": title, "instructions": "x", "required_capabilities": [tag]}
            )
            assert made.status_code == 201, made.text
        assert rest.post("/v1/tasks/claim", json={"worker_id": worker["id"]}).status_code == 200

    def later() -> None:
        with hub.client(AGENT) as rest:
            rest.post("/v1/tasks", json={"title": "Created while watching", "instructions": "x"})

    timer = threading.Timer(1.5, later)
    timer.start()
    try:
        shown = watch(hub, VIEWER, tmp_path)
    finally:
        timer.join()
    assert shown["problem"] == "" and shown["board"] is True and shown["keptKey"] is True
    assert shown["goal"] == "Goal: Ship the login page"
    [row] = [row for row in shown["workers"] if row[0] == str(worker["id"])]
    assert row[1:4] == ["frontend", "active", "1"]
    titles = {row[5]: row[1] for row in shown["tasks"]}
    assert titles["<img src=x onerror=alert(1)> form"] == "claimed"  # text, as written
    assert titles["Write the tests"] == "ready"
    assert any("task.created" in line for line in shown["events"]), shown["events"]


def test_a_wrong_key_shows_the_refusal_and_no_board(hub: HubProcess, tmp_path: Path) -> None:
    shown = watch(hub, "not-a-key-of-this-hub", tmp_path)
    assert shown["board"] is False
    assert shown["problem"].startswith("The hub refused:") and "key" in shown["problem"]


def test_the_team_shows_its_slots_and_their_screens_only_to_a_key_that_may_see_them(
    hub: HubProcess, tmp_path: Path
) -> None:
    with hub.client(AGENT) as rest:
        worker = rest.post("/v1/workers", json={"session_id": "dash-team-1", "role": "backend"}).json()
        slot = {"role": "backend", "state": "running", "session_id": "dash-team-1", "restarts": 2}
        assert rest.put("/v1/team/slots/w1", json=slot).status_code == 200
        assert rest.put("/v1/team/slots/w2", json={"role": "backend", "host": "dev@b"}).status_code == 200
        screen = "$ pytest -q\n<b>12 passed</b>"
        assert rest.put("/v1/team/slots/w1/screen", json={"text": screen}).status_code == 200

    shown = watch(hub, ADMIN, tmp_path)
    assert shown["screens"] == "" and shown["team-problem"] == ""
    info, screen_row, other, other_screen = shown["team"]
    assert info[:4] == ["w1", "local", "backend", "running"]
    assert info[4] == f"{worker['id']} (idle)" and info[7] == "2"
    assert screen_row == [[screen]]  # text, as written: not markup
    assert other[:2] == ["w2", "dev@b"] and other[4] == "-" and other_screen == [["(no screen yet)"]]

    shown = watch(hub, VIEWER, tmp_path)
    assert shown["screens"] == "Screens are hidden: this needs the admin role; key 'viewer' is viewer"
    assert [row[0] for row in shown["team"]] == ["w1", ["(no screen yet)"], "w2", ["(no screen yet)"]]
    assert screen not in json.dumps(shown)


def test_the_dashboard_shows_what_each_task_and_worker_cost(tmp_path: Path) -> None:
    keys = [("agent", "agent", AGENT), ("viewer", "viewer", VIEWER)]
    with running_hub(write_config(tmp_path, keys=keys)) as hub, hub.client(AGENT) as rest:
        worker = rest.post("/v1/workers", json={"session_id": "spend-1", "role": "backend"}).json()
        rest.post("/v1/workers", json={"session_id": "spend-2", "role": "backend"})
        task = rest.post("/v1/tasks", json={"title": "Price the <b>form</b>", "instructions": "x"}).json()
        assert rest.post("/v1/tasks/claim", json={"worker_id": worker["id"]}).json()["id"] == task["id"]
        export(hub, AGENT, "spend-1", [(1000, 200, 5000, 300, 123400), (10, 20, 0, 0, 600)])
        export(hub, AGENT, "spend-2", [(100, 50, 0, 0, 10000)])  # a worker without a task
        export(hub, AGENT, "spend-coordinator", [(400, 100, 0, 0, 50000)])  # no worker: the coordinator's
        shown = watch(hub, VIEWER, tmp_path)

    assert shown["problem"] == "" and shown["spend-problem"] == ""
    today = "Today (UTC): $0.1840 in 4 requests, 7,180 tokens; burn rate $0.1840/h"
    assert shown["spend-today"].startswith(today)
    assert shown["budget"] == "Claims open" and shown["budgetClass"] == ""
    assert shown["budgets"] == "No budgets set"
    first, *others = shown["spend-tasks"]
    assert first[:3] == [str(task["id"]), "claimed", str(worker["id"])]
    assert first[3:] == ["2", "6,530", "$0.1240", "Price the <b>form</b>"]  # text, as written
    assert {row[6]: row[3:6] for row in others} == {
        "coordinator and other sessions": ["1", "500", "$0.0500"],
        "between tasks": ["1", "150", "$0.0100"],
    }
    assert shown["spend-more"] == ""
    workers = {row[0]: row[1:] for row in shown["spend-workers"]}
    assert workers.pop("coordinator and other sessions")[-1] == "$0.0500"
    assert [row for label, row in workers.items() if str(worker["id"]) in label] == [
        ["2", "6,530", "$0.1240", "$0.0000", "-", "$0.1240"]
    ]
    assert shown["spend-total"] == (
        "All time: $0.1840 in 4 requests, 7,180 tokens. Cross-check: the metrics say $0.0000 and 0 tokens; "
        "headless runs reported $0.0000 in 0 runs"
    )
