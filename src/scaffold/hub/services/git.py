"""The workspace as a git repository: main's history, set up when the hub starts.

When the hub starts, the workspace directory is created if missing and made a git repository
if it is not one (`git init`, a local identity for the hub's commits, and an initial commit of
whatever is there, even nothing). The workspace directory is main's checkout: what the
coordinator and people read and write. Each claimed task works in a tree of its own
(scaffold.hub.services.trees) and reaches main through the merge queue
(scaffold.hub.services.merge), one commit per task:

    task 7: Add the login form

    <the task's result>

    Task: 7
    Worker: 3 (frontend)

A change made to main directly (through the file API with no task, or by a command run on main)
is committed at once as its own commit, `workspace: <what> <path>` with an `Actor:` trailer.

Build junk never reaches a commit: the repository's own `.git/info/exclude` (not the user's
`.gitignore`) lists `__pycache__/`, `*.pyc`, `.pytest_cache/` and the like, and the shared paths.

git runs as asyncio subprocesses (the event loop never waits on it), each bounded by a timeout;
whatever moves main runs under one lock.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
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
JUNK = (
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".coverage",
    ".coverage.*",
    "*.egg-info/",
    ".DS_Store",
    "*.swp",
)
"""Build junk the hub's commits leave out, whatever the project's .gitignore says."""
EXCLUDE_MARK = "# scaffold hub: kept out of every commit (build junk, shared paths)"
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


def direct_message(subject: str, actor: str | None) -> str:
    """A change made to main directly: its subject, and who made it."""
    return f"{' '.join(subject.split())}\n\nActor: {actor or 'unknown'}\n"


class LoopLock:
    """`lock()`: an asyncio.Lock of the running event loop, so that an app served by two loops
    in turn (tests) never shares one between them."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


def _index_locked(result: GitResult) -> bool:
    """Refused because someone's git (a worker's `git status`) holds the index for a moment."""
    return result.code != 0 and "index.lock" in result.stderr and "exists" in result.stderr


class GitRepository:
    """The workspace's repository (main's checkout); `ensure()` on start."""

    def __init__(self, root: Path, timeout: float = GIT_TIMEOUT, shared_paths: tuple[str, ...] = ()) -> None:
        self.root = root.expanduser().absolute()
        self.timeout = timeout
        self.shared_paths = shared_paths
        self._main: tuple[str, str] | None = None
        self.branch = "main"
        """Main: the branch checked out in the workspace when the hub started."""
        self.ready = False
        self.lock = LoopLock()
        """Held by whatever moves main: a merge, a direct commit."""

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

    async def git(
        self, *args: str, stdin: bytes | None = None, check: bool = True, cwd: Path | None = None
    ) -> GitResult:
        """Run `git <args>` in the workspace (or in the tree `cwd`); GitError if it fails (with
        `check`) or times out.

        A worker's own git (`git status` through exec) holds .git/index.lock for a moment: a
        command refused for that is tried again, a few times.
        """
        result = await self._git_once(args, stdin, cwd or self.root)
        for _ in range(LOCK_RETRIES):
            if not _index_locked(result):
                break
            await asyncio.sleep(LOCK_RETRY_DELAY)
            result = await self._git_once(args, stdin, cwd or self.root)
        if check and result.code != 0:
            raise GitError(f"git {' '.join(args)} failed ({result.code}): {result.stderr.strip()[:2000]}")
        return result

    async def _git_once(self, args: tuple[str, ...], stdin: bytes | None, cwd: Path) -> GitResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                *SAFE_CONFIG,
                *args,
                cwd=cwd,
                env=self._environment(),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise GitError(f"cannot run git in {cwd}: {error}") from error
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except BaseException as error:  # the timeout, or the caller cancelled: no git left behind
            if not isinstance(error, TimeoutError):
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()  # reaped, so no git outlives the hub
                raise
            await _stop(proc)
            raise GitError(f"git {args[0]} took longer than {self.timeout:g} s; stopped it") from None
        return GitResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    def run(
        self, *args: str, stdin: bytes | None = None, check: bool = True, cwd: Path | None = None
    ) -> GitResult:
        """`git()` from a worker thread, blocking: for a sequence of commands that must not wait
        for a busy event loop between them (a merge holds main's lock meanwhile)."""
        result = self._run_once(args, stdin, cwd or self.root)
        for _ in range(LOCK_RETRIES):
            if not _index_locked(result):
                break
            time.sleep(LOCK_RETRY_DELAY)
            result = self._run_once(args, stdin, cwd or self.root)
        if check and result.code != 0:
            raise GitError(f"git {' '.join(args)} failed ({result.code}): {result.stderr.strip()[:2000]}")
        return result

    def _run_once(self, args: tuple[str, ...], stdin: bytes | None, cwd: Path) -> GitResult:
        try:
            proc = subprocess.Popen(
                ["git", *SAFE_CONFIG, *args],
                cwd=cwd,
                env=self._environment(),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            raise GitError(f"cannot run git in {cwd}: {error}") from error
        with proc:
            try:
                out, err = proc.communicate(stdin, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()  # SIGTERM first, as _stop does: git then removes its index.lock
                try:
                    proc.communicate(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                raise GitError(f"git {args[0]} took longer than {self.timeout:g} s; stopped it") from None
        return GitResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    async def ensure(self) -> None:
        """Create the workspace if missing and make it a repository with a first commit.

        OSError if the directory cannot be created; GitError if git fails.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        async with self.lock():
            await self._ensure_repository()

    async def _ensure_repository(self) -> None:
        if not (self.root / ".git").exists():
            await self.git("init", "--quiet")
            log.info("workspace %s: initialised a git repository", self.root)
        for key, value in (("user.name", HUB_NAME), ("user.email", HUB_EMAIL)):
            if (await self.git("config", "--local", "--get", key, check=False)).code != 0:
                await self.git("config", "--local", key, value)
        await asyncio.to_thread(self._write_exclude)
        if (await self.git("rev-parse", "--verify", "--quiet", "HEAD", check=False)).code != 0:
            await self.git("add", "-A")
            await self.git("commit", "--quiet", "--no-verify", "--allow-empty", "-m", INITIAL_MESSAGE)
        branch = (await self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)).stdout.strip()
        if not branch:
            raise GitError(
                f"the workspace {self.root} has a detached HEAD; the hub merges tasks into the branch "
                "checked out there: check one out (git checkout main) and start the hub again"
            )
        self.branch = branch
        self.ready = True

    def _write_exclude(self) -> None:
        """Our block of `.git/info/exclude`, rewritten; the lines of others are kept."""
        exclude = self.root / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        try:
            kept = exclude.read_text(encoding="utf-8").split(EXCLUDE_MARK)[0].rstrip("\n")
        except FileNotFoundError:
            kept = ""
        shared = [f"/{path}" for path in self.shared_paths]
        block = "\n".join((EXCLUDE_MARK, *JUNK, *shared, ""))
        exclude.write_text(f"{kept}\n\n{block}" if kept else block, encoding="utf-8")

    def head_and_tree(self, tree: Path | None = None) -> tuple[str, str]:
        """Main's head and its tree's id (or a task tree's HEAD and its tree's), from a worker
        thread. Main's are remembered from the hub's own moves of it; a move that finds main
        elsewhere (someone committed there by hand) forgets them (see move_main)."""
        if tree is None and self._main is not None:
            return self._main
        ref = f"refs/heads/{self.branch}" if tree is None else "HEAD"
        commit, tree_id = self.run("rev-parse", ref, f"{ref}^{{tree}}", cwd=tree).stdout.split()
        if tree is None:
            self._main = (commit, tree_id)
        return commit, tree_id

    async def head(self) -> str:
        return (await self.git("rev-parse", "--verify", f"refs/heads/{self.branch}")).stdout.strip()

    def forget_head(self) -> None:
        self._main = None

    def commit(self, tree: str, parent: str, message: str, cwd: Path | None = None) -> str:
        """A new commit object of `tree` on `parent`, no ref moved (from a worker thread)."""
        text = message.encode("utf-8", errors="replace")
        return self.run("commit-tree", tree, "-p", parent, "-F", "-", stdin=text, cwd=cwd).stdout.strip()

    def move_main(self, before: str, after: str, after_tree: str) -> bool:
        """Main from `before` to `after`, from a worker thread: the ref, then its checkout; False
        (nothing moved, the remembered head forgotten) if main is not at `before` any more. The
        caller holds `lock()`. The checkout keeps changes in main's tree that the move does not
        touch; one it would overwrite is a GitError, and main's ref is put back."""
        ref = f"refs/heads/{self.branch}"
        if self.run("update-ref", "-m", "scaffold hub: merge", ref, after, before, check=False).code != 0:
            self.forget_head()
            return False
        self._main = (after, after_tree)
        moved = self.run("read-tree", "-m", "-u", before, after, check=False)
        if moved.code != 0:
            self.forget_head()
            self.run("update-ref", f"refs/heads/{self.branch}", before, after)
            raise GitError(f"main's checkout could not move to {after[:12]}: {moved.stderr.strip()[:2000]}")
        return True

    async def commit_direct(self, paths: list[str] | None, subject: str, actor: str | None) -> str | None:
        """Commit what changed in main's checkout (at `paths`, or anywhere) as its own commit; the
        sha, or None when nothing changed or git failed (logged: the change itself is made)."""
        try:
            async with self.lock():
                if not self.ready:
                    await self._ensure_repository()
                where = ["--", *paths] if paths is not None else []
                await self.git("add", "-A", *where)
                staged = await self.git("diff", "--cached", "--quiet", check=False)
                if staged.code == 0:
                    return None
                if staged.code != 1:
                    raise GitError(f"git diff --cached failed ({staged.code}): {staged.stderr.strip()}")
                message = direct_message(subject, actor).encode("utf-8", errors="replace")
                await self.git(
                    "commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-F", "-", stdin=message
                )
                self.forget_head()
                return await self.head()
        except (GitError, OSError) as error:
            self.ready = False
            log.error("the workspace's change (%s) was not committed: %s", subject[:200], error)
            return None
