"""The hub as a real process for tests: a free port on 127.0.0.1, wait for /healthz, stop it.

    with running_hub(write_config(tmp_path, keys=[("owner", "admin", key)])) as hub:
        with hub.client(key) as client:
            client.get("/v1/status")

Output goes to files (never to a pipe nobody reads), so stdout is not a terminal, as under systemd.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
DB_FILE = "hub.sqlite3"


def scaffold(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `scaffold` command to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=cwd,
    )


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_config(
    directory: Path,
    *,
    keys: Sequence[tuple[str, str, str]] = (),
    queue: Mapping[str, float] | None = None,
    data_dir: str = "hub-data",
    name: str = "hub.toml",
) -> Path:
    """A hub.toml in `directory`; `keys` are (name, role, key) and only the key's hash is written."""
    lines = ["[storage]", f"data_dir = {json.dumps(data_dir)}", "[workspace]", 'path = "workspace"']
    if queue:
        lines.append("[queue]")
        lines += [f"{setting} = {value}" for setting, value in queue.items()]
    for key_name, role, key in keys:
        lines += [
            "[[keys]]",
            f"name = {json.dumps(key_name)}",
            f"role = {json.dumps(role)}",
            f"sha256 = {json.dumps(sha256(key))}",
        ]
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class HubProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_dir: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def stdout(self) -> str:
        return (self.log_dir / "stdout").read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return (self.log_dir / "stderr").read_text(encoding="utf-8", errors="replace")

    def client(self, key: str | None = None, timeout: float = 10.0) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx2.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL: the hub gets no chance to finish anything."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(STOP_TIMEOUT)


def start_hub(
    config: Path | None,
    *,
    log_dir: Path,
    port: int | None = None,
    extra: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
) -> HubProcess:
    """Start `scaffold hub serve` and return once /healthz answers (or fail with its output)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [sys.executable, "-m", "scaffold", "hub", "serve", "--port", str(port), *extra]
    if config is not None:
        args += ["--config", str(config)]
    with (log_dir / "stdout").open("wb") as out, (log_dir / "stderr").open("wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=log_dir)
    hub = HubProcess(proc, port, log_dir)
    try:
        wait_healthy(hub, timeout)
    except BaseException:
        hub.stop()
        raise
    return hub


def wait_healthy(hub: HubProcess, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    with httpx2.Client(base_url=hub.url, timeout=2.0) as client:
        while True:
            if hub.proc.poll() is not None:
                raise AssertionError(
                    f"the hub exited with {hub.proc.returncode} before it answered:\n{hub.stderr}"
                )
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub did not answer /healthz within {timeout} s:\n{hub.stderr}")
            time.sleep(0.05)


@contextmanager
def running_hub(
    config: Path | None, *, log_dir: Path | None = None, port: int | None = None, extra: Sequence[str] = ()
) -> Iterator[HubProcess]:
    """A started hub, stopped (SIGTERM, then SIGKILL) however the block ends."""
    if log_dir is None:
        assert config is not None, "give log_dir when there is no config"
        log_dir = config.parent / f"hub-log-{time.monotonic_ns()}"
    hub = start_hub(config, log_dir=log_dir, port=port, extra=extra)
    try:
        yield hub
    finally:
        hub.stop()


def open_db_readonly(data_dir: Path) -> sqlite3.Connection:
    """The hub's database, read-only, for checking what it wrote (stop the hub first)."""
    db = sqlite3.connect(f"file:{data_dir / DB_FILE}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db
