"""Issue 12: task trees and the merge queue, with the real git and a real hub.

Conflicts, the gate, attempts that start clean, no junk in history, the audit log, shared paths,
disk use, a restart, a hub killed mid-merge, and many workers at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scaffold.hub.services.merge import JOURNAL
from tests.conftest import built_hub, git
from tests.hubproc import running_hub, start_hub, write_config
from tests.test_git import Running


@contextlib.contextmanager
def hub_with(tmp_path: Path, **settings: Any) -> Iterator[Running]:
    workspace = tmp_path / "srv" / "workspace"
    with (
        built_hub(tmp_path, roles=("agent",), workspace=workspace, **settings) as made,
        TestClient(made.app) as client,
    ):
        yield Running(client, made.services, made.workspace, made.keys.agent)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Running]:
    with hub_with(tmp_path, spare_trees=1) as started:
        yield started


def committed_paths(workspace: Path, sha: str) -> list[str]:
    return git(workspace, "show", "--name-only", "--format=", sha).split()


# -- conflicts -----------------------------------------------------------------------------------


def test_a_conflict_leaves_main_alone_keeps_the_work_and_sends_the_task_back(hub: Running) -> None:
    seed = hub.claimed_task("Seed")
    hub.write(seed, "app.py", "greeting = 'hello'\n")
    hub.complete(seed)
    one, two = hub.claimed_task("Say hi"), hub.claimed_task("Say hey")
    hub.write(one, "app.py", "greeting = 'hi'\n")
    hub.write(two, "app.py", "greeting = 'hey'\n")
    hub.write(two, "other.py", "x = 1\n")
    merged = hub.complete(one)["commit"]

    body = {"lease_token": two["lease_token"], "result": "Done."}
    refused = hub.call("POST", f"/v1/tasks/{two['id']}/complete", body, 409)

    error = refused["error"]
    assert error["code"] == "merge_conflict"
    assert error["paths"] == ["app.py"]
    assert error["branch"] == f"task/{two['id']}-1"
    assert hub.head() == merged  # main untouched
    assert (hub.workspace / "app.py").read_text(encoding="utf-8") == "greeting = 'hi'\n"
    assert git(hub.workspace, "status", "--porcelain") == ""
    # nothing lost: the branch holds the whole attempt
    assert git(hub.workspace, "show", f"{error['branch']}:app.py") == "greeting = 'hey'\n"
    assert git(hub.workspace, "show", f"{error['branch']}:other.py") == "x = 1\n"
    task = hub.call("GET", f"/v1/tasks/{two['id']}")
    assert (task["state"], task["attempts"]) == ("ready", 1)
    assert "app.py" in task["error"] and error["branch"] in task["error"]
    told = hub.call("GET", "/v1/messages?for=coordinator")["messages"]
    assert any(f"task {two['id']}" in m["body"] and "app.py" in m["body"] for m in told)
    assert hub.hub.trees.existing(two["id"]) is None
    # the fresh attempt starts from current main, without the first attempt's writes
    again = hub.call("POST", "/v1/tasks/claim", {"worker_id": two["worker_id"]})
    assert again["id"] == two["id"]
    assert hub.read(again, "app.py") == "greeting = 'hi'\n"
    assert hub.read(again, "other.py") is None


def test_changes_to_different_parts_of_one_file_merge(hub: Running) -> None:
    seed = hub.claimed_task("Seed")
    hub.write(seed, "list.txt", "".join(f"line {n}\n" for n in range(1, 21)))
    hub.complete(seed)
    one, two = hub.claimed_task("Top"), hub.claimed_task("Bottom")
    hub.write(one, "list.txt", "TOP\n" + "".join(f"line {n}\n" for n in range(2, 21)))
    hub.write(two, "list.txt", "".join(f"line {n}\n" for n in range(1, 20)) + "BOTTOM\n")
    hub.complete(one)
    sha = hub.complete(two)["commit"]
    text = (hub.workspace / "list.txt").read_text(encoding="utf-8")
    assert text.startswith("TOP\n") and text.endswith("BOTTOM\n")
    assert git(hub.workspace, "rev-list", "--count", "HEAD").strip() == "4"  # first + 3 tasks, linear
    assert committed_paths(hub.workspace, sha) == ["list.txt"]


# -- the gate ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("bubblewrap")
def test_a_failing_gate_keeps_main_and_returns_the_output(tmp_path: Path) -> None:
    gate = "test ! -e broken.txt || { echo 'the build is broken'; exit 3; }"
    with hub_with(tmp_path, gate=gate, gate_timeout_seconds=60) as hub:
        bad = hub.claimed_task("Break it")
        hub.write(bad, "broken.txt", "oops\n")
        before = hub.head()
        body = {"lease_token": bad["lease_token"], "result": "Done."}
        refused = hub.call("POST", f"/v1/tasks/{bad['id']}/complete", body, 409)["error"]
        assert refused["code"] == "gate_failed"
        assert refused["exit_code"] == 3
        assert "the build is broken" in refused["output"]
        assert hub.head() == before
        assert not (hub.workspace / "broken.txt").exists()
        assert hub.call("GET", f"/v1/tasks/{bad['id']}")["state"] == "ready"
        assert git(hub.workspace, "show", f"{refused['branch']}:broken.txt") == "oops\n"

        good = hub.claimed_task("Fix it", priority=1)
        hub.write(good, "fixed.txt", "ok\n")
        assert hub.complete(good)["commit"] == hub.head() != before


# -- attempts start clean ------------------------------------------------------------------------


def test_an_expired_attempts_writes_are_gone_for_the_next_attempt(tmp_path: Path) -> None:
    with hub_with(tmp_path, lease_seconds=1.0, reap_interval_seconds=0.2) as hub:
        task = hub.claimed_task("Slow")
        hub.write(task, "half.txt", "half done\n")
        tree = hub.hub.trees.existing(task["id"])
        assert tree is not None and (tree.root / "half.txt").exists()
        deadline = time.monotonic() + 10
        while hub.call("GET", f"/v1/tasks/{task['id']}")["state"] != "ready":
            assert time.monotonic() < deadline, "the lease did not expire"
            time.sleep(0.1)
        while tree.root.exists():
            assert time.monotonic() < deadline, "the expired attempt's tree is still there"
            time.sleep(0.1)
        again = hub.call("POST", "/v1/tasks/claim", {"worker_id": task["worker_id"]})
        assert hub.read(again, "half.txt") is None
        assert not (hub.workspace / "half.txt").exists()


def test_a_released_tasks_tree_is_removed_by_the_reaper(tmp_path: Path) -> None:
    with hub_with(tmp_path, reap_interval_seconds=0.2) as hub:
        task = hub.claimed_task()
        hub.write(task, "x.txt", "x\n")
        tree = hub.hub.trees.existing(task["id"])
        assert tree is not None
        hub.call("POST", f"/v1/tasks/{task['id']}/release", {"lease_token": task["lease_token"]})
        deadline = time.monotonic() + 10
        while tree.root.exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert str(tree.root) not in git(hub.workspace, "worktree", "list")


# -- no junk, the audit log, shared paths, disk ---------------------------------------------------


@pytest.mark.usefixtures("bubblewrap")
def test_build_junk_never_reaches_history(hub: Running) -> None:
    task = hub.claimed_task("Add a module and run it")
    hub.write(task, "pkg/__init__.py", "")
    hub.write(task, "pkg/mod.py", "VALUE = 1\n")
    script = (
        "python3 -c 'import pkg.mod' && python3 -B -c 'import py_compile; py_compile.compile(\"pkg/mod.py\")'"
    )
    ran = hub.call("POST", "/v1/exec", {"shell": script, "worker_id": task["worker_id"]})
    assert ran["exit_code"] == 0, ran
    tree = hub.hub.trees.existing(task["id"])
    assert tree is not None and any((tree.root / "pkg").rglob("*.pyc"))  # made on purpose, excluded
    sha = hub.complete(task)["commit"]
    assert committed_paths(hub.workspace, sha) == ["pkg/__init__.py", "pkg/mod.py"]
    exclude = (hub.workspace / ".git" / "info" / "exclude").read_text(encoding="utf-8")
    assert "__pycache__/" in exclude and "*.py[cod]" in exclude
    assert not (hub.workspace / ".gitignore").exists()  # the user's own file is not touched
    everything = git(hub.workspace, "log", "--all", "--name-only", "--format=")
    assert ".pyc" not in everything and "__pycache__" not in everything


@pytest.mark.usefixtures("bubblewrap")
def test_commands_run_without_writing_bytecode(hub: Running) -> None:
    task = hub.claimed_task()
    ran = hub.call(
        "POST",
        "/v1/exec",
        {"argv": ["sh", "-c", "echo $PYTHONDONTWRITEBYTECODE"], "worker_id": task["worker_id"]},
    )
    assert ran["stdout"] == "1\n"


def test_file_events_name_their_task_and_worker(hub: Running) -> None:
    task = hub.claimed_task()
    hub.write(task, "a.txt", "a\n")
    hub.call(
        "POST", "/v1/files/edit", {"path": "a.txt", "old": "a", "new": "b", "worker_id": task["worker_id"]}
    )
    hub.write(None, "main.txt", "m\n")
    events = [e for e in hub.hub.store.events_after(0, 1000) if e.type.startswith("file.")]
    assert [(e.type, e.task_id, e.worker_id) for e in events] == [
        ("file.written", task["id"], task["worker_id"]),
        ("file.edited", task["id"], task["worker_id"]),
        ("file.written", None, None),
    ]


@pytest.mark.usefixtures("bubblewrap")
def test_shared_paths_are_linked_into_every_tree_and_never_committed(tmp_path: Path) -> None:
    workspace = tmp_path / "srv" / "workspace"
    (workspace / "node_modules" / "left-pad").mkdir(parents=True)
    (workspace / "node_modules" / "left-pad" / "index.js").write_text(
        "module.exports = 1\n", encoding="utf-8"
    )
    (workspace / ".gitignore").write_text("node_modules/\n", encoding="utf-8")
    with hub_with(tmp_path, shared_paths=("node_modules",)) as hub:
        task = hub.claimed_task()
        ran = hub.call(
            "POST",
            "/v1/exec",
            {
                "shell": "cat node_modules/left-pad/index.js && touch node_modules/x",
                "worker_id": task["worker_id"],
            },
        )
        assert ran["stdout"] == "module.exports = 1\n"
        assert ran["exit_code"] != 0  # read-only inside the sandbox: one install, shared by all
        tree = hub.hub.trees.existing(task["id"])
        assert tree is not None and (tree.root / "node_modules").is_symlink()
        hub.write(task, "app.js", "require('left-pad')\n")
        sha = hub.complete(task)["commit"]
        assert committed_paths(hub.workspace, sha) == ["app.js"]


def test_status_shows_the_trees_and_their_disk_use(hub: Running) -> None:
    task = hub.claimed_task()
    hub.write(task, "big.txt", "x" * 100_000)
    hub.hub.trees._usage.measured_at = 0  # not the cached number
    trees = hub.call("GET", "/v1/status")["trees"]
    assert trees["active"] == 1
    assert trees["bytes"] >= 100_000
    assert trees["path"] == str(hub.hub.trees.path)
    hub.complete(task)
    hub.settled()
    hub.hub.trees._usage.measured_at = 0
    after = hub.call("GET", "/v1/status")["trees"]
    assert (after["active"], after["merged"]) == (0, 1)
    left = [entry.name for entry in hub.hub.trees.path.iterdir()]
    assert all(name.startswith("spare-") for name in left), left


# -- restarts ------------------------------------------------------------------------------------


def test_a_restart_keeps_the_trees_of_held_claims_and_removes_the_rest(tmp_path: Path) -> None:
    with hub_with(tmp_path) as hub:
        kept, released = hub.claimed_task("Kept"), hub.claimed_task("Released")
        hub.write(kept, "kept.txt", "still mine\n")
        hub.write(released, "gone.txt", "gone\n")
        gone = hub.hub.trees.existing(released["id"])
        assert gone is not None
        stray = hub.hub.trees.path / "task-999-1"
        stray.mkdir()
    # the hub stopped; the release happens in the store while it is down (as a reaper would)
    with hub_with(tmp_path) as hub:
        hub.call("POST", f"/v1/tasks/{released['id']}/release", {"lease_token": released["lease_token"]})
    with hub_with(tmp_path) as hub:
        assert hub.read(kept, "kept.txt") == "still mine\n"
        assert not gone.root.exists()
        assert not stray.exists()
        assert hub.complete(kept)["commit"] == hub.head()


def test_a_journal_left_by_a_killed_hub_is_finished_on_start(tmp_path: Path) -> None:
    with hub_with(tmp_path) as hub:
        task = hub.claimed_task()
        hub.write(task, "a.txt", "a\n")
        tree = hub.hub.trees.existing(task["id"])
        assert tree is not None and tree.base is not None
        git(tree.root, "add", "-A")
        written = git(tree.root, "write-tree").strip()
        after = git(tree.root, "commit-tree", written, "-p", tree.base, "-m", f"task {task['id']}: x").strip()
        journal = tmp_path / JOURNAL
        entry = {"task_id": task["id"], "token": task["lease_token"], "result": "Done.", "commit": after}
        journal.write_text(
            json.dumps({"before": tree.base, "after": after, "tasks": [entry]}), encoding="utf-8"
        )
    with hub_with(tmp_path) as hub:
        assert hub.head() == after
        assert (hub.workspace / "a.txt").read_text(encoding="utf-8") == "a\n"
        done = hub.call("GET", f"/v1/tasks/{task['id']}")
        assert (done["state"], done["commit"]) == ("done", after)
        assert not journal.exists()
        assert hub.complete(task)["commit"] == after  # the worker's retry changes nothing


def test_a_hub_killed_in_the_middle_of_a_merge_finishes_it_once_on_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL after main's ref moved and before its checkout did (a git that stalls there)."""
    key = "k-" + "x" * 40
    config = write_config(tmp_path, keys=[("agent", "agent", key)])
    slow = tmp_path / "slow-git"
    slow.mkdir()
    real = shutil.which("git")
    wrapper = slow / "git"
    wrapper.write_text(
        f'#!/bin/sh\ncase " $* " in *" read-tree "*) touch "{tmp_path}/stalled"; sleep 30;; esac\n'
        f'exec {real} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{slow}{os.pathsep}{os.environ['PATH']}")
    hub = start_hub(config, log_dir=tmp_path / "log1")
    try:
        with hub.client(key) as client:
            worker = client.post("/v1/workers", json={"session_id": "s", "role": "backend"}).json()
            client.post("/v1/tasks", json={"title": "Write", "instructions": "x"})
            task = client.post("/v1/tasks/claim", json={"worker_id": worker["id"]}).json()
            put = client.put(
                f"/v1/files/content?path=w.txt&worker_id={worker['id']}",
                content=b"w\n",
                headers={"If-None-Match": "*"},
            )
            assert put.status_code == 201, put.text
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                body = {"lease_token": task["lease_token"], "result": "Done."}
                pending = pool.submit(client.post, f"/v1/tasks/{task['id']}/complete", json=body)
                deadline = time.monotonic() + 20
                while not (tmp_path / "stalled").exists():
                    assert time.monotonic() < deadline, hub.stderr
                    time.sleep(0.05)
                hub.kill()
                with contextlib.suppress(Exception):
                    pending.result(10)
    finally:
        hub.kill()
    monkeypatch.undo()
    workspace = tmp_path / "workspace"
    moved = git(workspace, "rev-parse", "main").strip()
    with running_hub(config, log_dir=tmp_path / "log2") as again, again.client(key) as client:
        shown = client.get(f"/v1/tasks/{task['id']}").json()
        assert (shown["state"], shown["commit"]) == ("done", moved)
        assert git(workspace, "rev-parse", "main").strip() == moved
        assert (workspace / "w.txt").read_text(encoding="utf-8") == "w\n"
        assert git(workspace, "status", "--porcelain") == ""
        assert git(workspace, "log", "--format=%s").splitlines().count(f"task {task['id']}: Write") == 1
        trees = Path(f"{workspace}.trees")
        assert [p.name for p in trees.iterdir() if not p.name.startswith("spare-")] == []
        assert git(workspace, "worktree", "list").count("\n") <= 2  # main, and at most a spare


# -- many workers at once ------------------------------------------------------------------------


def test_many_workers_many_tasks_one_commit_each_on_a_line(tmp_path: Path) -> None:
    """8 workers, 200 tasks over a real server: each writes its own file or edits its own line
    of a shared file; main gets 200 commits in a line, each touching only its task's path, and
    reverting any one removes only that change."""
    tasks, workers = 200, 8
    key = "k-" + "y" * 40
    config = write_config(tmp_path, keys=[("agent", "agent", key)])
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "shared.txt").write_text("".join(f"row {n}\n\n\n" for n in range(tasks)), encoding="utf-8")
    with running_hub(config, log_dir=tmp_path / "log") as hub, hub.client(key, timeout=60) as admin:
        created = admin.post(
            "/v1/tasks",
            json={"tasks": [{"title": f"t{n}", "instructions": str(n)} for n in range(tasks)]},
        )
        assert created.status_code == 201, created.text

        def work(number: int) -> list[int]:
            done: list[int] = []
            with hub.client(key, timeout=60) as client:
                me = client.post("/v1/workers", json={"session_id": f"w{number}", "role": "backend"}).json()
                deadline = time.monotonic() + 240
                while time.monotonic() < deadline:
                    claimed = client.post("/v1/tasks/claim", json={"worker_id": me["id"]})
                    if claimed.status_code == 204:  # the queue is empty
                        return done
                    task = claimed.json()
                    n = int(task["instructions"])
                    where = f"worker_id={me['id']}"
                    if n % 2:
                        put = client.put(
                            f"/v1/files/content?path=own/{n}.txt&{where}", content=f"{n}\n".encode()
                        )
                        assert put.status_code == 201, put.text
                    else:
                        edit = {
                            "path": "shared.txt",
                            "old": f"row {n}\n",
                            "new": f"row {n} done\n",
                            "worker_id": me["id"],
                        }
                        assert client.post("/v1/files/edit", json=edit).status_code == 200
                    body = {"lease_token": task["lease_token"], "result": "ok"}
                    answer = client.post(f"/v1/tasks/{task['id']}/complete", json=body)
                    assert answer.status_code == 200, answer.text
                    done.append(task["id"])
            raise AssertionError("a worker ran out of time")

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            finished = [task_id for part in pool.map(work, range(workers)) for task_id in part]
        assert sorted(finished) == list(range(1, tasks + 1))
        shown = admin.get("/v1/tasks?state=done&limit=500").json()["tasks"]
        commits = {task["id"]: task["commit"] for task in shown}

    line = git(workspace, "log", "--format=%H %P", "main").splitlines()
    assert len(line) == tasks + 1
    assert all(len(entry.split()) == (2 if i < tasks else 1) for i, entry in enumerate(line))
    for older, newer in zip(line[1:], line[:-1], strict=True):
        assert newer.split()[1] == older.split()[0]  # each commit's only parent is the one before
    assert sorted(commits.values()) == sorted(entry.split()[0] for entry in line[:-1])
    for task_id, sha in commits.items():
        n = task_id - 1
        assert committed_paths(workspace, sha) == ([f"own/{n}.txt"] if n % 2 else ["shared.txt"])
    # revert one edit of the shared file: only its line goes back
    victim = commits[1 + 10]
    git(workspace, "revert", "--no-edit", victim)
    text = (workspace / "shared.txt").read_text(encoding="utf-8")
    assert "row 10\n" in text and "row 10 done" not in text
    assert text.count(" done\n") == tasks // 2 - 1


def test_the_same_completion_sent_twice_at_once_merges_once(hub: Running) -> None:
    task = hub.claimed_task()
    hub.write(task, "once.txt", "once\n")
    before = hub.head()
    body = {"lease_token": task["lease_token"], "result": "Done."}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        url = f"/v1/tasks/{task['id']}/complete"
        answers = list(pool.map(lambda _: hub.call("POST", url, body), range(2)))
    assert answers[0]["commit"] == answers[1]["commit"] == hub.head()
    assert git(hub.workspace, "rev-list", "--count", f"{before}..{hub.head()}").strip() == "1"


def test_a_commit_made_on_main_by_hand_is_merged_onto_not_lost(hub: Running) -> None:
    task = hub.claimed_task()
    hub.write(task, "mine.txt", "mine\n")  # the hub now knows main's head
    (hub.workspace / "by-hand.txt").write_text("by hand\n", encoding="utf-8")
    git(hub.workspace, "add", "by-hand.txt")
    git(
        hub.workspace,
        "-c",
        "user.name=Person",
        "-c",
        "user.email=p@example.org",
        "commit",
        "-q",
        "-m",
        "by hand",
    )
    by_hand = hub.head()
    sha = hub.complete(task)["commit"]
    assert git(hub.workspace, "rev-list", "--parents", "-n", "1", sha).split() == [sha, by_hand]
    assert committed_paths(hub.workspace, sha) == ["mine.txt"]
    assert (hub.workspace / "by-hand.txt").exists() and (hub.workspace / "mine.txt").exists()
    assert git(hub.workspace, "status", "--porcelain") == ""
