"""Every claimed task works in a git worktree of its own; main is the workspace itself.

**Which tree.** A files, grep or exec call that names a worker (`worker_id`) holding a claimed
task acts in that task's tree; any other call (no worker, or a worker with no task) acts on main,
the workspace directory. The tree is made on the first such call of the claim, detached at
main's head at that moment, which already holds the merged work of every task the task depends on
(a dependent is ready only once they are done, and done means merged). Nothing a worker does in
it is visible to another task until the merge queue (scaffold.hub.services.merge) puts it on main.

**One tree per claim.** A tree is named after its task and the moment of the claim
(`task-<id>-<claimed_at in ms>`), so a new attempt never sees the half-work of one that was
released, expired or failed: each pass of the reaper removes the trees whose claim has ended, a
completed task's tree goes when its merge is done, and a hub that starts again keeps the trees of
claims still held and removes the rest (`git worktree prune` included).

**Spare trees.** Checking out a large workspace takes a while (10,000 files: 0.2-0.6 s here), so
the hub keeps `[workspace] spare_trees` trees made in advance; a claim's first call takes one and
moves it to main's current head, which changes only the files main changed since.

**Shared paths.** `[workspace] shared_paths` (prepared environments: `node_modules`, `.venv`) are
symbolic links from each tree to the workspace's copy, left out of every commit, and bound
read-only into the sandbox of a command, so a tree needs no fresh install. A shared path that
the repository tracks is not linked (the tree has its own copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from scaffold.errors import GitError, NotFound, TreeUnavailable
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Task
from scaffold.hub.services.git import GitRepository
from scaffold.hub.store.base import Store, TaskFilter

log = logging.getLogger("scaffold.hub")

TREE_NAME = re.compile(r"task-(\d+)-(\d+)")
SPARE_PREFIX = "spare-"
USAGE_SECONDS = 10.0
"""How long the disk use shown in /v1/status may be stale: walking the trees costs."""


@dataclass(frozen=True)
class Tree:
    """Where a call acts: main (no task) or one task's tree."""

    root: Path
    task_id: int | None = None
    base: str | None = None
    """The commit of main the tree started from."""
    readonly: tuple[Path, ...] = ()
    """Paths outside the tree a command in it needs, read-only: the repository, the shared paths."""
    claimed_at: float | None = None


@dataclass
class Usage:
    trees: int = 0
    spares: int = 0
    bytes: int = 0
    measured_at: float = field(default=0.0)


def _claim_ms(claimed_at: float | None) -> int:
    return round((claimed_at or 0.0) * 1000)


class TaskTrees:
    def __init__(self, git: GitRepository, store: Store, settings: HubSettings) -> None:
        self.git = git
        self.store = store
        self.path = settings.trees.expanduser().absolute()
        self.shared = settings.shared_paths
        self.spares_wanted = settings.spare_trees
        self.main = Tree(git.root)
        self._root = git.root.resolve()  # the workspace, as links and sandbox binds name it
        self._trees: dict[int, Tree] = {}
        self._spares: list[Path] = []
        self._refilling: asyncio.Task[None] | None = None
        self._usage = Usage()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    # -- which tree --------------------------------------------------------------------------

    async def for_worker(self, worker_id: int | None) -> Tree:
        """The tree of the task `worker_id` holds, made if it is the claim's first call; main
        when no worker is named or it holds no task. NotFound for an unknown worker."""
        if worker_id is None:
            return self.main
        self.store.get_worker(worker_id)  # NotFound for a worker that does not exist
        held = self.store.list_tasks(TaskFilter(states=("claimed",), worker_id=worker_id, limit=1))
        if not held:
            return self.main
        return await self.for_task(held[0])

    async def for_task(self, task: Task) -> Tree:
        """The tree of this claim of `task` (which must be claimed), made if missing."""
        tree = self._trees.get(task.id)
        if tree is not None and tree.claimed_at == task.claimed_at:
            return tree
        async with self._lock():
            tree = self._trees.get(task.id)
            if tree is not None and tree.claimed_at == task.claimed_at:
                return tree
            if tree is not None:  # an earlier claim's: its half-work goes
                await self._remove(self._trees.pop(task.id).root)
            if not self.git.ready:
                raise TreeUnavailable(
                    f"task {task.id} cannot have a working tree: the workspace {self.git.root} is not a "
                    "working git repository (see the hub's log)"
                )
            try:
                tree = await self._make(task)
            except (GitError, OSError) as error:
                log.error("task %s: its tree could not be made: %s", task.id, error)
                raise TreeUnavailable(f"task {task.id} cannot have a working tree: {error}") from None
            self._trees[task.id] = tree
        self._refill()
        return tree

    def existing(self, task_id: int) -> Tree | None:
        return self._trees.get(task_id)

    # -- making and removing -----------------------------------------------------------------

    async def _make(self, task: Task) -> Tree:
        path = self.path / f"task-{task.id}-{_claim_ms(task.claimed_at)}"
        head = await self.git.head()
        spare = self._spares.pop() if self._spares else None
        made = False
        if spare is not None:
            try:
                await self.git.git("worktree", "move", str(spare), str(path))
                await self.git.git("checkout", "--quiet", "--detach", "--force", head, cwd=path)
                made = True
            except GitError as error:
                log.warning("a spare tree could not be used (%s); making one", error)
                await self._remove(path if path.exists() else spare)
        if not made:
            await self._add(path, head)
        readonly = [self._root / ".git"]
        for shared in self.shared:
            source, link = self._root / shared, path / shared
            if link.exists() or link.is_symlink():  # tracked: the tree has its own copy
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
            readonly.append(source)
        log.info("task %s: its tree is %s, at %s", task.id, path, head[:12])
        return Tree(path, task.id, head, tuple(readonly), task.claimed_at)

    async def _add(self, path: Path, head: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        await self.git.git("worktree", "add", "--quiet", "--detach", str(path), head)

    async def _remove(self, path: Path) -> None:
        """The tree and git's record of it; whatever git cannot remove goes anyway."""
        removed = await self.git.git("worktree", "remove", "--force", "--force", str(path), check=False)
        if removed.code != 0 or path.exists():
            await asyncio.to_thread(shutil.rmtree, path, True)
            await self.git.git("worktree", "prune", check=False)

    async def remove(self, task_id: int) -> None:
        """The task's tree, if it has one (its merge is done, or its claim ended)."""
        async with self._lock():
            tree = self._trees.pop(task_id, None)
            if tree is not None:
                await self._remove(tree.root)

    def _refill(self) -> None:
        if len(self._spares) < self.spares_wanted and (self._refilling is None or self._refilling.done()):
            self._refilling = asyncio.get_running_loop().create_task(self._make_spares())

    async def _make_spares(self) -> None:
        try:
            while len(self._spares) < self.spares_wanted:
                async with self._lock():
                    path = self.path / f"{SPARE_PREFIX}{time.time_ns()}"
                    await self._add(path, await self.git.head())
                    self._spares.append(path)
        except (GitError, OSError) as error:
            log.warning("no spare tree made: %s", error)

    # -- the reaper and the start ------------------------------------------------------------

    async def sweep(self) -> None:
        """Remove the trees whose claim has ended (released, expired, failed, cancelled, or the
        worker stopped): the next attempt starts from main, without that half-work."""
        for task_id, tree in list(self._trees.items()):
            try:
                task = self.store.get_task(task_id)
            except NotFound:
                task = None
            if task is None or task.state != "claimed" or task.claimed_at != tree.claimed_at:
                async with self._lock():
                    if self._trees.get(task_id) is tree:
                        del self._trees[task_id]
                        await self._remove(tree.root)
                        log.info("task %s: its claim ended, its tree is gone", task_id)

    async def start(self) -> None:
        """After a restart: keep the trees of claims still held, remove every other one."""
        self.path.mkdir(parents=True, exist_ok=True)
        await self.git.git("worktree", "prune")
        for entry in sorted(self.path.iterdir()):
            match = TREE_NAME.fullmatch(entry.name)
            task = None
            if match is not None:
                with contextlib.suppress(NotFound):
                    task = self.store.get_task(int(match.group(1)))
            if (
                task is not None
                and task.state == "claimed"
                and _claim_ms(task.claimed_at) == int(match.group(2) if match else -1)
                and (entry / ".git").is_file()
            ):
                self._trees[task.id] = Tree(
                    entry, task.id, await self._base(entry), self._readonly(entry), task.claimed_at
                )
                continue
            await self._remove(entry)
        if self.spares_wanted:
            self._refill()

    async def _base(self, tree: Path) -> str:
        return (await self.git.git("rev-parse", "--verify", "HEAD", cwd=tree)).stdout.strip()

    def _readonly(self, tree: Path) -> tuple[Path, ...]:
        shared = [self._root / path for path in self.shared if (tree / path).is_symlink()]
        return (self._root / ".git", *shared)

    async def stop(self) -> None:
        if self._refilling is not None:
            self._refilling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refilling

    # -- what /v1/status shows ---------------------------------------------------------------

    async def usage(self) -> Usage:
        """Trees, spares and their bytes on disk (shared paths not counted), at most
        USAGE_SECONDS old."""
        if time.monotonic() - self._usage.measured_at > USAGE_SECONDS:
            size = await asyncio.to_thread(_disk_bytes, self.path)
            self._usage = Usage(len(self._trees), len(self._spares), size, time.monotonic())
        return self._usage


def _disk_bytes(root: Path) -> int:
    """Bytes the files under `root` take on disk; links are not followed."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(directory) / name).lstat().st_blocks * 512
    return total
