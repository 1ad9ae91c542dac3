"""How long the thin client's hooks hold Claude Code up, run exactly as Claude Code runs them.

A project is rendered (`scaffold new --defaults`), and each hook's command is taken from its
`.claude/settings.json` and run through `sh -c` with the JSON event on stdin, against a real hub
subprocess on 127.0.0.1 (bench/hubprocess.py). `python3` is this interpreter's (its directory
goes first on PATH): a version manager's shim in front of it would add its own start-up time.

Measured, N runs each, interleaved:
- the Stop hook of a registered worker when a task is ready: it claims and blocks with the task
  (target: median <= 300 ms); the task is completed between runs, untimed;
- the Stop hook of a session that is no worker (what every coordinator stop costs);
- the SessionStart hook of a worker that holds a task; the PostToolUse heartbeat when it is due;
- `python3 -c pass`, for scale.

    python bench/bench_hooks.py [--runs N]

Prints a table; exits 1 if a target is missed or a hook misbehaved.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hubprocess import BenchError, single_hub

STOP_TARGET_MS = 300.0


def hook_commands(project: Path) -> dict[str, str]:
    """Each hook event's command line as settings.json registers it."""
    settings = json.loads((project / ".claude/settings.json").read_text(encoding="utf-8"))
    return {event: groups[0]["hooks"][0]["command"] for event, groups in settings["hooks"].items()}


def timed(command: str, event: dict[str, Any], env: dict[str, str]) -> tuple[float, dict[str, Any] | None]:
    began = time.perf_counter()
    done = subprocess.run(
        ["sh", "-c", command],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchError(f"{command}: exit {done.returncode}: {done.stderr[-500:]}")
    return elapsed * 1000, json.loads(done.stdout) if done.stdout.strip() else None


def expect(answer: dict[str, Any] | None, what: str, check: bool) -> None:
    if not check:
        raise BenchError(f"{what}: unexpected answer {json.dumps(answer)[:400]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each hook (default 10)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with single_hub("bench_hooks") as (hub, work):
        project = work / "project"
        subprocess.run(
            [sys.executable, "-m", "scaffold", "new", str(project), "--defaults"],
            capture_output=True,
            check=True,
            timeout=300,
        )
        commands = hook_commands(project)
        state = Path(tempfile.mkdtemp(prefix="hook-state-", dir=work))
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(work),
            "CLAUDE_PROJECT_DIR": str(project),
            "VPS_API_URL": f"http://127.0.0.1:{hub.port}",
            "VPS_API_KEY": hub.key,
            "VPS_HOOK_STATE_DIR": str(state),
        }
        session = f"bench-{secrets.token_hex(4)}"
        status, worker = hub.call("POST", "/v1/workers", {"session_id": session, "role": "backend"})
        if status != 201:
            raise BenchError(f"register: HTTP {status} {worker}")
        tasks = [
            {"title": f"bench task {n}", "instructions": "## Objective\n" + "Do it. " * 60}
            for n in range(args.runs)
        ]
        status, made = hub.call("POST", "/v1/tasks", {"tasks": tasks})
        if status != 201:
            raise BenchError(f"create: HTTP {status} {made}")

        times: dict[str, list[float]] = {
            name: [] for name in ("stop", "stop-other", "start", "beat", "python")
        }
        stop = {"session_id": session, "hook_event_name": "Stop", "stop_hook_active": False}
        other = {**stop, "session_id": f"not-a-worker-{secrets.token_hex(4)}"}
        start = {"session_id": session, "hook_event_name": "SessionStart", "source": "compact"}
        beat = {"session_id": session, "hook_event_name": "PostToolUse", "tool_name": "Bash"}
        beat_env = {**env, "VPS_HEARTBEAT_SECONDS": "0"}
        for _ in range(args.runs):
            elapsed, answer = timed(commands["Stop"], stop, env)
            expect(
                answer,
                "Stop with a ready task",
                answer is not None
                and answer.get("decision") == "block"
                and "lease_token" in answer.get("reason", ""),
            )
            times["stop"].append(elapsed)
            elapsed, answer = timed(commands["SessionStart"], start, env)
            expect(answer, "SessionStart", bool(answer) and "You hold task" in json.dumps(answer))
            times["start"].append(elapsed)
            times["beat"].append(timed(commands["PostToolUse"], beat, beat_env)[0])
            status, mine = hub.call("GET", f"/v1/session?session_id={session}")
            held = mine["tasks"][0]
            hub.call("POST", f"/v1/tasks/{held['id']}/complete", {"lease_token": held["lease_token"]})
            elapsed, answer = timed(commands["Stop"], other, env)
            expect(answer, "Stop of a session that is no worker", answer is None)
            times["stop-other"].append(elapsed)
            times["python"].append(timed("python3 -c pass", {}, env)[0])

    rows = [
        ("Stop hook, worker, a task ready: claims and blocks", "stop", STOP_TARGET_MS),
        ("Stop hook, a session that is no worker", "stop-other", None),
        ("SessionStart hook, worker holding a task", "start", None),
        ("PostToolUse heartbeat hook, due (async in Claude Code)", "beat", None),
        ("python3 -c pass (start-up alone)", "python", None),
    ]
    print(f"{'hook (' + str(args.runs) + ' runs each)':<58} {'median ms':>10} {'max ms':>8}  target")
    missed = False
    for label, name, target in rows:
        median = statistics.median(times[name])
        verdict = ""
        if target is not None:
            verdict = f"<= {target:.0f}  " + ("ok" if median <= target else "MISSED")
            missed |= median > target
        print(f"{label:<58} {median:>10.1f} {max(times[name]):>8.1f}  {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
