"""The Claude Code hooks of the thin client, run as Claude Code runs them, against a real hub.

Each hook gets its JSON event on stdin and runs with `python -S -E -s` (no site-packages, no
PYTHON* variables), so an import beyond the standard library fails here. Assertions read the
hub's state over REST. The end-to-end runs with the real CLI are in test_e2e_claude.py.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.hubproc import HubProcess, free_port, running_hub, write_config

HOOKS = REPO / "template/.claude/hooks"
AGENT, VIEWER = "agent-key-for-hook-tests", "viewer-key-for-hook-tests"
RUN_TIMEOUT = 60.0  # seconds for one hook run; the longest wait below is a few seconds
SESSIONS = itertools.count(1)


@dataclass
class Hooked:
    code: int
    answer: dict[str, Any] | None
    err: str
    seconds: float


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    directory = tmp_path_factory.mktemp("hub")
    keys = [("agent", "agent", AGENT), ("viewer", "viewer", VIEWER)]
    with running_hub(write_config(directory, keys=keys, queue={"lease_seconds": 60})) as running:
        yield running


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "hook-state"


def run_hook(
    name: str,
    event: dict[str, Any],
    *,
    url: str,
    state_dir: Path,
    key: str = AGENT,
    args: tuple[str, ...] = (),
    **env: str,
) -> Hooked:
    """Run one hook to completion; the key must never show in what it prints."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "VPS_API_URL": url,
        "VPS_API_KEY": key,
        "VPS_HOOK_STATE_DIR": str(state_dir),
        **env,
    }
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-S", "-E", "-s", str(HOOKS / name), *args],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        env=environment,
        cwd=state_dir.parent,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    seconds = time.monotonic() - began
    assert key not in done.stdout + done.stderr
    answer = json.loads(done.stdout) if done.stdout.strip() else None
    return Hooked(done.returncode, answer, done.stderr, seconds)


def stop_event(session: str, active: bool = False) -> dict[str, Any]:
    return {
        "session_id": session,
        "hook_event_name": "Stop",
        "stop_hook_active": active,
        "transcript_path": "/nonexistent",
        "last_assistant_message": "Done.",
    }


def new_session() -> str:
    return f"hook-session-{os.getpid()}-{next(SESSIONS)}"


def new_worker(hub: HubProcess) -> tuple[str, int, str]:
    """A registered session: (session id, worker id, role); the role is its own, so tasks made
    for it by one test never reach another test's worker on the shared hub."""
    session = new_session()
    role = f"role-{session.rsplit('-', 1)[1]}"
    with hub.client(AGENT) as rest:
        answer = rest.post("/v1/workers", json={"session_id": session, "role": role})
        assert answer.status_code == 201, answer.text
        return session, int(answer.json()["id"]), role


def create(hub: HubProcess, title: str, capability: str, **fields: Any) -> dict[str, Any]:
    task = {
        "title": title,
        "instructions": f"## Objective\n{title}, exactly.",
        **fields,
        "required_capabilities": [capability],
    }
    with hub.client(AGENT) as rest:
        answer = rest.post("/v1/tasks", json=task)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


def task(hub: HubProcess, task_id: int) -> dict[str, Any]:
    with hub.client(VIEWER) as rest:
        return dict(rest.get(f"/v1/tasks/{task_id}").json())


def worker(hub: HubProcess, worker_id: int) -> dict[str, Any]:
    with hub.client(AGENT) as rest:
        return dict(rest.get(f"/v1/workers/{worker_id}").json())


def claim(hub: HubProcess, worker_id: int) -> dict[str, Any]:
    with hub.client(AGENT) as rest:
        answer = rest.post("/v1/tasks/claim", json={"worker_id": worker_id})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def finish(hub: HubProcess, held: dict[str, Any]) -> None:
    with hub.client(AGENT) as rest:
        done = rest.post(f"/v1/tasks/{held['id']}/complete", json={"lease_token": held["lease_token"]})
        assert done.status_code == 200, done.text


# -- the Stop hook ---------------------------------------------------------------------------


@pytest.mark.parametrize("session", ["", "never-registered"])
def test_a_session_that_is_no_worker_may_stop(hub: HubProcess, state_dir: Path, session: str) -> None:
    create(hub, "not for a coordinator", "nobody")
    ran = run_hook("worker-stop-check.py", stop_event(session), url=hub.url, state_dir=state_dir)
    assert (ran.code, ran.answer) == (0, None), ran.err


def test_a_worker_holding_a_task_is_sent_back_until_it_completes(hub: HubProcess, state_dir: Path) -> None:
    session, worker_id, role = new_worker(hub)
    create(hub, "hold me", role)
    held = claim(hub, worker_id)
    ran = run_hook(
        "worker-stop-check.py", stop_event(session), url=hub.url, state_dir=state_dir, args=("--wait", "0")
    )
    assert ran.answer is not None and ran.answer["decision"] == "block"
    assert f"task {held['id']}" in ran.answer["reason"] and held["lease_token"] in ran.answer["reason"]
    assert task(hub, held["id"])["state"] == "claimed"  # nothing changed on the hub

    finish(hub, held)
    ran = run_hook(
        "worker-stop-check.py",
        stop_event(session, active=True),
        url=hub.url,
        state_dir=state_dir,
        args=("--wait", "0"),
        VPS_WORKER_IDLE_MINUTES="0.0001",
    )
    assert ran.answer is not None and "decision" not in ran.answer, ran.answer
    assert "stopped" in ran.answer["systemMessage"]
    assert worker(hub, worker_id)["status"] == "stopped"


def test_the_block_cap_lets_a_stuck_worker_stop_and_a_tool_call_resets_the_count(
    hub: HubProcess, state_dir: Path
) -> None:
    session, worker_id, role = new_worker(hub)
    create(hub, "never finished", role)
    held = claim(hub, worker_id)
    cap: dict[str, Any] = {"url": hub.url, "state_dir": state_dir, "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP": "2"}
    for _ in range(2):
        ran = run_hook("worker-stop-check.py", stop_event(session, active=True), **cap)
        assert ran.answer is not None and ran.answer.get("decision") == "block"
    ran = run_hook("worker-stop-check.py", stop_event(session, active=True), **cap)
    assert ran.answer is not None and "decision" not in ran.answer
    assert f"holds task {held['id']}" in ran.answer["systemMessage"]
    assert task(hub, held["id"])["state"] == "claimed"  # its lease decides, as for any worker
    fresh = run_hook("worker-stop-check.py", stop_event(session, active=False), **cap)
    assert fresh.answer is not None and fresh.answer.get("decision") == "block"  # a new prompt: count anew
    run_hook("worker-stop-check.py", stop_event(session, active=True), **cap)
    capped = run_hook("worker-stop-check.py", stop_event(session, active=True), **cap)
    assert capped.answer is not None and "decision" not in capped.answer

    tool_event = {"session_id": session, "hook_event_name": "PostToolUse", "tool_name": "Bash"}
    assert run_hook("heartbeat.py", tool_event, url=hub.url, state_dir=state_dir).code == 0
    ran = run_hook("worker-stop-check.py", stop_event(session, active=True), **cap)
    assert ran.answer is not None and ran.answer.get("decision") == "block"
    finish(hub, held)


def test_an_idle_worker_is_handed_a_ready_task_with_its_lease(hub: HubProcess, state_dir: Path) -> None:
    session, worker_id, role = new_worker(hub)
    create(hub, "for another role", "nobody")  # never handed to this worker
    made = create(hub, "style the page", role, priority=5)
    ran = run_hook("worker-stop-check.py", stop_event(session), url=hub.url, state_dir=state_dir)
    assert ran.answer is not None and ran.answer["decision"] == "block", ran.err
    shown = task(hub, made["id"])
    assert (shown["state"], shown["worker_id"]) == ("claimed", worker_id)
    reason = ran.answer["reason"]
    assert f"task {made['id']}" in reason and "style the page, exactly." in reason
    with hub.client(AGENT) as rest:
        [held] = rest.get("/v1/session", params={"session_id": session}).json()["tasks"]
    assert held["lease_token"] in reason
    finish(hub, held)


def test_an_idle_worker_waits_inside_the_hook_for_a_new_task(hub: HubProcess, state_dir: Path) -> None:
    session, worker_id, role = new_worker(hub)
    made: list[dict[str, Any]] = []
    later = threading.Timer(1.0, lambda: made.append(create(hub, "write the guide", role)))
    later.start()
    try:
        ran = run_hook(
            "worker-stop-check.py",
            stop_event(session),
            url=hub.url,
            state_dir=state_dir,
            args=("--wait", "20"),
        )
    finally:
        later.join()
    assert ran.answer is not None and ran.answer["decision"] == "block"
    assert f"task {made[0]['id']}" in ran.answer["reason"]
    assert 1.0 <= ran.seconds < 10.0  # woken by the task, not by the end of the wait
    assert task(hub, made[0]["id"])["worker_id"] == worker_id


def test_an_idle_worker_that_waited_its_round_is_told_to_end_its_turn_again(
    hub: HubProcess, state_dir: Path
) -> None:
    session, worker_id, _ = new_worker(hub)
    ran = run_hook(
        "worker-stop-check.py", stop_event(session), url=hub.url, state_dir=state_dir, args=("--wait", "1")
    )
    assert ran.answer is not None and ran.answer["decision"] == "block"
    assert "No task for you yet" in ran.answer["reason"]
    assert 1.0 <= ran.seconds < 10.0
    assert worker(hub, worker_id)["status"] == "idle"  # not stopped: its idle time is not up


def test_an_idle_worker_past_its_idle_timeout_is_stopped(hub: HubProcess, state_dir: Path) -> None:
    session, worker_id, _ = new_worker(hub)
    ran = run_hook(
        "worker-stop-check.py",
        stop_event(session),
        url=hub.url,
        state_dir=state_dir,
        VPS_WORKER_IDLE_MINUTES="0.02",
    )  # 1.2 s
    assert ran.answer is not None and "decision" not in ran.answer
    assert f"worker {worker_id}" in ran.answer["systemMessage"]
    assert 1.0 <= ran.seconds < 10.0
    assert worker(hub, worker_id)["status"] == "stopped"
    again = run_hook("worker-stop-check.py", stop_event(session), url=hub.url, state_dir=state_dir)
    assert (again.code, again.answer) == (0, None)  # a stopped worker is no longer held


def test_the_idle_timeout_is_the_hubs_unless_the_session_overrides_it(
    tmp_path: Path, state_dir: Path
) -> None:
    config = write_config(tmp_path, keys=[("agent", "agent", AGENT)], queue={"idle_timeout_minutes": 0.02})
    with running_hub(config) as own_hub:
        session, worker_id, _ = new_worker(own_hub)
        longer = run_hook(
            "worker-stop-check.py",
            stop_event(session),
            url=own_hub.url,
            state_dir=state_dir,
            args=("--wait", "2"),
            VPS_WORKER_IDLE_MINUTES="10",
        )
        assert longer.answer is not None and longer.answer["decision"] == "block"  # 10 min: not yet
        ran = run_hook("worker-stop-check.py", stop_event(session), url=own_hub.url, state_dir=state_dir)
        assert ran.answer is not None and "decision" not in ran.answer, ran.answer  # 1.2 s: the hub's
        assert worker(own_hub, worker_id)["status"] == "stopped"


def test_no_hub_or_a_wrong_key_lets_the_session_stop_and_says_why(hub: HubProcess, state_dir: Path) -> None:
    session, _, _ = new_worker(hub)
    down = f"http://127.0.0.1:{free_port()}"
    ran = run_hook("worker-stop-check.py", stop_event(session), url=down, state_dir=state_dir)
    assert ran.code == 0 and ran.answer is not None and "decision" not in ran.answer
    assert "cannot reach the hub" in ran.answer["systemMessage"]
    ran = run_hook(
        "worker-stop-check.py",
        stop_event(session),
        url=hub.url,
        state_dir=state_dir,
        key="wrong-key-for-hooks",
    )
    assert ran.answer is not None and "decision" not in ran.answer
    assert "401" in ran.answer["systemMessage"] and "VPS_API_KEY" in ran.answer["systemMessage"]
    ran = run_hook("worker-stop-check.py", stop_event(session), url="", state_dir=state_dir)
    assert ran.answer is not None and "VPS_API_URL is not set" in ran.answer["systemMessage"]


def test_the_hub_going_away_during_the_wait_lets_the_worker_stop(tmp_path: Path, state_dir: Path) -> None:
    config = write_config(tmp_path, keys=[("agent", "agent", AGENT)])
    with running_hub(config) as own_hub:
        session, _, _ = new_worker(own_hub)
        stopper = threading.Timer(1.0, own_hub.stop)
        stopper.start()
        try:
            ran = run_hook(
                "worker-stop-check.py",
                stop_event(session),
                url=own_hub.url,
                state_dir=state_dir,
                args=("--wait", "30"),
            )
        finally:
            stopper.join()
    assert ran.answer is not None and "decision" not in ran.answer, ran.answer
    assert ran.seconds < 20.0 and "vps hub" in ran.answer["systemMessage"]


# -- budgets (hub.toml [budget]) ---------------------------------------------------------------

SPENT = itertools.count(1)


def budget_hub(directory: Path, **budget: float | str) -> Path:
    """A hub.toml with a [budget] table (write_config knows none)."""
    config = write_config(directory, keys=[("agent", "agent", AGENT), ("viewer", "viewer", VIEWER)])
    table = "".join(f"{name} = {json.dumps(value)}\n" for name, value in budget.items())
    config.write_text(config.read_text() + "[budget]\n" + table, encoding="utf-8")
    return config


def spend(hub: HubProcess, session: str, usd: float, key: str = AGENT, model: str = "claude-test") -> None:
    """One model request of `session`, made now and costing `usd` (1,100 tokens), sent as Claude
    Code exports it."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    values = {
        "session.id": {"stringValue": session},
        "event.name": {"stringValue": "api_request"},
        "event.timestamp": {"stringValue": stamp},
        "event.sequence": {"intValue": next(SPENT)},
        "model": {"stringValue": model},
        "input_tokens": {"intValue": 1000},
        "output_tokens": {"intValue": 100},
        "cache_read_tokens": {"intValue": 0},
        "cache_creation_tokens": {"intValue": 0},
        "cost_usd_micros": {"intValue": round(usd * 1e6)},
    }
    record = {
        "timeUnixNano": str(int(now * 1e9)),
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": [{"key": key, "value": value} for key, value in values.items()],
    }
    export = {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": [{"logRecords": [record]}]}]}
    with hub.client(key) as rest:
        answer = rest.post("/otlp/v1/logs", json=export)
        assert answer.status_code == 200, answer.text


def test_a_spent_fleet_budget_lets_an_idle_worker_stop_with_the_hubs_reason(
    tmp_path: Path, state_dir: Path
) -> None:
    with running_hub(budget_hub(tmp_path, fleet_day_usd=0.05)) as own_hub:
        session, worker_id, role = new_worker(own_hub)
        waiting = create(own_hub, "never claimed", role)
        spend(own_hub, session, 0.06)
        ran = run_hook(
            "worker-stop-check.py",
            stop_event(session),
            url=own_hub.url,
            state_dir=state_dir,
            args=("--wait", "5"),
        )
        assert ran.answer is not None and "decision" not in ran.answer, ran.answer
        message = ran.answer["systemMessage"]
        assert f"vps worker {worker_id}" in message and "no new claims" in message
        assert "$0.05" in message and "fleet_day_usd" in message  # the hub's own reason, passed on
        assert ran.seconds < 5.0  # refused at once, not after the wait
        assert worker(own_hub, worker_id)["status"] == "stopped"
        assert task(own_hub, waiting["id"])["state"] == "ready"


def test_a_task_over_its_budget_is_named_and_the_hubs_budget_message_shown_once(
    tmp_path: Path, state_dir: Path
) -> None:
    with running_hub(budget_hub(tmp_path, task_usd=0.05, task_action="warn")) as own_hub:
        session, worker_id, role = new_worker(own_hub)
        create(own_hub, "costly", role)
        held = claim(own_hub, worker_id)
        time.sleep(0.01)  # the request comes after the claim, to the millisecond
        spend(own_hub, session, 0.07)
        hook: dict[str, Any] = {"url": own_hub.url, "state_dir": state_dir, "args": ("--wait", "0")}
        ran = run_hook("worker-stop-check.py", stop_event(session), **hook)
        assert ran.answer is not None and ran.answer["decision"] == "block", ran.answer
        reason = ran.answer["reason"]
        assert f"You still hold task {held['id']}" in reason and "It is over its budget:" in reason
        told = reason.split("From the hub:", 1)
        assert len(told) == 2 and f"Budget: task {held['id']}" in told[1], reason
        again = run_hook("worker-stop-check.py", stop_event(session, active=True), **hook)
        assert again.answer is not None and again.answer["decision"] == "block"
        assert "It is over its budget:" in again.answer["reason"]
        assert "From the hub:" not in again.answer["reason"]  # each message once
        assert task(own_hub, held["id"])["state"] == "claimed"  # "warn": the task goes on
        finish(own_hub, held)


def test_budget_messages_of_other_senders_or_for_others_are_not_passed_on(
    hub: HubProcess, state_dir: Path
) -> None:
    session, worker_id, role = new_worker(hub)
    create(hub, "held", role)
    held = claim(hub, worker_id)
    with hub.client(AGENT) as rest:
        for to, body in (("all", "Budget: for everyone"), (f"worker:{worker_id}", "not about money")):
            assert rest.post("/v1/messages", json={"to": to, "body": body}).status_code == 201
    ran = run_hook(
        "worker-stop-check.py", stop_event(session), url=hub.url, state_dir=state_dir, args=("--wait", "0")
    )
    assert ran.answer is not None and "From the hub:" not in ran.answer["reason"], ran.answer
    assert "over its budget" not in ran.answer["reason"]
    finish(hub, held)


# -- the telemetry header helper ----------------------------------------------------------------


def run_helper(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """otel-headers.py as Claude Code runs it: through a shell, in the session's directory."""
    command = f'python3 -S -E -s "{HOOKS / "otel-headers.py"}"'
    environment = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=environment, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def test_the_header_helper_prints_the_key_from_the_environment_or_the_local_settings(tmp_path: Path) -> None:
    from_environment, from_settings = secrets.token_urlsafe(24), secrets.token_urlsafe(24)  # made per run
    printed = run_helper(tmp_path, VPS_API_KEY=from_environment)
    assert printed.returncode == 0 and json.loads(printed.stdout) == {
        "Authorization": f"Bearer {from_environment}"
    }
    (tmp_path / ".claude").mkdir()
    local = {"env": {"VPS_API_KEY": from_settings}}
    (tmp_path / ".claude" / "settings.local.json").write_text(json.dumps(local))
    (tmp_path / "sub").mkdir()
    printed = run_helper(tmp_path / "sub")  # as hooklib reads it: this directory or a parent
    assert printed.returncode == 0 and json.loads(printed.stdout) == {
        "Authorization": f"Bearer {from_settings}"
    }


def test_the_header_helper_without_a_key_prints_nothing_and_says_why(tmp_path: Path) -> None:
    printed = run_helper(tmp_path)
    assert printed.returncode == 1 and printed.stdout == ""
    assert printed.stderr.strip().count("\n") == 0 and "no VPS_API_KEY" in printed.stderr


# -- SessionStart and PostToolUse --------------------------------------------------------------


def test_session_start_reminds_a_worker_of_its_role_and_task(hub: HubProcess, state_dir: Path) -> None:
    session, worker_id, role = new_worker(hub)
    start = {"session_id": session, "hook_event_name": "SessionStart", "source": "compact"}
    ran = run_hook("session-start.py", start, url=hub.url, state_dir=state_dir)
    assert ran.answer is not None
    context = ran.answer["hookSpecificOutput"]["additionalContext"]
    assert ran.answer["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    assert f"worker {worker_id}, role {role}" in context and "You hold no task" in context

    create(hub, "test the parser", role)
    held = claim(hub, worker_id)
    again = run_hook("session-start.py", start, url=hub.url, state_dir=state_dir).answer
    assert again is not None
    context = again["hookSpecificOutput"]["additionalContext"]
    assert f"You hold task {held['id']}" in context and held["lease_token"] in context
    assert "test the parser, exactly." in context and "WORKER_CLAUDE.md" in context
    finish(hub, held)


@pytest.mark.parametrize("url", ["hub", "down"])
def test_session_start_says_nothing_to_a_session_that_is_no_worker(
    hub: HubProcess, state_dir: Path, url: str
) -> None:
    start = {"session_id": new_session(), "hook_event_name": "SessionStart", "source": "resume"}
    target = hub.url if url == "hub" else f"http://127.0.0.1:{free_port()}"
    ran = run_hook("session-start.py", start, url=target, state_dir=state_dir)
    assert (ran.code, ran.answer) == (0, None)


def test_the_heartbeat_extends_the_lease_at_most_once_per_interval(hub: HubProcess, state_dir: Path) -> None:
    session, worker_id, role = new_worker(hub)
    create(hub, "a long one", role)
    held = claim(hub, worker_id)
    event = {"session_id": session, "hook_event_name": "PostToolUse", "tool_name": "Edit"}
    time.sleep(0.05)
    assert run_hook("heartbeat.py", event, url=hub.url, state_dir=state_dir).answer is None
    extended = task(hub, held["id"])["lease_expires_at"]
    assert extended > held["lease_expires_at"]
    seen = worker(hub, worker_id)["last_seen"]

    time.sleep(0.05)
    run_hook("heartbeat.py", event, url=hub.url, state_dir=state_dir)  # within 30 s: not sent
    assert task(hub, held["id"])["lease_expires_at"] == extended
    assert worker(hub, worker_id)["last_seen"] == seen
    run_hook("heartbeat.py", event, url=hub.url, state_dir=state_dir, VPS_HEARTBEAT_SECONDS="0")
    assert task(hub, held["id"])["lease_expires_at"] > extended
    finish(hub, held)


def test_the_heartbeat_ignores_a_hub_that_is_down(state_dir: Path) -> None:
    event = {"session_id": new_session(), "hook_event_name": "PostToolUse", "tool_name": "Bash"}
    ran = run_hook("heartbeat.py", event, url=f"http://127.0.0.1:{free_port()}", state_dir=state_dir)
    assert (ran.code, ran.answer, ran.err) == (0, None, "")


@pytest.mark.parametrize("name", sorted(path.name for path in HOOKS.glob("*.py")))
def test_each_hook_imports_only_the_standard_library_and_the_client(name: str) -> None:
    tree = ast.parse((HOOKS / name).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported, "no imports found: the check would prove nothing"
    allowed = sys.stdlib_module_names | {"hooklib", "vps"}
    assert imported <= allowed, sorted(imported - allowed)


# -- the session's watcher --------------------------------------------------------------------


def watchers_of(session: str) -> list[int]:
    """Pids of the live watcher processes of a session (found by their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] if argv else "X"
        except OSError:
            continue
        if b"session-watch.py" in b" ".join(argv) and session.encode() in argv and state not in "ZX":
            pids.append(int(entry.name))
    return pids


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def test_a_worker_session_gets_one_watcher_that_beats_while_its_claude_lives(
    hub: HubProcess, state_dir: Path
) -> None:
    session, worker_id, _ = new_worker(hub)
    claude = subprocess.Popen(["sleep", "120"])  # stands in for the session's Claude Code process
    try:
        event = {"session_id": session, "hook_event_name": "PostToolUse", "tool_name": "Bash"}
        before = worker(hub, worker_id)["last_seen"]
        time.sleep(0.05)
        ran = run_hook("heartbeat.py", event, url=hub.url, state_dir=state_dir, CLAUDE_PID=str(claude.pid))
        assert (ran.code, ran.answer) == (0, None)
        wait_until(lambda: len(watchers_of(session)) == 1, 10, "the watcher starts")
        touched = worker(hub, worker_id)["last_seen"]
        assert touched > before
        # its first beat may come before `touched` was read, so allow one interval (15 s) more
        wait_until(lambda: worker(hub, worker_id)["last_seen"] > touched, 20, "a beat of the watcher")
        for _ in range(2):  # more hooks of the same session start no second watcher
            run_hook(
                "heartbeat.py",
                event,
                url=hub.url,
                state_dir=state_dir,
                CLAUDE_PID=str(claude.pid),
                VPS_HEARTBEAT_SECONDS="0",
            )
            run_hook(
                "session-start.py",
                {**event, "hook_event_name": "SessionStart"},
                url=hub.url,
                state_dir=state_dir,
                CLAUDE_PID=str(claude.pid),
            )
        time.sleep(0.5)
        assert len(watchers_of(session)) == 1
    finally:
        claude.kill()
        claude.wait()
    wait_until(lambda: watchers_of(session) == [], 5, "the watcher ends with its Claude Code process")


def test_no_watcher_without_the_claude_process_or_for_a_session_that_is_no_worker(
    hub: HubProcess, state_dir: Path
) -> None:
    session, _, _ = new_worker(hub)
    event = {"session_id": session, "hook_event_name": "PostToolUse", "tool_name": "Bash"}
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_hook("heartbeat.py", event, url=hub.url, state_dir=state_dir, CLAUDE_PID=str(gone.pid))
    run_hook("heartbeat.py", event, url=hub.url, state_dir=state_dir, VPS_HEARTBEAT_SECONDS="0")
    stranger = {**event, "session_id": new_session()}
    claude = subprocess.Popen(["sleep", "60"])
    try:
        run_hook("heartbeat.py", stranger, url=hub.url, state_dir=state_dir, CLAUDE_PID=str(claude.pid))
        time.sleep(1)
        assert watchers_of(session) == [] and watchers_of(stranger["session_id"]) == []
    finally:
        claude.kill()
        claude.wait()
