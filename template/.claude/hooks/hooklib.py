"""What the hooks share: their input, their answer, the hub client and a little per-session state.

Standard library only. The hub client is vps.py (imported, not repeated). Claude Code runs each
hook with the session's environment (`env` of .claude/settings*.json) and the JSON event on stdin.
A hook must never trap or break a session: every failure to reach the hub ends in "carry on".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

HOOKS = Path(__file__).resolve().parent
sys.path.insert(0, str(HOOKS.parent / "skills" / "vps-workspace" / "scripts"))

from vps import EXIT_AUTH, Client, HubError, setting, task_text  # noqa: E402

__all__ = ["Client", "HubError", "State", "answer", "client", "hub_trouble", "read_event", "session_id", "setting",
           "task_text"]


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
        folder = Path(os.environ.get("VPS_HOOK_STATE_DIR") or Path(tempfile.gettempdir()) / f"vps-hooks-{os.getuid()}")
        name = hashlib.sha256(session.encode()).hexdigest()[:32]
        self.path = folder / f"{name}.json"
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
            os.replace(temporary, self.path)
