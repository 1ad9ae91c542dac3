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
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scaffold.errors import GateFailed, GitError, HubError, LeaseConflict, MergeConflict, MergeFailed
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

    async def complete(self, task_id: int, token: str, result: str) -> Task:
        """Merge the task's tree into main and complete it; the same token again returns the
        task as it is. LeaseConflict for a stale lease; MergeConflict or GateFailed when main
        cannot take the work (the task is back in the queue then)."""
        task = self.queue.get(task_id)
        if task.state == "done" and same_token(task.lease_token, token):
            return task
        task = self.queue.heartbeat(task_id, token)  # a stale lease: 409 before anything moves
        tree = self.trees.existing(task_id)
        if tree is None or tree.claimed_at != task.claimed_at:
            return self.queue.complete(task_id, token, result)[0]  # it never touched a file
        worker = self._worker(task)
        try:
            # shielded: a client that hangs up must not cut a merge off half-way
            done = await asyncio.shield(self._merge(task, token, result, tree, worker))
        except GitError as error:  # the tree stays: the worker may complete again
            log.error("task %s: the merge failed: %s", task_id, error)
            raise MergeFailed(
                f"task {task_id} could not be merged ({error}); it is still yours: complete it again"
            ) from None
        except (MergeConflict, GateFailed):
            await self.trees.remove(task_id)
            raise
        await self.trees.remove(task_id)
        return done

    def _worker(self, task: Task) -> Worker | None:
        if task.worker_id is None:
            return None
        with contextlib.suppress(HubError):
            return self.store.get_worker(task.worker_id)
        return None

    async def _merge(self, task: Task, token: str, result: str, tree: Tree, worker: Worker | None) -> Task:
        message = commit_message(replace(task, result=result), worker)
        own = await self._commit_tree(tree, message)
        if own is None:
            return self.queue.complete(task.id, token, result)[0]
        holding = asyncio.create_task(self.queue.hold(task.id, token))
        try:
            async with self.git.lock():
                current = self.queue.get(task.id)
                if current.state == "done" and same_token(current.lease_token, token):
                    return current  # the same completion, sent twice at once: merged by the first
                self.queue.heartbeat(task.id, token)  # still this worker's lease
                head = await self.git.head()
                if head == tree.base:
                    target = own
                else:
                    merged = await self.git.git(
                        "merge-tree", "--write-tree", "--name-only", "--no-messages", head, own, check=False
                    )
                    lines = merged.stdout.splitlines()
                    if merged.code == 1:
                        await self._refuse_conflict(task, token, own, [line for line in lines[1:] if line])
                    if merged.code != 0 or not lines:
                        failed = merged.stderr.strip()[:2000]
                        raise GitError(f"git merge-tree failed ({merged.code}): {failed}")
                    target = await self.git.commit(lines[0], head, message)
                if self.gate is not None:
                    await self._run_gate(task, token, own, target, tree)
                self._write_journal(task.id, token, result, head, target)
                await self.git.move_main(head, target)
                done = self.queue.complete(task.id, token, result, commit=target)[0]
                self._clear_journal()
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
        self.merged += 1
        log.info("task %s: merged into %s as %s", task.id, self.git.branch, target[:12])
        return done

    async def _commit_tree(self, tree: Tree, message: str) -> str | None:
        """The tree's changes as one commit on its base; None if it changed nothing."""
        assert tree.base is not None
        await self.git.git("add", "-A", cwd=tree.root)
        written = (await self.git.git("write-tree", cwd=tree.root)).stdout.strip()
        before = (await self.git.git("rev-parse", f"{tree.base}^{{tree}}", cwd=tree.root)).stdout.strip()
        if written == before:
            return None
        return await self.git.commit(written, tree.base, message, cwd=tree.root)

    async def _keep(self, task: Task, own: str) -> str:
        branch = f"task/{task.id}-{task.attempts + 1}"
        await self.git.git("update-ref", f"refs/heads/{branch}", own)
        return branch

    async def _refuse_conflict(self, task: Task, token: str, own: str, paths: list[str]) -> None:
        branch = await self._keep(task, own)
        more = len(paths) - SHOWN_PATHS
        shown = ", ".join(paths[:SHOWN_PATHS]) + (f" and {more} more" if more > 0 else "")
        error = f"its changes conflict with {self.git.branch} in {shown}; the work is kept on branch {branch}"
        self._send_back(task, token, error)
        raise MergeConflict(
            f"task {task.id} was not merged: {error}. It is back in the queue for a fresh start from "
            f"{self.git.branch}; stop working on it",
            paths,
            branch,
        )

    async def _run_gate(self, task: Task, token: str, own: str, target: str, tree: Tree) -> None:
        assert self.gate is not None
        await self.git.git("reset", "--quiet", "--hard", target, cwd=tree.root)
        command = Command(argv=None, shell=self.gate.command, cwd=tree.root, timeout=self.gate.timeout)
        outcome = await self.executor.run(command, tree.root, tree.readonly)
        if outcome.exit_code == 0 and not outcome.timed_out:
            return
        output = (outcome.stdout + outcome.stderr)[-GATE_OUTPUT:]
        branch = await self._keep(task, own)
        how = "timed out" if outcome.timed_out else f"exited {outcome.exit_code}"
        tail = output[-ERROR_OUTPUT:].strip()
        kept = f"the work is kept on {branch}; it printed:\n{tail}"
        self._send_back(task, token, f"the gate ({self.gate.command}) {how}; {kept}")
        raise GateFailed(
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

    def _write_journal(self, task_id: int, token: str, result: str, before: str, after: str) -> None:
        entry = {"task_id": task_id, "token": token, "result": result, "before": before, "after": after}
        partial = self.journal.with_name(self.journal.name + ".partial")
        partial.write_text(json.dumps(entry), encoding="utf-8")
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.replace(self.journal)

    def _clear_journal(self) -> None:
        self.journal.unlink(missing_ok=True)

    async def recover(self) -> None:
        """Finish the merge a killed hub left in its journal (call before the reaper starts)."""
        try:
            entry: dict[str, Any] = json.loads(self.journal.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            log.error("the merge journal %s cannot be read (%s); removing it", self.journal, error)
            self._clear_journal()
            return
        task_id, before, after = int(entry["task_id"]), str(entry["before"]), str(entry["after"])
        async with self.git.lock():
            head = await self.git.head()
            if head == before:
                await self.git.git("update-ref", f"refs/heads/{self.git.branch}", after, before)
            elif head != after:
                log.error(
                    "task %s: the merge the hub was making when it stopped cannot be finished: %s is at "
                    "%s, neither %s nor %s; the task will be tried again when its lease expires",
                    *(task_id, self.git.branch, head[:12], before[:12], after[:12]),
                )
                self._clear_journal()
                return
            await self.git.git("reset", "--quiet", "--hard", after)
            try:
                self.queue.complete(task_id, str(entry["token"]), str(entry["result"]), commit=after)
            except LeaseConflict as error:
                log.error("task %s: merged as %s but not completed: %s", task_id, after[:12], error)
            self._clear_journal()
        log.info("task %s: finished the merge a stopped hub left (%s)", task_id, after[:12])
