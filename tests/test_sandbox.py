"""Commands run through the hub (`POST /v1/exec`) with least privilege: the bubblewrap sandbox.

Each test runs a hub (TestClient as a context manager, so the hub is this process) with its data
directory, its hub.toml and its workspace in a temporary directory, and sends commands with an
agent key. The sandbox is the real bwrap; without it these tests skip, except in CI (CI=true),
where they fail. A control case runs the same escalation with `sandbox = "none"` to show the
tests would see an exposure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scaffold.hub.services.auth import digest, new_key
from scaffold.hub.services.container import Services
from scaffold.hub.store.sqlite import SQLiteStore
from tests.conftest import MakeHub, built_hub, new_keys

WAIT = 10.0  # seconds: the bound of every wait in this file
INSERT_ADMIN = """python3 -c '
import hashlib, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("INSERT INTO keys (name, role, sha256, source, created_at) VALUES (?, ?, ?, ?, ?)",
           ("planted", "admin", hashlib.sha256(sys.argv[2].encode()).hexdigest(), "generated", time.time()))
db.commit()
print("inserted")' {db} {key}"""


pytestmark = pytest.mark.usefixtures("bubblewrap")


@dataclass
class Running:
    client: TestClient
    hub: Services
    workspace: Path
    data_dir: Path
    config: Path
    agent: str
    admin: str

    def run(self, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        response = self.client.post("/v1/exec", json=body, headers={"Authorization": f"Bearer {self.agent}"})
        assert response.status_code == status, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def shell(self, line: str, **extra: Any) -> dict[str, Any]:
        return self.run({"shell": line, **extra})

    def keys_status(self, key: str) -> int:
        return self.client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code


@contextlib.contextmanager
def running(tmp_path: Path, data_dir: Path | None = None, **settings: Any) -> Iterator[Running]:
    """A hub laid out as a server's: data dir (database, initial-admin-key), hub.toml, workspace."""
    data_dir = data_dir or tmp_path / "hub-data"
    data_dir.mkdir(parents=True, mode=0o700)
    config = tmp_path / "etc" / "hub.toml"
    config.parent.mkdir()
    config.write_text('[storage]\ndata_dir = "../hub-data"\n', encoding="utf-8")
    keys = new_keys()  # the admin key is the one the hub generated when it first started
    with contextlib.closing(SQLiteStore.in_dir(data_dir)) as store:
        store.add_key("admin", "admin", digest(keys.admin), "generated", time.time())
    (data_dir / "initial-admin-key").write_text(keys.admin + "\n", encoding="utf-8")
    with (
        built_hub(
            tmp_path, keys, roles=("agent",), data_dir=data_dir, exec_timeout_seconds=WAIT, **settings
        ) as made,
        TestClient(made.app) as client,
    ):
        yield Running(client, made.services, made.workspace, data_dir, config, keys.agent, keys.admin)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Running]:
    with running(tmp_path) as started:
        yield started


def failed(result: dict[str, Any]) -> bool:
    return bool(result["exit_code"] != 0)


# -- the escalations of issue 9 -----------------------------------------------------------------


def test_a_command_cannot_read_the_initial_admin_key(hub: Running) -> None:
    result = hub.shell(f"cat '{hub.data_dir / 'initial-admin-key'}'")
    assert failed(result)
    assert "No such file" in result["stderr"]
    assert hub.admin not in result["stdout"]


def test_a_command_cannot_plant_an_admin_key_in_the_database(hub: Running) -> None:
    planted, _ = new_key()
    result = hub.shell(INSERT_ADMIN.format(db=hub.data_dir / "hub.sqlite3", key=planted))
    assert failed(result)
    assert "unable to open database" in result["stderr"]
    assert hub.keys_status(planted) == 401
    assert [key.name for key in hub.hub.store.list_keys()] == ["admin", "agent-key"]


def test_control_without_a_sandbox_both_escalations_work(tmp_path: Path) -> None:
    """The same commands with sandbox = "none": proof that the tests above could see them."""
    planted, _ = new_key()
    with running(tmp_path, exec_sandbox="none") as hub:
        read = hub.shell(f"cat '{hub.data_dir / 'initial-admin-key'}'")
        assert read["stdout"].strip() == hub.admin
        assert hub.keys_status(read["stdout"].strip()) == 200
        assert (
            hub.shell(INSERT_ADMIN.format(db=hub.data_dir / "hub.sqlite3", key=planted))["stdout"]
            == "inserted\n"
        )
        assert hub.keys_status(planted) == 200
        assert hub.shell(f"cat /proc/{os.getpid()}/environ")["exit_code"] == 0


def test_argv_cannot_pass_options_to_bwrap(hub: Running) -> None:
    key_file = hub.data_dir / "initial-admin-key"
    result = hub.run({"argv": ["--ro-bind", "/", "/host", "cat", f"/host{key_file}"]})
    assert result["exit_code"] == 127 and "--ro-bind: command not found" in result["stderr"]
    assert hub.admin not in result["stdout"]


def test_the_callers_environment_reaches_the_command_not_bwrap(hub: Running) -> None:
    """bwrap runs outside the sandbox: an LD_PRELOAD it obeyed would load a library of the
    caller's choosing there. The loader complains once per program that gets the variable."""
    result = hub.run({"argv": ["true"], "env": {"LD_PRELOAD": "/nonexistent/preload.so"}})
    assert result["stderr"].count("cannot be preloaded") == 1  # the command's, not bwrap's too


# -- what a command can see ---------------------------------------------------------------------


def test_a_command_sees_nothing_of_the_hub(hub: Running, tmp_path: Path) -> None:
    (tmp_path / "beside-the-workspace.txt").write_text("secret\n", encoding="utf-8")
    home = Path(os.environ.get("HOME") or "/root")
    for line in (
        "cat ../beside-the-workspace.txt",
        f"cat /proc/{os.getpid()}/environ",
        f"cat '{hub.data_dir / 'hub.sqlite3'}'",
        f"ls '{hub.data_dir}'",
        f"cat '{hub.config}'",
        f"ls '{hub.config.parent}'",
        f"ls -a '{home}'",
        "cat /etc/shadow",
        "ls /root /home /srv /opt /var/lib /run /work",
    ):
        result = hub.shell(line)
        assert failed(result), f"{line!r} worked: {result['stdout'][:300]!r}"
        assert "No such file" in result["stderr"], (line, result["stderr"])
    assert hub.shell("ls -a ..")["stdout"].split() == [".", "..", "workspace"]


def test_its_own_proc_shows_only_its_own_processes(hub: Running) -> None:
    result = hub.shell("ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '")
    count, init = result["stdout"].splitlines()
    assert int(count) <= 5  # bwrap's pid 1, sh, ls, grep, cat: never the hub or the host
    assert Path(init.split()[0]).name == "bwrap"


def test_the_data_dir_inside_the_tree_is_masked(tmp_path: Path) -> None:
    with running(tmp_path, data_dir=tmp_path / "workspace" / "hub-data") as hub:
        (hub.workspace / "code.py").write_text("print('mine')\n", encoding="utf-8")
        assert hub.shell("cat code.py")["stdout"] == "print('mine')\n"
        assert hub.shell("ls -A hub-data")["stdout"] == ""
        assert failed(hub.shell("cat hub-data/initial-admin-key"))
        assert failed(hub.shell("touch hub-data/planted"))
        assert not (hub.data_dir / "planted").exists()


def test_tools_run_with_the_default_limits(hub: Running) -> None:
    assert hub.run({"argv": ["python3", "-c", "print(1)"]})["stdout"] == "1\n"
    assert hub.run({"argv": ["git", "status", "--short"]})["exit_code"] == 0
    if shutil.which("node"):
        node = hub.run({"argv": ["node", "-e", "new WebAssembly.Memory({initial: 1}); console.log(2)"]})
        assert node["stdout"] == "2\n", node["stderr"]
    assert hub.run({"argv": ["id", "-u"]})["stdout"] != "0\n"  # never root, even for a hub run as root


# -- signals ------------------------------------------------------------------------------------


def test_a_command_cannot_signal_the_hub_or_another_command(hub: Running) -> None:
    answers: list[dict[str, Any]] = []
    other = threading.Thread(target=lambda: answers.append(hub.shell("sleep 3.21; echo survived")))
    other.start()
    try:
        deadline = time.monotonic() + WAIT
        while (pid := host_pid(b"sleep\x003.21\x00")) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid is not None
        for line in (f"kill -0 {os.getpid()}", f"kill -TERM {pid}", f"kill -KILL {pid}"):
            result = hub.shell(line)
            assert failed(result) and "No such process" in result["stderr"], (line, result)
        hub.shell("kill -KILL -1")  # everything it may signal: only its own sandbox
        assert hub.client.get("/healthz").status_code == 200
    finally:
        other.join(WAIT)
    assert answers and (answers[0]["exit_code"], answers[0]["stdout"]) == (0, "survived\n")


def host_pid(cmdline: bytes) -> int | None:
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == cmdline:
                return int(entry.name)
    return None


# -- limits -------------------------------------------------------------------------------------

FORK = """python3 -c '
import os, time
started = failed = 0
for _ in range({tries}):
    try:
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        started += 1
    except OSError:
        failed += 1
print(started, failed)'"""


def test_a_fork_attempt_hits_the_process_limit_and_the_hub_stays_healthy(tmp_path: Path) -> None:
    limit = 20
    with running(tmp_path, exec_max_processes=limit) as hub:
        began = time.monotonic()
        result = hub.shell(FORK.format(tries=2 * limit), timeout_seconds=WAIT)
        started, refused = map(int, result["stdout"].split())
        assert started < limit and refused >= limit, result
        assert time.monotonic() - began < WAIT
        assert hub.client.get("/healthz").status_code == 200
        assert hub.shell("echo fine")["stdout"] == "fine\n"
    with running(tmp_path / "control", exec_max_processes=4 * limit) as hub:
        assert hub.shell(FORK.format(tries=2 * limit))["stdout"] == f"{2 * limit} 0\n"


def test_a_command_over_the_memory_limit_fails(tmp_path: Path) -> None:
    grab = "python3 -c 'bytearray(200 * 1024 * 1024); print(\"got it\")'"
    with running(tmp_path, exec_max_memory_mb=64) as hub:
        result = hub.shell(grab)
        assert failed(result) and "MemoryError" in result["stderr"]
    with running(tmp_path / "control") as hub:
        assert hub.shell(grab)["stdout"] == "got it\n"


def test_a_command_over_the_cpu_limit_is_ended(tmp_path: Path) -> None:
    with running(tmp_path, exec_cpu_seconds=1) as hub:
        result = hub.run({"argv": ["python3", "-c", "while True: pass"]})
    assert (result["exit_code"], result["timed_out"]) == (-24, False)  # SIGXCPU
    assert result["duration_seconds"] < WAIT / 2


def test_commands_beyond_max_concurrent_are_refused_with_429(tmp_path: Path) -> None:
    with running(tmp_path, exec_max_concurrent=1) as hub:
        answers: list[dict[str, Any]] = []
        slow = threading.Thread(target=lambda: answers.append(hub.shell("sleep 1")))
        slow.start()
        try:
            deadline = time.monotonic() + WAIT
            while not hub.hub.executor.running and time.monotonic() < deadline:
                time.sleep(0.01)
            response = hub.client.post(
                "/v1/exec", json={"argv": ["true"]}, headers={"Authorization": f"Bearer {hub.agent}"}
            )
        finally:
            slow.join(WAIT)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert "max_concurrent" in response.json()["error"]["message"]
        assert answers and answers[0]["exit_code"] == 0
        assert hub.shell("echo again")["stdout"] == "again\n"


# -- writing ------------------------------------------------------------------------------------


def test_writes_reach_only_the_tree_and_a_private_tmp(hub: Running, tmp_path: Path) -> None:
    name = f"sandbox-test-{os.getpid()}-{time.monotonic_ns()}"
    host_tmp = Path("/tmp") / name  # the host's /tmp, which commands must not see
    host_tmp.write_text("host\n", encoding="utf-8")
    try:
        for target in (Path("/usr") / name, Path("/etc") / name, Path("/work") / name, Path("/") / name):
            result = hub.shell(f"echo x > '{target}'")
            assert failed(result), target
            assert not target.exists()
        hub.shell(f"mkdir -p '{hub.data_dir}' && echo x > '{hub.data_dir / name}'")
        assert not (hub.data_dir / name).exists()  # at most in its own /tmp, never the hub's
        assert hub.shell(f"cat '{host_tmp}'")["stderr"].endswith("No such file or directory\n")
        assert hub.shell(f"echo in-tmp > /tmp/{name}-2 && cat /tmp/{name}-2")["stdout"] == "in-tmp\n"
        assert not Path(f"/tmp/{name}-2").exists()
        assert hub.shell("mkdir -p sub && echo mine > sub/file.txt")["exit_code"] == 0
        assert (hub.workspace / "sub" / "file.txt").read_text(encoding="utf-8") == "mine\n"
    finally:
        host_tmp.unlink()


# -- network ------------------------------------------------------------------------------------


@pytest.mark.parametrize("network", [False, True])
def test_network_is_a_setting(tmp_path: Path, network: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, running(tmp_path, exec_network=network) as hub:
        port = server.getsockname()[1]
        connect = (
            f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); print('connected')"
        )
        result = hub.run({"argv": ["python3", "-c", connect]})
    if network:
        assert result["stdout"] == "connected\n", result["stderr"]
    else:
        assert failed(result) and "connected" not in result["stdout"]


# -- no sandbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bwrap", "says"), [("/nonexistent/bwrap", "is not installed"), ("/bin/false", "does not work here")]
)
def test_without_a_working_sandbox_commands_are_refused_in_one_line(
    tmp_path: Path, make_hub: MakeHub, caplog: pytest.LogCaptureFixture, bwrap: str, says: str
) -> None:
    marker = tmp_path / "ran"
    made = make_hub(roles=("agent",), data_dir=tmp_path)
    made.services.executor.sandbox.bwrap = bwrap
    with caplog.at_level(logging.INFO, "scaffold.hub"), TestClient(made.app) as client:
        agent = {"Authorization": f"Bearer {made.keys.agent}"}
        response = client.post("/v1/exec", json={"shell": f"touch '{marker}'"}, headers=agent)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "sandbox_unavailable"
    assert says in error["message"] and "\n" not in error["message"]
    assert "apt-get install bubblewrap" in error["message"] and 'sandbox = "none"' in error["message"]
    assert not marker.exists()
    assert [r.message for r in caplog.records].count(error["message"]) == 1  # probed once, at start


def test_the_start_logs_how_commands_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "scaffold.hub"), running(tmp_path):
        pass
    assert any("commands run in a bubblewrap sandbox" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, "scaffold.hub"), running(tmp_path / "none", exec_sandbox="none"):
        pass
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert any('sandbox = "none"' in message for message in warnings)
