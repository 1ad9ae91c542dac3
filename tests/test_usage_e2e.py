"""End to end: what each task cost, from the real Claude Code binary's own telemetry.

Workers are real `claude -p` sessions in a rendered project (tests/test_e2e_claude.py's Team) with
Claude Code's OTLP exporter pointed at the hub. The scripted model behind each session answers
with known usage numbers, different for every request, and writes down which task its session
held when it answered (it knows: it read the claim's result or the Stop hook's hand-over, and
saw its complete_task succeed). So the hub's figures can be compared with exact expectations:
each task gets the requests made while it was held, the worker's other requests are its
"between tasks" line, the coordinator's are the coordinator's.

A request belongs to the task held when it was made (sent): the request that reads a claim's
result is made after the claim; one that asks for a claim or for complete_task is made before
that tool runs. Claude Code stamps its api_request event after the answer
ended and the tool it asks for may already run by then, so the hub must take the request's start
(event.timestamp - duration_ms) to agree with the model's bookkeeping on every request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import render
from tests.fakemodel import Call, End, FakeModel, Policy, Step, Turn, Usage, search
from tests.hubproc import free_port, running_hub, write_config
from tests.test_api import serving
from tests.test_e2e_claude import Finished, Team, WorkerModel, file_task, finish
from tests.test_mcp import trusting_home

pytestmark = pytest.mark.claude

# Claude Code names the model it asks for in each request and the fake answers as that model;
# Claude Code 2.1.329 asks for this one and prices it (USD per million tokens: input, output,
# cache read, cache creation) as measured with single-kind usage answers.
MODEL = "claude-opus-5-5"
PRICE = (4.0, 20.0, 0.2, 5.0)

QUICK = {"OTEL_LOGS_EXPORT_INTERVAL": "500", "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
ARRIVAL_TIMEOUT = 30.0  # seconds for the last exports to reach the hub after the sessions end
COUNTS = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "tokens")


def cost(usage: Usage) -> float:
    rates = zip((usage.input, usage.output, usage.cache_read, usage.cache_creation), PRICE, strict=True)
    return sum(count * rate for count, rate in rates) / 1e6


def counts(usages: list[Usage]) -> dict[str, int]:
    return {
        "requests": len(usages),
        "input_tokens": sum(u.input for u in usages),
        "output_tokens": sum(u.output for u in usages),
        "cache_read_tokens": sum(u.cache_read for u in usages),
        "cache_creation_tokens": sum(u.cache_creation for u in usages),
        "tokens": sum(u.tokens for u in usages),
    }


@dataclass
class Metered:
    """A session's policy whose every answer reports usage from `meter`, written down in `ledger`
    with the task the session held when the model answered (None: no task)."""

    inner: Policy
    meter: Callable[[Metered], Usage]
    held: int | None = None
    ledger: list[tuple[int | None, Usage]] = field(default_factory=list)

    def __call__(self, turn: Turn) -> Step:
        if turn.result is not None:
            name, text, is_error = turn.result
            if name == "mcp__vps__claim_task" and not is_error and "lease_token" in text:
                self.held = int(json.loads(text)["id"])
            elif name == "mcp__vps__complete_task" and not is_error:
                self.held = None
        elif handed := re.search(r"The hub gave you task (\d+)", turn.text):
            self.held = int(handed.group(1))
        step = self.inner(turn)
        return dataclasses.replace(step, usage=self.record())

    def side(self, body: dict[str, Any], step: Step) -> Usage:
        """A request outside the policy (a title, a summary): metered and written down as well."""
        return self.record()

    def record(self) -> Usage:
        usage = self.meter(self)
        self.ledger.append((self.held, usage))
        return usage

    def usages(self, task: int | str | None = "any") -> list[Usage]:
        return [usage for held, usage in self.ledger if task == "any" or held == task]


def numbered(session: int) -> Callable[[Metered], Usage]:
    """Usage unique to (session, request number): input tokens read 1000 * session + n. The cache
    reads are a multiple of 5, so each request's cost is a whole number of micro-dollars."""

    def meter(metered: Metered) -> Usage:
        n = len(metered.ledger) + 1
        return Usage(
            input=1000 * session + n, output=10 * n + session, cache_read=5 * (session + n), cache_creation=n
        )

    return meter


@contextlib.contextmanager
def metered_team(
    tmp_path: Path, claude_bin: Path, budget: dict[str, float | str] | None = None
) -> Iterator[Team]:
    """A Team (as tests/test_e2e_claude.py's) whose sessions export their telemetry to the hub,
    with `budget` as the hub.toml [budget] table."""
    port = free_port()
    project = render(tmp_path / "project", save_key=True, hub_url=f"http://127.0.0.1:{port}")
    assert project.key is not None
    home = trusting_home(tmp_path, project.dest)
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    config = write_config(hub_dir, keys=[("team", "agent", project.key)])
    if budget:
        table = "".join(f"{name} = {json.dumps(value)}\n" for name, value in budget.items())
        config.write_text(config.read_text(encoding="utf-8") + "[budget]\n" + table, encoding="utf-8")
    team = Team(claude_bin, project.dest, project.key, home, config, port)
    export_quickly(team)
    with running_hub(config, port=port) as hub:
        team.hub = hub
        yield team


def export_quickly(team: Team) -> None:
    """The rendered telemetry settings (.claude/telemetry.json, which the launcher passes with
    --settings: Claude Code 2.1.329 drops telemetry variables from a project's settings files),
    with export intervals short enough that a session's requests reach the hub within a second.
    The key goes with each export from the rendered otelHeadersHelper."""
    settings = json.loads((team.project / ".claude/telemetry.json").read_text(encoding="utf-8"))
    assert settings["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"{team.url}/otlp", settings
    settings["env"].update(QUICK)
    quick_settings(team).write_text(json.dumps(settings), encoding="utf-8")


def quick_settings(team: Team) -> Path:
    return team.home.parent / "telemetry-quick.json"


@contextlib.contextmanager
def sessions(team: Team, prompt: str, policies: list[Metered]) -> Iterator[list[subprocess.Popen[str]]]:
    """`claude -p prompt` once per policy, each with its own scripted model."""
    with contextlib.ExitStack() as apis:
        models = [FakeModel(policy, usage=policy.side) for policy in policies]
        urls = [apis.enter_context(serving(model.app)) for model in models]
        more = ("--settings", str(quick_settings(team)))
        running = [team.start(prompt, model, url, *more) for model, url in zip(models, urls, strict=True)]
        try:
            yield running
        finally:
            for process in running:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        assert [error for model in models for error in model.errors] == []


def run(team: Team, prompt: str, policy: Metered) -> Finished:
    with sessions(team, prompt, [policy]) as [process]:
        return finish(process)


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = ARRIVAL_TIMEOUT, shown: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s {shown()}"
        time.sleep(0.25)


def usage(team: Team, by: str) -> dict[str, Any]:
    with team.rest() as rest:
        answer = rest.get("/v1/usage", params={"by": by})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def rows(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {str(row["key"]): {name: row[name] for name in COUNTS} for row in report["rows"]}


def today(team: Team) -> dict[str, Any]:
    with team.rest() as rest:
        return dict(rest.get("/v1/status").json()["usage"]["today"])


def wait_registered(team: Team, running: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while len(team.workers()) < len(running):
        assert time.monotonic() < deadline, "the workers did not register"
        assert all(process.poll() is None for process in running), "a session ended early"
        time.sleep(0.2)


def creating(batch: list[dict[str, Any]]) -> Policy:
    """A coordinator that queues `batch` through MCP create_tasks and ends its turn."""
    script = iter([search("create_tasks"), Call("mcp__vps__create_tasks", {"tasks": batch})])

    def coordinator(turn: Turn) -> Step:
        if turn.result is not None and turn.result[0] == "mcp__vps__create_tasks":
            assert not turn.result[2], turn.result[1]
            return End("The tasks are queued.")
        return next(script, End("Done."))

    return coordinator


def told(finished: Finished, model_saw: list[str]) -> str:
    """What the hooks said to the session: their systemMessages, and the feedback the model read
    (the prompts aside: they are the test's own words)."""
    return "\n".join([*finished.notices, *model_saw[1:]])


# -- scenarios ----------------------------------------------------------------------------------


def test_each_task_costs_what_the_model_returned_while_it_was_held(tmp_path: Path, claude_bin: Path) -> None:
    """Two workers on three tasks a coordinator queued: the hub's per-task, per-worker and
    coordinator lines equal, token for token, what the scripted model returned for the requests
    made in each; the cost is Claude Code's own (its price for the model) and the sessions' totals."""
    began = time.monotonic()
    with metered_team(tmp_path, claude_bin) as team:
        team.idle_minutes(0.05)
        inners = [WorkerModel(), WorkerModel()]
        workers = [Metered(inner, numbered(session)) for session, inner in enumerate(inners, 1)]
        coordinator = Metered(
            creating([file_task(f"Part {n}", f"parts/p{n}.txt", f"part {n}") for n in range(3)]), numbered(3)
        )
        coordinated = run(team, "/coordinator", coordinator)
        # the tasks are ready when the workers start: the first claims go through MCP (the
        # request that asks for one ends as the claim is made), the later ones through the Stop hook
        with sessions(team, "/worker backend", workers) as running:
            finished = [finish(process) for process in running]
        assert [f.code for f in [coordinated, *finished]] == [0, 0, 0], [f.stderr for f in finished]
        tasks = team.tasks()
        assert sorted(task["state"] for task in tasks) == ["done"] * 3
        ids = [task["id"] for task in tasks]
        expected = {
            **{str(task): counts(held(workers, task)) for task in ids},
            "between-tasks": counts(held(workers, None)),
            "coordinator": counts(coordinator.usages()),
        }
        assert all(usages["requests"] > 0 for usages in expected.values()), expected
        everything = [u for w in [*workers, coordinator] for u in w.usages()]
        wait_for(
            "the hub did not get every request",
            lambda: usage(team, "task")["total"]["requests"] >= len(everything),
        )
        report = usage(team, "task")
        assert rows(report) == expected
        assert {name: report["total"][name] for name in COUNTS} == counts(everything)
        spent_today = {name: counts(everything)[name] for name in ("requests", "tokens")}
        assert {name: today(team)[name] for name in spent_today} == spent_today
        for row in report["rows"]:
            key = str(row["key"])
            if key == "coordinator":
                spent = sum(map(cost, coordinator.usages()))
            else:
                spent = sum(map(cost, held(workers, None if key == "between-tasks" else int(key))))
            assert row["cost_usd"] == pytest.approx(spent, abs=1e-6), key
        sessions_cost = sum(f.result["total_cost_usd"] for f in [coordinated, *finished])
        assert report["total"]["cost_usd"] == pytest.approx(sessions_cost, abs=1e-6)
        for task in ids:
            shown = team.task(task)["usage"]
            assert {name: shown[name] for name in COUNTS} == expected[str(task)], task
            assert shown["cost_usd"] == pytest.approx(sum(map(cost, held(workers, task))), abs=1e-6)
        per_worker = rows(usage(team, "worker"))
        assert per_worker == {
            **{str(inner.worker_id): counts(w.usages()) for inner, w in zip(inners, workers, strict=True)},
            "coordinator": counts(coordinator.usages()),
        }
        assert list(rows(usage(team, "model"))) == [MODEL]
        # the metrics (cumulative or delta, as Claude Code sends them) agree once the last export is in
        wait_for(
            "the metrics do not add up to the requests' tokens",
            lambda: usage(team, "task")["metrics"]["tokens"] == counts(everything)["tokens"],
        )
        assert usage(team, "task")["metrics"]["cost_usd"] == pytest.approx(sessions_cost, abs=1e-5)
    print(f"\nusage e2e: {time.monotonic() - began:.1f} s, tasks per worker {[len(i.done) for i in inners]}")


def held(workers: list[Metered], task: int | None) -> list[Usage]:
    """What the workers' models returned while `task` was held (None: while none was)."""
    return [usage for worker in workers for usage in worker.usages(task)]


def quiet(metered: Metered) -> Usage:
    return Usage()


def test_a_fleet_budget_crossed_mid_run_stops_every_claim_and_lets_idle_workers_go(
    tmp_path: Path, claude_bin: Path
) -> None:
    """The first task's first answer spends more tokens than the fleet may in a day: its worker
    finishes the task, then neither worker gets another; both sessions end saying why, the two
    tasks that came ready after the crossing stay ready, and the hub answers everything else."""
    began = time.monotonic()
    big = Usage(input=100, output=30_000)

    def spend(metered: Metered) -> Usage:
        crossing = metered.held is not None and all(usage != big for _, usage in metered.ledger)
        return big if crossing else Usage()

    with metered_team(tmp_path, claude_bin, {"fleet_day_tokens": 20_000}) as team:
        team.idle_minutes(0.25)

        def stopped() -> bool:
            with team.rest() as rest:
                return bool(rest.get("/v1/status").json()["usage"]["budget"]["claims"] == "stopped")

        def patient(inner: WorkerModel) -> Policy:
            """Completes the task only once the hub has counted its big answer: the two tasks
            that wait on it come ready after the crossing, never before. A claim through MCP
            after the crossing is refused: the turn ends, as the playbook says."""

            def policy(turn: Turn) -> Step:
                if turn.result is not None and turn.result[0] == "mcp__vps__write_file":
                    wait_for("the hub did not stop claims", stopped)
                if turn.result is not None and turn.result[0] == "mcp__vps__claim_task" and turn.result[2]:
                    assert "budget_exhausted" in turn.result[1], turn.result[1]
                    refused.append(turn.result[1])
                    return End("The fleet's budget is spent: no task.")
                return inner(turn)

            return policy

        refused: list[str] = []  # claims through MCP after the crossing
        workers = [Metered(patient(WorkerModel()), spend) for _ in range(2)]
        with sessions(team, "/worker backend", workers) as running:
            wait_registered(team, running)
            first, *later = team.create(
                [
                    {**file_task("First", "first.txt", "one"), "ref": "first"},
                    {**file_task("Second", "second.txt", "two"), "depends_on": ["first"]},
                    {**file_task("Third", "third.txt", "three"), "depends_on": ["first"]},
                ]
            )
            finished = [finish(process) for process in running]
        assert [f.code for f in finished] == [0, 0], [f.stderr for f in finished]
        assert team.task(first["id"])["state"] == "done"
        assert [team.task(task["id"])["state"] for task in later] == ["ready", "ready"]
        for f in finished:
            assert any("the hub takes no new claims" in n and "budget" in n for n in f.notices), f.notices
        assert [w["status"] for w in team.workers()] == ["stopped", "stopped"]
        with team.rest() as rest:
            session = str(uuid.uuid4())
            fresh = rest.post("/v1/workers", json={"session_id": session, "role": "backend"})
            assert fresh.status_code == 201, fresh.text
            claim = rest.post("/v1/tasks/claim", json={"worker_id": fresh.json()["id"]})
            assert claim.status_code == 409, claim.text
            assert claim.json()["error"]["code"] == "budget_exhausted", claim.text
            status = rest.get("/v1/status")
            assert status.status_code == 200, status.text
            assert status.json()["usage"]["budget"]["claims"] == "stopped"
            messages = rest.get("/v1/messages", params={"for": "coordinator"})
            assert messages.status_code == 200, messages.text
            about = [m["body"] for m in messages.json()["messages"] if "budget" in m["body"].lower()]
            assert len(about) == 1, messages.json()  # once, when it happened
            assert rest.get("/v1/tasks").status_code == 200
            sent = rest.post("/v1/messages", json={"to": "coordinator", "body": "still here"})
            assert sent.status_code in (200, 201), sent.text
        spent = sum(usage.tokens for w in workers for usage in w.usages())
        wait_for(
            f"the hub did not count every request ({spent} tokens)",
            lambda: today(team)["tokens"] == spent,
            shown=lambda: (today(team), rows(usage(team, "worker"))),
        )
        assert spent > 20_000
    print(f"\nfleet budget e2e: {time.monotonic() - began:.1f} s, claims refused through MCP: {len(refused)}")


def watching(policy: Policy, seen: list[str]) -> Policy:
    """`policy`, with every text Claude Code sent it (prompts, hook feedback) kept in `seen`."""

    def policy_(turn: Turn) -> Step:
        if turn.result is None:
            seen.append(turn.text)
        return policy(turn)

    return policy_


def test_a_task_over_its_budget_fails_and_its_worker_and_the_coordinator_are_told(
    tmp_path: Path, claude_bin: Path
) -> None:
    """A task whose first answer spends more tokens than a task may, with task_action "fail": the
    hub fails it with a "budget" error, tells the coordinator and the worker, and the worker's
    next Stop hook tells the session."""
    began = time.monotonic()
    big = Usage(input=100, output=30_000)
    with metered_team(tmp_path, claude_bin, {"task_tokens": 20_000, "task_action": "fail"}) as team:
        team.idle_minutes(0.05)
        [made] = team.create([file_task("Costly", "costly.txt", "much")])
        inner = WorkerModel()
        seen: list[str] = []
        refused: list[tuple[str, str, bool]] = []  # complete_task on the failed task

        def dead() -> bool:
            return bool(team.task(made["id"])["state"] == "dead")

        def policy(turn: Turn) -> Step:
            if turn.result is not None and turn.result[0] == "mcp__vps__write_file":
                # this request was made while the task was held: it counts for the task however
                # long the model takes; the hub fails the task meanwhile
                wait_for("the hub did not fail the task", dead)
                lease = {"task_id": made["id"], "lease_token": inner.task["lease_token"], "result": "ok"}
                return Call("mcp__vps__complete_task", lease)
            if turn.result is not None and turn.result[0] == "mcp__vps__complete_task":
                refused.append(turn.result)
                worker.held = None  # the hub ended the task: what follows is between tasks
                return End("The hub failed my task.")
            return inner(turn)

        def spend(metered: Metered) -> Usage:
            return big if metered.held is not None and not metered.usages(metered.held) else Usage()

        worker = Metered(watching(policy, seen), spend)
        finished = run(team, "/worker backend", worker)
        assert finished.code == 0, finished.stderr
        task = team.task(made["id"])
        assert task["state"] == "dead" and str(task["error"]).startswith("budget"), task
        with team.rest() as rest:
            messaged = {
                reader: [
                    m["body"]
                    for m in rest.get("/v1/messages", params={"for": reader}).json()["messages"]
                    if m["body"].startswith(f"Budget: task {made['id']}")
                ]
                for reader in ("coordinator", f"worker:{inner.worker_id}")
            }
        assert all(len(bodies) == 1 for bodies in messaged.values()), messaged
        text = told(finished, seen)
        assert f"Budget: task {made['id']}" in text, text[-3000:]
        [(_, why, is_error)] = refused
        assert is_error and "lease_conflict" in why and "dead" in why, why
        assert worker.usages(made["id"]) == [big, Usage()]
        assert team.task(made["id"])["usage"]["tokens"] == big.tokens + Usage().tokens
    print(f"\ntask budget e2e: {time.monotonic() - began:.1f} s")
