"""Where a claim's time goes: each layer of the hub's claim path timed side by side.

Layers, each on its own fresh database of ready tasks, interleaved in rounds (medians):

1. bare `UPDATE ... RETURNING` + commit (rawclaim.BARE_CLAIM)
2. `SQLiteStore.claim()`: the store's statement, the worker update, the event insert, a Task
3. `Queue.claim()`: also reads the worker (stopped? capabilities) and makes the lease token
4. the ASGI app in-process: auth (hash + key lookup), body parsing and validation, routing,
   the JSON response; no sockets, no server
5. HTTP: a real hub subprocess under uvicorn, 8 clients from bench/loadclient.py

The difference between two layers is what the upper one adds per claim. Options:
`--cprofile` prints the top functions of layer 4; `--py-spy` records the hub of layer 5 with
py-spy (`pip install py-spy`) and prints where its samples fall.

    python bench/profile_claim.py [--tasks N] [--seconds S] [--rounds N] [--cprofile] [--py-spy]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import json
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubprocess import Hub, load
from loadclient import Job
from rawclaim import BARE_CLAIM, raw_database, time_statement, time_store
from starlette.types import ASGIApp, Message

from scaffold.hub.app import create_app
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.services.queue import Queue, QueueSettings
from scaffold.hub.store.sqlite import SQLiteStore


def time_queue(queue: Queue, worker: int, seconds: float, limit: int) -> float:
    async def claims() -> float:
        count = 0
        start = time.perf_counter()
        while count < limit and time.perf_counter() < start + seconds:
            if await queue.claim(worker, None, 0) is None:
                break
            count += 1
        return count / (time.perf_counter() - start)

    return asyncio.run(claims())


class AsgiClaims:
    """Claims through the ASGI app, called directly: everything but the server and sockets."""

    def __init__(self, app: ASGIApp, key: str, worker: int) -> None:
        self.app = app
        self.body = json.dumps({"worker_id": worker}).encode()
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/tasks/claim",
            "raw_path": b"/v1/tasks/claim",
            "root_path": "",
            "query_string": b"",
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 5555),
            "headers": [
                (b"host", b"127.0.0.1:5555"),
                (b"authorization", f"Bearer {key}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode()),
            ],
        }
        self.status = 0

    async def receive(self) -> Message:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]

    async def one(self) -> bool:
        await self.app(dict(self.scope), self.receive, self.send)
        if self.status not in (200, 204):
            raise RuntimeError(f"the in-process claim answered HTTP {self.status}")
        return self.status == 200

    def rate(self, seconds: float, limit: int) -> float:
        async def claims() -> float:
            count = 0
            start = time.perf_counter()
            while count < limit and time.perf_counter() < start + seconds:
                if not await self.one():
                    break
                count += 1
            return count / (time.perf_counter() - start)

        return asyncio.run(claims())


def cprofile(claimer: AsgiClaims, count: int) -> str:
    async def claims() -> None:
        for _ in range(count):
            await claimer.one()

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(claims())
    profiler.disable()
    out = io.StringIO()
    out.write(f"cProfile of {count} in-process ASGI claims (times inflated by profiling; compare shares)\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return out.getvalue()


def py_spy(hub: Hub, seconds: float, work: Path) -> str:
    """py-spy samples of the hub while 8 clients claim: self time by line, inclusive by function."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = work / "py-spy.txt"
    argv = [
        exe,
        "record",
        "--pid",
        str(hub.proc.pid),
        "--rate",
        "500",
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(out),
    ]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    load(hub, Job(0, "", workers=tuple(hub.workers[:8]), max_requests=10**6, duration=seconds + 1.0))
    spy.wait(timeout=60)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in {
            frame.split(" (")[0] + " (" + frame.split(" (")[-1].rsplit(":", 1)[0] + ")" for frame in frames
        }:
            inclusive[frame] += int(count)
    lines = [f"py-spy: {total} samples of the hub (busy samples only)", "-- self, by line:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(20)]
    lines += ["-- inclusive, by function:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(45)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40_000, help="ready tasks per database (default 40000)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per layer per round (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--cprofile", action="store_true", help="cProfile 2000 in-process ASGI claims")
    parser.add_argument("--py-spy", action="store_true", help="py-spy the hub subprocess under load")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="profile-claim-"))
    key = secrets.token_urlsafe(32)
    rates: dict[str, list[float]] = {
        name: []
        for name in (
            "bare statement",
            "SQLiteStore.claim",
            "Queue.claim",
            "ASGI in-process",
            "HTTP, 8 clients",
        )
    }
    limit = args.tasks // (args.rounds + 1)
    report = ""
    hubs: list[Hub] = []
    try:
        names = ("bare", "store", "queue", "asgi")
        workers = {name: raw_database(work / f"{name}.sqlite3", args.tasks) for name in names}
        store = SQLiteStore(work / "store.sqlite3")
        queue_store = SQLiteStore(work / "queue.sqlite3")
        queue = Queue(queue_store, time.time, QueueSettings())
        asgi_store = SQLiteStore(work / "asgi.sqlite3")
        settings = HubSettings(keys=(("bench", "admin", hashlib.sha256(key.encode()).hexdigest()),))
        claimer = AsgiClaims(create_app(asgi_store, settings), key, workers["asgi"])
        hub = Hub("hub", work, key)
        hubs.append(hub)
        hub.register_workers(8)
        eight = tuple(hub.workers[:8])
        hub.create_tasks(args.tasks, 1)
        layers: dict[str, Callable[[], float]] = {
            "bare statement": lambda: (
                time_statement(
                    work / "bare.sqlite3", BARE_CLAIM, workers["bare"], args.seconds, limit
                ).per_second
            ),
            "SQLiteStore.claim": lambda: time_store(store, workers["store"], args.seconds, limit).per_second,
            "Queue.claim": lambda: time_queue(queue, workers["queue"], args.seconds, limit),
            "ASGI in-process": lambda: claimer.rate(args.seconds, limit),
            "HTTP, 8 clients": lambda: (
                load(hub, Job(0, "", workers=eight, max_requests=limit, duration=args.seconds)).rate
            ),
        }
        load(hub, Job(0, "", workers=eight, max_requests=300))  # warm-up
        for number in range(args.rounds):
            for name in list(layers) if number % 2 == 0 else list(layers)[::-1]:
                rates[name].append(layers[name]())
        if args.cprofile:
            report += cprofile(claimer, 2000) + "\n"
        if args.py_spy:
            report += py_spy(hub, 6.0, work) + "\n"
        store.close()
        queue_store.close()
        asgi_store.close()
    finally:
        for hub in hubs:
            hub.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'layer':<20} {'claims/s':>9} {'us/claim':>9} {'adds us':>8}  (median of {args.rounds} rounds)")
    previous = 0.0
    for name, values in rates.items():
        rate = statistics.median(values)
        cost = 1e6 / rate if rate else 0.0
        print(f"{name:<20} {rate:>9,.0f} {cost:>9.0f} {cost - previous:>8.0f}")
        previous = cost
    if report:
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
