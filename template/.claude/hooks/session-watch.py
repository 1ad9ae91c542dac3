#!/usr/bin/env python3
"""A worker session's watcher: tells the hub the worker lives while its Claude Code process does.

Started in the background by the hooks (hooklib.watch) once the session is a registered worker;
at most one per session (it holds a lock for as long as it runs). Every LIVENESS_SECONDS it
heartbeats the worker (POST /v1/workers/{id}/heartbeat), which touches the worker and nothing
else: leases are renewed by real work (the PostToolUse hook), not by a process being alive.

So the hub can tell dead from idle: a worker whose model thinks for minutes without a tool call,
or that waits in the Stop hook, is still heard from; a session whose process was killed goes
quiet and shows as `lost` after the hub's worker_lost_seconds (three beats). It ends when the
Claude Code process ends, when the worker is stopped or gone, or when the key is refused; a hub
that cannot be reached is tried again at the next beat.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import time
from pathlib import Path

from hooklib import LIVENESS_SECONDS, ClaudeProcess, HubError, State, client

LOOK = 1.0  # seconds between looks at the Claude Code process


def main() -> None:
    parser = argparse.ArgumentParser(description="Heartbeat a worker while its Claude Code session lives.")
    parser.add_argument("--session", required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the session's Claude Code process")
    parser.add_argument("--started", default="", help="its start time, as /proc/PID/stat gives it")
    parser.add_argument("--cwd", type=Path, default=Path())
    options = parser.parse_args()
    claude = ClaudeProcess(options.pid, options.started)
    lock = State(options.session).watch_lock
    with contextlib.suppress(OSError), lock.open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another watcher already keeps this session
        beat(claude, options.worker, {"cwd": str(options.cwd)})


def beat(claude: ClaudeProcess, worker_id: int, event: dict[str, str]) -> None:
    try:
        hub = client(event, timeout=10)
    except HubError:
        return
    while claude.alive():
        try:
            worker = hub.call("workers.heartbeat", worker_id).data
        except HubError as error:
            if error.status in (401, 403, 404):  # the key is refused, or the worker is gone
                return
        else:
            if not isinstance(worker, dict) or worker.get("status") == "stopped":
                return
        next_beat = time.monotonic() + LIVENESS_SECONDS
        while time.monotonic() < next_beat:
            if not claude.alive():
                return
            time.sleep(LOOK)


if __name__ == "__main__":
    main()
