"""The merge queue: a completed task's tree becomes exactly one commit on main, one at a time.

Completing a task (with its lease token):

1. its tree's changes are committed on the commit of main it started from (subject `task <id>:
   <title>`, the result as the body, `Task:` and `Worker:` trailers); no change, no commit;
2. under the lock that serialises every move of main: if main has moved since, the commit is
   replayed onto main's head with `git merge-tree --write-tree` (a three-way merge without a
   working tree) as one new commit whose only parent is main's head. This is a rebase, not a
   merge commit: main's history stays a line with one commit per task, so `git revert <commit>`
   undoes exactly that task and `git log` reads as the list of finished tasks;
3. the gate, if `[queue] gate` is set, runs in the task's tree checked out at that commit (main
   plus the task, exactly what main would become); it must succeed before main moves;
4. main's ref and its checkout move to the commit, and the task becomes done with that commit,
   in the store's one transaction; the tree is removed.

**A conflict loses nothing**: main is untouched, the work stays on branch `task/<id>-<attempt>`,
the task goes back to the queue as a failed attempt (its `error` names the paths) for a fresh
start from current main, the worker is answered 409 `merge_conflict` with the paths, and the
coordinator gets a message. A failing gate does the same with 409 `gate_failed` and the output.

**A hub killed mid-merge** finishes that merge when it starts again: before main moves, the merge
is written to a journal in the data directory (the task, its lease, its result, main before and
after); on start, a journal left behind moves main to the commit if it has not moved and
completes the task, so no task is lost or merged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scaffold.errors import GateFailed, GitError, HubError, MergeConflict, MergeFailed
from scaffold.hub.core.lifecycle import same_token
from scaffold.hub.core.types import Task, Worker
from scaffold.hub.services.exec import Command, Executor
from scaffold.hub.services.git import GitRepository, commit_message
from scaffold.hub.services.messages import Messages
from scaffold.hub.services.queue import Queue
from scaffold.hub.services.trees import TaskTrees, Tree
from scaffold.hub.store.base import Store

log = logging.getLogger("scaffold.hub")

JOURNAL = "merge-journal.json"
GATE_OUTPUT = 4000  # characters of the gate's output in the answer to the worker
ERROR_OUTPUT = 1000  # and in the task's error and the coordinator's message
SHOWN_PATHS = 20


@dataclass(frozen=True)
class Gate:
    command: str
    timeout: float


class MergeQueue:
    def __init__(
        self,
        git: GitRepository,
        trees: TaskTrees,
        queue: Queue,
        store: Store,
        messages: Messages,
        executor: Executor,
        data_dir: Path,
        gate: Gate | None = None,
    ) -> None:
        self.git = git
        self.trees = trees
        self.queue = queue
        self.store = store
        self.messages = messages
        self.executor = executor
        self.journal = data_dir.expanduser().absolute() / JOURNAL
        self.gate = gate
        self.merged = 0
        self._completing: dict[int, asyncio.Future[Task]] = {}
        self._waiting: list[_Merge] = []

    async def complete(self, task_id: int, token: str, result: str) -> Task:
        """Merge the task's tree into main and complete it; the same token again returns the
        task as it is. LeaseConflict for a stale lease; MergeConflict or GateFailed when main
        cannot take the work (the task is back in the queue then)."""
        running = self._completing.get(task_id)
        if running is not None:  # the same completion sent twice at once: the first one decides
            with contextlib.suppress(HubError, GitError, OSError):
                await asyncio.shield(running)
        task = self.queue.get(task_id)
        if task.state == "done" and same_token(task.lease_token, token):
            return task
        task = self.queue.heartbeat(task_id, token)  # a stale lease: 409 before anything moves
        tree = self.trees.existing(task_id)
        if tree is None or tree.claimed_at != task.claimed_at:
            return self.queue.complete(task_id, token, result)[0]  # it never touched a file
        worker = self._worker(task)
        # shielded: a client that hangs up must not cut a merge off half-way
        merging = asyncio.ensure_future(self._merge(task, token, result, tree, worker))
        self._completing[task_id] = merging
        merging.add_done_callback(lambda _: self._completing.pop(task_id, None))
        try:
            done = await asyncio.shield(merging)
        except (GitError, OSError) as error:  # the tree stays: the worker may complete again
            log.error("task %s: the merge failed: %s", task_id, error)
            raise MergeFailed(
                f"task {task_id} could not be merged ({error}); it is still yours: complete it again"
            ) from None
        except (MergeConflict, GateFailed):
            self.trees.release(task_id)
            raise
        self.trees.release(task_id)
        return done

    def _worker(self, task: Task) -> Worker | None:
        if task.worker_id is None:
            return None
        with contextlib.suppress(HubError):
            return self.store.get_worker(task.worker_id)
        return None

    async def _merge(self, task: Task, token: str, result: str, tree: Tree, worker: Worker | None) -> Task:
        message = commit_message(replace(task, result=result), worker)
        own = await asyncio.to_thread(self._commit_tree, tree, message)
        if own is None:
            return self.queue.complete(task.id, token, result)[0]
        merge = _Merge(task, token, result, tree, own, message, asyncio.get_running_loop().create_future())
        self._waiting.append(merge)
        holding = asyncio.create_task(self.queue.hold(task.id, token))
        try:
            async with self.git.lock():
                if not merge.done.done():  # else an earlier holder of the lock merged it
                    batch, self._waiting = self._waiting, []
                    await self._merge_batch(batch)
            return await merge.done
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding

    async def _merge_batch(self, batch: list[_Merge]) -> None:
        """Every merge waiting for the lock, in the order they came: each replayed onto the one
        before it (one commit each, in a line), then main moved once, to the last."""
        failure: Exception = GitError("the merge was cut off (is the hub stopping?)")
        try:
            for _ in range(2):  # again if main was not where the hub left it
                start, start_tree = await asyncio.to_thread(self.git.head_and_tree)
                head, head_tree, merged = start, start_tree, []
                for merge in batch:
                    if merge.done.done():  # refused on the first try
                        continue
                    # git runs in a thread, command after command, so the lock is held for the
                    # time git takes, not for as long as a busy event loop takes to come back
                    target, conflicts = await asyncio.to_thread(self._replay, merge, head)
                    refused = await self._refused(merge, target[0], conflicts)
                    if refused is not None:
                        merge.done.set_exception(refused)
                        continue
                    merged.append((merge, target[0]))
                    head, head_tree = target
                if not merged:
                    return
                self._write_journal(start, head, merged)
                if await asyncio.to_thread(self.git.move_main, start, head, head_tree):
                    break
            else:
                raise GitError(f"{self.git.branch} moved while the hub was merging into it")
            for merge, commit in merged:
                try:
                    done = self.queue.complete(merge.task.id, merge.token, merge.result, commit=commit)[0]
                except HubError as error:  # cancelled meanwhile: its work is on main all the same
                    log.error(
                        "task %s: merged as %s but not completed: %s", merge.task.id, commit[:12], error
                    )
                    merge.done.set_exception(error)
                    continue
                self.merged += 1
                log.info("task %s: merged into %s as %s", merge.task.id, self.git.branch, commit[:12])
                merge.done.set_result(done)
            self._clear_journal()
        except (GitError, HubError, OSError) as error:
            failure = error
        finally:  # every waiter hears how it ended
            for merge in batch:
                if not merge.done.done():
                    merge.done.set_exception(failure)

    async def _refused(self, merge: _Merge, target: str, conflicts: list[str] | None) -> HubError | None:
        """Why main cannot take this merge (its task is sent back then), or None."""
        if conflicts is not None:
            return await self._conflict(merge, conflicts)
        if self.gate is not None:
            return await self._run_gate(merge, target)
        return None

    def _commit_tree(self, tree: Tree, message: str) -> tuple[str, str] | None:
        """The tree's changes as one commit on its base, and its tree's id; None if it changed
        nothing (from a worker thread)."""
        assert tree.base is not None
        self.git.run("add", "-A", cwd=tree.root)
        written = self.git.run("write-tree", cwd=tree.root).stdout.strip()
        if written == tree.base_tree:
            return None
        return self.git.commit(written, tree.base, message, cwd=tree.root), written

    def _replay(self, merge: _Merge, head: str) -> tuple[tuple[str, str], list[str] | None]:
        """The commit (with its tree) that puts the task on top of `head`: its own commit if its
        tree started from `head`, else its changes replayed onto `head` as one commit; or the
        paths in conflict (from a worker thread, under main's lock)."""
        if head == merge.tree.base:
            return merge.own, None
        options = ("--write-tree", "--name-only", "--no-messages")
        merged = self.git.run("merge-tree", *options, head, merge.own[0], check=False)
        lines = merged.stdout.splitlines()
        if merged.code == 1:
            return merge.own, [line for line in lines[1:] if line]
        if merged.code != 0 or not lines:
            raise GitError(f"git merge-tree failed ({merged.code}): {merged.stderr.strip()[:2000]}")
        return (self.git.commit(lines[0], head, merge.message), lines[0]), None

    async def _keep(self, merge: _Merge) -> str:
        branch = f"task/{merge.task.id}-{merge.task.attempts + 1}"
        await self.git.git("update-ref", f"refs/heads/{branch}", merge.own[0])
        return branch

    async def _conflict(self, merge: _Merge, paths: list[str]) -> MergeConflict:
        task, branch = merge.task, await self._keep(merge)
        more = len(paths) - SHOWN_PATHS
        shown = ", ".join(paths[:SHOWN_PATHS]) + (f" and {more} more" if more > 0 else "")
        error = f"its changes conflict with {self.git.branch} in {shown}; the work is kept on branch {branch}"
        self._send_back(task, merge.token, error)
        return MergeConflict(
            f"task {task.id} was not merged: {error}. It is back in the queue for a fresh start from "
            f"{self.git.branch}; stop working on it",
            paths,
            branch,
        )

    async def _run_gate(self, merge: _Merge, target: str) -> GateFailed | None:
        """The gate on `target` (main so far plus this task), checked out in the task's tree."""
        assert self.gate is not None
        task, tree = merge.task, merge.tree
        await self.git.git("reset", "--quiet", "--hard", target, cwd=tree.root)
        command = Command(argv=None, shell=self.gate.command, cwd=tree.root, timeout=self.gate.timeout)
        outcome = await self.executor.run(command, tree.root, tree.readonly)
        if outcome.exit_code == 0 and not outcome.timed_out:
            return None
        output = (outcome.stdout + outcome.stderr)[-GATE_OUTPUT:]
        branch = await self._keep(merge)
        how = "timed out" if outcome.timed_out else f"exited {outcome.exit_code}"
        tail = output[-ERROR_OUTPUT:].strip()
        kept = f"the work is kept on {branch}; it printed:\n{tail}"
        self._send_back(task, merge.token, f"the gate ({self.gate.command}) {how}; {kept}")
        return GateFailed(
            f"task {task.id} was not merged: the gate ({self.gate.command}) {how} on {self.git.branch} plus "
            "this task. It is back in the queue; stop working on it",
            output,
            outcome.exit_code,
            branch,
        )

    def _send_back(self, task: Task, token: str, error: str) -> None:
        back = self.queue.fail(task.id, token, error)
        where = "back in the queue" if back.state == "ready" else "dead (no attempt left)"
        note = f"task {task.id} ({task.title}) is {where}: {error}"
        self.messages.send("hub", "coordinator", "message", note)
        log.warning("task %s: not merged: %s", task.id, error)

    # -- the journal -------------------------------------------------------------------------

    def _write_journal(self, before: str, after: str, merged: list[tuple[_Merge, str]]) -> None:
        tasks = [
            {"task_id": merge.task.id, "token": merge.token, "result": merge.result, "commit": commit}
            for merge, commit in merged
        ]
        # Written whole and renamed into place, not fsynced: it is there for a hub that is killed,
        # whose writes the kernel keeps; a power cut may lose it, as it may lose the store's last
        # transactions (synchronous=NORMAL) and git's last ref update.
        partial = self.journal.with_name(self.journal.name + ".partial")
        partial.write_text(json.dumps({"before": before, "after": after, "tasks": tasks}), encoding="utf-8")
        partial.replace(self.journal)

    def _clear_journal(self) -> None:
        self.journal.unlink(missing_ok=True)

    async def recover(self) -> None:
        """Finish the merges a killed hub left in its journal (call before the reaper starts)."""
        try:
            entry: dict[str, Any] = json.loads(self.journal.read_text(encoding="utf-8"))
            before, after = str(entry["before"]), str(entry["after"])
            tasks = [
                (int(t["task_id"]), str(t["token"]), str(t["result"]), str(t["commit"]))
                for t in entry["tasks"]
            ]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("the merge journal %s cannot be read (%s); removing it", self.journal, error)
            self._clear_journal()
            return
        async with self.git.lock():
            head = await self.git.head()
            if head == before:
                await self.git.git("update-ref", f"refs/heads/{self.git.branch}", after, before)
            elif head != after:
                log.error(
                    "tasks %s: the merge the hub was making when it stopped cannot be finished: %s is at "
                    "%s, neither %s nor %s; the tasks will be tried again when their leases expire",
                    *([t[0] for t in tasks], self.git.branch, head[:12], before[:12], after[:12]),
                )
                self._clear_journal()
                return
            await self.git.git("reset", "--quiet", "--hard", after)
            for task_id, token, result, commit in tasks:
                try:
                    self.queue.complete(task_id, token, result, commit=commit)
                except HubError as error:
                    log.error("task %s: merged as %s but not completed: %s", task_id, commit[:12], error)
                log.info("task %s: finished the merge a stopped hub left (%s)", task_id, commit[:12])
            self._clear_journal()


@dataclass
class _Merge:
    """A completion waiting for main's lock: its tree's own commit (and that commit's tree)."""

    task: Task
    token: str
    result: str
    tree: Tree
    own: tuple[str, str]
    message: str
    done: asyncio.Future[Task]
