"""Running a command in the workspace: `POST /v1/exec` and the MCP tool `run_command`.

A command is an argv list (run directly) or a shell string (`/bin/sh -c`), in a directory of the
workspace, with a timeout, an output cap and a minimal environment:

- It runs confined (scaffold.hub.services.sandbox): by default in a bubblewrap sandbox that shows it
  its tree (the workspace), read-only system directories, a private /tmp, its own /proc and
  nothing of the hub's data, configuration or home, with limits on processes, memory and CPU
  time and no network unless `[exec] network = true`. Where the sandbox does not work, commands
  are refused (503) unless `[exec] sandbox = "none"` accepts running them as the hub's user.
- At most `[exec] max_concurrent` commands run at once; one more is refused at once with 429
  and Retry-After (it does not wait: its timeout would start counting in a queue).
- `cwd` is relative to the workspace root: absolute paths, `..`, NUL and symlinks resolving
  outside the root are refused.
- The environment is PATH, HOME and LANG (from the hub's; in the sandbox HOME is its private
  /tmp) plus the caller's extras; nothing else of the hub's environment (its secrets) is passed on.
- The command runs in a new session (its own process group) with stdin from /dev/null. On
  timeout the whole group gets SIGTERM, then SIGKILL after a grace period. When the command
  ends, whatever it left running in its group is ended the same way; in the sandbox, whatever
  it left running at all (it cannot leave the sandbox's pid namespace, which ends with it).
- The exit code is -N when signal N ended the command. bubblewrap reports that as 128 + N, so
  in the sandbox an exit status 129..192 is reported as -1..-64 (also when a command exits so).
- stdout and stderr are read concurrently; at most `max_output_bytes` of each is kept (the rest
  is read and dropped, so the command never blocks on a full pipe), then decoded as UTF-8 with
  replacement characters.
- Given a task id and its lease token, the lease is heartbeated every lease/3 seconds while the
  command runs, so a long build does not lose its task; a stale token is refused before running.
- Every command run is an `exec.ran` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaffold.errors import (
    Disabled,
    InvalidRequest,
    LeaseConflict,
    NotFound,
    TooManyRequests,
)
from scaffold.hub.core.paths import confine
from scaffold.hub.services.sandbox import Launch, Limits, Sandbox

if TYPE_CHECKING:
    from scaffold.hub.core.settings import HubSettings
    from scaffold.hub.core.types import Clock
    from scaffold.hub.services.queue import Queue
    from scaffold.hub.store.base import Store

log = logging.getLogger("scaffold.hub")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
READ_CHUNK = 64 * 1024
EVENT_TEXT = 500  # characters of the command kept in its event
POLL = 0.02  # seconds between looks at a process group that was told to end
SIGNALLED = range(129, 129 + 64)  # how bubblewrap reports "signal N ended it": 128 + N
BWRAP_EXEC_FAILED = "bwrap: execvp "


def minimal_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH, HOME and LANG of the hub's environment (or defaults), plus `extra`."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": os.environ.get("HOME") or "/",
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Command:
    """What to run: exactly one of `argv` and `shell`; `cwd` is already resolved and checked."""

    argv: tuple[str, ...] | None
    shell: str | None
    cwd: Path
    timeout: float
    env: Mapping[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return shlex.join(self.argv) if self.argv is not None else self.shell or ""


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    """The command's exit status; -N when a signal N ended it (a timeout: -15 or -9)."""
    stdout: str
    stderr: str
    duration_seconds: float
    truncated: bool
    timed_out: bool

    def view(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration_seconds": self.duration_seconds,
            "truncated": self.truncated,
            "timed_out": self.timed_out,
        }


def resolve_cwd(root: Path, cwd: str) -> Path:
    """The directory `cwd` names inside the workspace root, confined as the file API's paths are."""
    shown = repr(cwd[:200])
    target = confine(root.resolve(), cwd, root_ok=True, what="cwd").real
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"cwd {shown} does not exist in the workspace") from None
    except OSError as error:  # a name too long, a directory the hub may not enter
        raise InvalidRequest(f"cwd {shown} cannot be used: {error.strerror or error}") from None
    if not stat.S_ISDIR(mode):
        raise InvalidRequest(f"cwd {shown} is not a directory")
    return target


class _Capture:
    """Reads a pipe to its end, keeping the first `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    async def read(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(READ_CHUNK):
            room = self.limit - len(self.data)
            if len(chunk) > room:
                self.truncated = True
            if room > 0:
                self.data += chunk[:room]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class _Status:
    """bwrap's --json-status-fd: the sandbox's pid 1 (as the hub sees it), then the exit code."""

    def __init__(self) -> None:
        self.child: int | None = None
        self.exited = False  # the command ran and ended (bwrap's own failures write no exit code)

    async def read(self, launch: Launch) -> None:
        """Read the launch's status pipe (which then owns the descriptor) to its end: bwrap would
        die of SIGPIPE writing the exit code to a closed pipe."""
        assert launch.status_read is not None
        stream = asyncio.StreamReader()
        pipe = os.fdopen(launch.status_read, "rb", buffering=0)
        launch.status_read = None
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), pipe
        )
        try:
            while line := await stream.readline():
                with contextlib.suppress(ValueError, AttributeError):
                    status = json.loads(line)
                    self.child = status.get("child-pid", self.child)
                    self.exited = self.exited or "exit-code" in status
        finally:
            transport.close()


class Executor:
    """Runs commands; remembers the running ones so the hub can end them when it stops."""

    def __init__(
        self,
        root: Path,
        max_output_bytes: int,
        sandbox: Sandbox,
        max_concurrent: int = 8,
        kill_grace: float = KILL_GRACE,
    ) -> None:
        self.root = root.expanduser().absolute()
        self.max_output_bytes = max_output_bytes
        self.sandbox = sandbox
        self.max_concurrent = max_concurrent
        self.kill_grace = kill_grace
        self.running: dict[int, Callable[[], int]] = {}  # process id -> its group, to end it
        self.active = 0  # commands admitted and not yet ended
        self.releasing: set[asyncio.Task[None]] = set()  # cgroups removed once they are empty
        self.closing = False

    @classmethod
    def configured(cls, settings: HubSettings) -> Executor:
        limits = Limits(settings.exec_max_processes, settings.exec_max_memory_mb, settings.exec_cpu_seconds)
        sandbox = Sandbox(
            settings.exec_sandbox, network=settings.exec_network, limits=limits, hidden=(settings.data_dir,)
        )
        return cls(settings.workspace, settings.exec_max_output_bytes, sandbox, settings.exec_max_concurrent)

    async def start(self) -> None:
        """Probe the sandbox once (the workspace must exist): commands are refused if it fails."""
        await asyncio.to_thread(self.sandbox.probe, self.root)

    async def run(self, command: Command, tree: Path | None = None, readonly: Sequence[Path] = ()) -> Outcome:
        """Run it in `tree` (the workspace, or a task's tree, which `command.cwd` is inside; with
        `readonly` paths beside it); SandboxUnavailable (503) or TooManyRequests (429) before
        anything starts."""
        self.sandbox.check()
        if self.active >= self.max_concurrent:
            raise TooManyRequests(
                f"{self.active} commands are running, this hub's limit ([exec] max_concurrent); "
                "retry when one has ended",
                retry_after=1,
            )
        self.active += 1  # counted before the first await, so a burst cannot slip past the limit
        argv = list(command.argv) if command.argv is not None else ["/bin/sh", "-c", command.shell or ""]
        # No bytecode caches left in the tree for a commit to pick up (the exclude list is the
        # other guard); a command that wants them may still set the variable to "".
        env = minimal_environment({"PYTHONDONTWRITEBYTECODE": "1", **command.env})
        launch = self.sandbox.launch(argv, tree or self.root, command.cwd, env, readonly)
        try:
            return await self._run(command, launch)
        finally:
            self.active -= 1
            if not self.sandbox.release(launch, last_try=False):
                # The sandbox's processes die with bwrap, a moment after it; its cgroup can go
                # then, without holding up the answer.
                cleanup = asyncio.create_task(self._release_soon(launch))
                self.releasing.add(cleanup)
                cleanup.add_done_callback(self.releasing.discard)

    async def _release_soon(self, launch: Launch) -> None:
        try:
            deadline = time.monotonic() + self.kill_grace
            await _until(lambda: self.sandbox.release(launch, last_try=False), deadline)
        finally:
            self.sandbox.release(launch)

    async def _run(self, command: Command, launch: Launch) -> Outcome:
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                cwd=command.cwd,
                env=launch.env,
                start_new_session=True,
                preexec_fn=launch.preexec,
                pass_fds=launch.pass_fds,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:  # as a shell says it: 127 not found, 126 cannot run
            return _not_run(launch.argv[0], error, started)
        launch.started()
        status = _Status()
        readers = [asyncio.create_task(status.read(launch))] if launch.status_read is not None else []

        def group() -> int:  # in the sandbox, its processes form the group of its pid 1
            return status.child or proc.pid  # start_new_session: the command leads its own group

        self.running[proc.pid] = group
        out, err = _Capture(self.max_output_bytes), _Capture(self.max_output_bytes)
        readers += [asyncio.create_task(out.read(proc.stdout)), asyncio.create_task(err.read(proc.stderr))]
        ended = False
        try:
            exited = await _exited(proc, started + command.timeout, lambda: self.closing)
            timed_out = not exited and not self.closing
            await self._end_group(group(), proc, readers)
            ended = True
        finally:
            self.running.pop(proc.pid, None)
            for reader in readers:
                reader.cancel()
            if not ended:  # cancelled: leave nothing of the command running
                _signal_group(group(), signal.SIGKILL)
                _signal_group(proc.pid, signal.SIGKILL)
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        stderr = err.text()
        if self.sandbox.confined and not status.exited and code == 1 and stderr.startswith(BWRAP_EXEC_FAILED):
            return _not_run(command.argv[0] if command.argv else "sh", _exec_error(stderr), started)
        if self.sandbox.confined and code in SIGNALLED:
            code = -(code - 128)
        return Outcome(
            code,
            out.text(),
            stderr,
            round(time.monotonic() - started, 6),
            out.truncated or err.truncated,
            timed_out,
        )

    async def _end_group(
        self, group: int, proc: asyncio.subprocess.Process, readers: Sequence[asyncio.Task[None]]
    ) -> None:
        """SIGTERM what is left of the group, SIGKILL after the grace; then drain the pipes."""
        if _group_alive(group):
            _signal_group(group, signal.SIGTERM)
            if not await _until(lambda: not _group_alive(group), time.monotonic() + self.kill_grace):
                _signal_group(group, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), self.kill_grace)
        # A process that left the group (its own session) may still hold a pipe: stop reading.
        await asyncio.wait(readers, timeout=self.kill_grace)

    def shutdown(self) -> None:
        """The hub is stopping: end every running command now (SIGTERM, SIGKILL after the grace)."""
        self.closing = True
        for group in list(self.running.values()):
            _signal_group(group(), signal.SIGTERM)
        for cleanup in list(self.releasing):
            cleanup.cancel()  # its cgroup: removed now if it is empty, else by the next start's sweep


def _not_run(program: str, error: OSError, started: float) -> Outcome:
    code = 127 if isinstance(error, FileNotFoundError) else 126
    reason = "command not found" if code == 127 else error.strerror or str(error)
    return Outcome(code, "", f"{program}: {reason}\n", round(time.monotonic() - started, 6), False, False)


def _exec_error(stderr: str) -> OSError:
    """The error of bwrap's "bwrap: execvp PROGRAM: REASON" (it could not start the command)."""
    reason = stderr.splitlines()[0].rsplit(": ", 1)[-1]
    if reason == os.strerror(2):
        return FileNotFoundError(2, reason)
    return OSError(0, reason)


async def _exited(proc: asyncio.subprocess.Process, deadline: float, stop: Callable[[], bool]) -> bool:
    """Wait until the process has exited (True), or the deadline has passed or `stop()` (False).

    `proc.wait()` alone is not enough: it also waits for the output pipes to close, which a
    background child holding them delays until it ends. So look at the exit status too, at
    growing intervals (1 ms up to 50 ms: a quick command is not slowed down).
    """
    waiter = asyncio.ensure_future(proc.wait())
    delay = 0.001
    try:
        while proc.returncode is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop():
                return False
            await asyncio.wait({waiter}, timeout=min(delay, remaining))
            delay = min(delay * 2, 0.05)
        return True
    finally:
        waiter.cancel()


async def _until(done: Callable[[], bool], deadline: float) -> bool:
    """Look at `done()` at growing intervals (1 ms up to POLL) until it holds (True) or the deadline."""
    delay = 0.001
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, POLL)
    return True


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    """Whether a process of the group still runs (zombies do not count: where PID 1 does not
    reap orphans, as in some containers, they stay in the group forever)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        fields = line.rsplit(")", 1)[-1].split()  # after "pid (name)": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
            return True
    return False


# -- the request ---------------------------------------------------------------------------------


async def execute(
    request: Mapping[str, Any],
    actor: str,
    *,
    settings: HubSettings,
    executor: Executor,
    queue: Queue,
    store: Store,
    clock: Clock,
    tree: Path | None = None,
    readonly: Sequence[Path] = (),
    tree_task: int | None = None,
) -> Outcome:
    """Run the command a validated request describes (see workspace_schemas.EXEC_BODY) in `tree`
    (main, the workspace, when None; else the tree of task `tree_task`) and record it.

    Disabled (403) when exec is off; PathRefused, NotFound or InvalidRequest for a bad cwd,
    timeout, environment or lease pair; LeaseConflict (409) for a stale lease, before running.
    """
    if not settings.exec_enabled:
        raise Disabled("running commands is switched off on this hub ([exec] enabled = false in hub.toml)")
    argv, shell = request.get("argv"), request.get("shell")
    if (argv is None) == (shell is None):
        raise InvalidRequest("give exactly one of argv (a list) and shell (a string)")
    texts = [*(argv or [shell]), *request.get("env", {}).values()]
    if any("\x00" in text for text in texts):
        raise InvalidRequest("the command and its environment must not hold NUL characters")
    if argv is not None and not argv[0]:
        raise InvalidRequest("argv[0], the program, is empty")
    bad = [name for name in request.get("env", {}) if not ENV_NAME.fullmatch(name)]
    if bad:
        raise InvalidRequest(f"environment variable name {bad[0][:100]!r} must match [A-Z_][A-Z0-9_]*")
    timeout = request.get("timeout_seconds", settings.exec_timeout_seconds)
    if not 0 < timeout <= settings.exec_timeout_seconds:
        raise InvalidRequest(
            f"timeout_seconds must be above 0 and at most {settings.exec_timeout_seconds:g}, this hub's limit"
        )
    task_id, token = request.get("task_id"), request.get("lease_token")
    if (task_id is None) != (token is None):
        raise InvalidRequest("give task_id and lease_token together, or neither")
    cwd_text = request.get("cwd", ".")
    command = Command(
        argv=tuple(argv) if argv is not None else None,
        shell=shell,
        cwd=resolve_cwd(tree or executor.root, cwd_text),
        timeout=float(timeout),
        env=dict(request.get("env", {})),
    )
    keeper = None
    if task_id is not None and token is not None:
        if not token.isascii():  # never one the hub gave out (and compare_digest refuses it)
            raise LeaseConflict(f"task {task_id}: this lease token is not its current lease")
        queue.heartbeat(task_id, token)  # a stale token: 409 now, before anything runs
        keeper = asyncio.create_task(queue.hold(task_id, token))
    try:
        outcome = await executor.run(command, tree, readonly)
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
    kind = "argv" if command.argv is not None else "shell"
    store.append_event(
        "exec.ran",
        clock(),
        actor=actor,
        **{kind: command.text()[:EVENT_TEXT]},
        cwd=cwd_text,
        exit_code=outcome.exit_code,
        duration_seconds=outcome.duration_seconds,
        timed_out=outcome.timed_out,
        task_id=task_id if task_id is not None else tree_task,
        worker_id=request.get("worker_id"),
    )
    return outcome
