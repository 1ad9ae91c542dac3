"""Workspace files through the hub against the same work on a local disk, in one run.

A real hub subprocess (bench/hubprocess.py) on 127.0.0.1 and one keep-alive connection:
- a 10 MB file written (PUT, atomic: temp file, fsync, rename) and read (GET) through the API,
  interleaved with a local write (write + fsync + rename) and a local read of the same bytes;
  the ratio API / local is printed;
- small-file (1 KB) writes through the API, p50 and p99.

    python bench/bench_files.py [--runs N] [--small N]

The issue names no target for these; the table is for watching them. Exits 1 if a request fails.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

from bench_exec import percentile
from hubprocess import BenchError, Hub, single_hub

BIG = 10 * 1024 * 1024


class Files:
    """Raw-body requests to the file routes over one keep-alive connection."""

    def __init__(self, hub: Hub) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=120)
        self.auth = {"Authorization": f"Bearer {hub.key}"}
        self.written: set[str] = set()

    def put(self, path: str, content: bytes) -> float:
        """Create the file, or replace whatever is there (If-Match: *)."""
        headers = {**self.auth, "Content-Type": "application/octet-stream"}
        if path in self.written:
            headers["If-Match"] = "*"
        self.written.add(path)
        return self._timed("PUT", f"/v1/files/content?path={path}", content, headers, (200, 201))[0]

    def get(self, path: str) -> tuple[float, bytes]:
        return self._timed("GET", f"/v1/files/content?path={path}", None, self.auth, (200,))

    def _timed(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], ok: tuple[int, ...]
    ) -> tuple[float, bytes]:
        start = time.perf_counter()
        self.conn.request(method, url, body=body, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - start
        if response.status not in ok:
            raise BenchError(f"{method} {url}: HTTP {response.status} {raw[:300]!r}")
        return elapsed, raw


def local_write(path: Path, content: bytes) -> float:
    """What the hub does, on a local disk: a temp file, fsync, rename."""
    start = time.perf_counter()
    temp = path.with_name(path.name + ".tmp")
    with temp.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)
    return time.perf_counter() - start


def local_read(path: Path) -> tuple[float, bytes]:
    start = time.perf_counter()
    data = path.read_bytes()
    return time.perf_counter() - start, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="10 MB writes and reads of each kind")
    parser.add_argument("--small", type=int, default=300, help="1 KB writes through the API")
    args = parser.parse_args()
    if args.runs < 1 or args.small < 1:
        parser.error("--runs and --small must be at least 1")

    big = os.urandom(BIG)
    times: dict[str, list[float]] = {"api write": [], "local write": [], "api read": [], "local read": []}
    small: list[float] = []
    with single_hub("bench_files") as (hub, work):
        local = work / "local"
        local.mkdir()
        files = Files(hub)
        for run in range(-1, args.runs):  # run -1 warms up
            api_write = files.put("big.bin", big)
            disk_write = local_write(local / "big.bin", big)
            api_read, got = files.get("big.bin")
            disk_read, local_got = local_read(local / "big.bin")
            if got != big or local_got != big:
                raise BenchError("a 10 MB file did not come back byte for byte")
            if run >= 0:
                for name, value in zip(times, (api_write, disk_write, api_read, disk_read), strict=True):
                    times[name].append(value)
        for number in range(args.small):
            small.append(files.put(f"small/{number % 50}.txt", secrets.token_bytes(1024)))

    med = {name: statistics.median(values) for name, values in times.items()}
    rows = [
        ("10 MB write through the API, median ms", f"{med['api write'] * 1000:.1f}"),
        ("10 MB local write + fsync + rename, median ms", f"{med['local write'] * 1000:.1f}"),
        ("write ratio API / local", f"{med['api write'] / med['local write']:.2f}"),
        ("10 MB read through the API, median ms", f"{med['api read'] * 1000:.1f}"),
        ("10 MB local read, median ms", f"{med['local read'] * 1000:.1f}"),
        ("read ratio API / local", f"{med['api read'] / med['local read']:.2f}"),
        ("1 KB write through the API, p50 ms", f"{percentile(small, 0.5) * 1000:.2f}"),
        ("1 KB write through the API, p99 ms", f"{percentile(small, 0.99) * 1000:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width}}  {'value':>8}")
    for name, text in rows:
        print(f"{name:<{width}}  {text:>8}")
    print(f"({args.runs} interleaved 10 MB runs, {args.small} small writes, hub on 127.0.0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
