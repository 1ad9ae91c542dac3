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

**Spare trees.** Checking out a large workspace takes a while (10,000 files: 0.2-5 s here), so a
claim's first call takes a spare tree and moves it to main's current head (`git reset --hard`
and `git clean`, which change only what differs). A finished claim's tree becomes a spare, so a
team that works at once keeps one tree per worker in circulation and makes none; `[workspace]
spare_trees` more are made in advance, and the extra ones go after a minute with no claim.

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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaffold.errors import GitError, NotFound, TreeUnavailable
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Task
from scaffold.hub.services.git import GitRepository, LoopLock
from scaffold.hub.store.base import Store, TaskFilter

log = logging.getLogger("scaffold.hub")

TREE_NAME = re.compile(r"task-(\d+)-(\d+)")
SPARE_PREFIX = "spare-"
IDLE_SECONDS = 60.0
"""Spares beyond `spare_trees` are removed once trees have been idle this long."""
USAGE_SECONDS = 10.0
"""How long the disk use shown in /v1/status may be stale: walking the trees costs."""


@dataclass(frozen=True)
class Tree:
    """Where a call acts: main (no task) or one task's tree."""

    root: Path
    task_id: int | None = None
    base: str | None = None
    """The commit of main the tree started from."""
    base_tree: str | None = None
    """That commit's tree: the tree is unchanged while `git write-tree` gives this."""
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
        self._making: dict[int, asyncio.Future[Tree]] = {}
        self._spares: list[Path] = []
        self._spares_coming = 0
        self._background: set[asyncio.Task[None]] = set()
        self._last_use = 0.0
        self._usage = Usage()
        self._admin = LoopLock()
        """Held while git changes its list of worktrees (.git/worktrees): git does not make two
        such changes at once safely. Checkouts and deletions, the slow part, run outside it."""

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
        """The tree of this claim of `task` (which must be claimed), made if missing. Calls for
        the same claim at once wait for the one tree; trees of different tasks are made side by
        side."""
        tree = self._trees.get(task.id)
        if tree is not None and tree.claimed_at == task.claimed_at:
            return tree
        making = self._making.get(task.id)
        if making is not None:
            return await asyncio.shield(making)
        if tree is not None:  # an earlier claim's: its half-work goes
            del self._trees[task.id]
            self._recycle(tree.root)
        if not self.git.ready:
            raise TreeUnavailable(
                f"task {task.id} cannot have a working tree: the workspace {self.git.root} is not a "
                "working git repository (see the hub's log)"
            )
        # A task of its own, shielded: a caller that hangs up must not leave a tree half made
        # (or the callers waiting for it waiting forever).
        making = asyncio.ensure_future(self._make_and_keep(task))
        self._making[task.id] = making
        making.add_done_callback(lambda done: self._making.pop(task.id, None))
        making.add_done_callback(lambda done: done.cancelled() or done.exception())  # seen, if no one waits
        return await asyncio.shield(making)

    async def _make_and_keep(self, task: Task) -> Tree:
        try:
            tree = await self._make(task)
        except (GitError, OSError) as error:
            log.error("task %s: its tree could not be made: %s", task.id, error)
            raise TreeUnavailable(f"task {task.id} cannot have a working tree: {error}") from None
        self._trees[task.id] = tree
        self._last_use = time.monotonic()
        self._refill()
        return tree

    def existing(self, task_id: int) -> Tree | None:
        return self._trees.get(task_id)

    # -- making, recycling and removing -------------------------------------------------------

    async def _make(self, task: Task) -> Tree:
        """A spare tree moved to main's head, or a new one; the shared paths linked in."""
        path = self.path / f"task-{task.id}-{_claim_ms(task.claimed_at)}"
        head, head_tree = await asyncio.to_thread(self.git.head_and_tree)
        while self._spares:
            spare = self._spares.pop()
            try:
                async with self._admin():
                    await asyncio.to_thread(self.git.run, "worktree", "move", str(spare), str(path))
                await asyncio.to_thread(self._reset, path, head)
                break
            except GitError as error:
                log.warning("a spare tree could not be used (%s); removing it", error)
                await self._remove(path if path.exists() else spare)
        else:
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
        return Tree(path, task.id, head, head_tree, tuple(readonly), task.claimed_at)

    def _reset(self, path: Path, head: str) -> None:
        """A used tree back to main's head: what the last task left (tracked, untracked and
        ignored files) goes; only what differs is written (from a worker thread)."""
        self.git.run("reset", "--quiet", "--hard", head, cwd=path)
        self.git.run("clean", "-q", "-d", "-x", "--force", "--force", cwd=path)

    async def _add(self, path: Path, head: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        async with self._admin():
            await self.git.git("worktree", "add", "--quiet", "--no-checkout", "--detach", str(path), head)
        await self.git.git("reset", "--quiet", "--hard", cwd=path)  # the files: outside the lock

    async def _remove(self, path: Path) -> None:
        """The tree, then git's record of it."""
        await asyncio.to_thread(shutil.rmtree, path, True)
        async with self._admin():
            await self.git.git("worktree", "prune", check=False)

    def release(self, task_id: int) -> None:
        """The task's tree is done with (its merge is done, or its claim ended): it becomes a
        spare for a later claim, in the background, so nobody waits for it."""
        tree = self._trees.pop(task_id, None)
        if tree is not None:
            self._recycle(tree.root)

    def _recycle(self, path: Path) -> None:
        self._in_background(self._keep_or_remove(path))

    def _spares_kept(self) -> int:
        """How many spares to keep: one for each tree in use and one more (the worker that just
        finished claims again at once), and `spare_trees` besides; only `spare_trees` once no
        tree has been taken or given back for IDLE_SECONDS."""
        if time.monotonic() - self._last_use > IDLE_SECONDS:
            return self.spares_wanted
        return self.spares_wanted + len(self._trees) + 1

    async def _keep_or_remove(self, path: Path) -> None:
        self._last_use = time.monotonic()
        if len(self._spares) + self._spares_coming >= self._spares_kept():
            await self._remove(path)
            return
        spare = self.path / f"{SPARE_PREFIX}{time.time_ns()}"
        self._spares_coming += 1
        try:
            async with self._admin():
                await self.git.git("worktree", "move", str(path), str(spare))
            self._spares.append(spare)
        except GitError as error:
            log.warning("a finished tree could not be kept as a spare (%s); removing it", error)
            await self._remove(path)
        finally:
            self._spares_coming -= 1

    def _refill(self) -> None:
        if len(self._spares) + self._spares_coming < self.spares_wanted:
            self._in_background(self._make_spare())

    async def _make_spare(self) -> None:
        self._spares_coming += 1
        try:
            path = self.path / f"{SPARE_PREFIX}{time.time_ns()}"
            await self._add(path, await self.git.head())
            self._spares.append(path)
        except (GitError, OSError) as error:
            log.warning("no spare tree made: %s", error)
        finally:
            self._spares_coming -= 1

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        job = asyncio.get_running_loop().create_task(work)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    # -- the reaper and the start ------------------------------------------------------------

    async def sweep(self) -> None:
        """Recycle the trees whose claim has ended (released, expired, failed, cancelled, or the
        worker stopped): the next attempt starts from main, without that half-work. Spares
        beyond what the trees in use and `spare_trees` call for are removed."""
        for task_id, tree in list(self._trees.items()):
            try:
                task = self.store.get_task(task_id)
            except NotFound:
                task = None
            if task is None or task.state != "claimed" or task.claimed_at != tree.claimed_at:
                self.release(task_id)
                log.info("task %s: its claim ended, its tree is recycled", task_id)
        while len(self._spares) > self._spares_kept():
            await self._remove(self._spares.pop(0))

    async def start(self) -> None:
        """After a restart: keep the trees of claims still held, remove every other one."""
        self.path.mkdir(parents=True, exist_ok=True)
        async with self._admin():
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
                base, base_tree = await asyncio.to_thread(self.git.head_and_tree, entry)
                readonly = self._readonly(entry)
                self._trees[task.id] = Tree(entry, task.id, base, base_tree, readonly, task.claimed_at)
                continue
            await self._remove(entry)
        self._refill()

    def _readonly(self, tree: Path) -> tuple[Path, ...]:
        shared = [self._root / path for path in self.shared if (tree / path).is_symlink()]
        return (self._root / ".git", *shared)

    @property
    def busy(self) -> bool:
        """Trees are being recycled, removed or made in advance."""
        return bool(self._background)

    async def stop(self) -> None:
        for job in list(self._background):
            job.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

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
