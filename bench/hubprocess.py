"""A hub (or the minimal endpoint) in a subprocess, and load jobs run against it.

`Hub` starts `python -m scaffold hub serve --config hub.toml --port P` on a fresh data directory
with one admin key (or bench/minimal_hub.py), waits for /healthz, and reads its CPU time and
memory from /proc, and how long its event loop waited for a core. `load` runs one
bench/loadclient.py job in its own process and keeps the ids of the claimed tasks in the hub's
ledger; `cross_check` holds that ledger against the hub's database.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadclient import Job, Result
from rawclaim import task_text

import scaffold.hub.store.sqlite as sqlite_store

HERE = Path(__file__).resolve().parent
CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK"))
BATCH = 1000


class BenchError(Exception):
    """The benchmark itself could not run (a hub or a load client failed)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Hub:
    """`python -m scaffold hub serve` on a fresh data directory, with one admin key.

    With `minimal_db`, bench/minimal_hub.py on that database instead: the framework's ceiling.
    `extra_config` is more hub.toml text, sections other than [server], [storage] and [queue]
    (e.g. `[workspace]` with its `path`).
    """

    def __init__(
        self, name: str, work: Path, key: str, minimal_db: Path | None = None, extra_config: str = ""
    ) -> None:
        self.name = name
        self.dir = work / name
        self.dir.mkdir()
        self.key = key
        self.port = free_port()
        config = self.dir / "hub.toml"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n\n[storage]\ndata_dir = "data"\n\n'
            # leases outlive the run: a reaped and re-claimed task would look like a duplicate
            "[queue]\nlease_seconds = 86400\n\n"
            f"{extra_config}\n"
            f'[[keys]]\nname = "bench"\nrole = "admin"\n'
            f'sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n',
            encoding="utf-8",
        )
        self.db_path = minimal_db or self.dir / "data" / sqlite_store.DB_FILE
        self.claimed: list[int] = []
        self.workers: list[int] = list(range(1, 33)) if minimal_db else []
        self._log = (self.dir / "hub.log").open("wb")
        argv = [
            sys.executable,
            "-m",
            "scaffold",
            "hub",
            "serve",
            "--config",
            str(config),
            "--port",
            str(self.port),
        ]
        if minimal_db is not None:
            digest = hashlib.sha256(key.encode()).hexdigest()
            argv = [
                sys.executable,
                str(HERE / "minimal_hub.py"),
                "--db",
                str(minimal_db),
                "--port",
                str(self.port),
                "--key-sha256",
                digest,
            ]
        self.proc = subprocess.Popen(
            argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_until_up(30.0)

    def _wait_until_up(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"hub {self.name} exited: {self.log_tail()}")
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"hub {self.name} did not answer /healthz within {seconds} s")

    def log_tail(self) -> str:
        self._log.flush()
        return (self.dir / "hub.log").read_text(errors="replace")[-2000:]

    def call(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            headers = {"Authorization": f"Bearer {self.key}"}
            body = None
            if payload is not None:
                body = json.dumps(payload).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def register_workers(self, count: int) -> None:
        for number in range(count):
            status, body = self.call(
                "POST", "/v1/workers", {"session_id": f"bench-{number}", "role": "bench"}
            )
            if status != 201:
                raise BenchError(f"register worker: HTTP {status} {body}")
            self.workers.append(int(body["id"]))

    def create_tasks(self, count: int, first: int) -> None:
        """`count` tasks through the API, in batches of 1000 (each with an idempotency key)."""
        for start in range(first, first + count, BATCH):
            stop = min(start + BATCH, first + count)
            tasks = [
                dict(zip(("title", "instructions"), task_text(n), strict=True)) for n in range(start, stop)
            ]
            payload = {"tasks": tasks, "idempotency_key": f"{self.name}-{start}"}
            status, body = self.call("POST", "/v1/tasks", payload)
            if status != 201 or len(body["tasks"]) != stop - start:
                raise BenchError(f"create tasks on hub {self.name}: HTTP {status}")
        self.settle()

    def settle(self) -> None:
        """Checkpoint the hub's WAL now, from here, after a burst of writes.

        Otherwise the hub's checkpoint thread copies tens of MB into the database during the
        next timed run, and the run measures that copy (a 100k-task queue read ~0.65 of a small
        one that way); a hub idle for a moment would have done it already."""
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()

    def ready_tasks(self) -> int:
        """Tasks in state `ready`, read from the hub's database file (WAL: the hub goes on)."""
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            count: int = db.execute("SELECT count(*) FROM tasks WHERE state = 'ready'").fetchone()[0]
        finally:
            db.close()
        return count

    def waited_seconds(self) -> float:
        """Seconds its main thread (the event loop) was ready to run but had no core."""
        return run_queue_seconds(Path(f"/proc/{self.proc.pid}/schedstat"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / CLOCK_TICKS

    def memory_mb(self, name: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024.0
        raise BenchError(f"no {name} in /proc/{self.proc.pid}/status")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def cross_check(hub: Hub) -> list[str]:
    """Each task a client got has exactly one task.claimed event, and no other task was claimed."""
    db = sqlite3.connect(hub.db_path)
    try:
        events: dict[int, int] = dict(
            db.execute("SELECT task_id, count(*) FROM events WHERE type = 'task.claimed' GROUP BY task_id")
        )
        in_state = {row[0] for row in db.execute("SELECT id FROM tasks WHERE state = 'claimed'")}
    finally:
        db.close()
    got = set(hub.claimed)
    problems = [f"{hub.name}: task {i} has {n} task.claimed events" for i, n in events.items() if n != 1]
    problems += [
        f"{hub.name}: task {i} was answered but has no task.claimed event" for i in got - set(events)
    ]
    problems += [f"{hub.name}: task {i} was claimed but no client got it" for i in set(events) - got]
    problems += [f"{hub.name}: task {i} was answered but is not claimed" for i in got - in_state]
    problems += [f"{hub.name}: task {i} is claimed but no client got it" for i in in_state - got]
    return problems


def run_queue_seconds(schedstat: Path = Path("/proc/thread-self/schedstat")) -> float:
    """Time a thread spent runnable but waiting for a core: what other processes cost it."""
    return int(schedstat.read_text().split()[1]) / 1e9


def busy_cpu_seconds() -> float:
    """CPU time all processes on the machine have used (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def load(hub: Hub, job: Job, on_open: Callable[[dict[str, Any]], None] | None = None) -> Result:
    """Run one job in a loadclient.py subprocess; ids of claimed tasks go to the hub's ledger."""
    job = replace(job, port=hub.port, key=hub.key)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "loadclient.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    bound = job.duration + job.timeout + job.rounds * (job.wait + 2.0) + job.wait + 60.0
    watchdog = threading.Timer(bound, proc.kill)
    watchdog.start()
    result: Result | None = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(job.to_json() + "\n")
        proc.stdin.close()
        for line in proc.stdout:
            message = json.loads(line)
            if "event" in message:
                if on_open is not None:
                    on_open(message)
            else:
                result = Result(**message)
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise BenchError(f"the load client failed (exit {proc.returncode})")
    hub.claimed.extend(result.ids)
    return result


@contextmanager
def single_hub(program: str) -> Iterator[tuple[Hub, Path]]:
    """One hub on a fresh work directory, stopped and removed afterwards. A failure of the hub
    or of a request is printed with the end of the hub's log, and the program exits 1."""
    work = Path(tempfile.mkdtemp(prefix=f"{program}-"))
    hub = None
    try:
        hub = Hub("hub", work, secrets.token_urlsafe(32))
        yield hub, work
    except (BenchError, OSError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        if hub is not None:
            print(hub.log_tail(), file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if hub is not None:
            hub.stop()
        shutil.rmtree(work, ignore_errors=True)
