"""The workspace as a git repository: set up on start; each task works in a tree of its own and
reaches main through the merge queue as exactly one commit, revertable; direct changes to main
are committed at once.

Each test runs a hub (TestClient as a context manager, so its lifespan runs) on a workspace in
a temporary directory and looks at the repository with the real git. Workers change files the
way agents do: through the file API (or exec) naming their worker id.
"""

from __future__ import annotations

import contextlib
import logging
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scaffold.hub.core.types import Task, Worker
from scaffold.hub.services.container import Services
from scaffold.hub.services.git import HUB_EMAIL, HUB_NAME, INITIAL_MESSAGE, MAX_SUMMARY, commit_message
from tests.conftest import built_hub, git


@dataclass
class Running:
    client: TestClient
    hub: Services
    workspace: Path
    key: str

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        response = self.client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def claimed_task(
        self,
        title: str = "Add the greeting",
        role: str = "backend",
        depends_on: tuple[int, ...] = (),
        priority: int = 0,
    ) -> dict[str, Any]:
        """A new task, claimed by a new worker of `role`: the task with its lease_token."""
        worker = self.call("POST", "/v1/workers", {"session_id": f"s-{title}", "role": role}, 201)
        body = {"title": title, "instructions": "do it", "depends_on": list(depends_on), "priority": priority}
        self.call("POST", "/v1/tasks", body, 201)
        task: dict[str, Any] = self.call("POST", "/v1/tasks/claim", {"worker_id": worker["id"]})
        assert task["title"] == title
        return task

    def write(self, task: dict[str, Any] | None, path: str, text: str, status: int | None = None) -> Any:
        """Write `path` as the task's worker does (in its tree), or on main with no task."""
        where = f"&worker_id={task['worker_id']}" if task is not None else ""
        url, content = f"/v1/files/content?path={path}{where}", text.encode()
        auth = {"Authorization": f"Bearer {self.key}"}
        response = self.client.put(url, content=content, headers={**auth, "If-None-Match": "*"})
        if response.status_code == 412:  # it exists: replace it
            response = self.client.put(url, content=content, headers={**auth, "If-Match": "*"})
        assert response.status_code in ((status,) if status else (200, 201)), response.text
        return response.json()

    def read(self, task: dict[str, Any] | None, path: str) -> str | None:
        where = f"&worker_id={task['worker_id']}" if task is not None else ""
        headers = {"Authorization": f"Bearer {self.key}"}
        response = self.client.get(f"/v1/files/content?path={path}{where}", headers=headers)
        assert response.status_code in (200, 404), response.text
        return response.text if response.status_code == 200 else None

    def complete(self, task: dict[str, Any], result: str = "Done.") -> dict[str, Any]:
        body = {"lease_token": task["lease_token"], "result": result}
        done: dict[str, Any] = self.call("POST", f"/v1/tasks/{task['id']}/complete", body)
        assert done["state"] == "done"
        return done

    def head(self) -> str:
        return git(self.workspace, "rev-parse", "HEAD").strip()

    def settled(self) -> None:
        """Wait (bounded) for the trees the hub recycles or makes in the background."""
        deadline = time.monotonic() + 30
        while self.hub.trees.busy:
            assert time.monotonic() < deadline, "the hub's trees did not settle"
            time.sleep(0.02)


@contextlib.contextmanager
def running(tmp_path: Path, workspace: Path | None = None) -> Iterator[Running]:
    workspace = workspace or tmp_path / "srv" / "workspace"
    with built_hub(tmp_path, roles=("agent",), workspace=workspace) as made, TestClient(made.app) as client:
        yield Running(client, made.services, made.workspace, made.keys.agent)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Running]:
    with running(tmp_path) as started:
        yield started


def commits(workspace: Path) -> list[str]:
    return git(workspace, "log", "--format=%H").split()


# -- the repository ------------------------------------------------------------------------------


def test_the_workspace_is_created_and_made_a_repository_with_a_first_commit(hub: Running) -> None:
    assert (hub.workspace / ".git").is_dir()
    assert git(hub.workspace, "log", "--format=%s").splitlines() == [INITIAL_MESSAGE]
    assert git(hub.workspace, "config", "--local", "user.name").strip() == HUB_NAME
    assert git(hub.workspace, "config", "--local", "user.email").strip() == HUB_EMAIL
    assert git(hub.workspace, "status", "--porcelain") == ""


def test_what_is_in_the_workspace_goes_into_the_first_commit(tmp_path: Path) -> None:
    workspace = tmp_path / "code"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "app.py").write_text("print('hi')\n", encoding="utf-8")
    with running(tmp_path, workspace):
        assert git(workspace, "ls-files").split() == ["src/app.py"]
        assert git(workspace, "status", "--porcelain") == ""


def test_an_existing_repository_is_kept_as_it_is(tmp_path: Path) -> None:
    workspace = tmp_path / "clone"
    workspace.mkdir()
    git(workspace, "init", "--quiet")
    git(workspace, "config", "user.name", "Owner")
    (workspace / "README").write_text("mine\n", encoding="utf-8")
    git(workspace, "add", "README")
    git(workspace, "commit", "--quiet", "-m", "the owner's commit")
    before = commits(workspace)
    with running(tmp_path, workspace):
        pass
    with running(tmp_path, workspace):  # a second start changes nothing either
        assert commits(workspace) == before
        assert git(workspace, "config", "--local", "user.name").strip() == "Owner"


# -- a commit per task ---------------------------------------------------------------------------


def test_completing_a_task_commits_its_changes_with_the_task_and_worker(hub: Running) -> None:
    task = hub.claimed_task("Add the greeting", role="backend")
    hub.write(task, "hello.txt", "hello\n")
    hub.write(task, "docs/greeting.md", "# Greeting\n")

    done = hub.complete(task, "# Summary\nAdded hello.txt and its doc.")

    sha = done["commit"]
    assert sha == hub.head()
    assert len(sha) == 40
    assert hub.call("GET", f"/v1/tasks/{task['id']}")["commit"] == sha
    assert git(hub.workspace, "show", "--name-only", "--format=", sha).split() == [
        "docs/greeting.md",
        "hello.txt",
    ]
    worker = hub.hub.store.get_task(task["id"]).worker_id
    message = git(hub.workspace, "log", "-1", "--format=%B", sha)
    assert message == (
        f"task {task['id']}: Add the greeting\n\n# Summary\nAdded hello.txt and its doc.\n\n"
        f"Task: {task['id']}\nWorker: {worker} (backend)\n\n"
    )
    trailers = git(hub.workspace, "log", "-1", "--format=%(trailers:only,unfold)", sha).strip().splitlines()
    assert trailers == [f"Task: {task['id']}", f"Worker: {worker} (backend)"]
    assert git(hub.workspace, "log", "-1", "--format=%an <%ae>", sha).strip() == f"{HUB_NAME} <{HUB_EMAIL}>"
    # main's checkout moved with it, and the task's tree is gone
    assert (hub.workspace / "hello.txt").read_text(encoding="utf-8") == "hello\n"
    assert git(hub.workspace, "status", "--porcelain") == ""
    assert hub.hub.trees.existing(task["id"]) is None
    hub.settled()
    assert git(hub.workspace, "worktree", "list", "--porcelain").count("worktree ") == 1 + len(
        hub.hub.trees._spares
    )


def test_the_issue_repro_each_task_gets_its_own_commit_with_only_its_own_file(hub: Running) -> None:
    """Issue 12: two workers write at the same time; before, task 1's commit took both files and
    task 2 got none."""
    one = hub.claimed_task("write a")
    two = hub.claimed_task("write b")
    body = {"worker_id": two["worker_id"], "globs": ["b.txt"], "task_id": two["id"]}
    hub.call("POST", "/v1/reservations", body, 201)
    hub.write(one, "a.txt", "a\n")
    hub.write(two, "b.txt", "b\n")

    first, second = hub.complete(one)["commit"], hub.complete(two)["commit"]

    assert first and second and first != second
    assert git(hub.workspace, "show", "--name-only", "--format=", first).split() == ["a.txt"]
    assert git(hub.workspace, "show", "--name-only", "--format=", second).split() == ["b.txt"]
    assert git(hub.workspace, "rev-list", "--parents", "-n", "1", second).split() == [second, first]


def test_nothing_a_worker_does_is_seen_by_others_until_it_is_merged(hub: Running) -> None:
    mine, theirs = hub.claimed_task("Mine"), hub.claimed_task("Theirs")
    hub.write(mine, "draft.txt", "half done\n")
    assert hub.read(mine, "draft.txt") == "half done\n"
    assert hub.read(theirs, "draft.txt") is None
    assert hub.read(None, "draft.txt") is None  # main
    assert not (hub.workspace / "draft.txt").exists()
    listed = hub.call("GET", f"/v1/files?worker_id={mine['worker_id']}")["entries"]
    assert "draft.txt" in [entry["path"] for entry in listed]
    assert "draft.txt" not in [entry["path"] for entry in hub.call("GET", "/v1/files")["entries"]]
    found = hub.call("POST", "/v1/files/grep", {"pattern": "half", "worker_id": mine["worker_id"]})
    assert [match["path"] for match in found["matches"]] == ["draft.txt"]
    assert hub.call("POST", "/v1/files/grep", {"pattern": "half"})["matches"] == []

    hub.complete(mine)
    assert hub.read(None, "draft.txt") == "half done\n"


def test_a_dependent_task_starts_from_main_holding_its_dependencys_work(hub: Running) -> None:
    first = hub.claimed_task("Write the schema")
    hub.write(first, "schema.sql", "create table t (id int);\n")
    hub.complete(first)
    second = hub.claimed_task("Use the schema", depends_on=(first["id"],))
    assert hub.read(second, "schema.sql") == "create table t (id int);\n"


def test_git_revert_of_a_task_commit_undoes_exactly_that_task(hub: Running) -> None:
    first = hub.claimed_task("Write the config")
    hub.write(first, "config.ini", "level = 1\n")
    hub.complete(first)
    second = hub.claimed_task("Raise the level and add notes")
    third = hub.claimed_task("Add a readme")
    hub.write(second, "config.ini", "level = 2\n")
    hub.write(second, "notes.txt", "notes\n")
    hub.write(third, "README", "read me\n")
    sha = hub.complete(second)["commit"]
    hub.complete(third)

    git(hub.workspace, "revert", "--no-edit", sha)

    assert (hub.workspace / "config.ini").read_text(encoding="utf-8") == "level = 1\n"
    assert not (hub.workspace / "notes.txt").exists()
    assert (hub.workspace / "README").read_text(encoding="utf-8") == "read me\n"
    assert git(hub.workspace, "status", "--porcelain") == ""


def test_deleted_files_are_committed_too(hub: Running) -> None:
    adding = hub.claimed_task("Add old")
    hub.write(adding, "old.txt", "old\n")
    hub.complete(adding)
    task = hub.claimed_task("Remove old")
    hub.call("POST", "/v1/files/delete", {"path": "old.txt", "worker_id": task["worker_id"]})
    sha = hub.complete(task)["commit"]
    assert git(hub.workspace, "show", "--name-status", "--format=", sha).split() == ["D", "old.txt"]


def test_no_change_means_no_commit(hub: Running) -> None:
    before = hub.head()
    task = hub.claimed_task()
    assert hub.read(task, "nothing.txt") is None  # the tree is made, and nothing changes in it
    done = hub.complete(task)
    assert done["commit"] is None
    assert hub.call("GET", f"/v1/tasks/{task['id']}")["commit"] is None
    assert hub.head() == before


def test_completing_again_with_the_same_token_makes_no_second_commit(hub: Running) -> None:
    task = hub.claimed_task()
    hub.write(task, "a.txt", "a\n")
    sha = hub.complete(task)["commit"]
    again = hub.complete(task)
    assert again["commit"] == sha
    assert hub.head() == sha


def test_a_write_to_main_is_committed_at_once_with_who_made_it(hub: Running) -> None:
    before = hub.head()
    hub.write(None, "PLAN.md", "# Plan\n")
    sha = hub.head()
    assert git(hub.workspace, "rev-list", "--parents", "-n", "1", sha).split() == [sha, before]
    assert git(hub.workspace, "show", "--name-only", "--format=", sha).split() == ["PLAN.md"]
    message = git(hub.workspace, "log", "-1", "--format=%B", sha)
    assert message.startswith("workspace: write PLAN.md\n\n")
    assert "Actor: agent-key" in message
    assert git(hub.workspace, "status", "--porcelain") == ""


@pytest.mark.usefixtures("bubblewrap")
def test_a_command_run_on_main_is_committed_after_it_and_one_in_a_tree_is_not(hub: Running) -> None:
    hub.call("POST", "/v1/exec", {"shell": "echo made > made.txt"})
    assert git(hub.workspace, "log", "-1", "--format=%s").startswith("workspace: after the command echo")
    task = hub.claimed_task()
    before = hub.head()
    body = {"shell": "echo tree > tree.txt && python3 -c 'import json' ", "worker_id": task["worker_id"]}
    hub.call("POST", "/v1/exec", body)
    assert hub.head() == before
    assert hub.read(task, "tree.txt") == "tree\n"
    assert not (hub.workspace / "tree.txt").exists()


def test_hooks_planted_in_the_repository_do_not_run(hub: Running) -> None:
    marker = hub.workspace.parent / "hook-ran"
    hooks = hub.workspace / ".git" / "hooks"
    for name in ("pre-commit", "commit-msg", "post-commit", "reference-transaction", "post-checkout"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} >> '{marker}'\nexit 1\n", encoding="utf-8")
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    task = hub.claimed_task()
    hub.write(task, "x.txt", "x\n")
    assert hub.complete(task)["commit"] == hub.head()
    hub.write(None, "y.txt", "y\n")
    assert git(hub.workspace, "log", "-1", "--format=%s").strip() == "workspace: write y.txt"
    assert not marker.exists()


def test_the_message_is_one_subject_line_and_keeps_the_result(tmp_path: Path) -> None:
    task = Task(
        id=9,
        title="Fix\nthe   bug",
        instructions="",
        priority=0,
        state="done",
        depends_on=(),
        required_capabilities=(),
        attempts=0,
        max_attempts=3,
        worker_id=4,
        lease_token=None,
        lease_expires_at=None,
        result="x" * (MAX_SUMMARY + 10) + "\x00",
        error=None,
        created_at=0,
        updated_at=0,
        claimed_at=0,
        finished_at=0,
    )
    worker = Worker(4, "s", "docs", (), 0, 0, 0, None)
    message = commit_message(task, worker)
    assert message.startswith("task 9: Fix the bug\n\n" + "x" * MAX_SUMMARY + "\n\n[result truncated]\n\n")
    assert message.endswith("\n\nTask: 9\nWorker: 4 (docs)\n")
    assert "\x00" not in message
    assert commit_message(task, None).endswith("Worker: 4\n")


# -- git failing ---------------------------------------------------------------------------------


def test_git_failing_in_a_merge_keeps_main_and_the_task_stays_the_workers(
    hub: Running, caplog: pytest.LogCaptureFixture
) -> None:
    task = hub.claimed_task()
    hub.write(task, "work.txt", "work\n")
    before = hub.head()
    hub.hub.git.timeout = 1e-6
    with caplog.at_level(logging.ERROR, logger="scaffold.hub"):
        body = {"lease_token": task["lease_token"], "result": "Done."}
        refused = hub.call("POST", f"/v1/tasks/{task['id']}/complete", body, 503)
    assert refused["error"]["code"] == "merge_failed"
    assert "took longer than" in caplog.text
    assert hub.hub.store.get_task(task["id"]).state == "claimed"
    hub.hub.git.timeout = 120.0
    assert hub.head() == before
    assert hub.complete(task)["commit"] == hub.head()  # completed again: merged, nothing lost
    assert (hub.workspace / "work.txt").read_text(encoding="utf-8") == "work\n"


def test_without_git_the_hub_starts_and_tasks_that_write_nothing_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with caplog.at_level(logging.ERROR, logger="scaffold.hub"), running(tmp_path) as started:
        assert "not under version control" in caplog.text
        task = started.claimed_task()
        refused = started.write(task, "work.txt", "work\n", status=503)
        assert refused["error"]["code"] == "tree_unavailable"
        assert started.complete(task)["commit"] is None
    assert not (started.workspace / ".git").exists()


def test_a_workspace_that_cannot_be_created_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(RuntimeError, match="cannot create the workspace"), running(tmp_path, blocker / "ws"):
        pass


def test_an_index_lock_held_for_a_moment_by_someones_git_is_waited_for(hub: Running) -> None:
    lock = hub.workspace / ".git" / "index.lock"
    lock.write_text("", encoding="utf-8")
    timer = threading.Timer(0.5, lock.unlink)
    timer.start()
    try:
        hub.write(None, "work.txt", "work\n")
        assert git(hub.workspace, "log", "-1", "--format=%s").strip() == "workspace: write work.txt"
    finally:
        timer.cancel()
        timer.join(5)
