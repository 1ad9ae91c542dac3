"""The slot supervisor and screen streamer of a rendered project (.claude/skills/vps-workspace/
scripts/team.py), run as a user's machine runs them: `python3 team.py slot ...` in the project,
a real hub, the real Claude Code binary behind it talking to the scripted model (tests/fakemodel.py,
reached through ANTHROPIC_BASE_URL, which the supervisor passes on), and a real tmux server.

The assertions read the hub (slots, runs, tasks, its event log), the slot's log and /proc.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, alive, git, render
from tests.fakemodel import Call, FakeModel, Step, Turn
from tests.hubproc import free_port, open_db_readonly, running_hub, write_config
from tests.test_api import serving
from tests.test_e2e_claude import Team, WorkerModel, file_task, processes_mentioning, team_of
from tests.test_mcp import claude_env

SCRIPT = Path(".claude/skills/vps-workspace/scripts/team.py")
STOP_TIMEOUT = 20.0  # the supervisor ends its session's group within 5 s, then tells the hub
# A tool call that lasts: a claim narrowed to a capability no task needs waits its whole time.
HOLD = (
    "python3 .claude/skills/vps-workspace/scripts/vps.py "
    "tasks claim --wait 120 --capabilities none --worker {}"
)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """The first truthy value of `check()` within `timeout` seconds, else a failure naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(every)


@dataclass
class Supervisor:
    """`team.py slot` as a process of its own, its output in files."""

    project: Path
    proc: subprocess.Popen[bytes]
    out: Path

    @property
    def log(self) -> str:
        path = self.project / ".claude/team/w1.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode


@contextlib.contextmanager
def supervising(team: Team, api: str, *args: str, claude: str | None = None) -> Iterator[Supervisor]:
    """`team.py slot --slot w1 --role backend` in the project, with the environment a session
    gets (HOME, ANTHROPIC_BASE_URL); the hub's URL and key come from the project's settings."""
    env = claude_env(team.home, team.url, team.key, ANTHROPIC_BASE_URL=api)
    del env["VPS_API_URL"], env["VPS_API_KEY"]
    out = team.project.parent / f"supervisor-{time.monotonic_ns()}.out"
    command = [sys.executable, str(SCRIPT), "slot", "--slot", "w1", "--role", "backend", "--poll", "0.5"]
    command += ["--claude", claude or str(team.claude), *args]
    with out.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=team.project, env=env, stdout=sink, stderr=subprocess.STDOUT)
    supervisor = Supervisor(team.project, proc, out)
    try:
        yield supervisor
    finally:
        supervisor.stop()


def slot_of(team: Team, name: str = "w1") -> dict[str, Any] | None:
    with team.rest() as rest:
        slots = rest.get("/v1/team").json()["slots"]
    return next((slot for slot in slots if slot["slot"] == name), None)


def runs_of(team: Team, worker_id: int) -> list[dict[str, Any]]:
    with team.rest() as rest:
        answer = rest.get(f"/v1/workers/{worker_id}/runs")
        assert answer.status_code == 200, answer.text
        return list(answer.json()["runs"])


def events_of(team: Team, kind: str) -> list[tuple[int, int]]:
    """(task id, worker id) of each event of a kind in the hub's log (hub stopped)."""
    with contextlib.closing(open_db_readonly(team.config.parent / "hub-data")) as db:
        rows = db.execute("SELECT task_id, worker_id FROM events WHERE type = ? ORDER BY id", (kind,))
        return [(row["task_id"], row["worker_id"]) for row in rows]


def below(root: int) -> list[int]:
    """The live processes below `root`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split() if entry.name.isdigit() else []
            if fields and fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        found.append(pid := todo.pop())
        todo += children.get(pid, [])
    return found


@dataclass
class Holder:
    """A worker (WorkerModel) whose first `holds` sessions, once they claim a task, hold it in a
    tool call that lasts (HOLD): a session to kill mid-task."""

    holds: int = 1
    worker: WorkerModel = field(default_factory=WorkerModel)

    def __call__(self, turn: Turn) -> Step:
        result = turn.result
        if result and result[0] == "mcp__vps__claim_task" and self.holds and "lease_token" in result[1]:
            self.holds -= 1
            self.worker(turn)  # it notes the task it holds
            return Call("Bash", {"command": HOLD.format(self.worker.worker_id), "description": "Wait"})
        return self.worker(turn)


def holding(team: Team, task_id: int) -> dict[str, Any]:
    """Once the slot's session holds the task inside its lasting tool call: the slot's view."""
    wait_for("the task is claimed", lambda: team.task(task_id)["state"] == "claimed", 120)
    wait_for("the session waits in its tool call", lambda: processes_mentioning("--capabilities none"), 60)
    slot = slot_of(team)
    assert slot is not None and slot["state"] == "running" and slot["pid"], slot
    return slot


# -- with the real binary -------------------------------------------------------------------


@pytest.mark.claude
def test_a_slot_runs_a_session_that_does_the_ready_tasks_records_the_run_and_goes_idle(
    tmp_path: Path, claude_bin: Path
) -> None:
    with team_of(tmp_path, claude_bin) as team:
        team.idle_minutes(0.05)  # the session stops 3 s after the queue is empty
        made = team.create([file_task("First", "one.txt", "one"), file_task("Second", "two.txt", "two")])
        worker = WorkerModel()
        model = FakeModel(worker)
        with serving(model.app) as api, supervising(team, api) as supervisor:
            done = wait_for(
                "the slot is idle after its run",
                lambda: (slot := slot_of(team)) and slot["state"] == "idle" and slot["last_run"] and slot,
                180,
            )
            assert all(team.task(task["id"])["state"] == "done" for task in made)
            [registered] = team.workers()
            assert registered["role"] == "backend" and registered["status"] == "stopped"
            [run] = runs_of(team, registered["id"])
            assert (run["exit_code"], run["is_error"], run["subtype"]) == (0, False, "success"), run
            assert run["num_turns"] >= 1 and run["duration_ms"] > 0 and run["error"] is None
            assert done["last_run"]["exit_code"] == 0 and done["failures"] == 0 and done["restarts"] == 0
            assert (done["mode"], done["host"], done["role"], done["pid"]) == (
                "headless",
                "local",
                "backend",
                None,
            )
            assert done["screen_at"] is not None  # the log's tail went to the hub
            # The supervisor started the session with the project's telemetry settings: its model
            # requests reached the hub (flushed at exit), each on a task or between them.
            with team.rest() as rest:
                usage = rest.get("/v1/usage", params={"by": "task"}).json()
            rows = {row["key"]: row["requests"] for row in usage["rows"]}
            assert all(rows.get(task["id"], 0) >= 1 for task in made), usage
            assert "coordinator" not in rows and usage["total"]["requests"] >= 3, usage
            time.sleep(2)  # idle: it looks for work, starts nothing
            assert supervisor.log.count(" w1 session ") == 1, supervisor.log
            assert supervisor.stop() == 0
            assert slot_of(team)["state"] == "stopped"  # type: ignore[index]
        assert model.errors == []
        assert sorted(worker.done) == sorted(task["id"] for task in made)
        log = supervisor.log
        assert re.search(
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z w1 session session=[0-9a-f-]{36} pid=\d+$", log, re.M
        )
        assert team.key not in log and team.key not in supervisor.output
        git(team.project, "init", "-q")
        assert git(team.project, "status", "--porcelain", "--ignored", ".claude/team/").startswith("!! ")


@pytest.mark.claude
def test_a_session_killed_mid_task_is_started_again_and_the_task_is_done_once(
    tmp_path: Path, claude_bin: Path
) -> None:
    with team_of(tmp_path, claude_bin) as team:
        team.idle_minutes(0.05)
        [made] = team.create([file_task("Only", "only.txt", "once")])
        holder = Holder()
        model = FakeModel(holder)
        with serving(model.app) as api, supervising(team, api):
            first = holding(team, made["id"])
            os.kill(first["pid"], signal.SIGKILL)
            killed = time.monotonic()
            again = wait_for(
                "a new session",
                lambda: (
                    (slot := slot_of(team)) and slot["session_id"] not in (None, first["session_id"]) and slot
                ),
                15,
                every=0.1,
            )
            assert time.monotonic() - killed < 8  # the group ended, the run recorded, 1 s of backoff
            assert again["restarts"] == 1 and again["failures"] == 1
            assert not processes_mentioning("--capabilities none")  # its tool, orphaned, ended too
            wait_for("the slot is idle", lambda: slot_of(team)["state"] == "idle", 180)  # type: ignore[index]
            final = slot_of(team)
            assert final is not None and final["failures"] == 0
            assert team.task(made["id"])["state"] == "done"
            workers = sorted(team.workers(), key=lambda worker: worker["id"])
            assert [w["status"] for w in workers] == ["stopped", "stopped"]
            [killed_run] = runs_of(team, workers[0]["id"])
            assert (killed_run["exit_code"], killed_run["is_error"]) == (137, True)
            assert killed_run["error"].startswith("killed by SIGKILL"), killed_run
            [good_run] = runs_of(team, workers[1]["id"])
            assert (good_run["exit_code"], good_run["is_error"]) == (0, False)
        assert model.errors == []
        assert team.hub is not None
        team.hub.stop()
        assert events_of(team, "task.claimed") == [
            (made["id"], workers[0]["id"]),
            (made["id"], workers[1]["id"]),
        ]
        assert events_of(team, "task.completed") == [(made["id"], workers[1]["id"])]  # done exactly once
        assert (team.workspace / "only.txt").read_text() == "once\n"


@pytest.mark.claude
def test_sigterm_ends_the_whole_session_group_and_gives_the_task_back_at_once(
    tmp_path: Path, claude_bin: Path
) -> None:
    with team_of(tmp_path, claude_bin) as team:
        [made] = team.create([file_task("Held", "held.txt", "x")])
        model = FakeModel(Holder())
        with serving(model.app) as api, supervising(team, api) as supervisor:
            slot = holding(team, made["id"])
            tree = below(supervisor.proc.pid)
            # claude, its hooks and the tool it runs: each in a session of its own (setsid)
            assert slot["pid"] in tree and len(tree) >= 3, tree
            began = time.monotonic()
            assert supervisor.stop() == 0, supervisor.output
            assert time.monotonic() - began < 10
            assert [pid for pid in tree if alive(pid)] == []
            assert team.task(made["id"])["state"] == "ready"  # at once, not after the lease
            [worker] = team.workers()
            assert worker["status"] == "stopped"
            stopped = slot_of(team)
            assert stopped is not None and (stopped["state"], stopped["pid"]) == ("stopped", None)
            # then the end of the session's stderr, which may name a helper the signal also ended
            last_run = stopped["last_run"]
            assert last_run["error"].startswith("stopped: the slot got SIGTERM"), last_run
            # the session's watcher, in a session of its own, ends with its Claude Code process
            wait_for("nothing of the project runs", lambda: not processes_mentioning(str(team.project)), 5)
        assert "stopping on SIGTERM" in supervisor.log


# -- without the binary: it cannot start ----------------------------------------------------


@pytest.fixture
def idle_team(tmp_path: Path) -> Iterator[Team]:
    """A rendered project and its hub, with no Claude Code: its sessions cannot start."""
    with team_of(tmp_path, tmp_path / "no-claude") as team:
        yield team


def test_a_session_that_keeps_failing_backs_off_then_the_slot_is_failed_and_left_alone(
    idle_team: Team,
) -> None:
    team = idle_team
    team.create([file_task("Waiting", "w.txt", "w")])
    not_executable = team.project.parent / "claude"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)
    with supervising(team, "http://127.0.0.1:9", "--max-failures", "3", claude=str(not_executable)) as sup:
        failed = wait_for("the slot fails", lambda: (s := slot_of(team)) and s["state"] == "failed" and s, 30)
        starts = [
            datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
            for line in sup.log.splitlines()
            if " w1 session " in line
        ]
        assert len(starts) == 3, sup.log
        backoffs = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert 1 <= backoffs[0] < 2 and 2 <= backoffs[1] < 3, backoffs  # 1 s, then 2 s
        assert failed["failures"] == 3 and failed["restarts"] == 2
        assert "failed 3 times in a row" in failed["note"] and "Permission denied" in failed["note"]
        assert failed["last_run"]["exit_code"] == 126
        time.sleep(3)  # more than the next backoff would be: nothing starts again
        assert sup.log.count(" w1 session ") == 3
        assert sup.proc.poll() is None  # alive, so neither tmux nor systemd starts it again
        with team.rest() as rest:
            messages = rest.get("/v1/messages", params={"for": "coordinator"}).json()["messages"]
        [told] = [message for message in messages if message["sender"] == "slot:w1"]
        assert "Slot w1 (backend, on local)" in told["body"] and "failed 3 times" in told["body"]
        assert sup.stop() == 0
    assert [task["state"] for task in team.tasks()] == ["ready"]


def test_a_missing_binary_is_a_failed_run_with_a_clear_note(idle_team: Team) -> None:
    team = idle_team
    team.create([file_task("Waiting", "w.txt", "w")])
    missing = str(team.project.parent / "nowhere" / "claude")
    with supervising(team, "http://127.0.0.1:9", "--max-failures", "1", claude=missing) as sup:
        failed = wait_for("the slot fails", lambda: (s := slot_of(team)) and s["state"] == "failed" and s, 20)
        assert f"cannot run the Claude Code binary {missing!r}: not found" in failed["note"], failed
        assert failed["last_run"]["exit_code"] == 127
        assert sup.stop() == 0
    assert "Traceback" not in sup.output + sup.log


def test_bad_arguments_are_one_line(idle_team: Team) -> None:
    for args, said in [
        (["slot", "--slot", "W1", "--role", "backend"], "is no slot name"),
        (["slot", "--slot", "w1", "--role", "Back end"], "is no role name"),
        (["slot", "--slot", "w1", "--role", "backend", "--max-failures", "0"], "is not a positive number"),
        (["--project", "/", "screens", "--tmux", "x"], "is no project directory"),
    ]:
        command = [sys.executable, str(SCRIPT), *args]
        done = subprocess.run(command, cwd=idle_team.project, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and said in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) <= 2  # argparse's usage line, then the error


# -- screens --------------------------------------------------------------------------------


def test_screens_sends_a_tmux_windows_text_to_the_hub_and_ends_with_the_session(tmp_path: Path) -> None:
    agent, admin = "agent-" + uuid.uuid4().hex, "admin-" + uuid.uuid4().hex
    port = free_port()
    project = render(tmp_path / "project", hub_url=f"http://127.0.0.1:{port}").dest
    (project / ".claude/settings.local.json").write_text(json.dumps({"env": {"VPS_API_KEY": agent}}))
    (tmp_path / "hub").mkdir()
    config = write_config(tmp_path / "hub", keys=[("team", "agent", agent), ("owner", "admin", admin)])
    env = {**os.environ, "TMUX_TMPDIR": str(tmp_path)}  # a tmux server of this test's own
    env.pop("TMUX", None)
    env.pop("VPS_API_KEY", None)
    env.pop("VPS_API_URL", None)
    session = f"screens-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> None:
        subprocess.run(["tmux", *args], env=env, check=True, timeout=10)

    with running_hub(config, port=port) as hub, hub.client(admin) as rest:
        assert rest.put("/v1/team/slots/w1", json={"role": "backend", "host": "local"}).status_code == 200
        assert rest.put("/v1/team/slots/w2", json={"role": "backend", "host": "elsewhere"}).status_code == 200
        tmux("new-session", "-d", "-s", session, "-n", "w1", "-x", "100", "-y", "20", "sh")
        try:
            tmux("new-window", "-t", session, "-n", "w2", "sh")
            tmux("new-window", "-t", session, "-n", "other", "sh")
            tmux("send-keys", "-t", f"{session}:w1", "echo hello from w1", "Enter")
            command = [sys.executable, str(SCRIPT), "screens", "--tmux", session, "--host", "local"]
            errors = tmp_path / "screens.err"
            with errors.open("wb") as sink:
                streamer = subprocess.Popen(command, cwd=project, env=env, stderr=sink)
            try:
                screen = wait_for(
                    "the window's screen on the hub",
                    lambda: (
                        (got := rest.get("/v1/team/slots/w1/screen")).status_code == 200
                        and "hello from w1" in got.json()["text"]
                        and got.json()
                    ),
                    15,
                )
                first_at = screen["at"]
                tmux("send-keys", "-t", f"{session}:w1", f"echo VPS_API_KEY={agent}", "Enter")
                wait_for(
                    "the changed screen",
                    lambda: rest.get("/v1/team/slots/w1/screen").json()["at"] != first_at,
                    15,
                )
                assert agent not in rest.get("/v1/team/slots/w1/screen").json()["text"]  # the key, redacted
                assert rest.get("/v1/team/slots/w2/screen").status_code == 404  # another host's slot
                assert rest.get("/v1/team/slots/other/screen").status_code == 404  # no slot
                unchanged = rest.get("/v1/team/slots/w1/screen").json()["at"]
                time.sleep(2.5)
                assert rest.get("/v1/team/slots/w1/screen").json()["at"] == unchanged  # sent only on change
                tmux("kill-session", "-t", session)
                assert streamer.wait(10) == 0, errors.read_text()
            finally:
                if streamer.poll() is None:
                    streamer.kill()
                    streamer.wait()
        finally:
            subprocess.run(["tmux", "kill-server"], env=env, capture_output=True, check=False, timeout=10)
    gone = subprocess.run(
        [sys.executable, str(SCRIPT), "screens", "--tmux", session],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gone.returncode == 1 and f"there is no tmux session {session!r}" in gone.stderr


def test_team_py_imports_only_the_standard_library_and_the_client() -> None:
    """It runs with the system's python3 on any machine of the team, as the hooks do."""
    tree = ast.parse((REPO / "template" / SCRIPT).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "vps" in imported and "subprocess" in imported, imported  # the check sees the imports
    assert imported <= sys.stdlib_module_names | {"vps"}, sorted(imported - sys.stdlib_module_names)
