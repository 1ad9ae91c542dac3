"""The workspace as a git repository: set up on start, one commit per completed task, revertable.

Each test runs a hub (TestClient as a context manager, so its lifespan runs) on a workspace in
a temporary directory and looks at the repository with the real git.
"""

from __future__ import annotations

import contextlib
import logging
import stat
import threading
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

    def claimed_task(self, title: str = "Add the greeting", role: str = "backend") -> dict[str, Any]:
        """A new task, claimed by a new worker of `role`: the task with its lease_token."""
        worker = self.call("POST", "/v1/workers", {"session_id": f"s-{title}", "role": role}, 201)
        self.call("POST", "/v1/tasks", {"title": title, "instructions": "do it"}, 201)
        task: dict[str, Any] = self.call("POST", "/v1/tasks/claim", {"worker_id": worker["id"]})
        assert task["title"] == title
        return task

    def complete(self, task: dict[str, Any], result: str = "Done.") -> dict[str, Any]:
        body = {"lease_token": task["lease_token"], "result": result}
        done: dict[str, Any] = self.call("POST", f"/v1/tasks/{task['id']}/complete", body)
        assert done["state"] == "done"
        return done

    def head(self) -> str:
        return git(self.workspace, "rev-parse", "HEAD").strip()


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
    (hub.workspace / "hello.txt").write_text("hello\n", encoding="utf-8")
    (hub.workspace / "docs").mkdir()
    (hub.workspace / "docs" / "greeting.md").write_text("# Greeting\n", encoding="utf-8")

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
    assert git(hub.workspace, "status", "--porcelain") == ""


def test_git_revert_of_a_task_commit_restores_the_state_before_it(hub: Running) -> None:
    first = hub.claimed_task("Write the config")
    (hub.workspace / "config.ini").write_text("level = 1\n", encoding="utf-8")
    hub.complete(first)
    second = hub.claimed_task("Raise the level and add notes")
    (hub.workspace / "config.ini").write_text("level = 2\n", encoding="utf-8")
    (hub.workspace / "notes.txt").write_text("notes\n", encoding="utf-8")
    sha = hub.complete(second)["commit"]

    git(hub.workspace, "revert", "--no-edit", sha)

    assert (hub.workspace / "config.ini").read_text(encoding="utf-8") == "level = 1\n"
    assert not (hub.workspace / "notes.txt").exists()
    assert git(hub.workspace, "status", "--porcelain") == ""


def test_deleted_files_are_committed_too(hub: Running) -> None:
    (hub.workspace / "old.txt").write_text("old\n", encoding="utf-8")
    hub.complete(hub.claimed_task("Add old"))
    task = hub.claimed_task("Remove old")
    (hub.workspace / "old.txt").unlink()
    sha = hub.complete(task)["commit"]
    assert git(hub.workspace, "show", "--name-status", "--format=", sha).split() == ["D", "old.txt"]


def test_no_change_means_no_commit(hub: Running) -> None:
    before = hub.head()
    task = hub.claimed_task()
    done = hub.complete(task)
    assert done["commit"] is None
    assert hub.call("GET", f"/v1/tasks/{task['id']}")["commit"] is None
    assert hub.head() == before


def test_completing_again_with_the_same_token_makes_no_second_commit(hub: Running) -> None:
    task = hub.claimed_task()
    (hub.workspace / "a.txt").write_text("a\n", encoding="utf-8")
    sha = hub.complete(task)["commit"]
    (hub.workspace / "b.txt").write_text("b\n", encoding="utf-8")  # after the completion
    again = hub.complete(task)
    assert again["commit"] == sha
    assert hub.head() == sha
    assert git(hub.workspace, "status", "--porcelain").split() == ["??", "b.txt"]


def test_changes_of_other_workers_in_the_shared_tree_go_into_the_commit(hub: Running) -> None:
    """The documented limit of one shared working tree: git add -A takes everything."""
    mine = hub.claimed_task("Mine")
    hub.claimed_task("Theirs")
    (hub.workspace / "mine.txt").write_text("mine\n", encoding="utf-8")
    (hub.workspace / "theirs.txt").write_text("not done yet\n", encoding="utf-8")
    sha = hub.complete(mine)["commit"]
    assert git(hub.workspace, "show", "--name-only", "--format=", sha).split() == ["mine.txt", "theirs.txt"]


def test_hooks_planted_in_the_repository_do_not_run(hub: Running) -> None:
    marker = hub.workspace.parent / "hook-ran"
    hooks = hub.workspace / ".git" / "hooks"
    for name in ("pre-commit", "commit-msg", "post-commit"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} >> '{marker}'\nexit 1\n", encoding="utf-8")
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    task = hub.claimed_task()
    (hub.workspace / "x.txt").write_text("x\n", encoding="utf-8")
    assert hub.complete(task)["commit"] == hub.head()
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


def test_a_broken_repository_does_not_fail_the_completion(
    hub: Running, caplog: pytest.LogCaptureFixture
) -> None:
    task = hub.claimed_task()
    (hub.workspace / "work.txt").write_text("work\n", encoding="utf-8")
    (hub.workspace / ".git" / "HEAD").write_text("this is not a ref\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="scaffold.hub"):
        done = hub.complete(task)
    assert done["commit"] is None
    shown = hub.call("GET", f"/v1/tasks/{task['id']}")
    assert (shown["state"], shown["commit"]) == ("done", None)
    assert f"task {task['id']}: the workspace was not committed" in caplog.text


def test_a_repository_that_is_not_there_any_more_does_not_fail_the_completion(
    hub: Running, caplog: pytest.LogCaptureFixture
) -> None:
    task = hub.claimed_task()
    (hub.workspace / ".git").rename(hub.workspace.parent / "moved.git")
    (hub.workspace / ".git").write_text("gitdir: /nonexistent/repository\n", encoding="utf-8")
    (hub.workspace / "work.txt").write_text("work\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="scaffold.hub"):
        assert hub.complete(task)["commit"] is None
    assert "not committed" in caplog.text
    # the next completion tries again, and commits once the repository is back
    (hub.workspace / ".git").unlink()
    (hub.workspace.parent / "moved.git").rename(hub.workspace / ".git")
    later = hub.claimed_task("Later")
    assert hub.complete(later)["commit"] == hub.head()


def test_git_that_is_too_slow_is_stopped_and_the_completion_stands(
    hub: Running, caplog: pytest.LogCaptureFixture
) -> None:
    task = hub.claimed_task()
    (hub.workspace / "work.txt").write_text("work\n", encoding="utf-8")
    hub.hub.git.timeout = 1e-6
    with caplog.at_level(logging.ERROR, logger="scaffold.hub"):
        assert hub.complete(task)["commit"] is None
    assert "took longer than" in caplog.text
    assert hub.hub.store.get_task(task["id"]).state == "done"


def test_without_git_the_hub_starts_and_completes_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with caplog.at_level(logging.ERROR, logger="scaffold.hub"), running(tmp_path) as started:
        assert "not under version control" in caplog.text
        task = started.claimed_task()
        (started.workspace / "work.txt").write_text("work\n", encoding="utf-8")
        assert started.complete(task)["commit"] is None
    assert (started.workspace / "work.txt").exists()
    assert not (started.workspace / ".git").exists()


def test_a_workspace_that_cannot_be_created_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(RuntimeError, match="cannot create the workspace"), running(tmp_path, blocker / "ws"):
        pass


def test_an_index_lock_held_for_a_moment_by_a_workers_git_is_waited_for(hub: Running) -> None:
    task = hub.claimed_task()
    (hub.workspace / "work.txt").write_text("work\n", encoding="utf-8")
    lock = hub.workspace / ".git" / "index.lock"
    lock.write_text("", encoding="utf-8")
    timer = threading.Timer(0.5, lock.unlink)
    timer.start()
    try:
        assert hub.complete(task)["commit"] == hub.head()
    finally:
        timer.cancel()
        timer.join(5)
