"""POST /v1/exec: commands in the workspace, with a timeout, an output cap and a clean environment.

Each test runs a hub (TestClient as a context manager) on a workspace in a temporary directory;
the commands are real processes. Process checks read /proc: where PID 1 does not reap orphans
(some containers), a killed orphan stays a zombie, which counts as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Event
from scaffold.hub.services.container import Services
from scaffold.hub.services.exec import Command, Executor, resolve_cwd
from tests.conftest import built_hub

pytestmark = pytest.mark.usefixtures("bubblewrap")  # every command runs in the sandbox

MAX_OUTPUT = 1000
TIMEOUT = 10.0  # the hub's [exec] timeout_seconds in these tests
WAIT = 10.0  # seconds: the bound of every wait in this file


@dataclass
class Running:
    client: TestClient
    hub: Services
    workspace: Path
    agent: str
    viewer: str

    def post(self, path: str, body: Any, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key or self.agent}"}
        return self.client.post(path, json=body, headers=headers)

    def run(self, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        response = self.post("/v1/exec", body)
        assert response.status_code == status, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def refused(self, body: dict[str, Any], status: int, code: str, says: str = "") -> str:
        before = self.hub.store.last_event_id()
        error = self.run(body, status)["error"]
        assert error["code"] == code, error
        assert says in error["message"], error
        assert self.hub.store.last_event_id() == before, "a refused command was recorded as run"
        return str(error["message"])

    def events(self, kind: str) -> list[Event]:
        return [event for event in self.hub.store.events_after(0, 10_000) if event.type == kind]


@contextlib.contextmanager
def running(tmp_path: Path, **settings: Any) -> Iterator[Running]:
    defaults: dict[str, Any] = {"exec_timeout_seconds": TIMEOUT, "exec_max_output_bytes": MAX_OUTPUT}
    with (
        built_hub(tmp_path, roles=("agent", "viewer"), **(defaults | settings)) as made,
        TestClient(made.app) as client,
    ):
        yield Running(client, made.services, made.workspace, made.keys.agent, made.keys.viewer)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Running]:
    with running(tmp_path) as started:
        started.hub.executor.kill_grace = 0.5
        yield started


def gone(seconds: str) -> bool:
    """Whether no `sleep SECONDS` runs any more (zombies count as gone). The tests look for the
    process by its arguments: in the sandbox, the pid a command sees is one of its namespace."""
    wanted = f"sleep\0{seconds}\0".encode()
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "cmdline").read_bytes() == wanted:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    return False
        except (OSError, IndexError):  # not a process, or it ended while we looked
            continue
    return True


def wait_gone(seconds: str) -> bool:
    deadline = time.monotonic() + WAIT
    while not gone(seconds):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def executor(tmp_path: Path) -> Executor:
    """An executor with this hub's default sandbox; `await executor.start()` before running."""
    settings = HubSettings(
        workspace=tmp_path, data_dir=tmp_path / "hub-data", exec_max_output_bytes=MAX_OUTPUT
    )
    started = Executor.configured(settings)
    started.kill_grace = 0.5
    return started


# -- running ------------------------------------------------------------------------------------


def test_argv_runs_without_a_shell(hub: Running) -> None:
    result = hub.run({"argv": ["printf", "%s|%s", "two words", "$HOME"]})
    assert result["stdout"] == "two words|$HOME"
    assert (result["exit_code"], result["stderr"], result["truncated"], result["timed_out"]) == (
        0,
        "",
        False,
        False,
    )
    assert 0 <= result["duration_seconds"] < WAIT


def test_a_shell_string_runs_in_sh(hub: Running) -> None:
    result = hub.run({"shell": "echo $((6 * 7)); echo oops >&2; exit 3"})
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (3, "42\n", "oops\n")


def test_exit_codes_are_reported(hub: Running) -> None:
    assert hub.run({"argv": ["true"]})["exit_code"] == 0
    assert hub.run({"argv": ["false"]})["exit_code"] == 1
    assert hub.run({"shell": "exit 255"})["exit_code"] == 255
    assert hub.run({"shell": "kill -USR1 $$"})["exit_code"] == -10  # ended by signal 10


def test_a_program_that_does_not_exist_is_127_and_one_that_cannot_run_is_126(hub: Running) -> None:
    missing = hub.run({"argv": ["no-such-program-for-sure"]})
    assert missing["exit_code"] == 127
    assert "no-such-program-for-sure: command not found" in missing["stderr"]
    (hub.workspace / "data.txt").write_text("not a program\n", encoding="utf-8")
    assert hub.run({"argv": ["./data.txt"]})["exit_code"] == 126
    assert hub.run({"shell": "no-such-program-for-sure"})["exit_code"] == 127


def test_the_command_runs_in_the_workspace_and_stdin_is_empty(hub: Running) -> None:
    assert hub.run({"argv": ["pwd"]})["stdout"] == f"{hub.workspace.resolve()}\n"
    assert hub.run({"argv": ["cat"]})["stdout"] == ""  # /dev/null: nothing to wait for
    (hub.workspace / "src" / "pkg").mkdir(parents=True)
    assert hub.run({"argv": ["pwd"], "cwd": "src/pkg"})["stdout"] == f"{hub.workspace.resolve()}/src/pkg\n"
    assert hub.run({"argv": ["pwd"], "cwd": "./src/"})["stdout"] == f"{hub.workspace.resolve()}/src\n"


def test_exactly_one_of_argv_and_shell(hub: Running) -> None:
    hub.refused({"argv": ["true"], "shell": "true"}, 422, "invalid_request")
    hub.refused({"cwd": "."}, 422, "invalid_request")
    hub.refused({"argv": []}, 422, "invalid_request")
    hub.refused({"argv": [""]}, 422, "invalid_request", "argv[0]")
    hub.refused({"shell": ""}, 422, "invalid_request")
    hub.refused({"argv": ["echo", "a\x00b"]}, 422, "invalid_request", "NUL")
    hub.refused({"shell": "true", "stdin": "x"}, 422, "invalid_request")


# -- where it runs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cwd",
    [
        "/",
        "/etc",
        "/tmp",
        "..",
        "../",
        "../workspace",
        "src/../..",
        "src/../../etc",
        "./..",
        "a\x00b",
        "//etc",
        "link-out",
        "link-out/sub",
        "link-up",
        "src/link-root",
        "loop",
    ],
)
def test_a_cwd_outside_the_workspace_is_refused(hub: Running, cwd: str) -> None:
    (hub.workspace / "src").mkdir()
    outside = hub.workspace.parent / "outside"
    (outside / "sub").mkdir(parents=True)
    (hub.workspace / "link-out").symlink_to(outside)
    (hub.workspace / "link-up").symlink_to("..")
    (hub.workspace / "src" / "link-root").symlink_to("/")
    (hub.workspace / "loop").symlink_to("loop")
    marker = outside / "ran"
    hub.refused({"shell": f"touch '{marker}'", "cwd": cwd}, 403, "path_refused")
    assert not marker.exists()


@pytest.mark.parametrize("cwd", [".git", ".git/hooks", "sub/.GIT", "to-git", "to-git/hooks"])
def test_a_cwd_in_git_history_is_refused_as_file_paths_are(hub: Running, cwd: str) -> None:
    # One confinement for files and commands (scaffold.hub.core.paths): what the file API may not
    # touch, a command may not start in; the hub's own repository is the workspace's .git.
    (hub.workspace / ".git" / "hooks").mkdir(parents=True, exist_ok=True)
    (hub.workspace / "sub" / ".GIT").mkdir(parents=True)
    (hub.workspace / "to-git").symlink_to(".git")
    hub.refused({"argv": ["true"], "cwd": cwd}, 403, "path_refused", "git")
    (hub.workspace / "fine").mkdir()
    assert hub.run({"argv": ["pwd"], "cwd": "fine"})["exit_code"] == 0  # the control


def test_a_cwd_that_is_missing_or_not_a_directory(hub: Running) -> None:
    (hub.workspace / "file.txt").write_text("x\n", encoding="utf-8")
    hub.refused({"argv": ["true"], "cwd": "nope"}, 404, "not_found", "does not exist")
    hub.refused({"argv": ["true"], "cwd": "file.txt"}, 422, "invalid_request", "not a directory")


def test_a_symlink_that_stays_inside_the_workspace_is_a_fine_cwd(hub: Running) -> None:
    (hub.workspace / "real").mkdir()
    (hub.workspace / "alias").symlink_to("real")
    assert hub.run({"argv": ["pwd", "-P"], "cwd": "alias"})["stdout"] == f"{hub.workspace.resolve()}/real\n"


def test_resolve_cwd_keeps_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert resolve_cwd(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    assert resolve_cwd(tmp_path, ".") == tmp_path.resolve()
    assert resolve_cwd(tmp_path, "a//b/.") == (tmp_path / "a" / "b").resolve()


# -- timeouts and process groups ----------------------------------------------------------------


def test_a_timeout_kills_the_whole_process_group(hub: Running) -> None:
    started = time.monotonic()
    result = hub.run({"shell": "sleep 30.1 & echo $!; wait", "timeout_seconds": 0.5})
    elapsed = time.monotonic() - started
    assert result["timed_out"] is True
    assert result["exit_code"] == -15  # SIGTERM ended the shell
    assert wait_gone("30.1"), "the background child outlived the command"
    assert elapsed < 0.5 + 2 * hub.hub.executor.kill_grace + 3.0


def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(hub: Running) -> None:
    started = time.monotonic()
    result = hub.run({"shell": "trap '' TERM; sleep 30.2 & echo $!; wait; wait", "timeout_seconds": 0.3})
    assert result["timed_out"] is True
    assert result["exit_code"] == -9
    assert wait_gone("30.2")
    assert time.monotonic() - started < 0.3 + 2 * hub.hub.executor.kill_grace + 3.0


def test_what_a_command_leaves_running_in_its_group_is_ended_with_it(hub: Running) -> None:
    started = time.monotonic()
    # The child holds stdout open: without ending it, reading the output would wait 30 s.
    holding = hub.run({"shell": "sleep 30.3 & echo $!"})
    detached = hub.run({"shell": "sleep 30.4 >/dev/null 2>&1 & echo $!"})
    assert (holding["timed_out"], holding["exit_code"]) == (False, 0)
    assert (detached["timed_out"], detached["exit_code"]) == (False, 0)
    assert wait_gone("30.3")
    assert wait_gone("30.4")
    assert time.monotonic() - started < 4 * hub.hub.executor.kill_grace + 3.0


def test_a_timeout_above_the_hubs_limit_is_refused(hub: Running) -> None:
    hub.refused({"argv": ["true"], "timeout_seconds": TIMEOUT + 1}, 422, "invalid_request", "at most 10")
    hub.refused({"argv": ["true"], "timeout_seconds": 0}, 422, "invalid_request")
    assert hub.run({"argv": ["true"], "timeout_seconds": TIMEOUT})["exit_code"] == 0


def test_the_hub_answers_other_requests_while_a_command_runs(hub: Running) -> None:
    answers: list[dict[str, Any]] = []
    slow = threading.Thread(target=lambda: answers.append(hub.run({"argv": ["sleep", "1"]})))
    slow.start()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert hub.client.get("/healthz").status_code == 200
        assert time.monotonic() - started < 0.5
    finally:
        slow.join(WAIT)
    assert answers and answers[0]["exit_code"] == 0


@pytest.mark.parametrize(("shell", "code"), [("sleep 30", -15), ("trap '' TERM; sleep 30 & wait; wait", -9)])
def test_stopping_the_hub_ends_running_commands(tmp_path: Path, shell: str, code: int) -> None:
    async def scenario() -> tuple[int, bool, float]:
        runner = executor(tmp_path)
        await runner.start()
        command = Command(argv=None, shell=shell, cwd=tmp_path, timeout=WAIT)
        run = asyncio.create_task(runner.run(command))
        for _ in range(200):
            if runner.running:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the shell has set its trap
        started = time.monotonic()
        runner.shutdown()
        outcome = await asyncio.wait_for(run, WAIT)
        return outcome.exit_code, outcome.timed_out, time.monotonic() - started

    exit_code, timed_out, elapsed = asyncio.run(scenario())
    assert (exit_code, timed_out) == (code, False)
    assert elapsed < 0.5 + 2.0


def test_the_same_rules_hold_on_uvloop_which_the_served_hub_uses(tmp_path: Path) -> None:
    """TestClient runs the app on asyncio's loop; `scaffold hub serve` runs it on uvloop."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[tuple[int, bool, bool, str]]:
        runner = executor(tmp_path)
        await runner.start()
        results = []
        for shell, timeout in (
            ("sleep 30.5 & echo 30.5", WAIT),
            ("sleep 30.6 & echo 30.6; wait", 0.3),
            ("trap '' TERM; sleep 30.7 & echo 30.7; wait; wait", 0.3),
            ("head -c 3000000 /dev/zero; echo done >&2", WAIT),
        ):
            outcome = await runner.run(Command(argv=None, shell=shell, cwd=tmp_path, timeout=timeout))
            results.append((outcome.exit_code, outcome.timed_out, outcome.truncated, outcome.stdout))
        return results

    started = time.monotonic()
    left, timed, stubborn, flood = uvloop.run(scenario())
    assert left[:3] == (0, False, False)
    assert timed[:3] == (-15, True, False)
    assert stubborn[:3] == (-9, True, False)
    assert flood[:3] == (0, False, True)
    assert all(wait_gone(result[3].strip()) for result in (left, timed, stubborn))
    assert time.monotonic() - started < 6.0


# -- output -------------------------------------------------------------------------------------


def test_output_beyond_the_cap_is_cut_and_flagged(hub: Running) -> None:
    stdout = f"head -c {MAX_OUTPUT * 5} /dev/zero | tr '\\0' a"
    result = hub.run({"shell": f"{stdout}; head -c {MAX_OUTPUT + 1} /dev/zero | tr '\\0' b >&2"})
    assert result["stdout"] == "a" * MAX_OUTPUT
    assert result["stderr"] == "b" * MAX_OUTPUT
    assert result["truncated"] is True
    exact = hub.run({"shell": f"head -c {MAX_OUTPUT} /dev/zero | tr '\\0' c"})
    assert (exact["stdout"], exact["truncated"]) == ("c" * MAX_OUTPUT, False)


def test_a_flood_of_output_does_not_block_the_command(hub: Running) -> None:
    result = hub.run({"shell": "head -c 20000000 /dev/zero; echo done >&2"})
    assert (result["exit_code"], result["stderr"], result["truncated"]) == (0, "done\n", True)
    assert len(result["stdout"]) == MAX_OUTPUT


def test_output_that_is_not_utf8_is_replaced_not_refused(hub: Running) -> None:
    result = hub.run({"shell": "printf 'caf\\303\\251 \\377 end'"})
    assert result["stdout"] == "caf\u00e9 \ufffd end"


# -- environment --------------------------------------------------------------------------------


def test_the_environment_is_minimal_plus_the_extras(hub: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", "hunter2-not-for-commands")
    monkeypatch.setenv("VPS_API_KEY", "the-hubs-own-key")
    result = hub.run({"argv": ["env"], "env": {"GREETING": "hello there", "_X1": ""}})
    seen = dict(line.split("=", 1) for line in result["stdout"].splitlines())
    # HOME is the sandbox's private /tmp (the hub's home is not visible there); bubblewrap sets PWD
    wanted = {
        "PATH": os.environ["PATH"],
        "HOME": "/tmp",
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "PWD": str(hub.workspace.resolve()),
        "PYTHONDONTWRITEBYTECODE": "1",  # no bytecode caches left in the tree
    }
    assert seen == {**wanted, "GREETING": "hello there", "_X1": ""}
    assert "hunter2" not in result["stdout"] + result["stderr"]
    shell = hub.run({"shell": 'echo "[$SECRET][$GREETING]"', "env": {"GREETING": "hi"}})
    assert shell["stdout"] == "[][hi]\n"


@pytest.mark.parametrize("name", ["lower", "A-B", "1ABC", "A B", "", "ÄB"])
def test_environment_names_must_be_upper_case_identifiers(hub: Running, name: str) -> None:
    hub.refused({"argv": ["true"], "env": {name: "x"}}, 422, "invalid_request")


def test_environment_values_must_not_hold_nul(hub: Running) -> None:
    hub.refused({"argv": ["true"], "env": {"A": "x\x00y"}}, 422, "invalid_request", "NUL")


# -- access, switch, events ---------------------------------------------------------------------


def test_disabled_exec_is_403_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with running(tmp_path, exec_enabled=False) as hub:
        message = hub.refused({"shell": f"touch '{marker}'"}, 403, "disabled", "enabled = false")
    assert "switched off" in message
    assert not marker.exists()


def test_a_viewer_may_not_run_commands(hub: Running) -> None:
    response = hub.post("/v1/exec", {"argv": ["true"]}, key=hub.viewer)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_every_command_run_is_an_event(hub: Running) -> None:
    hub.run({"argv": ["sh", "-c", "exit 4"]})
    (hub.workspace / "sub").mkdir()
    hub.run({"shell": "echo " + "y" * 600, "cwd": "sub"})
    hub.run({"shell": "sleep 5", "timeout_seconds": 0.2})
    first, second, third = hub.events("exec.ran")
    assert first.actor == "agent-key"
    assert first.data == {
        "argv": "sh -c 'exit 4'",
        "cwd": ".",
        "exit_code": 4,
        "timed_out": False,
        "duration_seconds": first.data["duration_seconds"],
    }
    assert (first.task_id, first.worker_id) == (None, None)
    assert 0 <= first.data["duration_seconds"] < WAIT
    assert second.data["shell"] == ("echo " + "y" * 600)[:500]
    assert second.data["cwd"] == "sub"
    assert (third.data["timed_out"], third.data["exit_code"]) == (True, -15)


# -- leases -------------------------------------------------------------------------------------


def claim(hub: Running, session: str) -> dict[str, Any]:
    worker = hub.post("/v1/workers", {"session_id": session, "role": "backend"}).json()
    hub.post("/v1/tasks", {"title": f"task of {session}", "instructions": "do it"})
    task: dict[str, Any] = hub.post("/v1/tasks/claim", {"worker_id": worker["id"]}).json()
    return task


def test_a_command_given_the_lease_keeps_the_task_claimed(tmp_path: Path) -> None:
    with running(tmp_path, lease_seconds=0.6, reap_interval_seconds=0.05) as hub:
        kept, lost = claim(hub, "kept"), claim(hub, "lost")
        lease = {"task_id": kept["id"], "lease_token": kept["lease_token"]}
        result = hub.run({"argv": ["sleep", "1.5"], **lease})
        assert result["exit_code"] == 0
        now = hub.hub.store.get_task(kept["id"])
        assert (now.state, now.lease_token, now.attempts) == ("claimed", kept["lease_token"], 0)
        assert hub.hub.store.get_task(lost["id"]).state == "ready"  # no lease passed: reaped meanwhile
        assert hub.events("exec.ran")[0].task_id == kept["id"]


def test_a_stale_lease_is_409_before_anything_runs(hub: Running, tmp_path: Path) -> None:
    task = claim(hub, "stale")
    marker = tmp_path / "ran"
    command = {"shell": f"touch '{marker}'", "task_id": task["id"]}
    hub.refused({**command, "lease_token": "not-the-token"}, 409, "lease_conflict")
    hub.refused({**command, "lease_token": "t\u00f6ken"}, 409, "lease_conflict")
    hub.refused({**command, "task_id": 424242, "lease_token": "x"}, 404, "not_found")
    hub.refused(command, 422, "invalid_request", "together")
    assert not marker.exists()
