"""What `scaffold team` asks of a host, run there with the host's own python3 (standard library only).

The launcher sends this file's text to `python3 -` (locally, or over ssh) so one round trip
answers everything it checks before starting sessions, and a host needs nothing installed but
Python, tmux and Claude Code. Two commands:

    check --project DIR --tmux NAME --claude CMD [--trust] [--headless]
        prints one JSON object: which tools the host has, its size, whether the project is checked
        out there, and which of Claude Code's first-run dialogs an interactive session would stop
        at. With --trust (the user's consent, given on the command line) it records the answers a
        person would give those dialogs, in Claude Code's own ~/.claude.json: this folder is
        trusted, and (unless --headless: `claude -p` does not ask) the ANTHROPIC_API_KEY of the
        environment is the one to use.
    reap --sessions SID,SID [--grace SECONDS]
        waits up to the grace for every process of those sessions (`setsid` groups: a tmux pane's
        processes, a headless run's) to end, then kills what is left; prints the pids killed.

Claude Code keeps those answers in ~/.claude.json (or $CLAUDE_CONFIG_DIR/.claude.json):
`hasCompletedOnboarding`, `projects[DIR].hasTrustDialogAccepted` (DIR: the top of the git work
tree holding the project, or the project when it is in none; a trusted parent folder counts),
and `customApiKeyResponses.approved`, the last 20 characters of each key a person said yes to.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY_TAIL = 20  # Claude Code remembers an approved key by its last 20 characters
TELEMETRY = ".claude/telemetry.json"  # the exporter's settings, rendered when the project sends usage
CREDENTIAL_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


def config_file() -> Path:
    base = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(base) / ".claude.json" if base else Path.home() / ".claude.json"


def read_config(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"unreadable": True}
    return loaded if isinstance(loaded, dict) else {"unreadable": True}


def trust_root(project: Path) -> Path:
    """The folder Claude Code asks trust for and records it under: the git work tree's top that
    holds the project (a project kept inside another repository is trusted by that one's root),
    else the project itself."""
    try:
        top = subprocess.run(
            ["git", "-C", str(project), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return project
    found = top.stdout.strip()
    return Path(found).resolve() if top.returncode == 0 and found else project


def trusted(config: dict[str, Any], project: Path) -> bool:
    projects = config.get("projects")
    if not isinstance(projects, dict):
        return False
    for folder in (project, *project.parents):
        entry = projects.get(str(folder))
        if isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True:
            return True
    return False


def api_key_state(config: dict[str, Any]) -> str:
    """What the "use this API key?" dialog would do: none (no key in the environment), approved,
    rejected, or unanswered (the dialog would wait for a person)."""
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    if not key:
        return "none"
    answers = config.get("customApiKeyResponses")
    answers = answers if isinstance(answers, dict) else {}
    tail = key[-KEY_TAIL:]
    if tail in (answers.get("approved") or []):
        return "approved"
    if tail in (answers.get("rejected") or []):
        return "rejected"
    return "unanswered"


def logged_in(config: dict[str, Any]) -> bool:
    if any(os.environ.get(name) for name in CREDENTIAL_VARS):
        return True
    home = config_file().parent
    credentials = (home if os.environ.get("CLAUDE_CONFIG_DIR") else home / ".claude") / ".credentials.json"
    return credentials.is_file() or bool(config.get("oauthAccount")) or bool(config.get("primaryApiKey"))


def consent(path: Path, config: dict[str, Any], project: Path, key: bool) -> None:
    """Record the person's yes to the trust dialog and (with `key`, for interactive sessions, the
    only ones that ask) to the API key one, as Claude Code itself would."""
    projects = config.setdefault("projects", {})
    entry = projects.setdefault(str(project), {})
    entry["hasTrustDialogAccepted"] = True
    value = os.environ.get("ANTHROPIC_API_KEY", "") if key else ""
    if value:
        answers = config.setdefault("customApiKeyResponses", {})
        approved = answers.setdefault("approved", [])
        if value[-KEY_TAIL:] not in approved:
            approved.append(value[-KEY_TAIL:])
        answers.setdefault("rejected", [])
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed over: Claude Code itself rewrites this file, never half of it.
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=".claude.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(config, out, indent=2)
    if path.exists():
        Path(scratch).chmod(path.stat().st_mode & 0o777)
    Path(scratch).replace(path)


def mem_total_kb() -> int:
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check(args: argparse.Namespace) -> dict[str, Any]:
    project = Path(args.project).expanduser().resolve()
    path = config_file()
    config = read_config(path)
    tmux = shutil.which("tmux")
    running = False
    if tmux is not None:
        running = (
            subprocess.run(
                [tmux, "-L", args.tmux, "has-session", "-t", args.tmux],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
    scripts = project / ".claude" / "skills" / "vps-workspace" / "scripts"
    root = trust_root(project)
    if args.trust and (not trusted(config, root) or api_key_state(config) == "unanswered"):
        consent(path, config, root, key=not args.headless)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return {
        "claude": shutil.which(args.claude),
        "tmux": tmux,
        "project": (scripts / "vps.py").is_file(),
        "team_script": (scripts / "team.py").is_file(),
        "telemetry": (project / TELEMETRY).is_file(),
        "cpus": cpus,
        "mem_kb": mem_total_kb(),
        "logged_in": logged_in(config),
        "onboarded": config.get("hasCompletedOnboarding") is True,
        "config_unreadable": bool(config.get("unreadable")),
        "trusted": trusted(config, root),
        "trust_root": str(root),
        "api_key": api_key_state(config),
        "running": running,
    }


def session_members(sessions: set[int]) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) in sessions:
            members.append(int(entry.name))
    return members


def reap(args: argparse.Namespace) -> dict[str, Any]:
    sessions = {int(sid) for sid in args.sessions.split(",") if sid.strip()}
    deadline = time.monotonic() + args.grace
    left = session_members(sessions)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = session_members(sessions)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return {"killed": left}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hostprobe")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check")
    checking.add_argument("--project", required=True)
    checking.add_argument("--tmux", required=True)
    checking.add_argument("--claude", default="claude")
    checking.add_argument("--trust", action="store_true")
    checking.add_argument("--headless", action="store_true")
    reaping = commands.add_parser("reap")
    reaping.add_argument("--sessions", required=True)
    reaping.add_argument("--grace", type=float, default=10.0)
    args = parser.parse_args(argv)
    answer = check(args) if args.command == "check" else reap(args)
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
