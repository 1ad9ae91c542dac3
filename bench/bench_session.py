"""What one Claude Code session takes here: memory and CPU of its processes, idle and working.

The real Claude Code binary (tools/fetch-claude-code.sh) runs in a project rendered as `scaffold new`
renders it (its key saved), against a real hub subprocess on 127.0.0.1 (tests/hubproc.py). Its model
is the scripted Messages API of tests/fakemodel.py, served on 127.0.0.1 by this process. Three states:

- idle interactive: `claude` in a tmux window (a tmux server of its own), sitting at its prompt;
- idle worker: `claude -p "/worker backend"`, registered, waiting for work in its Stop hook;
- working: `claude -p` whose model calls tools in a loop with no pause (Bash running vps.py against
  the hub, the vps MCP tools, Read). The scripted model answers at once, so the client never
  waits: its CPU here is an upper bound of the client's own work. A real model takes seconds per
  step, and the session spends most of its time waiting on the network.

A session's processes are the tree under its `claude` (hooks, Bash commands) and the
processes that name the project's .claude/ directory (a worker's watcher runs detached). Sampled
from /proc every half second: RSS summed over them (pages they share are counted in each), USS
(their private pages: what one more session adds, the binary's pages being shared) and CPU in cores
(1.0 = one core busy), their user + system time over wall time, children they reaped included.

    python bench/bench_session.py          # 20 s per idle state, 30 s of work
    python bench/bench_session.py --ci     # 8 s each, under a minute

Prints a table; exits 1 only if it could not measure (a session did not start, register or work).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the scripted model and the hub process the tests use
from scaffold.render import resolve_template  # noqa: E402
from scaffold.wizard import new_project  # noqa: E402
from tests.fakemodel import Call, End, FakeModel, Policy, Step, Turn, found, search  # noqa: E402
from tests.hubproc import HubProcess, free_port, running_hub, write_config  # noqa: E402

TICKS = float(os.sysconf("SC_CLK_TCK"))
INTERVAL = 0.5  # seconds between samples
START_TIMEOUT = 90.0  # seconds for a session to reach the state measured
# The command the /worker skill shows, as tests/test_e2e_claude.py finds it.
REGISTER = r"(python3 \.claude/skills/vps-workspace/scripts/vps\.py workers register [^\n`]+)"
PROMPT = "\u276f"  # the interactive input line's prompt character


class BenchError(Exception):
    """The benchmark could not measure (a session did not start, register or work)."""


# -- processes, from /proc ----------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime: its own CPU and that of the children it reaped
    own: int  # utime + stime
    cmdline: str


def processes() -> dict[int, Proc]:
    found_procs: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        ticks = sum(int(value) for value in fields[11:15])
        own = int(fields[11]) + int(fields[12])
        found_procs[int(entry.name)] = Proc(int(entry.name), int(fields[1]), ticks, own, cmdline)
    return found_procs


def session_of(root: int, marker: str, procs: dict[int, Proc]) -> list[Proc]:
    """The processes under `root` and those naming `marker`, with theirs."""
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    todo = [root, *(proc.pid for proc in procs.values() if marker in proc.cmdline)]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        todo += children.get(pid, [])
    return [procs[pid] for pid in sorted(seen)]


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, USS) of a process in kB, from smaps_rollup; (0, 0) once it is gone."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("Rss", 0), values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)


@dataclass
class Measured:
    state: str
    seconds: float
    procs: int
    rss_mean: float  # MB
    rss_peak: float
    uss_mean: float
    cpu: float  # cores
    claude_cpu: float  # cores, the `claude` process alone (not its hooks and commands)
    claude_rss_peak: float  # MB, the `claude` process alone
    start_seconds: float  # from spawn to the state measured
    start_cpu: float  # CPU seconds the session spent getting there
    note: str = ""


@dataclass(frozen=True)
class Sample:
    procs: int
    rss: int  # kB
    uss: int
    ticks: int  # CPU of them all
    claude: int  # CPU of `claude` alone
    claude_rss: int  # kB


def sample(root: int, marker: str) -> Sample:
    procs = processes()
    session = session_of(root, marker, procs)
    rss = uss = claude_rss = 0
    for proc in session:
        one_rss, one_uss = memory_kb(proc.pid)
        rss, uss = rss + one_rss, uss + one_uss
        claude_rss = one_rss if proc.pid == root else claude_rss
    claude = procs[root].own if root in procs else 0
    return Sample(len(session), rss, uss, sum(proc.ticks for proc in session), claude, claude_rss)


def measure(
    state: str, root: int, marker: str, seconds: float, start: tuple[float, float], alive: Any
) -> Measured:
    """Sample a session for `seconds`. CPU adds up the rises of its total between samples: a
    detached process that ends takes its time with it (a drop, ignored), a reaped one leaves it to
    its parent."""
    first = sample(root, marker)
    rows: list[Sample] = []
    cpu_ticks, last = 0, first.ticks
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        time.sleep(min(INTERVAL, max(seconds - elapsed, 0.01)))
        if not alive():
            raise BenchError(f"{state}: the session ended while it was measured")
        rows.append(now := sample(root, marker))
        cpu_ticks += max(now.ticks - last, 0)
        last = now.ticks
    wall = time.monotonic() - began
    return Measured(
        state,
        wall,
        max(row.procs for row in rows),
        statistics.fmean(row.rss for row in rows) / 1024,
        max(row.rss for row in rows) / 1024,
        statistics.fmean(row.uss for row in rows) / 1024,
        cpu_ticks / TICKS / wall,
        (rows[-1].claude - first.claude) / TICKS / wall,
        max(row.claude_rss for row in rows) / 1024,
        *start,
    )


# -- the setting: a rendered project, its hub, a HOME, the scripted model -----------------------


@dataclass
class Setting:
    claude: Path
    project: Path
    key: str
    home: Path
    hub: HubProcess
    tmux_socket: Path  # a tmux server of its own, its socket in the scratch directory

    @property
    def marker(self) -> str:
        return f"{self.project}/.claude/"

    def env(self, model_url: str) -> dict[str, str]:
        """Claude Code's environment: a throwaway HOME, the scripted model, nothing else online."""
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "TERM": "xterm-256color",
            "ANTHROPIC_API_KEY": "not-used",
            "ANTHROPIC_BASE_URL": model_url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def hub_rss_mb(self) -> float:
        return memory_kb(self.hub.proc.pid)[0] / 1024


@contextlib.contextmanager
def setting(work: Path) -> Iterator[Setting]:
    fetched = subprocess.run(
        ["bash", str(REPO / "tools/fetch-claude-code.sh")], capture_output=True, text=True, timeout=600
    )
    if fetched.returncode != 0:
        raise BenchError(f"cannot fetch Claude Code: {fetched.stderr.strip()[-500:]}")
    claude = Path(fetched.stdout.strip().splitlines()[-1])
    port = free_port()
    made = new_project(
        work / "project",
        resolve_template(None, None),
        data={"hub_url": f"http://127.0.0.1:{port}"},
        interactive=False,
        save_key=True,
        quiet=True,
    )
    assert made.key is not None
    project = made.dest
    local = project / ".claude/settings.local.json"
    settings = json.loads(local.read_text(encoding="utf-8"))
    settings["env"]["VPS_WORKER_IDLE_MINUTES"] = "30"  # the idle worker waits longer than it is measured
    local.write_text(json.dumps(settings), encoding="utf-8")
    home = work / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude/settings.json").write_text(json.dumps({"enableAllProjectMcpServers": True}))
    # As after the first run's dialogs (onboarding, the API key, the folder's trust): none is shown.
    state = {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "customApiKeyResponses": {"approved": ["not-used"], "rejected": []},
        "projects": {str(project): {"hasTrustDialogAccepted": True}},
    }
    (home / ".claude.json").write_text(json.dumps(state))
    (work / "hub").mkdir()
    config = write_config(work / "hub", keys=[("team", "agent", made.key)])
    with running_hub(config, port=port) as hub:
        yield Setting(claude, project, made.key, home, hub, work / "tmux.sock")


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """The scripted model on uvicorn in a thread, on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    config = uvicorn.Config(app, http="h11", ws="none", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise BenchError("the scripted model's server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def reach(what: str, ready: Any, alive: Any, started: float, root: int, marker: str) -> tuple[float, float]:
    """Wait until `ready()`; the seconds it took since `started` and the CPU seconds the session spent."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if not alive():
            raise BenchError(f"{what}: the session ended before it got there")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not reached within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started, sample(root, marker).ticks / TICKS


@contextlib.contextmanager
def headless(where: Setting, prompt: str, policy: Policy) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """`claude -p PROMPT` with the scripted model, in a process group of its own, killed at the end."""
    model = FakeModel(policy, max_steps=1_000_000)
    with serving(model.app) as url, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [str(where.claude), "-p", prompt, "--output-format", "json"],
            cwd=where.project,
            env=where.env(url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            yield process, started
        except BenchError as error:
            err.seek(0)
            said = err.read().decode(errors="replace").replace(where.key, "***").strip()[-400:]
            raise BenchError(f"{error}; claude's stderr: {said or 'nothing'}") from None
        finally:
            stop_group(process)
        if model.errors:
            raise BenchError(f"{prompt}: the scripted model failed: {model.errors[0]}")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


# -- the three states ---------------------------------------------------------------------------


def idle_interactive(where: Setting, seconds: float, settle: float) -> Measured:
    model = FakeModel(lambda turn: End("Nothing to do."))
    tmux = ["tmux", "-S", str(where.tmux_socket), "-f", "/dev/null"]
    with serving(model.app) as url:
        env = where.env(url)
        started = time.monotonic()
        subprocess.run(
            [*tmux, "new-session", "-d", "-s", "bench", "-x", "160", "-y", "50", str(where.claude)],
            cwd=where.project,
            env=env,  # the tmux server's own environment, so the window's too
            check=True,
            timeout=30,
        )
        try:
            pane = subprocess.run(
                [*tmux, "list-panes", "-t", "bench", "-F", "#{pane_pid}"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            root = int(pane.stdout.split()[0])

            def screen() -> str:
                shown = subprocess.run(
                    [*tmux, "capture-pane", "-p", "-t", "bench"], capture_output=True, text=True, timeout=30
                )
                return shown.stdout

            def alive() -> bool:
                return Path(f"/proc/{root}").exists()

            start = reach(
                "the interactive prompt", lambda: PROMPT in screen(), alive, started, root, where.marker
            )
            time.sleep(settle)  # what it does once after start-up is not its idle cost
            return measure("idle interactive (tmux)", root, where.marker, seconds, start, alive)
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)


def idle_worker(where: Setting, seconds: float, settle: float) -> Measured:
    registered = threading.Event()

    def worker(turn: Turn) -> Step:
        if turn.result is None and "workers register --session" in turn.text:
            return Call("Bash", {"command": found(REGISTER, turn.text), "description": "Register"})
        if turn.result is not None and turn.result[0] == "Bash" and "registered worker" in turn.result[1]:
            registered.set()
        return End("Waiting for work.")

    with headless(where, "/worker backend", worker) as (process, started):

        def waiting() -> bool:
            session = session_of(process.pid, where.marker, processes())
            return registered.is_set() and any("worker-stop-check.py" in proc.cmdline for proc in session)

        def alive() -> bool:
            return process.poll() is None

        what = "a registered worker in its Stop hook"
        start = reach(what, waiting, alive, started, process.pid, where.marker)
        time.sleep(settle)  # the hook's and the watcher's start-up is not their idle cost
        return measure("idle worker (claude -p, Stop hook)", process.pid, where.marker, seconds, start, alive)


@dataclass
class Loop:
    """A model that never thinks: one tool call after another until told to stop."""

    project: Path
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    going: threading.Event = field(default_factory=threading.Event)

    def __call__(self, turn: Turn) -> Step:
        if turn.result is None:
            return search("get_status", "list_tasks", "write_file")
        name, text, is_error = turn.result
        if is_error:
            self.errors.append(f"{name}: {text[:300]}")
        if name != "ToolSearch":
            self.calls += 1
        self.going.set()
        if self.stop.is_set():
            return End("Done.")
        return self.step(self.calls)

    def step(self, number: int) -> Call:
        vps = "python3 .claude/skills/vps-workspace/scripts/vps.py"
        steps = [
            Call("Bash", {"command": f"{vps} status", "description": "The hub's status"}),
            Call("mcp__vps__get_status", {}),
            Call("Read", {"file_path": str(self.project / "CLAUDE.md")}),
            Call("mcp__vps__write_file", {"path": f"notes/{number}.txt", "content": f"note {number}\n"}),
            Call("Bash", {"command": f"{vps} tasks list", "description": "The task queue"}),
            Call("mcp__vps__list_tasks", {}),
        ]
        return steps[number % len(steps)]


def working(where: Setting, seconds: float) -> Measured:
    loop = Loop(where.project)
    with headless(where, "Work through the checklist.", loop) as (process, started):

        def alive() -> bool:
            return process.poll() is None

        start = reach("the first tool call", loop.going.is_set, alive, started, process.pid, where.marker)
        calls = loop.calls
        measured = measure("working (claude -p, tool loop)", process.pid, where.marker, seconds, start, alive)
        rate = (loop.calls - calls) / measured.seconds
        if rate > 0:
            measured.note = f"{rate:.1f} tool calls/s, {measured.cpu / rate:.2f} CPU s each"
        loop.stop.set()
    if loop.errors:
        raise BenchError(f"a tool call failed: {loop.errors[0]}")
    if rate <= 0:
        raise BenchError("the working session made no tool call while it was measured")
    return measured


# -- the report ---------------------------------------------------------------------------------


def table(rows: list[Measured]) -> str:
    head = (
        "state",
        "procs",
        "RSS mean MB",
        "RSS peak MB",
        "USS mean MB",
        "CPU cores",
        "claude alone",
        "claude RSS peak",
        "start s",
        "start CPU s",
        "note",
    )
    cells = [
        (
            row.state,
            str(row.procs),
            f"{row.rss_mean:.0f}",
            f"{row.rss_peak:.0f}",
            f"{row.uss_mean:.0f}",
            f"{row.cpu:.3f}",
            f"{row.claude_cpu:.3f}",
            f"{row.claude_rss_peak:.0f}",
            f"{row.start_seconds:.1f}",
            f"{row.start_cpu:.1f}",
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [head, *cells]) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in [head, *cells]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="8 s per state: under a minute in all")
    parser.add_argument("--idle-seconds", type=float, help="seconds each idle state is sampled (default 20)")
    parser.add_argument(
        "--work-seconds", type=float, help="seconds the working session is sampled (default 30)"
    )
    args = parser.parse_args()
    idle = args.idle_seconds or (8.0 if args.ci else 20.0)
    work = args.work_seconds or (8.0 if args.ci else 30.0)
    settle = 2.0 if args.ci else 5.0
    if idle < 1 or work < 1:
        parser.error("sample each state for at least 1 s")
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_session-") as tmp, setting(Path(tmp)) as where:
            rows = [idle_interactive(where, idle, settle), idle_worker(where, idle, settle)]
            rows.append(working(where, work))
            hub_rss = where.hub_rss_mb()
    except (BenchError, subprocess.SubprocessError, OSError) as error:
        print(f"bench_session: could not measure: {error}", file=sys.stderr)
        return 1
    cores = os.cpu_count() or 0
    total_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    print(
        f"Claude Code {where.claude.parent.name}, {cores} cores, {total_mb} MB, load {os.getloadavg()[0]:.2f}"
    )
    print(table(rows))
    print(f"the hub (tests/hubproc.py, after these sessions): RSS {hub_rss:.0f} MB")
    print(
        "CPU cores: 1.0 = one core busy. The scripted model answers at once: the working row is the client's"
    )
    print("own upper bound; with a real model a session mostly waits on the network.")
    print(f"({time.monotonic() - began:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
