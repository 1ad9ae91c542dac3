#!/usr/bin/env python3
"""team.py: keep a headless worker slot at work; stream tmux windows to the hub. Standard library only.

    python3 .claude/skills/vps-workspace/scripts/team.py slot --slot w1 --role backend [--host LABEL]
        [--claude PATH] [--max-failures 5] [--poll 2]
    python3 .claude/skills/vps-workspace/scripts/team.py screens --tmux SESSION [--host LABEL]

`slot` supervises one worker slot: once at start (the session registers the worker and waits in
its Stop hook for work), then again while the hub has ready tasks the role can do, it runs
`claude -p "/worker ROLE" --output-format json` in the project directory, in a session of its own,
and records each run's result on the hub against the session's worker. A run that fails
(an error result, a non-zero exit, a signal, a binary that cannot start) is started again after a
backoff of 1, 2, 4 ... 30 s; after --max-failures in a row the slot is marked failed, the
coordinator is told, and this process stays alive without restarting anything (so neither tmux
nor systemd restarts a broken session forever). SIGTERM, SIGHUP or SIGINT end the session and
every process it started, hand its task back to the queue at once (the worker is deregistered) and exit 0.
The slot's state goes to the hub on every change and every 10 s; its log is
.claude/team/<slot>.log, and the log's tail is the slot's screen on the hub.

`screens` sends each window of a tmux session (window name = slot name) to the hub as that slot's
screen, at most once a second and only when it changed, until the session is gone.

The hub's URL and key come as for vps.py: the environment, else .claude/settings*.json. The
environment is passed on to Claude Code unchanged. The key is never logged.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import IO, Any

from vps import EXIT_USAGE, Client, HubError, Parser

PROJECT = Path(__file__).resolve().parents[4]  # <project>/.claude/skills/vps-workspace/scripts/team.py
TELEMETRY = ".claude/telemetry.json"  # rendered when the project sends usage telemetry to the hub
SLOT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
ROLE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # a capability tag, as the hub takes it
TICK = 0.2  # seconds between looks at the session, the signals and the clock
BEAT = 10.0  # seconds between two PUTs of an unchanged state: the hub forgets slots when it restarts
SCREEN_EVERY = 1.0  # at most one screen a second
SCREEN_LINES = 200
SCREEN_BYTES = 60_000  # under the hub's 64 KiB
KILL_AFTER = 5.0  # seconds between SIGTERM and SIGKILL of a session's process group
MAX_BACKOFF = 30.0
MAX_ERROR = 2000  # the hub's limit for a run's error
MAX_NOTE = 500  # and for a slot's note
HUB_TIMEOUT = 10.0
SLOTS_EVERY = 5.0  # `screens`: how often the list of the hub's slots is read again


def now_iso() -> str:
    """UTC, to the millisecond: a log says how long a backoff really was."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(raw: bytes, lines: int = SCREEN_LINES, limit: int = SCREEN_BYTES) -> str:
    """The last `lines` lines of `raw`, at most `limit` bytes of them."""
    text = raw[-limit:].decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Slot:
    """One headless worker slot: its session, its state on the hub and its log."""

    def __init__(self, options: argparse.Namespace, project: Path, hub: Client) -> None:
        self.name, self.role, self.host = options.slot, options.role, options.host
        self.claude, self.max_failures, self.poll = options.claude, options.max_failures, options.poll
        self.project, self.hub = project, hub
        folder = project / ".claude" / "team"
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / f"{self.name}.log"
        # Unbuffered and appending: Claude Code's stderr goes to the same file between our lines.
        self.log: IO[bytes] = self.log_path.open("ab", buffering=0)
        self.state, self.note = "starting", ""
        self.restarts = self.failures = self.launches = 0
        self.last_run: dict[str, Any] | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.session: str | None = None
        self.unreleased: dict[str, dict[str, Any]] = {}  # session -> its run, for release_workers
        self.output: IO[bytes] | None = None
        self.began = 0.0  # when the running session started (monotonic)
        self.stderr_from = 0  # where its stderr starts in the log
        self.wake_at = 0.0  # when to look for work next (idle, or the end of a backoff)
        self.stopping: int | None = None  # the signal that asked us to stop
        self.trouble = ""  # the hub's last failure, logged once until it answers again
        self.put_at = -BEAT
        self.screen_at = -SCREEN_EVERY
        self.screen_seen: tuple[int, int] | None = None
        self.screen_sent: str | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, self.on_signal)
        become_subreaper()
        self.event("start", f"role={self.role} host={self.host} pid={os.getpid()} project={self.project}")
        self.put()
        while self.stopping is None:
            if self.child is not None:
                if self.child.poll() is not None:
                    self.finished()
            elif self.state != "failed" and time.monotonic() >= self.wake_at:
                self.look_for_work()
            if time.monotonic() - self.put_at >= BEAT:
                self.put()
                self.release_workers()
            self.push_screen()
            time.sleep(TICK)
        self.stop()
        return 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = signum
        if self.child is not None:  # at once: the loop may be waiting on the hub
            with contextlib.suppress(OSError):
                os.killpg(self.child.pid, signal.SIGTERM)

    def look_for_work(self) -> None:
        ready = self.ready()
        # The first session starts whatever the queue holds: it registers the worker (so a team
        # comes up registered) and waits in its Stop hook for work, as an interactive one does.
        if ready or not self.launches:
            self.launch()
            return
        self.wake_at = time.monotonic() + self.poll
        if ready is not None and self.state != "idle":
            self.set_state("idle")
            self.event("idle", "no ready task for the role")

    def ready(self) -> int | None:
        """How many ready tasks the hub has for the role; None when it cannot say."""
        try:
            team = self.hub.call("team.show").data
        except HubError as error:
            self.hub_trouble(error)
            return None
        self.hub_answered()
        work = team.get("work") if isinstance(team, dict) else None
        counts = work.get(self.role) if isinstance(work, dict) else None
        return int(counts.get("ready") or 0) if isinstance(counts, dict) else 0

    # -- a session --------------------------------------------------------------------------

    def launch(self) -> None:
        self.session = str(uuid.uuid4())
        if self.launches:
            self.restarts += 1
        self.launches += 1
        command = [self.claude, "-p", f"/worker {self.role}", "--output-format", "json"]
        command += ["--session-id", self.session]
        if (self.project / TELEMETRY).is_file():
            # Claude Code takes its telemetry settings from a --settings file, never from the
            # project's own settings (docs/setup-guide.md, "What the team spent").
            command += ["--settings", TELEMETRY]
        self.began, self.stderr_from = time.monotonic(), self.log_path.stat().st_size
        # A file, not a pipe: nothing has to read it while the session runs. Closed in result().
        self.output = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.child = subprocess.Popen(
                command,
                cwd=self.project,
                stdin=subprocess.DEVNULL,
                stdout=self.output,
                stderr=self.log,
                # its own session: Ctrl+C or a hangup in the slot's terminal reach this process
                # alone, which then ends the session in order (end_session)
                start_new_session=True,
            )
        except OSError as error:
            self.output.close()
            self.output = None
            self.event("session", f"session={self.session} cannot start {self.claude}: {error.strerror}")
            what = "not found" if isinstance(error, FileNotFoundError) else error.strerror
            self.ended(
                {"exit_code": 127 if isinstance(error, FileNotFoundError) else 126, "is_error": True},
                f"cannot run the Claude Code binary {self.claude!r}: {what}",
            )
            return
        self.event("session", f"session={self.session} pid={self.child.pid}")
        self.set_state("running")

    def finished(self) -> None:
        """The session's process ended: end what it left running, record the run, go on."""
        assert self.child is not None
        end_session(self.child)
        code = self.child.wait()
        result = self.result()
        run: dict[str, Any] = {
            "exit_code": code if code >= 0 else 128 - code,  # as a shell reports a signal
            "is_error": code != 0 or result is None or bool(result.get("is_error")),
            "num_turns": number(result, "num_turns", int),
            "duration_ms": number(result, "duration_ms", int),
            "cost_usd": number(result, "total_cost_usd", float),
            "subtype": one_line(str(result["subtype"]), 100) if result and result.get("subtype") else None,
        }
        if self.stopping is not None:
            error = f"stopped: the slot got {signal.Signals(self.stopping).name}"
        elif code < 0:
            error = f"killed by {signal.Signals(-code).name}"
        elif result is None:
            error = f"exited with {code} and no JSON result"
        elif result.get("is_error"):
            error = str(result.get("result") or result.get("subtype") or "an error result")
        else:
            error = ""
        if error:
            stderr = self.stderr_tail()
            error += f"; stderr: {stderr}" if stderr else ""
        self.child = None
        self.ended(run, error)

    def result(self) -> dict[str, Any] | None:
        """The JSON result `claude -p --output-format json` printed, if any."""
        if self.output is None:
            return None
        with self.output:
            self.output.seek(0)
            raw = self.output.read()
        self.output = None
        for line in reversed(raw.decode("utf-8", errors="replace").splitlines()):
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if isinstance(found, dict) and found.get("type") == "result":
                    return found
        return None

    def stderr_tail(self) -> str:
        """The session's last lines on stderr: the log since it started, but for our own lines."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(self.stderr_from)
            ours = re.compile(rf"\d\d\d\d-\d\d-\d\dT[\d:.]+Z {re.escape(self.name)} ")
            theirs = [line for line in tail(log.read()).splitlines() if not ours.match(line)]
            return one_line("\n".join(theirs[-5:]), 600)
        return ""

    def ended(self, run: dict[str, Any], error: str) -> None:
        """Record the run (on the session's worker, if it registered), deregister that worker so
        its task goes back to the queue now, and decide what comes next."""
        run["error"] = one_line(error, MAX_ERROR) if error else None
        seconds = time.monotonic() - self.began
        self.event(
            "run",
            f"session={self.session} exit={run['exit_code']} error={run['is_error']} "
            f"turns={run.get('num_turns')} seconds={seconds:.0f}" + (f" ({run['error']})" if error else ""),
        )
        self.last_run = {**run, "session_id": self.session, "ended_at": now_iso()}
        if self.session is not None:
            self.unreleased[self.session] = run
        self.release_workers()
        self.session = None
        if self.stopping is not None:
            return
        if not run["is_error"]:
            self.failures, self.note = 0, ""
            if self.ready():
                self.set_state("restarting")
                self.launch()
            else:
                self.wake_at = 0.0  # idle from the next tick
            return
        self.failures += 1
        if self.failures >= self.max_failures:
            self.give_up(run["error"] or "")
            return
        backoff = min(2.0 ** (self.failures - 1), MAX_BACKOFF)
        self.note = one_line(f"failure {self.failures}: {run['error']}", MAX_NOTE)
        self.event("restarting", f"in {backoff:g} s after failure {self.failures} of {self.max_failures}")
        self.wake_at = time.monotonic() + backoff
        self.set_state("restarting")

    def release_workers(self) -> None:
        """Record each ended session's run on its worker and deregister the worker; what the hub
        could not take is tried again at the next beat."""
        for session, run in list(self.unreleased.items()):
            try:
                worker = self.hub.find_worker(session)
                if worker is not None:
                    self.hub.call("workers.runs", worker["id"], body=run)
                    self.hub.call("workers.deregister", worker["id"])
                    self.event("deregistered", f"worker={worker['id']}")
            except HubError as error:
                self.hub_trouble(error)
                return
            del self.unreleased[session]

    def give_up(self, error: str) -> None:
        self.note = one_line(f"failed {self.failures} times in a row, not restarted; last: {error}", MAX_NOTE)
        self.event("failed", self.note)
        self.set_state("failed")
        text = (
            f"Slot {self.name} ({self.role}, on {self.host}): its worker session {self.note}. "
            f"Its log is .claude/team/{self.name}.log; fix the cause, then restart the slot."
        )
        body = {"to": "coordinator", "kind": "message", "body": text, "sender": f"slot:{self.name}"}
        try:
            self.hub.call("messages.send", body=body)
        except HubError as error:
            self.hub_trouble(error)

    def stop(self) -> None:
        """On a signal: end the session's group, give its task back, say so on the hub."""
        self.event("stopping", f"on {signal.Signals(self.stopping or signal.SIGTERM).name}")
        if self.child is not None:
            self.finished()
        self.set_state("stopped")
        self.push_screen(force=True)
        self.event("stopped", "")
        self.log.close()

    # -- the hub and the log ------------------------------------------------------------------

    def set_state(self, state: str) -> None:
        self.state = state
        self.put()

    def put(self) -> None:
        body = {
            "host": self.host,
            "role": self.role,
            "mode": "headless",
            "state": self.state,
            "session_id": self.session,
            "pid": self.child.pid if self.child is not None else None,
            "restarts": self.restarts,
            "failures": self.failures,
            "last_run": self.last_run,
            "note": self.note,
        }
        self.put_at = time.monotonic()
        try:
            self.hub.call("team.slot", self.name, body=body)
        except HubError as error:
            self.hub_trouble(error)
        else:
            self.hub_answered()

    def push_screen(self, force: bool = False) -> None:
        """The log's tail as the slot's screen: at most once a second, only when it changed."""
        if not force and time.monotonic() - self.screen_at < SCREEN_EVERY:
            return
        try:
            stat = self.log_path.stat()
        except OSError:
            return
        seen = (stat.st_size, stat.st_mtime_ns)
        if seen == self.screen_seen:
            return
        self.screen_at = time.monotonic()
        with self.log_path.open("rb") as log:
            log.seek(max(0, stat.st_size - SCREEN_BYTES))
            text = tail(log.read())
        if text == self.screen_sent:
            self.screen_seen = seen
            return
        try:
            self.hub.call("team.screen", self.name, body={"text": text})
        except HubError as error:
            if error.status == 404:  # the hub restarted and forgot the slot: tell it again
                self.put()
            else:
                self.hub_trouble(error)
            return
        self.screen_seen, self.screen_sent = seen, text

    def hub_trouble(self, error: HubError) -> None:
        message = one_line(str(error), 300)
        if message != self.trouble:
            self.trouble = message
            self.event("hub", f"{message} (retrying)")

    def hub_answered(self) -> None:
        if self.trouble:
            self.trouble = ""
            self.event("hub", "answers again")

    def event(self, name: str, detail: str) -> None:
        line = f"{now_iso()} {self.name} {name} {detail}".rstrip() + "\n"
        with contextlib.suppress(OSError, ValueError):
            self.log.write(line.encode())


def number(result: dict[str, Any] | None, field: str, kind: type[int] | type[float]) -> Any:
    value = (result or {}).get(field)
    return kind(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def end_session(leader: subprocess.Popen[bytes]) -> None:
    """SIGTERM the session's process and everything below this process, SIGKILL after KILL_AFTER
    seconds what is left. Claude Code starts each hook and tool command in a session of its own
    (setsid), so its process group alone would miss them; as a child subreaper (Linux) this process
    inherits whatever they leave when Claude Code dies, so the whole tree stays below it. The leader
    is reaped through its Popen (its exit status is the run's), the other children here."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):
            os.killpg(leader.pid, signum)
        for pid in below(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        deadline = time.monotonic() + KILL_AFTER
        while time.monotonic() < deadline:
            leader.poll()
            left = [pid for pid in below(os.getpid()) if not reaped(pid, leader.pid)]
            if not left:
                return
            time.sleep(0.1)
    leader.wait()


def reaped(pid: int, leader: int) -> bool:
    """Reap `pid` if it is a child of ours that has ended (not the leader: its Popen does that)."""
    if pid == leader:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False  # not our child: it still runs, or its own parent reaps it


def below(root: int) -> list[int]:
    """The live processes below `root` (ended ones not yet reaped are left out)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, state) in processes().items():
        if state not in ("Z", "X"):
            children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process: from /proc, else from ps (macOS)."""
    table: dict[int, tuple[int, str]] = {}
    proc = Path("/proc")
    if (proc / "self" / "stat").exists():
        for entry in proc.iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if entry.name.isdigit():
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    table[int(entry.name)] = (int(fields[1]), fields[0])
        return table
    listed = subprocess.run(
        ["ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "stat="], capture_output=True, text=True, check=False
    )
    for line in listed.stdout.splitlines():
        with contextlib.suppress(ValueError, IndexError):
            pid, parent, state = line.split()[:3]
            table[int(pid)] = (int(parent), state[0])
    return table


def become_subreaper() -> None:
    """Linux: orphans below this process come to it, not to init (prctl PR_SET_CHILD_SUBREAPER)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


# -- screens ------------------------------------------------------------------------------


def tmux(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False, timeout=10)


def windows(session: str) -> list[tuple[str, str]] | None:
    """(index, name) of each window of the tmux session; None once it is gone."""
    listed = tmux("list-windows", "-t", f"={session}", "-F", "#{window_index} #{window_name}")
    if listed.returncode != 0:
        return None
    return [(index, name) for index, _, name in (line.partition(" ") for line in listed.stdout.splitlines())]


def screens(options: argparse.Namespace, hub: Client) -> int:
    try:
        found = windows(options.tmux)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"team.py: cannot run tmux: {error}", file=sys.stderr)
        return 1
    if found is None:
        print(f"team.py: there is no tmux session {options.tmux!r}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda signum, frame: sys.exit(0))
    slots: dict[str, str] = {}  # slot -> host, as the hub has them
    sent: dict[str, str] = {}
    slots_at, trouble = -SLOTS_EVERY, ""
    while found is not None:
        began = time.monotonic()
        try:
            if began - slots_at >= SLOTS_EVERY:
                listed = hub.call("team.show").data.get("slots") or []
                slots = {str(slot["slot"]): str(slot.get("host") or "") for slot in listed}
                slots_at = began
            for index, name in found:
                # A window that is no slot of this host has no screen on the hub (another host's
                # window of the same name would overwrite it).
                if name not in slots or (options.host and slots[name] != options.host):
                    continue
                captured = tmux("capture-pane", "-p", "-t", f"={options.tmux}:{index}")
                text = tail(captured.stdout.rstrip().encode()) if captured.returncode == 0 else None
                if text is not None and text != sent.get(name):
                    hub.call("team.screen", name, body={"text": text})
                    sent[name] = text
            trouble = ""
        except HubError as error:
            if str(error) != trouble:
                trouble = str(error)
                print(f"team.py: {error} (retrying)", file=sys.stderr)
            if error.status == 404:
                slots_at = -SLOTS_EVERY  # a slot the hub forgot: read the list again
        time.sleep(max(0.0, SCREEN_EVERY - (time.monotonic() - began)))
        found = windows(options.tmux)
    return 0


# -- the command line -----------------------------------------------------------------------


def slot_name(text: str) -> str:
    if not SLOT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is no slot name: [a-z0-9][a-z0-9-], at most 32")
    return text


def role_name(text: str) -> str:
    if not ROLE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is no role name: lowercase letters, digits, . _ -")
    return text


def positive(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return value

    return convert


def build_parser() -> Parser:
    """vps.py's parser: a usage error is one line."""
    main = Parser(prog="team.py", description="Run a worker slot, or stream tmux screens.")
    main.add_argument(
        "--project", type=Path, default=PROJECT, help="the project directory (default: this script's)"
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    slot = commands.add_parser("slot", help="supervise one headless worker slot")
    slot.add_argument("--slot", type=slot_name, required=True)
    slot.add_argument("--role", type=role_name, required=True)
    slot.add_argument("--host", default="local", help="a label for the machine (default: local)")
    slot.add_argument("--claude", default="claude", help="the Claude Code binary (default: claude on PATH)")
    slot.add_argument("--max-failures", type=positive(int), default=5, help="failed runs in a row (5)")
    slot.add_argument("--poll", type=positive(float), default=2.0, help="seconds between looks for work (2)")
    shown = commands.add_parser("screens", help="send each tmux window's screen to the hub")
    shown.add_argument("--tmux", required=True, help="the tmux session")
    shown.add_argument("--host", default="", help="only the slots the hub has on this host")
    return main


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    project = options.project.resolve()
    if not (project / ".claude").is_dir():
        print(f"team.py: {project} is no project directory (it has no .claude)", file=sys.stderr)
        return EXIT_USAGE
    try:
        hub = Client.from_env(project, timeout=HUB_TIMEOUT)
    except HubError as error:
        print(f"team.py: {error}", file=sys.stderr)
        return error.exit_code
    if options.command == "screens":
        try:
            return screens(options, hub)
        except KeyboardInterrupt:
            return 0
    return Slot(options, project, hub).run()


if __name__ == "__main__":
    sys.exit(main())
