"""Usage on the hub: OTLP in, each request attributed to the task held when it was made, the
metrics' temporality, bad input refused with nothing stored, and the budgets acting as usage
arrives. In process (TestClient) with a clock the tests move; every answer conforms to the
OpenAPI document. The real Claude Code binary exporting to a served hub is tests/test_usage_e2e.py.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from scaffold.errors import ConfigError
from scaffold.hub.core.settings import load_settings
from tests.conftest import FakeClock, MakeHub
from tests.test_api import bearer, conforming, unchanged
from tests.test_otlp import attr

START = 1_795_996_800.0  # 2026-11-30 00:00 UTC
WORKER_SESSION = "0b8f0c5e-3a7e-4d8f-9c41-2f6a7b1e0001"
OTHER_SESSION = "0b8f0c5e-3a7e-4d8f-9c41-2f6a7b1e0002"
COORDINATOR_SESSION = "0b8f0c5e-3a7e-4d8f-9c41-2f6a7b1e00c0"
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Req:
    session: str
    seq: int
    at: float
    input: int
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    cost_micros: int = 0
    duration_ms: int = 0


def logs(requests: Sequence[Req], model: str = "claude-test-1") -> dict[str, Any]:
    """An OTLP logs export as Claude Code 2.1.329 sends it: one api_request record per request."""
    records = []
    for r in requests:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(r.at)) + f".{round((r.at % 1) * 1000):03d}Z"
        records.append(
            {
                "timeUnixNano": str(int(r.at * 1e9)),
                "body": {"stringValue": "claude_code.api_request"},
                "attributes": [
                    attr("session.id", r.session),
                    attr("event.name", "api_request"),
                    attr("event.timestamp", when),
                    attr("event.sequence", r.seq),
                    attr("model", model),
                    attr("input_tokens", r.input),
                    attr("output_tokens", r.output),
                    attr("cache_read_tokens", r.cache_read),
                    attr("cache_creation_tokens", r.cache_creation),
                    attr("cost_usd", r.cost_micros / 1e6),
                    attr("cost_usd_micros", r.cost_micros),
                    attr("duration_ms", r.duration_ms),
                ],
            }
        )
    records.append(
        {"body": {"stringValue": "claude_code.tool_result"}, "attributes": [attr("session.id", "x")]}
    )
    scope = {"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": records}
    return {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": [scope]}]}


def metrics(
    points: Sequence[tuple[str, float, int, int, bool]], session: str = WORKER_SESSION
) -> dict[str, Any]:
    """(metric name, value, start_ns, end_ns, cumulative) points of one session."""
    out = []
    for name, value, start, end, cumulative in points:
        attributes = [attr("session.id", session), attr("model", "claude-test-1")]
        if name == "claude_code.token.usage":
            attributes.append(attr("type", "input"))
        point = {
            "attributes": attributes,
            "startTimeUnixNano": str(start),
            "timeUnixNano": str(end),
            "asDouble": value,
        }
        out.append(
            {"name": name, "sum": {"aggregationTemporality": 2 if cumulative else 1, "dataPoints": [point]}}
        )
    out.append(
        {
            "name": "claude_code.session.count",
            "sum": {"aggregationTemporality": 1, "dataPoints": [{"asDouble": 1}]},
        }
    )
    return {"resourceMetrics": [{"scopeMetrics": [{"metrics": out}]}]}


@dataclass
class Hub:
    http: TestClient
    clock: FakeClock
    agent: dict[str, str]
    admin: dict[str, str]

    def send(self, document: dict[str, Any], kind: str = "logs") -> None:
        response = self.http.post(
            f"/otlp/v1/{kind}", content=json.dumps(document), headers={**self.agent, **JSON}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"partialSuccess": {}}

    def usage(self, by: str = "task", **query: str) -> dict[str, Any]:
        response = self.http.get("/v1/usage", params={"by": by, **query}, headers=self.agent)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def rows(self, by: str = "task", **query: str) -> dict[Any, dict[str, Any]]:
        return {row["key"]: row for row in self.usage(by, **query)["rows"]}

    def register(self, session: str, role: str = "backend") -> int:
        response = self.http.post(
            "/v1/workers", json={"session_id": session, "role": role}, headers=self.agent
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def task(self, title: str) -> int:
        response = self.http.post(
            "/v1/tasks", json={"title": title, "instructions": "do it"}, headers=self.agent
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def claim(self, worker: int) -> dict[str, Any]:
        response = self.http.post("/v1/tasks/claim", json={"worker_id": worker}, headers=self.agent)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def complete(self, task: dict[str, Any]) -> None:
        body = {"lease_token": task["lease_token"], "result": "done"}
        response = self.http.post(f"/v1/tasks/{task['id']}/complete", json=body, headers=self.agent)
        assert response.status_code == 200, response.text

    def tick(self, seconds: float = 1.0) -> float:
        self.clock.advance(seconds)
        return self.clock.now

    def messages(self, reader: str) -> list[str]:
        response = self.http.get("/v1/messages", params={"for": reader}, headers=self.agent)
        return [message["body"] for message in response.json()["messages"]]


@pytest.fixture
def hub_with(make_hub: MakeHub) -> Iterator[Any]:
    clients: list[TestClient] = []

    def start(**settings: Any) -> Hub:
        clock = FakeClock(START + 9 * 3600)
        built = make_hub(clock=clock, exec_enabled=False, **settings)
        client = TestClient(built.app)
        client.__enter__()
        clients.append(client)
        return Hub(conforming(client), clock, bearer(built.keys.agent), bearer(built.keys.admin))

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def hub(hub_with: Any) -> Hub:
    return hub_with()  # type: ignore[no-any-return]


def tokens(row: dict[str, Any]) -> tuple[int, int]:
    return row["input_tokens"], row["output_tokens"]


# -- attribution ------------------------------------------------------------------------------


def test_each_request_goes_to_the_task_held_when_it_was_made(hub: Hub) -> None:
    worker = hub.register(WORKER_SESSION)
    first, second = hub.task("first"), hub.task("second")
    made = [Req(WORKER_SESSION, 1, hub.tick(), 1000, 10)]  # registered, no task yet
    hub.tick()
    held = hub.claim(worker)
    assert held["id"] == first
    made += [Req(WORKER_SESSION, 2, hub.tick(), 200, 20), Req(WORKER_SESSION, 3, hub.tick(), 300, 30)]
    hub.tick()
    hub.complete(held)
    made.append(Req(WORKER_SESSION, 4, hub.tick(), 4000, 40))  # between the two
    hub.tick()
    held = hub.claim(worker)
    made.append(Req(WORKER_SESSION, 5, hub.tick(), 50000, 500))
    made.append(Req(COORDINATOR_SESSION, 1, hub.tick(), 7, 7, cost_micros=99))
    hub.tick()
    hub.send(logs(made[:3]))  # exports arrive in parts and late: attribution is by the request's time
    hub.complete(held)
    hub.send(logs(made[3:]))

    rows = hub.rows("task")
    assert tokens(rows[first]) == (500, 50) and rows[first]["requests"] == 2
    assert tokens(rows[second]) == (50000, 500)
    assert tokens(rows["between-tasks"]) == (5000, 50)
    assert tokens(rows["coordinator"]) == (7, 7) and rows["coordinator"]["cost_usd"] == 0.000099
    assert rows[first]["label"] == "first" and rows[first]["state"] == "done"
    total = hub.usage()["total"]
    assert total["input_tokens"] == 55507 and total["requests"] == 6
    task = hub.http.get(f"/v1/tasks/{first}", headers=hub.agent).json()
    assert task["usage"]["input_tokens"] == 500 and task["usage"]["tokens"] == 550
    listed = hub.http.get("/v1/tasks", headers=hub.agent).json()["tasks"]
    assert [t["usage"]["input_tokens"] for t in listed] == [500, 50000]

    by_worker = hub.rows("worker")
    assert tokens(by_worker[worker]) == (55500, 600)
    assert by_worker[worker]["role"] == "backend"
    assert by_worker["coordinator"]["input_tokens"] == 7
    assert hub.rows("role")["backend"]["input_tokens"] == 55500
    assert hub.rows("model")["claude-test-1"]["requests"] == 6
    assert hub.rows("day")["2026-11-30"]["requests"] == 6


def test_a_request_counts_from_when_it_was_made_not_when_its_answer_ended(hub: Hub) -> None:
    """Claude Code runs a tool as soon as the model asks for it, before the answer ends: the request
    that asked for the claim ends after the claim, yet was made before it."""
    worker = hub.register(WORKER_SESSION)
    task_id = hub.task("t")
    asked = hub.tick()
    hub.tick()
    held = hub.claim(worker)
    ended = hub.tick()
    hub.send(logs([Req(WORKER_SESSION, 1, ended, 40, duration_ms=round((ended - asked) * 1000))]))
    hub.send(logs([Req(WORKER_SESSION, 2, hub.tick(), 2, duration_ms=500)]))
    rows = hub.rows("task")
    assert rows["between-tasks"]["input_tokens"] == 40 and rows[task_id]["input_tokens"] == 2
    hub.complete(held)


def test_todays_spend_counts_each_request_once(hub: Hub) -> None:
    worker = hub.register(WORKER_SESSION)  # the day's first news of this worker is an export
    hub.send(logs([Req(WORKER_SESSION, 1, hub.tick(), 10), Req(WORKER_SESSION, 2, hub.tick(), 20)]))
    hub.send(logs([Req(WORKER_SESSION, 3, hub.tick(), 30), Req(OTHER_SESSION, 1, hub.tick(), 40)]))
    today = hub.http.get("/v1/status", headers=hub.agent).json()["usage"]["today"]
    assert (today["requests"], today["tokens"]) == (4, 100)
    ledger = hub.http.app.state.services.ledger  # type: ignore[attr-defined]
    assert ledger.claims_stopped(worker) is None
    assert ledger._today.workers[worker].tokens == 60


def test_a_resent_export_changes_nothing(hub: Hub) -> None:
    export = logs([Req(WORKER_SESSION, n, hub.tick(), 10 * n) for n in range(1, 4)])
    hub.send(export)
    before = hub.usage()
    hub.send(export)
    hub.send(logs([Req(WORKER_SESSION, 2, hub.tick(), 999)]))  # the same request, seen again
    assert hub.usage() == before
    assert before["total"]["input_tokens"] == 60


def test_requests_before_a_session_registers_become_its_workers_between_tasks(hub: Hub) -> None:
    hub.send(logs([Req(OTHER_SESSION, 1, hub.tick(), 11)]))
    assert hub.rows("task")["coordinator"]["input_tokens"] == 11
    worker = hub.register(OTHER_SESSION)
    rows = hub.rows("task")
    assert "coordinator" not in rows and rows["between-tasks"]["input_tokens"] == 11
    assert hub.rows("worker")[worker]["between_tasks_cost_usd"] == 0


def test_usage_by_day_bounds(hub: Hub) -> None:
    hub.send(logs([Req(WORKER_SESSION, 1, START - 10, 1), Req(WORKER_SESSION, 2, START + 10, 2)]))
    assert hub.usage("day", day="2026-11-30")["total"]["input_tokens"] == 2
    assert hub.usage("day", day="2026-11-29")["total"]["input_tokens"] == 1
    assert hub.usage("day", **{"from": "2026-11-29", "to": "2026-11-30"})["total"]["input_tokens"] == 3
    for query, says in [
        ({"day": "2026-11-30", "from": "2026-11-01"}, "not both"),
        ({"from": "2026-12-01", "to": "2026-11-30"}, "after"),
        ({"day": "2026-13-40"}, "date"),
        ({"day": "yesterday"}, "day"),
        ({"by": "colour"}, "by"),
    ]:
        response = hub.http.get("/v1/usage", params=query, headers=hub.agent)
        assert response.status_code == 422 and says in response.json()["error"]["message"], (
            query,
            response.text,
        )


# -- metrics ----------------------------------------------------------------------------------


def test_a_delta_series_sums_its_windows_each_once(hub: Hub) -> None:
    ns = int(START * 1e9)
    first = ("claude_code.cost.usage", 0.25, ns, ns + 10, False)
    hub.send(metrics([first]), "metrics")
    hub.send(metrics([first]), "metrics")  # the same window again
    hub.send(metrics([("claude_code.cost.usage", 0.5, ns + 10, ns + 20, False)]), "metrics")
    hub.send(metrics([("claude_code.token.usage", 100, ns, ns + 20, False)]), "metrics")
    assert hub.usage()["metrics"] == {"cost_usd": 0.75, "tokens": 100}


def test_a_cumulative_series_counts_its_latest_value_once(hub: Hub) -> None:
    ns = int(START * 1e9)
    hub.send(metrics([("claude_code.cost.usage", 0.25, ns, ns + 10, True)]), "metrics")
    hub.send(metrics([("claude_code.cost.usage", 0.25, ns, ns + 10, True)]), "metrics")  # exported twice
    assert hub.usage()["metrics"]["cost_usd"] == 0.25
    hub.send(metrics([("claude_code.cost.usage", 0.75, ns, ns + 20, True)]), "metrics")  # it grew
    hub.send(metrics([("claude_code.cost.usage", 0.25, ns, ns + 10, True)]), "metrics")  # a stale resend
    assert hub.usage()["metrics"]["cost_usd"] == 0.75
    hub.send(
        metrics([("claude_code.cost.usage", 0.1, ns + 30, ns + 40, True)]), "metrics"
    )  # a reset: new start
    hub.send(metrics([("claude_code.cost.usage", 0.5, ns, ns + 10, True)], session=OTHER_SESSION), "metrics")
    assert hub.usage()["metrics"]["cost_usd"] == pytest.approx(1.35)


def test_unknown_metrics_are_not_stored(hub: Hub) -> None:
    hub.send(metrics([]), "metrics")
    assert hub.usage()["metrics"] == {"cost_usd": 0.0, "tokens": 0}


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"{not json", JSON, 400, "JSON"),
        (b"", JSON, 400, "empty"),
        (b"[1, 2]", JSON, 400, "object"),
        (json.dumps({"resourceLogs": {"no": "list"}}).encode(), JSON, 400, "resourceLogs"),
        (json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": 1}]}]}]}]})
         .encode(), JSON, 400, "attributes"),
        (b"\x0a\x02", {"Content-Type": "application/x-protobuf"}, 415, "http/json"),
        (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415, "br"),
        (gzip.compress(b"{" + b" " * (6 * 1024 * 1024) + b"}"), {**JSON, "Content-Encoding": "gzip"},
         413, "inflates"),
    ],
)  # fmt: skip
def test_bad_otlp_is_refused_with_a_reason_and_nothing_stored(
    hub: Hub, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    with unchanged(hub.http.app):  # type: ignore[arg-type]
        response = hub.http.post("/otlp/v1/logs", content=body, headers={**hub.agent, **headers})
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"], response.text
    assert hub.usage()["total"]["requests"] == 0


def test_a_bad_record_refuses_the_whole_export(hub: Hub) -> None:
    export = logs([Req(WORKER_SESSION, 1, hub.tick(), 5), Req(WORKER_SESSION, 2, hub.tick(), 5)])
    del export["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["attributes"][0]  # its session.id
    response = hub.http.post("/otlp/v1/logs", content=json.dumps(export), headers={**hub.agent, **JSON})
    assert response.status_code == 400 and "session.id" in response.text
    assert hub.usage()["total"]["requests"] == 0


def test_otlp_needs_an_agent_key(hub: Hub, make_hub: MakeHub) -> None:
    export = json.dumps(logs([Req(WORKER_SESSION, 1, hub.tick(), 5)]))
    assert hub.http.post("/otlp/v1/logs", content=export, headers=JSON).status_code == 401
    wrong = {"Authorization": "Bearer not-a-key-of-this-hub", **JSON}
    assert hub.http.post("/otlp/v1/metrics", content=export, headers=wrong).status_code == 401
    assert hub.usage()["total"]["requests"] == 0


# -- budgets ----------------------------------------------------------------------------------


def test_the_fleet_budget_stops_claims_as_usage_arrives(hub_with: Any) -> None:
    hub: Hub = hub_with(budget_fleet_day_tokens=1000)
    worker, other = hub.register(WORKER_SESSION), hub.register(OTHER_SESSION)
    for title in ("a", "b", "c"):
        hub.task(title)
    held = hub.claim(worker)
    hub.send(logs([Req(WORKER_SESSION, 1, hub.tick(), 600)]))
    hub.claim(other)  # 600 of 1000: still open
    hub.send(logs([Req(COORDINATOR_SESSION, 1, hub.tick(), 400)]))  # the coordinator's count too
    refused = hub.http.post("/v1/tasks/claim", json={"worker_id": worker}, headers=hub.agent)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "budget_exhausted" and "1,000 of 1,000 tokens" in error["message"]
    status = hub.http.get("/v1/status", headers=hub.agent).json()["usage"]
    assert status["budget"]["claims"] == "stopped" and status["today"]["tokens"] == 1000
    session = hub.http.get("/v1/session", params={"session_id": WORKER_SESSION}, headers=hub.agent).json()
    assert session["budget"]["claims"] == "stopped" and "fleet" in session["budget"]["reason"]
    assert any(body.startswith("Budget: the fleet's budget") for body in hub.messages("coordinator"))
    hub.complete(held)  # work already held goes on
    hub.tick(24 * 3600)  # a new day
    assert hub.claim(worker)["title"] == "c"


def test_a_waiting_claim_ends_when_the_budget_is_spent(hub_with: Any) -> None:
    hub: Hub = hub_with(budget_fleet_day_usd=0.01)
    worker = hub.register(WORKER_SESSION)
    answers: list[Any] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            hub.http.post("/v1/tasks/claim", json={"worker_id": worker, "wait": 30}, headers=hub.agent)
        )
    )
    waiting.start()
    for _ in range(200):  # until the claim waits
        if hub.http.app.state.services.queue.waiting:  # type: ignore[attr-defined]
            break
        time.sleep(0.01)
    hub.send(logs([Req(COORDINATOR_SESSION, 1, hub.tick(), 5, cost_micros=20_000)]))
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert answers[0].status_code == 409 and "$0.02 of $0.01" in answers[0].text


def test_a_workers_day_budget_stops_only_that_worker(hub_with: Any) -> None:
    hub: Hub = hub_with(budget_worker_day_usd=1.0)
    worker, other = hub.register(WORKER_SESSION), hub.register(OTHER_SESSION)
    hub.task("a"), hub.task("b")
    hub.send(logs([Req(WORKER_SESSION, 1, hub.tick(), 5, cost_micros=1_500_000)]))
    refused = hub.http.post("/v1/tasks/claim", json={"worker_id": worker}, headers=hub.agent)
    assert refused.status_code == 409 and f"worker {worker}'s budget" in refused.text
    assert hub.claim(other)["title"] == "a"
    assert any("Finish the task you hold" in body for body in hub.messages(f"worker:{worker}"))


@pytest.mark.parametrize("action", ["warn", "fail"])
def test_a_task_over_its_budget_is_reported_and_handled(hub_with: Any, action: str) -> None:
    hub: Hub = hub_with(budget_task_tokens=100, budget_task_action=action)
    worker = hub.register(WORKER_SESSION)
    task_id = hub.task("costly")
    held = hub.claim(worker)
    hub.send(logs([Req(WORKER_SESSION, 1, hub.tick(), 60)]))
    assert hub.messages("coordinator") == []
    hub.send(logs([Req(WORKER_SESSION, 2, hub.tick(), 50), Req(WORKER_SESSION, 3, hub.tick(), 50)]))
    told = [body for body in hub.messages("coordinator") if body.startswith("Budget:")]
    assert len(told) == 1 and f"task {task_id} is over its budget: 160 of 100 tokens" in told[0]
    assert len([b for b in hub.messages(f"worker:{worker}") if b.startswith("Budget:")]) == 1
    task = hub.http.get(f"/v1/tasks/{task_id}", headers=hub.agent).json()
    heartbeat = hub.http.post(
        f"/v1/tasks/{task_id}/heartbeat", json={"lease_token": held["lease_token"]}, headers=hub.agent
    )
    if action == "fail":
        assert task["state"] == "dead" and task["error"].startswith("budget: task")
        assert heartbeat.status_code == 409
    else:
        assert task["state"] == "claimed" and heartbeat.status_code == 200
        session = hub.http.get("/v1/session", params={"session_id": WORKER_SESSION}, headers=hub.agent).json()
        assert "over its budget" in session["tasks"][0]["over_budget"]
    hub.send(logs([Req(WORKER_SESSION, 4, hub.tick(), 50)]))  # reported once
    assert len([b for b in hub.messages("coordinator") if b.startswith("Budget:")]) == 1


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("fleet_day_usd = -1", "0 (no budget) or more"),
        ("task_tokens = nan", "an integer"),
        ("task_usd = nan", "0 (no budget) or more"),
        ('task_action = "explode"', "task_action must be one of"),
        ("colour = 1", "unknown setting budget.colour"),
    ],
)
def test_bad_budget_settings_are_refused(tmp_path: Any, line: str, says: str) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f"[budget]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        load_settings(config)


def test_usage_arriving_after_a_task_ended_reports_it_and_leaves_it_done(hub_with: Any) -> None:
    hub: Hub = hub_with(budget_task_tokens=100, budget_task_action="fail")
    worker = hub.register(WORKER_SESSION)
    task_id = hub.task("quick")
    hub.tick()
    held = hub.claim(worker)
    made = hub.tick()
    hub.tick()
    hub.complete(held)
    hub.send(logs([Req(WORKER_SESSION, 1, made, 150)]))  # the export comes after the completion
    task = hub.http.get(f"/v1/tasks/{task_id}", headers=hub.agent).json()
    assert task["state"] == "done" and task["usage"]["tokens"] == 150
    told = [body for body in hub.messages("coordinator") if body.startswith("Budget:")]
    assert len(told) == 1 and "it had already ended" in told[0]
    assert not [body for body in hub.messages(f"worker:{worker}") if body.startswith("Budget:")]
