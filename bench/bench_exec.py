"""How long a command run through the hub takes: `POST /v1/exec` of `true`, round trip.

A real hub subprocess (`python -m scaffold hub serve`, see bench/hubprocess.py) on 127.0.0.1,
one keep-alive HTTP connection, N runs of each request in turn (interleaved, so machine noise
hits all alike). For scale, the table also shows a round trip that runs nothing
(`GET /healthz`), what the hub itself reports as the command's duration (spawn, wait, ending
its process group), and `true` spawned directly by this process.

    python bench/bench_exec.py [--runs N]

Prints one table of p50 / p99 in milliseconds; exits 1 if a request failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import time
from typing import Any

from hubprocess import BenchError, Hub, single_hub


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


class Connection:
    """One keep-alive connection to the hub, as an agent's client would hold."""

    def __init__(self, hub: Hub) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {hub.key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, payload: object = None) -> tuple[float, Any]:
        """Seconds for the round trip, and the answer (BenchError unless 200)."""
        body = json.dumps(payload).encode() if payload is not None else None
        start = time.perf_counter()
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise BenchError(f"{method} {path}: HTTP {response.status} {raw[:300]!r}")
        return elapsed, json.loads(raw)

    def close(self) -> None:
        self.conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed runs of each request (default 300)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    times: dict[str, list[float]] = {
        "POST /v1/exec argv [true], round trip": [],
        "POST /v1/exec shell 'true', round trip": [],
        "  the hub's duration_seconds of argv [true]": [],
        "GET /healthz, round trip": [],
        "spawn `true` directly (subprocess.run)": [],
    }
    names = list(times)
    with single_hub("bench_exec") as (hub, _):
        conn = Connection(hub)
        try:
            for run in range(-20, args.runs):  # the first 20 warm up (imports, page cache)
                argv_time, answer = conn.call("POST", "/v1/exec", {"argv": ["true"]})
                if answer["exit_code"] != 0:
                    raise BenchError(f"`true` exited with {answer['exit_code']}: {answer['stderr']!r}")
                shell_time, _ = conn.call("POST", "/v1/exec", {"shell": "true"})
                health_time, _ = conn.call("GET", "/healthz")
                start = time.perf_counter()
                subprocess.run(["true"], check=True, stdin=subprocess.DEVNULL)
                direct_time = time.perf_counter() - start
                if run >= 0:
                    for name, value in zip(
                        names,
                        (argv_time, shell_time, answer["duration_seconds"], health_time, direct_time),
                        strict=True,
                    ):
                        times[name].append(value)
        finally:
            conn.close()

    width = max(len(name) for name in names)
    print(f"{'metric':<{width}}  {'p50 ms':>8}  {'p99 ms':>8}")
    for name in names:
        p50, p99 = percentile(times[name], 0.5) * 1000, percentile(times[name], 0.99) * 1000
        print(f"{name:<{width}}  {p50:>8.2f}  {p99:>8.2f}")
    print(f"({args.runs} runs of each, interleaved, one keep-alive connection to a hub on 127.0.0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
