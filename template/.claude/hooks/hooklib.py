"""What the hooks share: their input, their answer, the hub client and a little per-session state.

Standard library only. The hub client is vps.py (imported, not repeated). Claude Code runs each
hook with the session's environment (`env` of .claude/settings*.json) and the JSON event on stdin.
A hook must never trap or break a session: every failure to reach the hub ends in "carry on".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

HOOKS = Path(__file__).resolve().parent
# The client is in the vps-workspace skill's folder, and Python puts only a script's own folder on
# sys.path; no package import reaches across (".claude" cannot be a package name). Loading vps.py
# by its path with importlib would work, but would leave every name taken from it untyped for mypy
# (unless imported a second time for the checker): this one line gives a plain, checked import.
sys.path.insert(0, str(HOOKS.parent / "skills" / "vps-workspace" / "scripts"))

from vps import EXIT_AUTH, Client, HubError, setting, task_text  # noqa: E402 (after the path above)

__all__ = [
    "LIVENESS_SECONDS",
    "ClaudeProcess",
    "Client",
    "HubError",
    "State",
    "answer",
    "client",
    "hub_trouble",
    "read_event",
    "session_id",
    "setting",
    "task_text",
    "watch",
]

LIVENESS_SECONDS = 15.0
"""How often a worker session's watcher tells the hub it lives, and the longest round of the Stop
hook's wait for work (the hub's worker_lost_seconds, 40 by default, allows two missed beats;
scaffold.hub.core.settings.LIVENESS_BEAT_SECONDS is the same number)."""


def read_event() -> dict[str, Any]:
    """The hook's JSON input; {} when stdin holds none (run by hand)."""
    try:
        event = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def session_id(event: dict[str, Any]) -> str:
    return str(event.get("session_id") or os.environ.get("CLAUDE_CODE_SESSION_ID") or "")


def client(event: dict[str, Any], timeout: float) -> Client:
    """The hub client for the session's project (HubError when VPS_API_URL or the key is missing)."""
    cwd = Path(event.get("cwd") or os.environ.get("CLAUDE_PROJECT_DIR") or ".")
    return Client.from_env(cwd if cwd.is_dir() else None, timeout=timeout)


def answer(payload: dict[str, Any] | None = None) -> NoReturn:
    """Print the hook's JSON answer (nothing: go on as usual) and exit 0."""
    if payload:
        print(json.dumps(payload))
    sys.exit(0)


def hub_trouble(error: HubError) -> str:
    """Why the hub could not be asked, for a systemMessage: what failed and what to check."""
    hint = "check VPS_API_KEY" if error.exit_code == EXIT_AUTH else "check that the hub runs and VPS_API_URL"
    return f"vps hub: {error} ({hint})"


class State:
    """A small JSON file per session, private to this user: throttling and the count of blocks."""

    def __init__(self, session: str) -> None:
        folder = Path(
            os.environ.get("VPS_HOOK_STATE_DIR") or Path(tempfile.gettempdir()) / f"vps-hooks-{os.getuid()}"
        )
        name = hashlib.sha256(session.encode()).hexdigest()[:32]
        self.path = folder / f"{name}.json"
        self.watch_lock = folder / f"{name}.watch"
        """Held (flock) by the session's watcher while it runs."""
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        self.data: dict[str, Any] = loaded if isinstance(loaded, dict) else {}

    def get(self, name: str, default: float = 0.0) -> float:
        value = self.data.get(name, default)
        return float(value) if isinstance(value, int | float) else default

    def save(self, **values: float) -> None:
        """Merge and write atomically; a failure only loses throttling, never the session."""
        self.data.update(values)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self.data), encoding="utf-8")
            temporary.replace(self.path)


class ClaudeProcess:
    """The session's Claude Code process: CLAUDE_PID, which Claude Code gives its hooks.

    Its start time (from /proc, where there is one) tells it from a later process given the same pid.
    """

    def __init__(self, pid: int, started: str) -> None:
        self.pid, self.started = pid, started

    @classmethod
    def of_session(cls) -> ClaudeProcess | None:
        try:
            pid = int(os.environ.get("CLAUDE_PID") or 0)
        except ValueError:
            return None
        started = _start_time(pid) if pid > 1 else None
        return cls(pid, started) if started is not None else None

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), "" where /proc is missing; None: no such process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "" if not Path("/proc/self").exists() else None
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (name)": state is field 3, starttime 22
    if fields and fields[0] in ("Z", "X"):
        return None  # it has ended; its parent has not yet reaped it
    return fields[19] if len(fields) > 19 else ""


def watch(event: dict[str, Any], session: str, worker_id: int) -> None:
    """Start the session's watcher (session-watch.py) unless one runs: it tells the hub every
    LIVENESS_SECONDS that the worker lives, for as long as the session's Claude Code process does,
    so the hub can tell a dead worker from one that is thinking (no tool call) or waiting."""
    claude = ClaudeProcess.of_session()
    state = State(session)
    if claude is None or not _lock_free(state.watch_lock):
        return
    cwd = str(event.get("cwd") or os.environ.get("CLAUDE_PROJECT_DIR") or ".")
    script = str(HOOKS / "session-watch.py")
    command = [sys.executable, script, "--session", session, "--worker", str(worker_id)]
    command += ["--pid", str(claude.pid), "--started", claude.started, "--cwd", cwd]
    with contextlib.suppress(OSError):
        # a session of its own: not ended with the hook, nor by a signal to the hook's group
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def _lock_free(path: Path) -> bool:
    """Whether nobody holds the flock on `path` (a watcher runs while it holds it)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return False  # no state directory: no watcher either, and no harm
    return True
