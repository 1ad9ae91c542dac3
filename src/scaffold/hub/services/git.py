"""The workspace as a git repository: set up when the hub starts, one commit per completed task.

When the hub starts, the workspace directory is created if missing and made a git repository
if it is not one (`git init`, a local identity for the hub's commits, and an initial commit of
whatever is there, even nothing). When a task completes, the hub stages everything that changed
(`git add -A`) and commits it with a message naming the task and the worker:

    task 7: Add the login form

    <the task's result>

    Task: 7
    Worker: 3 (frontend)

No change, no commit. The workspace is shared by every worker, so the commit of a task holds
everything changed in the tree since the last commit: edits that other workers made and that no
completion has committed yet are included too. That is the honest limit of one shared working
tree; each commit can still be undone on its own with `git revert <sha>`.

git runs as asyncio subprocesses (the event loop never waits on it), one at a time (one lock),
each bounded by a timeout. A git failure never loses a completion: it is logged and the task's
`commit` stays null.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

from scaffold.errors import GitError
from scaffold.hub.core.types import Task, Worker
from scaffold.hub.services.exec import minimal_environment

log = logging.getLogger("scaffold.hub")

GIT_TIMEOUT = 120.0  # seconds for one git command; `git add -A` of a large tree takes a while
HUB_NAME = "scaffold hub"
HUB_EMAIL = "hub@scaffold.invalid"
INITIAL_MESSAGE = "Workspace under version control by the hub"
STOP_GRACE = 2.0  # seconds a timed-out git gets to clean up after SIGTERM
LOCK_RETRIES = 10
LOCK_RETRY_DELAY = 0.2  # seconds
MAX_SUMMARY = 20_000  # characters of the task's result kept in the commit message
# Workers can write into the workspace, .git/ included: the hub's own git must not run hooks or
# an fsmonitor command they could have planted, nor wait for a signing key.
SAFE_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM first: git then removes its .git/index.lock, which a SIGKILL would leave behind
    (and every later commit would fail on it)."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass(frozen=True)
class GitResult:
    code: int
    stdout: str
    stderr: str


def commit_message(task: Task, worker: Worker | None) -> str:
    """Subject `task <id>: <title>`, the result as the body, `Task:` and `Worker:` trailers."""
    title = " ".join(task.title.split())  # a title may hold newlines; the subject is one line
    summary = (task.result or "").replace("\x00", "").strip()
    if len(summary) > MAX_SUMMARY:
        summary = summary[:MAX_SUMMARY].rstrip() + "\n\n[result truncated]"
    if worker is not None:
        who = f"{worker.id} ({worker.role})"
    else:
        who = str(task.worker_id) if task.worker_id is not None else "unknown"
    trailers = f"Task: {task.id}\nWorker: {who}"
    return "\n\n".join(part for part in (f"task {task.id}: {title}", summary, trailers) if part) + "\n"


class GitRepository:
    """The workspace's repository; `ensure()` on start, `commit_task()` on each completion."""

    def __init__(self, root: Path, timeout: float = GIT_TIMEOUT) -> None:
        self.root = root.expanduser().absolute()
        self.timeout = timeout
        self.ready = False
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _lock(self) -> asyncio.Lock:
        # One lock per event loop: an app served by two loops in turn (tests) must not share one.
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def _environment(self) -> dict[str, str]:
        # Not the hub's environment (no secrets, no GIT_DIR from a caller); git must not look
        # for a repository above the workspace, nor ask anyone for anything.
        return minimal_environment(
            {
                "GIT_CEILING_DIRECTORIES": str(self.root.resolve().parent),
                "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C",
            }
        )

    async def git(self, *args: str, stdin: bytes | None = None, check: bool = True) -> GitResult:
        """Run `git <args>` in the workspace; GitError if it fails (with `check`) or times out.

        A worker's own git (`git status` through exec) holds .git/index.lock for a moment: a
        command refused for that is tried again, a few times.
        """
        result = await self._git_once(args, stdin)
        for _ in range(LOCK_RETRIES):
            if not (result.code != 0 and "index.lock" in result.stderr and "exists" in result.stderr):
                break
            await asyncio.sleep(LOCK_RETRY_DELAY)
            result = await self._git_once(args, stdin)
        if check and result.code != 0:
            raise GitError(f"git {' '.join(args)} failed ({result.code}): {result.stderr.strip()[:2000]}")
        return result

    async def _git_once(self, args: tuple[str, ...], stdin: bytes | None) -> GitResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                *SAFE_CONFIG,
                *args,
                cwd=self.root,
                env=self._environment(),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise GitError(f"cannot run git in {self.root}: {error}") from error
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except BaseException as error:  # the timeout, or the caller cancelled: no git left behind
            if not isinstance(error, TimeoutError):
                if proc.returncode is None:
                    proc.kill()
                raise
            await _stop(proc)
            raise GitError(f"git {args[0]} took longer than {self.timeout:g} s; stopped it") from None
        return GitResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    async def ensure(self) -> None:
        """Create the workspace if missing and make it a repository with a first commit.

        OSError if the directory cannot be created; GitError if git fails.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        async with self._lock():
            await self._ensure_repository()

    async def _ensure_repository(self) -> None:
        if not (self.root / ".git").exists():
            await self.git("init", "--quiet")
            log.info("workspace %s: initialised a git repository", self.root)
        for key, value in (("user.name", HUB_NAME), ("user.email", HUB_EMAIL)):
            if (await self.git("config", "--local", "--get", key, check=False)).code != 0:
                await self.git("config", "--local", key, value)
        if (await self.git("rev-parse", "--verify", "--quiet", "HEAD", check=False)).code != 0:
            await self.git("add", "-A")
            await self.git("commit", "--quiet", "--no-verify", "--allow-empty", "-m", INITIAL_MESSAGE)
        self.ready = True

    async def commit_task(self, task: Task, worker: Worker | None) -> str | None:
        """Commit what changed in the workspace for this task; the sha, or None (no change, or git
        failed: that is logged, never raised)."""
        try:
            async with self._lock():
                if not self.ready:  # it failed at start; the workspace may be fixed by now
                    await self._ensure_repository()
                # Everything in the tree: the changes of other workers not committed yet too
                # (one shared working tree; see the module's docstring).
                await self.git("add", "-A")
                staged = await self.git("diff", "--cached", "--quiet", check=False)
                if staged.code == 0:
                    return None
                if staged.code != 1:
                    raise GitError(f"git diff --cached failed ({staged.code}): {staged.stderr.strip()}")
                message = commit_message(task, worker).encode("utf-8", errors="replace")
                # whitespace: keep lines starting with '#' (a markdown heading in the result)
                await self.git(
                    "commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-F", "-", stdin=message
                )
                sha = (await self.git("rev-parse", "--verify", "HEAD")).stdout.strip()
        except (GitError, OSError) as error:
            self.ready = False
            log.error("task %s: the workspace was not committed: %s", task.id, error)
            return None
        log.info("task %s: committed the workspace as %s", task.id, sha)
        return sha
