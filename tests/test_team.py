"""`scaffold team` with real tmux, the real Claude Code binary, a real hub and a scripted model.

Each test runs the `scaffold` command as a user would, in a rendered project whose sessions reach
a scripted model on 127.0.0.1 (tests/fakemodel.py; one policy per session, as the launcher starts
several). The assertions read the hub, tmux, /proc and the workspace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.conftest import alive, require_tool
from tests.fakemodel import End, Policy, Sessions, Step, Turn
from tests.hubproc import free_port
from tests.sshd import ssh_server
from tests.test_api import serving
from tests.test_e2e_claude import Team, WorkerModel, file_task, processes_mentioning, team_of
from tests.test_mcp import claude_env

pytestmark = pytest.mark.claude

DRAIN_TIMEOUT = 300.0  # seconds for a team to finish its tasks
PROMPT = "\N{HEAVY RIGHT-POINTING ANGLE QUOTATION MARK ORNAMENT}"  # Claude Code's input prompt


class Either:
    """A session's policy, chosen by what its first turn says: a worker (WorkerModel), or the
    coordinator, which has nothing to plan here and ends its turn."""

    def __init__(self, pace: float = 0.0) -> None:
        self.inner: Policy | None = None
        self.pace = pace  # seconds each step takes, as a model's answer does

    def __call__(self, turn: Turn) -> Step:
        if self.inner is None:
            self.inner = WorkerModel() if "workers register --session" in turn.text else self.coordinator
        time.sleep(self.pace)
        return self.inner(turn)

    @staticmethod
    def coordinator(turn: Turn) -> Step:
        return End("The coordinator is ready.")


@dataclass
class Launcher:
    """Runs `scaffold team ...` in the project with the environment a user's shell would have:
    Claude Code pointed at the scripted model, the hub's URL and key left to the project's files."""

    team: Team
    api: str
    claude: Path

    @property
    def env(self) -> dict[str, str]:
        env = claude_env(self.team.home, self.team.url, self.team.key, ANTHROPIC_BASE_URL=self.api)
        del env["VPS_API_URL"], env["VPS_API_KEY"]
        return env

    def scaffold(self, *args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scaffold", "team", *args],
            cwd=self.team.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.scaffold("up", "--claude", str(self.claude), *args)

    def status(self) -> list[dict[str, Any]]:
        done = self.scaffold("status", "--json", timeout=60)
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))

    def hub_team(self) -> dict[str, Any]:
        with self.team.rest() as rest:
            return dict(rest.get("/v1/team").json())


@contextlib.contextmanager
def launcher(
    tmp_path: Path,
    claude_bin: Path,
    idle_minutes: float = 0.1,
    pace: float = 0.0,
    make: Callable[[], Policy] | None = None,
) -> Iterator[Launcher]:
    """A team's project and hub, the scripted model (a new `make()` per session, else Either),
    and `scaffold team down` at the end whatever happened (it may say nothing runs)."""
    require_tool("tmux")
    with team_of(tmp_path, claude_bin) as team:
        team.idle_minutes(idle_minutes)
        models = Sessions(make or (lambda: Either(pace)))
        with serving(models.app) as api:
            made = Launcher(team, api, claude_bin)
            made.models = models  # type: ignore[attr-defined]
            try:
                yield made
            finally:
                made.scaffold("down", timeout=120)
        assert models.errors == [], models.errors


def chains(count: int, length: int) -> list[dict[str, Any]]:
    """`count` chains of `length` tasks, each depending on the one before."""
    tasks = []
    for chain in range(count):
        for step in range(length):
            task = file_task(f"Chain {chain} step {step}", f"chains/c{chain}_{step}.txt", f"{chain}.{step}")
            task["ref"] = f"c{chain}s{step}"
            if step:
                task["depends_on"] = [f"c{chain}s{step - 1}"]
            tasks.append(task)
    return tasks


def wait_done(launch: Launcher, task_ids: list[int], seen: dict[str, set[int]]) -> None:
    """Until every task is done, noting which tasks `team status` showed each slot working on."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        for row in launch.status():
            if row["task"] is not None:
                seen.setdefault(row["slot"], set()).add(row["task"])
        states = [launch.team.task(task_id)["state"] for task_id in task_ids]
        if all(state == "done" for state in states):
            return
        assert time.monotonic() < deadline, f"not drained: {states}"
        time.sleep(0.5)


def test_a_headless_team_drains_twelve_tasks_with_dependencies_and_down_leaves_nothing(
    tmp_path: Path, claude_bin: Path
) -> None:
    with launcher(tmp_path, claude_bin, pace=0.2) as launch:  # a step takes a moment: status sees work
        made = launch.team.create(chains(4, 3))
        up = launch.up("--headless", "--workers", "3", "--role", "backend")
        assert up.returncode == 0, up.stderr + up.stdout
        assert "started 3 session(s) on local (headless)" in up.stdout
        seen: dict[str, set[int]] = {}
        wait_done(launch, [task["id"] for task in made], seen)
        assert seen and set(seen) <= {"w1", "w2", "w3"}, seen  # status showed slots at their tasks
        pids = [view["pid"] for view in launch.hub_team()["slots"] if view.get("pid")]
        windows = subprocess.run(
            ["tmux", "-L", tmux_of(launch), "list-panes", "-s", "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(windows) == 3
        down = launch.scaffold("down")
        assert down.returncode == 0, down.stderr
        assert "stopped 3 session(s)" in down.stdout
        for pid in [*pids, *map(int, windows)]:
            assert not alive(pid), f"pid {pid} outlived team down"
        assert left_after(str(launch.team.project)) == []
        assert launch.hub_team()["slots"] == []
        assert all(worker["status"] == "stopped" for worker in launch.team.workers())
        assert not [task for task in launch.team.tasks() if task["state"] == "claimed"]
        again = launch.scaffold("down")
        assert again.returncode == 1
        assert again.stderr.strip().endswith("nothing to stop"), again.stderr
        assert launch.team.hub is not None
        launch.team.hub.stop()
        claims = launch.team.claims()
    assert sorted(task_id for task_id, _ in claims) == sorted(task["id"] for task in made)  # each once
    assert len({worker_id for _, worker_id in claims}) >= 2  # side by side
    for chain in range(4):
        for step in range(3):
            path = launch.team.workspace / f"chains/c{chain}_{step}.txt"
            assert path.read_text() == f"{chain}.{step}\n"


def left_after(text: str, seconds: float = 5.0) -> list[str]:
    """The processes naming `text` still there after `seconds`: a worker's watcher (session-watch.py,
    in a session of its own) ends within a second of its Claude Code process."""
    deadline = time.monotonic() + seconds
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def tmux_of(launch: Launcher) -> str:
    record = json.loads((launch.team.project / ".claude/team/launch.json").read_text())
    from scaffold.team.hosts import Host

    return Host.from_json(record["hosts"][0]).tmux


class Holding:
    """The first session that gets a task holds it (its model "thinks") until `release` is set;
    later sessions work as WorkerModel does. So a test can kill a session mid-task."""

    def __init__(self) -> None:
        self.holding, self.release = threading.Event(), threading.Event()

    def make(self) -> Policy:
        worker = WorkerModel()

        def policy(turn: Turn) -> Step:
            got_task = turn.result is not None and turn.result[0] == "mcp__vps__claim_task"
            if got_task and "lease_token" in turn.result[1] and not self.holding.is_set():  # type: ignore[index]
                self.holding.set()
                assert self.release.wait(60), "the held session was never killed"
            return worker(turn)

        return policy


def test_a_killed_session_is_started_again_and_its_task_done_once(tmp_path: Path, claude_bin: Path) -> None:
    held = Holding()
    with launcher(tmp_path, claude_bin, make=held.make) as launch:
        up = launch.up("--headless", "--workers", "1", "--role", "backend")
        assert up.returncode == 0, up.stderr + up.stdout
        [made] = launch.team.create([file_task("Slow one", "slow.txt", "once")])
        assert held.holding.wait(120), "the task was never claimed"
        assert launch.team.task(made["id"])["state"] == "claimed"
        [view] = launch.hub_team()["slots"]
        os.kill(int(view["pid"]), 9)
        killed = time.monotonic()
        held.release.set()
        while True:
            [view] = launch.hub_team()["slots"]
            if view["restarts"] >= 1 and view["state"] == "running":
                break
            assert time.monotonic() - killed < 30, view
            time.sleep(0.2)
        assert time.monotonic() - killed < 15  # started again within seconds
        while launch.team.task(made["id"])["state"] != "done":
            assert time.monotonic() - killed < 180
            time.sleep(0.5)
        assert launch.team.hub is not None
        launch.scaffold("down")
        launch.team.hub.stop()
        claims = launch.team.claims()
    assert [task_id for task_id, _ in claims].count(
        made["id"]
    ) == 2  # the killed attempt, then the one that did it
    assert (launch.team.workspace / "slow.txt").read_text() == "once\n"


def test_an_interactive_team_in_tmux_registers_every_worker_without_a_keystroke(
    tmp_path: Path, claude_bin: Path
) -> None:
    with launcher(tmp_path, claude_bin, idle_minutes=0.05) as launch:
        home = launch.team.home
        (home / ".claude.json").unlink()  # Claude Code never ran here
        refused = launch.up("--workers", "2")
        assert refused.returncode == 1
        assert "first-run setup is not done" in refused.stderr
        assert not (launch.team.project / ".claude/team/launch.json").exists()
        (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
        refused = launch.up("--workers", "2")
        assert refused.returncode == 1
        lines = refused.stderr.splitlines()
        assert any("does not trust" in line and "--trust" in line for line in lines), refused.stderr
        assert any("ANTHROPIC_API_KEY" in line and "--trust" in line for line in lines), refused.stderr
        assert launch.hub_team()["slots"] == []
        up = launch.up("--workers", "2", "--trust")
        assert up.returncode == 0, up.stderr + up.stdout
        config = json.loads((home / ".claude.json").read_text())
        assert config["projects"][str(launch.team.project)]["hasTrustDialogAccepted"] is True
        assert config["customApiKeyResponses"]["approved"] == ["not-used"]
        tmux = tmux_of(launch)
        rows = {row["slot"]: row for row in launch.status()}
        assert sorted(rows) == ["coordinator", "w1", "w2"]
        assert all(rows[slot]["worker"] is not None for slot in ("w1", "w2"))
        assert {rows["w1"]["role"], rows["w2"]["role"]} <= {
            "backend",
            "frontend",
            "testing",
            "devops",
            "docs",
        }
        for window in ("coordinator", "w1", "w2"):
            screen = capture(tmux, window)
            assert PROMPT in screen, screen  # Claude Code's prompt, no dialog waiting
            assert "trust this folder" not in screen and "Do you want to use this API key" not in screen
        logs = launch.scaffold("logs", "w1")
        assert logs.returncode == 0 and PROMPT in logs.stdout, logs.stderr
        # attach: the real tmux client in a terminal, showing the window; Ctrl-b d leaves it running
        terminal = pexpect.spawn(
            sys.executable,
            ["-m", "scaffold", "team", "attach", "w2"],
            cwd=str(launch.team.project),
            env={**launch.env, "TERM": "xterm-256color"},
            dimensions=(50, 200),
            timeout=30,
        )
        terminal.expect("/worker frontend")
        terminal.send("\x02d")
        terminal.expect("detached")
        terminal.expect(pexpect.EOF)
        terminal.close()
        assert terminal.exitstatus == 0
        assert capture(tmux, "w2")  # still there
        deadline = time.monotonic() + 30
        while not all(view.get("screen_at") for view in launch.hub_team()["slots"]):
            assert time.monotonic() < deadline, "the screens did not reach the hub"
            time.sleep(0.5)
        down = launch.scaffold("down")
        assert down.returncode == 0, down.stderr
        assert subprocess.run(["tmux", "-L", tmux, "has-session"], capture_output=True).returncode != 0
        assert all(worker["status"] == "stopped" for worker in launch.team.workers())
        assert left_after(str(launch.team.project)) == []


def capture(tmux: str, window: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        screen = subprocess.run(
            ["tmux", "-L", tmux, "capture-pane", "-p", "-t", f"{tmux}:{window}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if PROMPT in screen or time.monotonic() > deadline:
            return screen
        time.sleep(0.5)


def test_slots_spread_over_two_hosts_reached_with_ssh(tmp_path: Path, claude_bin: Path) -> None:
    """Two ssh targets on 127.0.0.1, each its own checkout of the project; sshd sets the session
    environment a logged-in machine would have (HOME, PATH with claude, the model's URL)."""
    with launcher(tmp_path, claude_bin) as launch:
        team = launch.team
        second = tmp_path / "second"
        shutil.copytree(team.project, second)  # a checkout of the same project, key file included
        env = {**launch.env, "PATH": f"{claude_bin.parent}:{os.environ['PATH']}"}
        with ssh_server(tmp_path, env) as sshd:
            ssh = ["--identity", str(sshd.identity), "--port", str(sshd.port)]
            ssh += ["--ssh-option", f"UserKnownHostsFile={sshd.known_hosts}"]
            hosts = ["--host", "root@127.0.0.1", "--host", f"root@127.0.0.1:{second}"]
            up = launch.scaffold("up", "--headless", "--workers", "2", "--role", "backend", *hosts, *ssh)
            assert up.returncode == 1
            assert f"does not trust {second} yet" in up.stderr, up.stderr  # -p ignores its permissions
            up = launch.scaffold(
                "up", "--headless", "--workers", "2", "--role", "backend", "--trust", *hosts, *ssh
            )
            assert up.returncode == 0, up.stderr + up.stdout
            rows = {row["slot"]: row for row in launch.status()}
            assert rows["w1"]["host"] == "root@127.0.0.1"
            assert rows["w2"]["host"] == f"root@127.0.0.1:{second}"
            assert all(row["worker"] is not None for row in rows.values())
            down = launch.scaffold("down")
            assert down.returncode == 0, down.stderr
            assert "stopped 2 session(s)" in down.stdout
        assert left_after(str(second)) == []
        assert left_after(str(team.project)) == []


def test_bad_input_gets_one_line_and_starts_nothing(tmp_path: Path, claude_bin: Path) -> None:
    with launcher(tmp_path, claude_bin) as launch:
        for args, message in [
            (["--role", "wizard"], "unknown role 'wizard'; the roles are: "),
            (["--workers", "0"], "--workers must be between 1 and 32, not 0"),
            (["--host=-oProxyCommand=x"], "is not USER@HOST"),
        ]:
            done = launch.up("--headless", *args)
            assert done.returncode == 1, done.stdout
            assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
        missing = launch.scaffold("up", "--headless", "--claude", str(tmp_path / "no-claude"))
        assert missing.returncode == 1
        assert "no-claude` is not installed or not on PATH" in missing.stderr
        assert launch.hub_team()["slots"] == []
        assert not (launch.team.project / ".claude/team/launch.json").exists()
        nothing = launch.scaffold("down")
        assert nothing.returncode == 1 and "nothing to stop" in nothing.stderr
        status = launch.scaffold("status")
        assert status.returncode == 1 and "no team is running" in status.stderr
        up = launch.up("--headless", "--workers", "1")
        assert up.returncode == 0, up.stderr
        twice = launch.up("--headless", "--workers", "1")
        assert twice.returncode == 1 and "already up" in twice.stderr
        assert len(launch.hub_team()["slots"]) == 1
        unknown = launch.scaffold("logs", "w9")
        assert unknown.returncode == 1 and "no slot 'w9'" in unknown.stderr
        log = launch.scaffold("logs", "w1")
        assert log.returncode == 0 and "w1" in log.stdout
    with team_of(tmp_path / "hubless", claude_bin) as team:
        nowhere = f"http://127.0.0.1:{free_port()}"
        settings = team.project / ".claude/settings.json"
        settings.write_text(settings.read_text().replace(team.url, nowhere))
        env = claude_env(team.home, team.url, team.key)
        del env["VPS_API_URL"], env["VPS_API_KEY"]
        done = subprocess.run(
            [sys.executable, "-m", "scaffold", "team", "up", "--headless"],
            cwd=team.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and f"the hub at {nowhere}: " in done.stderr, done.stderr
