"""The client CLI `vps.py` against a real hub on 127.0.0.1.

Every command runs as `python -I -S vps.py ...`: isolated mode without site-packages, so an import
beyond the standard library fails here. Every run also checks that the key never appears in the
output. The hooks import the same file as a library; the last tests do that in-process.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO
from tests.hubproc import HOST, HubProcess, free_port, running_hub, write_config
from tests.test_hooks import spend

VPS = REPO / "template/.claude/skills/vps-workspace/scripts/vps.py"
ADMIN, AGENT, VIEWER = "admin-key-for-tests-0", "agent-key-for-tests-0", "viewer-key-for-tests-0"
RUN_TIMEOUT = 60.0  # seconds for one CLI run; the longest waits below are a few seconds
OK, OTHER, USAGE, NETWORK, AUTH, NOT_FOUND, LEASE_LOST, STALE, RESERVED = 0, 1, 2, 3, 4, 5, 6, 7, 8


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    directory = tmp_path_factory.mktemp("hub")
    keys = [("owner", "admin", ADMIN), ("agent", "agent", AGENT), ("watcher", "viewer", VIEWER)]
    with running_hub(write_config(directory, keys=keys)) as running:
        yield running


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A directory with no .claude settings above it, for the client to run in."""
    return tmp_path


def vps(
    *args: str,
    url: str,
    key: str | None = AGENT,
    cwd: Path,
    stdin: str = "",
    env: dict[str, str] | None = None,
    one_line: bool = True,
) -> Run:
    """Run the CLI to completion; the key, whichever was used, must not show in its output, and a
    failure says what failed in one line on stderr (unless `one_line` is off: a command's output)."""
    environment = {"PATH": os.environ.get("PATH", ""), "VPS_API_URL": url, **(env or {})}
    if key is not None:
        environment["VPS_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(VPS), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    for secret in (ADMIN, AGENT, VIEWER):
        assert secret not in done.stdout + done.stderr, f"a key was printed by {args}"
    if done.returncode and one_line:
        assert len(done.stderr.strip().splitlines()) == 1, f"not one line on stderr: {done.stderr!r}"
    return Run(done.returncode, done.stdout, done.stderr)


def session() -> str:
    return f"session-{time.monotonic_ns()}"


def register(hub: HubProcess, cwd: Path, role: str) -> tuple[int, str]:
    """A new worker and its session id."""
    session_id = session()
    worker = vps(
        "workers", "register", "--session", session_id, "--role", role, "--json", url=hub.url, cwd=cwd
    )
    return int(worker.json()["id"]), session_id


def claim(hub: HubProcess, cwd: Path, worker: int) -> str:
    """The lease token of the task the worker claims."""
    task = vps("--json", "tasks", "claim", "--worker", str(worker), url=hub.url, cwd=cwd).json()
    return str(task["lease_token"])


def create(hub: HubProcess, cwd: Path, role: str, *titles: str) -> list[dict[str, Any]]:
    """Tasks only workers of `role` can claim: the hub is shared by the tests of this module."""
    tasks = [
        {"title": title, "instructions": f"do {title}", "required_capabilities": [role]} for title in titles
    ]
    created = vps("--json", "tasks", "create", url=hub.url, cwd=cwd, stdin=json.dumps(tasks)).json()
    return list(created["tasks"])


def load_vps() -> ModuleType:
    """vps.py imported as the hooks import it."""
    spec = importlib.util.spec_from_file_location("vps", VPS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every command of vps.py's parser as it is typed: "status", "tasks claim", ..."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, f"{prefix}{name} ") or [prefix + name]
    return found


# -- the file itself ------------------------------------------------------------------------------


def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(VPS.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "relative import"
            imported.add(node.module.split(".")[0])
    assert imported, "no imports found: the check would prove nothing"
    assert imported <= sys.stdlib_module_names, sorted(imported - sys.stdlib_module_names)


def test_every_command_line_in_the_rendered_text_parses() -> None:
    """Each `vps.py ...` line the template tells agents to run is accepted by the parser."""
    parser = load_vps().build_parser()
    found = 0
    for source in sorted((REPO / "template").rglob("*.jinja")):
        for match in re.finditer(r"scripts/vps\.py ([^`\n]*)", source.read_text(encoding="utf-8")):
            line = re.sub(r"\{\{[^}]*\}\}", "backend", match[1])  # a Jinja value, e.g. a role
            line = re.sub(r"<[a-z ]*\bid>|\bID\b", "7", line)  # placeholders: <task id>, ID
            words = shlex.split(line.split(" #")[0].split(" < ")[0])
            if words and not words[0].startswith("<"):  # not the synopsis `<command> [options]`
                found += 1
                try:
                    parser.parse_args(words)
                except SystemExit:
                    pytest.fail(f"{source.name}: vps.py {match[1]!r} does not parse")
    assert found > 20


def test_help_answers_for_every_command(cwd: Path) -> None:
    every = commands(load_vps().build_parser())
    assert len(every) == 31 and {"status", "usage", "tasks claim", "files grep", "exec"} <= set(every), every
    for command in ["", *every]:
        run = vps(*command.split(), "--help", url="http://unused", cwd=cwd)
        assert run.code == OK and "usage: vps.py" in run.out, command
    assert "example: vps.py tasks claim --wait 60" in vps("tasks", "claim", "-h", url="x", cwd=cwd).out


# -- commands the hub serves ----------------------------------------------------------------------


def test_status_and_plan(hub: HubProcess, cwd: Path) -> None:
    assert vps("status", url=hub.url, cwd=cwd).code == OK
    plan = "# Plan\n\n- build it\n"
    assert vps("plan", "set", "--goal", "Ship v2", url=hub.url, cwd=cwd, stdin=plan).code == OK
    shown = vps("plan", "show", url=hub.url, cwd=cwd)
    assert "Ship v2" in shown.out and "- build it" in shown.out
    assert vps("plan", "set", url=hub.url, cwd=cwd, stdin="new plan").code == OK  # keeps the goal
    assert vps("plan", "show", "--json", url=hub.url, cwd=cwd).json() | {"updated_at": 0} == {
        "goal": "Ship v2",
        "plan": "new plan",
        "updated_at": 0,
    }
    plan_file = cwd / "plan.md"
    plan_file.write_text("from a file", encoding="utf-8")
    assert vps("plan", "set", "--file", str(plan_file), url=hub.url, cwd=cwd).code == OK
    empty = vps("plan", "set", url=hub.url, cwd=cwd, stdin="")
    assert empty.code == USAGE and "stdin" in empty.err
    status = vps("--json", "status", url=hub.url, cwd=cwd).json()
    assert status["plan"]["plan"] == "from a file" and "progress" in status
    assert "goal: Ship v2" in vps("status", url=hub.url, cwd=cwd).out
    tag = f"nobody-{time.monotonic_ns()}"
    task = {"title": "orphan", "instructions": "no worker has the tag", "required_capabilities": [tag]}
    made = vps("tasks", "create", "--json", url=hub.url, cwd=cwd, stdin=json.dumps(task)).json()
    overview = vps("status", url=hub.url, cwd=cwd).out
    assert f"unclaimable (no live worker has all its tags): {made['id']} lacks {tag}" in overview


def test_usage_shows_the_cost_of_each_task_highest_first_and_by_each_grouping(
    hub: HubProcess, cwd: Path
) -> None:
    role = f"spender-{time.monotonic_ns()}"
    worker, session = register(hub, cwd, role)
    cheap, costly = create(hub, cwd, role, "cheap task", "costly task")
    costs = {cheap["id"]: 0.01, costly["id"]: 0.25}
    for _ in costs:
        run = vps("tasks", "claim", "--json", url=hub.url, cwd=cwd, env={"CLAUDE_CODE_SESSION_ID": session})
        held = run.json()
        time.sleep(0.01)  # the request comes after the claim, to the millisecond
        spend(hub, session, costs[held["id"]], key=AGENT, model=f"model-{role}")
        finish = ["tasks", "complete", str(held["id"]), "--lease-token", held["lease_token"]]
        assert vps(*finish, url=hub.url, cwd=cwd).code == OK
    out = vps("usage", url=hub.url, key=VIEWER, cwd=cwd).out.splitlines()
    assert out[0].startswith("usage by task, all days (UTC)")
    assert out[1].split() == ["key", "label", "requests", "tokens", "cost"]
    total = next(n for n, line in enumerate(out) if line.startswith("total "))
    assert len({len(line) for line in out[1 : total + 1]}) == 1, out  # aligned: cost is right-justified
    rows = [line for line in out if line.startswith((f"{cheap['id']} ", f"{costly['id']} "))]
    assert [row.split()[:2] for row in rows] == [[str(costly["id"]), "costly"], [str(cheap["id"]), "cheap"]]
    assert rows[0].split()[-3:] == ["1", "1,100", "$0.2500"]
    assert any(line.startswith("cross-check, Claude Code's own metrics: $") for line in out[total:]), out
    report = vps("usage", "--json", url=hub.url, key=VIEWER, cwd=cwd).json()
    assert report["by"] == "task" and {"rows", "total", "metrics"} <= set(report)
    by_worker = vps("usage", "--by", "worker", url=hub.url, key=VIEWER, cwd=cwd).out
    assert re.search(rf"^{worker} .* 2 +2,200 +\$0\.2600$", by_worker, flags=re.M), by_worker
    by_model = vps("usage", "--by", "model", url=hub.url, key=VIEWER, cwd=cwd).out
    assert re.search(rf"^model-{role} .*\$0\.2600$", by_model, flags=re.M), by_model
    today = time.strftime("%Y-%m-%d", time.gmtime())
    by_day = vps("usage", "--by", "day", "--day", today, url=hub.url, key=VIEWER, cwd=cwd).out
    assert by_day.startswith(f"usage by day, {today} (UTC)") and re.search(rf"^{today} ", by_day, flags=re.M)
    assert vps("usage", "--by", "role", url=hub.url, key=VIEWER, cwd=cwd).code == OK
    spent = vps("status", url=hub.url, cwd=cwd).out
    assert re.search(r"^spend today \(UTC\): \$\d+\.\d\d, [\d,]+ tokens in \d+ requests; burn ", spent, re.M)
    for bad in (["--day", "2026-13-45"], ["--day", "yesterday"], ["--by", "team"]):
        refused = vps("usage", *bad, url=hub.url, cwd=cwd)
        assert refused.code == USAGE and refused.out == "", bad


def test_a_task_from_creation_to_done(hub: HubProcess, cwd: Path) -> None:
    batch = {
        "idempotency_key": f"batch-{time.monotonic_ns()}",
        "tasks": [
            {"title": "first", "instructions": "do one", "ref": "one", "required_capabilities": ["life"]},
            {
                "title": "second",
                "instructions": "do two",
                "depends_on": ["one"],
                "required_capabilities": ["life"],
            },
        ],
    }
    first = vps("tasks", "create", url=hub.url, cwd=cwd, stdin=json.dumps(batch))
    assert first.code == OK and "2 task(s):" in first.out and "created before" not in first.out
    again = vps("tasks", "create", "--json", url=hub.url, cwd=cwd, stdin=json.dumps(batch))
    one, two = again.json()["tasks"]
    assert (one["state"], two["state"], two["depends_on"]) == ("ready", "blocked", [one["id"]])
    assert "created before" in vps("tasks", "create", url=hub.url, cwd=cwd, stdin=json.dumps(batch)).out

    worker, session_id = register(hub, cwd, role="life")
    env = {"CLAUDE_CODE_SESSION_ID": session_id}
    claimed = vps("tasks", "claim", "--wait", "2", "--json", url=hub.url, cwd=cwd, env=env).json()
    assert (claimed["id"], claimed["worker_id"]) == (one["id"], worker)
    token = claimed["lease_token"]
    human = vps("tasks", "show", str(one["id"]), url=hub.url, cwd=cwd).out
    assert "[claimed] first" in human and "do one" in human and token not in human

    beat = vps("tasks", "heartbeat", str(one["id"]), "--lease-token", token, url=hub.url, cwd=cwd)
    assert beat.code == OK and "lease extended" in beat.out
    done = ["tasks", "complete", str(one["id"]), "--lease-token", token, "--result", "Changed: x"]
    assert vps(*done, url=hub.url, cwd=cwd).out.strip() == f"task {one['id']} is done"
    assert vps(*done, url=hub.url, cwd=cwd).code == OK  # the same token again: idempotent
    shown = vps("tasks", "show", str(one["id"]), "--json", url=hub.url, cwd=cwd).json()
    assert (shown["state"], shown["result"]) == ("done", "Changed: x")
    listed = vps("tasks", "list", "--status", "done,ready", "--json", url=hub.url, cwd=cwd).json()
    assert {task["id"] for task in listed["tasks"]} >= {one["id"], two["id"]}
    assert all(task["state"] in ("done", "ready") for task in listed["tasks"])
    assert str(two["id"]) in vps("tasks", "list", "--status", "ready", url=hub.url, cwd=cwd).out


def test_a_stale_lease_token_exits_6(hub: HubProcess, cwd: Path) -> None:
    worker, _ = register(hub, cwd, role="stale")
    (task,) = create(hub, cwd, "stale", "t")
    token = claim(hub, cwd, worker)
    for action in ("heartbeat", "release"):  # a token may start with "-": it is still the token
        run = vps("tasks", action, str(task["id"]), "--lease-token", "-not-the-token", url=hub.url, cwd=cwd)
        assert run.code == LEASE_LOST and "409 lease_conflict" in run.err
    released = vps("tasks", "release", str(task["id"]), "--lease-token", token, url=hub.url, cwd=cwd)
    assert released.out.strip() == f"task {task['id']} is ready"
    stale = vps("tasks", "complete", str(task["id"]), "--lease-token", token, url=hub.url, cwd=cwd)
    assert stale.code == LEASE_LOST
    fresh = claim(hub, cwd, worker)
    failed = vps(
        "tasks",
        "fail",
        str(task["id"]),
        "--lease-token",
        fresh,
        "--reason",
        "blocked by X",
        url=hub.url,
        cwd=cwd,
    )
    assert failed.code == OK and "is ready after 1 of 3 attempts" in failed.out
    assert vps("tasks", "heartbeat", str(task["id"]), "--lease-token", fresh, url=hub.url, cwd=cwd).code == 6


def test_claim_waits_for_a_task_and_says_when_none_came(hub: HubProcess, cwd: Path) -> None:
    _, session_id = register(hub, cwd, role="waiter")
    env = {"CLAUDE_CODE_SESSION_ID": session_id}
    nothing = vps("tasks", "claim", "--wait", "0.2", url=hub.url, cwd=cwd, env=env)
    assert (nothing.code, nothing.out.strip()) == (OK, "no task for this worker")
    assert vps("tasks", "claim", "--json", url=hub.url, cwd=cwd, env=env).json() is None

    args = [sys.executable, "-I", "-S", str(VPS), "--json", "tasks", "claim", "--wait", "20"]
    environment = {"PATH": os.environ.get("PATH", ""), "VPS_API_URL": hub.url, "VPS_API_KEY": AGENT, **env}
    started = time.monotonic()
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=cwd
    ) as waiting:
        time.sleep(0.5)  # the claim is now waiting in the hub
        (task,) = create(hub, cwd, "waiter", "late")
        out, err = waiting.communicate(timeout=RUN_TIMEOUT)
    assert waiting.returncode == OK, err
    assert json.loads(out)["id"] == task["id"] and time.monotonic() - started < 15


def test_workers(hub: HubProcess, cwd: Path) -> None:
    worker, session_id = register(hub, cwd, role="docs")
    env = {"CLAUDE_CODE_SESSION_ID": session_id}
    listed = vps("workers", "list", "--json", url=hub.url, cwd=cwd).json()["workers"]
    assert worker in [entry["id"] for entry in listed]
    assert f"session {session_id}" in vps("workers", "list", url=hub.url, cwd=cwd).out
    only = vps("workers", "list", "--session", session_id, "--json", url=hub.url, cwd=cwd).json()
    assert [entry["id"] for entry in only["workers"]] == [worker]
    assert vps("workers", "show", str(worker), "--json", url=hub.url, cwd=cwd).json()["role"] == "docs"
    mine = vps("workers", "show", url=hub.url, cwd=cwd, env=env)  # this session's, found by the hub
    assert mine.code == OK and mine.out.split()[:2] == [str(worker), "docs"]
    assert vps("workers", "heartbeat", "--session", session_id, url=hub.url, cwd=cwd).code == OK
    again = vps("workers", "register", "--role", "docs", "--json", url=hub.url, cwd=cwd, env=env).json()
    assert again["id"] == worker  # the session id from the environment; the same worker
    tagged = vps(
        "workers",
        "register",
        "--session",
        session(),
        "--role",
        "x",
        "--capabilities",
        "a,b",
        url=hub.url,
        cwd=cwd,
    )
    assert tagged.code == OK and "capabilities a, b" in tagged.out
    gone = vps("workers", "deregister", url=hub.url, cwd=cwd, env=env)
    assert gone.out.strip() == f"worker {worker} is stopped"
    unknown = vps("workers", "show", "--session", "never-registered", url=hub.url, cwd=cwd)
    assert unknown.code == NOT_FOUND and "not a registered worker" in unknown.err
    assert vps("workers", "show", url=hub.url, cwd=cwd).code == USAGE  # which worker?
    assert vps("workers", "register", "--role", "docs", url=hub.url, cwd=cwd).code == USAGE  # no session
    assert vps("tasks", "claim", url=hub.url, cwd=cwd).code == USAGE


def test_workers_me_shows_the_sessions_leases(hub: HubProcess, cwd: Path) -> None:
    worker, session_id = register(hub, cwd, role="me")
    env = {"CLAUDE_CODE_SESSION_ID": session_id}
    idle = vps("workers", "me", url=hub.url, cwd=cwd, env=env)
    assert idle.code == OK and "no task held" in idle.out
    [made] = create(hub, cwd, "me", "remember me")
    token = claim(hub, cwd, worker)
    shown = vps("workers", "me", url=hub.url, cwd=cwd, env=env)
    assert f"task {made['id']} [claimed] remember me" in shown.out and f"lease token: {token}" in shown.out
    mine = vps("workers", "me", "--json", "--session", session_id, url=hub.url, cwd=cwd).json()
    assert mine["worker"]["id"] == worker and mine["tasks"][0]["lease_token"] == token
    assert vps("workers", "me", "--session", "never-registered", url=hub.url, cwd=cwd).code == NOT_FOUND
    assert vps("workers", "me", url=hub.url, cwd=cwd).code == USAGE  # which session?
    watcher = vps("workers", "me", url=hub.url, cwd=cwd, env=env, key=VIEWER)
    assert watcher.code == AUTH  # lease tokens are for agents


def test_messages(hub: HubProcess, cwd: Path) -> None:
    worker, session_id = register(hub, cwd, role="talker")
    env = {"CLAUDE_CODE_SESSION_ID": session_id}
    start = vps("messages", "read", "--json", url=hub.url, cwd=cwd).json()["next_cursor"]
    sent = vps(
        "messages",
        "send",
        "--to",
        "all",
        "--kind",
        "discovery",
        "tests seed once",
        url=hub.url,
        cwd=cwd,
        env=env,
    )
    assert sent.code == OK and "sent to all" in sent.out
    question = vps("messages", "send", "--to", "coordinator", "-", url=hub.url, cwd=cwd, stdin="a question")
    assert question.code == OK
    answer = vps(
        "messages", "send", "--to", str(worker), "--from", "coordinator", "an answer", url=hub.url, cwd=cwd
    )
    assert answer.code == OK
    mine = vps("messages", "read", "--cursor", start, "--json", url=hub.url, cwd=cwd, env=env).json()
    assert [(m["sender"], m["to"], m["kind"], m["body"]) for m in mine["messages"]] == [
        (f"worker:{worker}", "all", "discovery", "tests seed once"),
        ("coordinator", f"worker:{worker}", "message", "an answer"),
    ]  # the worker's own view: not the question to the coordinator
    everything = vps("messages", "read", "--cursor", start, url=hub.url, cwd=cwd)
    assert "a question" in everything.out and f"--cursor {mine['next_cursor']}" in everything.out
    coordinator = vps(
        "messages", "read", "--for", "coordinator", "--cursor", start, "--json", url=hub.url, cwd=cwd
    ).json()
    assert [m["body"] for m in coordinator["messages"]] == ["tests seed once", "a question"]
    after = vps("messages", "read", "--cursor", mine["next_cursor"], url=hub.url, cwd=cwd, env=env)
    assert after.out.startswith("0 message(s)")


def test_files(hub: HubProcess, cwd: Path) -> None:
    def files(*args: str, stdin: str = "") -> Run:
        return vps("files", *args, url=hub.url, cwd=cwd, stdin=stdin)

    created = files("put", "notes/a.txt", stdin="hello\n")
    assert created.code == OK and created.out.startswith("created notes/a.txt; etag ")
    assert files("put", "notes/a.txt", stdin="again").code == STALE  # without --etag: create only
    read = files("cat", "notes/a.txt")
    etag = read.err.removeprefix("etag: ").strip()
    assert read.out == "hello\n" and created.out.strip().endswith(etag)
    assert files("cat", "notes/a.txt", "--json").json() == {
        "path": "notes/a.txt",
        "etag": etag,
        "content": "hello\n",
    }
    replaced = files("put", "notes/a.txt", "--etag", etag, "--json", stdin="hello there\n").json()
    assert files("put", "notes/a.txt", "--etag", etag, stdin="lost update").code == STALE
    assert files("put", "notes/a.txt", "--etag", f'"{replaced["etag"]}"', stdin="hello again\n").code == OK
    assert files("put", "notes/empty.txt", stdin="").code == USAGE  # a forgotten `< FILE`
    assert files("put", "notes/empty.txt", "--file", os.devnull).code == OK

    assert files("ls").out.splitlines() == ["notes/"]
    assert files("ls", "notes").out.splitlines() == ["notes/a.txt", "notes/empty.txt"]
    globbed = files("ls", "--glob", "**/a.txt", "--json").json()["entries"]
    assert [entry["path"] for entry in globbed] == ["notes/a.txt"]
    assert files("grep", "h.llo").out.strip() == "notes/a.txt:1: hello again"
    assert files("grep", "h.llo", "--fixed").out.strip() == "no match"
    assert files("grep", "HELLO", "notes", "--ignore-case", "--json").json()["matches"][0]["line"] == 1

    edited = files("edit", "notes/a.txt", "--old", "hello again", "--new", "- world")
    assert edited.code == OK and files("cat", "notes/a.txt").out == "- world\n"
    missing = files("edit", "notes/a.txt", "--old", "not there", "--new", "x")
    assert missing.code == USAGE and "422" in missing.err
    assert files("edit", "notes/a.txt", "--old", "- world", "--new", "x", "--etag", etag).code == STALE
    moved = files("mv", "notes/a.txt", "notes/b.txt")
    assert (moved.code, moved.out.strip()) == (OK, "moved notes/a.txt to notes/b.txt")
    assert files("cat", "notes/a.txt").code == NOT_FOUND
    assert files("rm", "notes/b.txt").out.strip() == "deleted notes/b.txt"
    assert files("rm", "notes/b.txt").code == NOT_FOUND
    refused = files("cat", "../outside.txt")
    assert refused.code == OTHER and "403 path_refused" in refused.err  # not an auth problem
    assert vps("files", "put", "x.txt", url=hub.url, key=VIEWER, cwd=cwd, stdin="x").code == AUTH


def test_reservations_and_423(hub: HubProcess, cwd: Path) -> None:
    holder, holder_session = register(hub, cwd, role="holder")
    _, other_session = register(hub, cwd, role="other")
    as_holder = {"CLAUDE_CODE_SESSION_ID": holder_session}
    as_other = {"CLAUDE_CODE_SESSION_ID": other_session}
    made = vps("reserve", "locked/one.txt", "--ttl", "120", "--json", url=hub.url, cwd=cwd, env=as_holder)
    (reservation,) = made.json()["reservations"]
    assert (reservation["worker_id"], reservation["glob"], reservation["exclusive"]) == (
        holder,
        "locked/one.txt",
        True,
    )
    blocked = vps("files", "put", "locked/one.txt", url=hub.url, cwd=cwd, env=as_other, stdin="x")
    assert blocked.code == RESERVED and f"worker {holder}" in blocked.err
    own = vps("files", "put", "locked/one.txt", url=hub.url, cwd=cwd, env=as_holder, stdin="mine")
    assert own.code == OK  # the holder's own writes pass: the CLI names its worker
    assert vps("reserve", "locked/*", url=hub.url, cwd=cwd, env=as_other).code == RESERVED
    shared = vps("reserve", "locked/*", "--shared", url=hub.url, cwd=cwd, env=as_other)
    assert shared.code == OK and "(shared, expires in" in shared.out
    assert vps("unreserve", str(reservation["id"]), url=hub.url, cwd=cwd, env=as_other).code == OTHER
    released = vps("unreserve", str(reservation["id"]), url=hub.url, cwd=cwd, env=as_holder)
    assert released.out.strip() == "released 1 reservation(s)"
    assert vps("files", "rm", "locked/one.txt", url=hub.url, cwd=cwd, env=as_other).code == OK
    assert vps("reserve", "anything", url=hub.url, cwd=cwd).code == USAGE  # no session: whose?


def test_exec(hub: HubProcess, cwd: Path) -> None:
    def run(*args: str, key: str = AGENT) -> Run:
        return vps("exec", *args, url=hub.url, key=key, cwd=cwd, one_line=False)

    assert (run("--", "echo", "hello", "world").out, run("echo", "x").out) == ("hello world\n", "x\n")
    failed = run("--shell", "echo out; echo err >&2; exit 3")
    assert (failed.code, failed.out) == (OTHER, "out\n")
    assert failed.err.splitlines() == ["err", "vps.py: the command exited with 3"]
    result = run("--json", "--shell", "exit 3")
    assert result.code == OTHER and json.loads(result.out)["exit_code"] == 3
    assert run("--env", "GREETING=hi", "--shell", 'echo "$GREETING"').out == "hi\n"
    assert run("--env", "NOEQUALS", "--", "true").code == USAGE
    assert vps("files", "put", "sub/x.txt", url=hub.url, cwd=cwd, stdin="x").code == OK
    assert run("--cwd", "sub", "--", "pwd").out.strip().endswith("/sub")
    slow = run("--timeout", "0.5", "--", "sleep", "10")
    assert slow.code == OTHER and "timed out" in slow.err
    assert run("--shell", "true", "--", "true").code == USAGE  # one of the two
    assert run("--", "true", key=VIEWER).code == AUTH
    worker, _ = register(hub, cwd, role="runner")
    (task,) = create(hub, cwd, "runner", "run")
    token = claim(hub, cwd, worker)
    kept = run("--task", str(task["id"]), "--lease-token", token, "--", "true")
    assert kept.code == OK
    assert run("--task", str(task["id"]), "--lease-token", "stale", "--", "true").code == LEASE_LOST


def test_a_worker_holding_a_task_reads_writes_and_runs_in_its_own_tree(hub: HubProcess, cwd: Path) -> None:
    """Every files command and exec send the session's worker (or --worker): while it holds a
    task they act in that task's tree, which no one else sees; completing puts the work on main
    as one commit, `task <id>: <title>`."""
    worker, session_id = register(hub, cwd, role="treed")
    (task,) = create(hub, cwd, "treed", "write in a tree")
    as_worker = {"CLAUDE_CODE_SESSION_ID": session_id}
    token = vps("--json", "tasks", "claim", url=hub.url, cwd=cwd, env=as_worker).json()["lease_token"]
    folder, marker = f"tree-{task['id']}", f"tree marker {task['id']}"
    made, moved = f"{folder}/made.txt", f"{folder}/moved.txt"

    def files(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> Run:
        return vps("files", *args, url=hub.url, cwd=cwd, env=env, stdin=stdin)

    def run(*args: str, env: dict[str, str] | None = None) -> Run:
        return vps("exec", *args, url=hub.url, cwd=cwd, env=env, one_line=False)

    assert files("put", made, env=as_worker, stdin=f"{marker}\n").code == OK
    assert files("cat", made, env=as_worker).out == f"{marker}\n"
    assert files("cat", made, "--worker", str(worker)).out == f"{marker}\n"  # the same tree, named
    assert files("ls", folder, env=as_worker).out.splitlines() == [made]
    assert files("grep", marker, "--fixed", env=as_worker).out.strip() == f"{made}:1: {marker}"
    assert run("--", "cat", made, env=as_worker).out == f"{marker}\n"
    assert run("--worker", str(worker), "--", "cat", made).out == f"{marker}\n"
    edited = files("edit", made, "--old", "marker", "--new", "MARKER", env=as_worker)
    assert edited.code == OK
    assert files("mv", made, moved, env=as_worker).code == OK
    assert files("cat", made).code == NOT_FOUND  # main: none of it until the task is merged
    assert files("cat", moved).code == NOT_FOUND
    assert files("grep", str(task["id"]), "--fixed", "--glob", "**/moved.txt").out.strip() == "no match"
    assert run("--", "test", "-e", folder).code == OTHER

    done = ["tasks", "complete", str(task["id"]), "--lease-token", token, "--result", "Changed: a file"]
    assert vps(*done, url=hub.url, cwd=cwd, env=as_worker).code == OK
    content = marker.replace("marker", "MARKER") + "\n"
    assert files("cat", moved).out == content and files("cat", made).code == NOT_FOUND
    commit = vps("tasks", "show", str(task["id"]), "--json", url=hub.url, cwd=cwd).json()["commit"]
    shown = run("--", "git", "show", "--name-only", "--format=%H%n%s", commit).out.split()
    assert shown[0] == commit and shown[1:] == ["task", f"{task['id']}:", "write", "in", "a", "tree", moved]
    assert run("--", "git", "rev-parse", "HEAD").out.strip() == commit  # main's head: that commit


def test_exec_switched_off_is_not_an_auth_failure(tmp_path: Path) -> None:
    config = write_config(tmp_path, keys=[("agent", "agent", AGENT)])
    config.write_text(config.read_text() + "[exec]\nenabled = false\n")
    with running_hub(config) as off:
        run = vps("exec", "--", "true", url=off.url, cwd=tmp_path)
    assert run.code == OTHER and "403 disabled" in run.err


# -- failures and their exit codes ----------------------------------------------------------------


def test_hub_unreachable_exits_3_naming_the_url(cwd: Path) -> None:
    url = f"http://{HOST}:{free_port()}"  # nothing listens there
    run = vps("status", url=url, cwd=cwd)
    assert run.code == NETWORK and url in run.err
    assert vps("status", url="", cwd=cwd).code == NETWORK
    assert vps("status", url="hub.example.com", cwd=cwd).code == NETWORK


def test_auth_failures_exit_4_and_say_which(hub: HubProcess, cwd: Path) -> None:
    wrong = vps("status", url=hub.url, key="not-a-key", cwd=cwd)
    assert wrong.code == AUTH and "401" in wrong.err
    missing = vps("status", url=hub.url, key=None, cwd=cwd)
    assert missing.code == AUTH and "VPS_API_KEY is not set" in missing.err
    assert vps("status", url=hub.url, key=VIEWER, cwd=cwd).code == OK
    refused = vps("plan", "set", url=hub.url, key=VIEWER, cwd=cwd, stdin="x")
    assert refused.code == AUTH and "403 forbidden" in refused.err
    (task,) = create(hub, cwd, "nobody", "to cancel")
    assert vps("tasks", "cancel", str(task["id"]), url=hub.url, cwd=cwd).code == AUTH  # agent, not admin
    cancelled = vps("tasks", "cancel", str(task["id"]), url=hub.url, key=ADMIN, cwd=cwd)
    assert cancelled.out.strip() == f"task {task['id']} cancelled"
    assert vps("tasks", "cancel", str(task["id"]), url=hub.url, key=ADMIN, cwd=cwd).code == OTHER  # 409


def test_not_found_exits_5(hub: HubProcess, cwd: Path) -> None:
    run = vps("tasks", "show", "987654", url=hub.url, cwd=cwd)
    assert run.code == NOT_FOUND and "404" in run.err
    assert vps("workers", "heartbeat", "987654", url=hub.url, cwd=cwd).code == NOT_FOUND


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["tasks"],
        ["tasks", "bogus"],
        ["tasks", "show"],
        ["tasks", "show", "abc"],
        ["tasks", "complete", "1"],
        ["messages", "send", "hi"],
        ["--nope", "status"],
        ["messages", "send", "--to", "all", "--kind", "chat", "hi"],
        ["exec"],
    ],
)
def test_bad_usage_exits_2(args: list[str], hub: HubProcess, cwd: Path) -> None:
    run = vps(*args, url=hub.url, cwd=cwd)
    assert run.code == USAGE and run.out == ""


def test_invalid_input_exits_2(hub: HubProcess, cwd: Path) -> None:
    assert vps("tasks", "create", url=hub.url, cwd=cwd, stdin="{not json").code == USAGE
    invalid = vps("tasks", "create", url=hub.url, cwd=cwd, stdin='{"title": "no instructions"}')
    assert invalid.code == USAGE and "422" in invalid.err
    assert vps("tasks", "create", "--file", str(cwd / "missing.json"), url=hub.url, cwd=cwd).code == USAGE


def test_the_key_and_url_come_from_claude_settings_when_not_in_the_environment(
    hub: HubProcess, tmp_path: Path
) -> None:
    project, inside = tmp_path / "project", tmp_path / "project" / "src" / "deep"
    inside.mkdir(parents=True)
    (project / ".claude").mkdir()
    (project / ".claude/settings.json").write_text(json.dumps({"env": {"VPS_API_URL": hub.url}}))
    (project / ".claude/settings.local.json").write_text(json.dumps({"env": {"VPS_API_KEY": VIEWER}}))
    assert vps("status", url="", key=None, cwd=inside).code == OK
    overridden = vps("status", url="", key="wrong-key", cwd=inside)  # the environment comes first
    assert overridden.code == AUTH


def test_json_output_parses_for_every_read_command(hub: HubProcess, cwd: Path) -> None:
    (task,) = create(hub, cwd, "nobody", "json")
    for command in (
        ["status"],
        ["plan", "show"],
        ["tasks", "list"],
        ["tasks", "show", str(task["id"])],
        ["workers", "list"],
        ["messages", "read"],
    ):
        assert isinstance(vps(*command, "--json", url=hub.url, cwd=cwd).json(), dict), command


# -- the library the hooks import -----------------------------------------------------------------


def test_the_hooks_can_use_it_as_a_library(
    hub: HubProcess, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vps_module = load_vps()
    monkeypatch.setenv("VPS_API_URL", hub.url)
    monkeypatch.setenv("VPS_API_KEY", AGENT)
    client = vps_module.Client.from_env(cwd)
    assert AGENT not in repr(client)
    worker, session_id = register(hub, cwd, role="hooked")
    assert client.find_worker(session_id)["id"] == worker
    assert client.find_worker("no-such-session") is None
    assert client.claim(worker, wait=0) is None
    (task,) = create(hub, cwd, "hooked", "hook")
    claimed = client.claim(worker, wait=1)
    assert claimed["id"] == task["id"] and claimed["lease_token"]
    assert client.call("workers.heartbeat", worker).data["current_task"] == task["id"]
    with pytest.raises(vps_module.HubError) as lost:
        client.call("tasks.complete", task["id"], body={"lease_token": "stale"})
    assert (lost.value.exit_code, lost.value.status, lost.value.code) == (LEASE_LOST, 409, "lease_conflict")


def test_a_hub_that_never_answers_times_out_as_a_network_error(cwd: Path) -> None:
    with closing(socket.socket()) as silent:
        silent.bind((HOST, 0))
        silent.listen()  # accepts connections, never answers
        vps_module = load_vps()
        client = vps_module.Client(f"http://{HOST}:{silent.getsockname()[1]}", "key", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(vps_module.HubError, match=r"no answer within 0\.3 s") as error:
            client.call("status")
    assert error.value.exit_code == NETWORK and time.monotonic() - started < 5


def test_a_blind_overwrite_needs_force(hub: HubProcess, cwd: Path) -> None:
    """`--etag '*'` replaces any version, another worker's change too: refused in one line unless
    `--force` says it is meant, and the file is left as it was."""

    def files(*args: str, stdin: str = "") -> Run:
        return vps("files", *args, url=hub.url, cwd=cwd, stdin=stdin)

    assert files("put", "blind.txt", stdin="theirs\n").code == OK
    blind = files("put", "blind.txt", "--etag", "*", stdin="mine\n")
    assert blind.code == USAGE and blind.err.count("\n") == 1 and "--force" in blind.err, blind.err
    assert files("cat", "blind.txt").out == "theirs\n"
    forced = files("put", "blind.txt", "--etag", "*", "--force", stdin="mine\n")
    assert forced.code == OK and forced.out.startswith("replaced blind.txt; etag ")
    assert files("cat", "blind.txt").out == "mine\n"
