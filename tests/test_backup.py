"""`scaffold hub backup` and `scaffold hub restore` with a real hub under write load, real SQLite and
real git; the rendered backup units checked by systemd-analyze and the bootstrap's dry run.

The measurements (backup time under load, its size, the writes while it ran) are printed: run
with `-s` to see them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from scaffold import __version__
from tests.conftest import ANSWER_SETS, render
from tests.conftest import require_tool as tool
from tests.hubproc import HubProcess, free_port, running_hub, scaffold, start_hub, write_config
from tests.test_deploy import bootstrap

SEED_BATCHES = 20  # batches of 10 tasks of 50 kB: a 10 MB database to copy
LOAD_ROUNDS = 500  # create, claim, write a file, complete: at most this many rounds
LOAD_SECONDS = 90.0
WARM_UP = 20  # completions before the backup starts
AFTER = 10  # completions after it, so the source has moved on from the backup
STATES = ("blocked", "ready", "claimed", "done", "dead", "cancelled")


@dataclass
class Load:
    """The hub's writer in a thread, through the API: each round creates a task, claims it,
    writes a file for it and completes it (so the hub commits). Records each request's start
    and duration."""

    hub: HubProcess
    key: str
    stop: threading.Event = field(default_factory=threading.Event)
    completions: int = 0
    requests: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        try:
            self._rounds()
        except (AssertionError, httpx2.HTTPError, KeyError) as error:  # for the test to report
            self.errors.append(repr(error))

    def _call(self, client: httpx2.Client, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        started = time.monotonic()
        response = client.request(method, path, **kwargs)
        self.requests.append((started, time.monotonic() - started))
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response

    def _rounds(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        with self.hub.client(self.key) as client:
            worker = self._call(client, "POST", "/v1/workers", json={"session_id": "load", "role": "load"})
            worker_id = worker.json()["id"]
            for number in range(LOAD_ROUNDS):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                self._call(
                    client,
                    "POST",
                    "/v1/tasks",
                    json={"title": f"load {number}", "instructions": "x", "priority": 10},
                )
                task = self._call(client, "POST", "/v1/tasks/claim", json={"worker_id": worker_id}).json()
                self._call(
                    client,
                    "PUT",
                    "/v1/files/content",
                    params={"path": f"load/{task['id']}.txt"},
                    content=f"written for task {task['id']}\n".encode(),
                )
                finish = {"lease_token": task["lease_token"], "result": f"result {task['id']}"}
                self._call(client, "POST", f"/v1/tasks/{task['id']}/complete", json=finish)
                self.completions += 1


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def read_db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def tasks_of(path: Path) -> dict[int, tuple[str, str | None, str | None]]:
    with closing(read_db(path)) as db:
        rows = db.execute("SELECT id, state, result, commit_sha FROM tasks").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def events_of(path: Path, up_to: int | None = None) -> list[tuple[Any, ...]]:
    with closing(read_db(path)) as db:
        rows = db.execute("SELECT * FROM events WHERE id <= ? ORDER BY id", (up_to or 2**62,)).fetchall()
    return [tuple(row) for row in rows]


def integrity(path: Path) -> list[tuple[Any, ...]]:
    with closing(read_db(path)) as db:
        return [tuple(row) for row in db.execute("PRAGMA integrity_check").fetchall()]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def served_tasks(hub: HubProcess, key: str) -> dict[int, tuple[str, str | None, str | None]]:
    found: dict[int, tuple[str, str | None, str | None]] = {}
    cursor = None
    with hub.client(key) as client:
        for _ in range(100):  # pages of 1,000
            page = client.get("/v1/tasks", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            for task in page.json()["tasks"]:
                found[task["id"]] = (task["state"], task["result"], task["commit"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return found
    raise AssertionError("more pages than expected")


def test_a_backup_under_write_load_restores_to_a_hub_that_serves_the_same_tasks_and_history(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    config = write_config(source)  # no keys: the hub creates an admin key in DATA_DIR/initial-admin-key
    data_dir, workspace, dest = source / "hub-data", source / "workspace", tmp_path / "backup"
    hub = start_hub(config, log_dir=source / "log")
    try:
        key = (data_dir / "initial-admin-key").read_text(encoding="utf-8").strip()
        with hub.client(key, timeout=60) as client:
            for batch in range(SEED_BATCHES):
                tasks = [{"title": f"seed {batch}.{n}", "instructions": "x" * 50_000} for n in range(10)]
                assert client.post("/v1/tasks", json={"tasks": tasks}).status_code == 201
        load = Load(hub, key)
        writer = threading.Thread(target=load.run)
        writer.start()
        try:
            wait_until(lambda: load.completions >= WARM_UP or bool(load.errors), 60, "the load to start")
            began = time.monotonic()
            made = scaffold("hub", "backup", str(dest), "--config", str(config), timeout=120)
            ended = time.monotonic()
            at_backup = load.completions
            wait_until(lambda: load.completions >= at_backup + AFTER or bool(load.errors), 60, "more load")
        finally:
            load.stop.set()
            writer.join(LOAD_SECONDS + 10)
    finally:
        hub.stop()
    assert not load.errors, load.errors
    assert made.returncode == 0, made.stderr
    assert f"Backed up the hub into {dest}" in made.stdout

    # The hub kept writing while the backup ran.
    during = [took for start, took in load.requests if began <= start and start + took <= ended]
    before = sorted(took for start, took in load.requests if start + took < began)
    size = sum(path.stat().st_size for path in dest.iterdir())
    inside = re.search(r" in ([\d.]+ s):", made.stdout)
    print(
        f"\nbackup under load: {ended - began:.2f} s for the CLI ({inside and inside[1]} inside it), "
        f"{size / 1e6:.1f} MB; {len(during)} writes finished during it, the longest "
        f"{max(during, default=0) * 1000:.0f} ms (median before it: "
        f"{before[len(before) // 2] * 1000:.0f} ms)"
    )
    assert during, "no write finished while the backup ran"
    assert max(during) < 5.0, "a write waited seconds for the backup"

    # What the backup holds: private, no key in the clear, checksums and counts that match.
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert sorted(path.name for path in dest.iterdir()) == [
        "hub.sqlite3",
        "manifest.json",
        "workspace.bundle",
    ]
    for path in dest.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert key.encode() not in path.read_bytes(), f"{path.name} holds the admin key"
    assert not list(tmp_path.glob(".backup.*")), "the temporary directory was left behind"
    manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    copy = dest / "hub.sqlite3"
    assert integrity(copy) == [("ok",)]
    copied = tasks_of(copy)
    counts = {state: sum(1 for task in copied.values() if task[0] == state) for state in STATES}
    assert manifest["tasks"] == counts
    assert counts["done"] >= WARM_UP and len(copied) >= SEED_BATCHES * 10 + WARM_UP
    with closing(read_db(copy)) as db:
        assert manifest["schema_version"] == db.execute("PRAGMA user_version").fetchone()[0] > 0
    assert manifest["hub_version"] == __version__
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((dest / name).read_bytes()).hexdigest()

    # The copy is the source at one instant: its tasks and events are exactly the source's up to
    # the copy's last id, and each task it says is done is done in the source with the same result.
    now = tasks_of(data_dir / "hub.sqlite3")
    assert len(now) > len(copied), "the load went on after the backup"
    assert set(copied) == {task_id for task_id in now if task_id <= max(copied)}
    for task_id, (state, result, commit) in copied.items():
        if state == "done":  # the hub records a task's commit just after its completion
            assert now[task_id][:2] == (state, result) and commit in (None, now[task_id][2]), task_id
    copied_events = events_of(copy)
    assert copied_events == events_of(data_dir / "hub.sqlite3", up_to=copied_events[-1][0])

    # Restore into a new data directory and workspace, then serve it.
    target = tmp_path / "target"
    target.mkdir()
    target_config = write_config(target)
    restored = scaffold("hub", "restore", str(dest), "--config", str(target_config), timeout=120)
    assert restored.returncode == 0, restored.stderr
    assert f"Restored the backup {dest}" in restored.stdout and str(target / "workspace") in restored.stdout
    new_data, new_workspace = target / "hub-data", target / "workspace"
    assert integrity(new_data / "hub.sqlite3") == [("ok",)]
    work = manifest["workspace"]
    assert git(new_workspace, "rev-parse", "HEAD").strip() == work["commit"]
    assert git(new_workspace, "symbolic-ref", "HEAD").strip() == work["head"]
    assert git(new_workspace, "log", "--format=%H %s", "HEAD") == git(
        workspace, "log", "--format=%H %s", work["commit"]
    )
    assert git(new_workspace, "status", "--porcelain") == ""
    for task_id, (state, _, commit) in copied.items():
        if commit:  # every commit a task names is in the restored history, with the task's file
            assert git(new_workspace, "cat-file", "-t", commit).strip() == "commit"
            if state == "done" and task_id > SEED_BATCHES * 10:
                assert (new_workspace / f"load/{task_id}.txt").is_file()

    with running_hub(target_config, log_dir=target / "log") as served:
        assert served_tasks(served, key) == copied  # the same key: the database holds its hash
        with served.client(key) as client:
            assert client.get("/v1/status").json()["progress"]["counts"] == manifest["tasks"]
        # A restore over a running hub's data is refused and changes nothing; so is a second hub.
        refused = scaffold("hub", "restore", str(dest), "--config", str(target_config), "--force")
        assert f"is running on {new_data}; stop it before restoring" in one_error_line(refused)
        assert not list(new_data.glob("before-restore-*")) and not list(target.glob("workspace.before-*"))
        second = scaffold(
            "hub", "serve", "--config", str(target_config), "--port", str(free_port()), timeout=30
        )
        assert f"{new_data} is in use by another hub or a restore (pid {served.proc.pid})" in one_error_line(
            second
        )

    # The control: with the hub stopped, the same restore goes through and moves the old data aside.
    again = scaffold("hub", "restore", str(dest), "--config", str(target_config), "--force", timeout=120)
    assert again.returncode == 0, again.stderr
    (aside,) = new_data.glob("before-restore-*")
    assert (aside / "hub.sqlite3").is_file() and f"moved the previous data aside to {aside}" in again.stdout
    (old_workspace,) = target.glob("workspace.before-restore-*")
    assert (old_workspace / ".git").is_dir()
    assert tasks_of(new_data / "hub.sqlite3") == copied


# -- refusals, on a small backup of a stopped hub ---------------------------------------------


@dataclass(frozen=True)
class Made:
    config: Path
    backup: Path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A hub with three tasks (one done), stopped, and a backup of it."""
    home = tmp_path_factory.mktemp("small")
    key = "k-" + os.urandom(8).hex()
    config = write_config(home, keys=[("owner", "admin", key)])
    with running_hub(config, log_dir=home / "log") as hub, hub.client(key) as client:
        tasks = [{"title": f"t{n}", "instructions": "x"} for n in range(3)]
        assert client.post("/v1/tasks", json={"tasks": tasks}).status_code == 201
        worker = client.post("/v1/workers", json={"session_id": "s", "role": "r"}).json()["id"]
        task = client.post("/v1/tasks/claim", json={"worker_id": worker}).json()
        done = client.post(f"/v1/tasks/{task['id']}/complete", json={"lease_token": task["lease_token"]})
        assert done.status_code == 200
    made = scaffold("hub", "backup", str(home / "backup"), "--config", str(config))
    assert made.returncode == 0, made.stderr
    return Made(config, home / "backup")


def copy_of(backup: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(backup, copy)
    return copy


def test_a_backup_refuses_a_destination_that_is_not_empty(small: Made, tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    refused = scaffold("hub", "backup", str(full), "--config", str(small.config))
    assert (
        one_error_line(refused)
        == f"scaffold: error: {full} already exists and is not empty; give a new directory"
    )
    assert [path.name for path in full.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"  # the control: an empty directory is fine
    empty.mkdir()
    assert scaffold("hub", "backup", str(empty), "--config", str(small.config)).returncode == 0
    assert (empty / "manifest.json").is_file()


def test_a_hub_killed_with_sigkill_leaves_no_lock_behind(small: Made, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    hub = start_hub(config, log_dir=tmp_path / "log")
    try:
        refused = scaffold("hub", "restore", str(small.backup), "--config", str(config), "--force")
        assert f"a hub (pid {hub.proc.pid}) is running on" in one_error_line(refused)
    finally:
        hub.kill()
    assert (tmp_path / "hub-data/hub.lock").exists()  # the file stays; the kernel dropped the lock
    done = scaffold("hub", "restore", str(small.backup), "--config", str(config), "--force")
    assert done.returncode == 0, done.stderr


def test_a_backup_refuses_to_go_into_the_workspace(small: Made) -> None:
    inside = small.config.parent / "workspace" / "backups" / "one"
    refused = scaffold("hub", "backup", str(inside), "--config", str(small.config))
    assert f"{inside} is inside the workspace, which agents read" in one_error_line(refused)
    assert not inside.parent.exists()


def test_a_restore_run_as_root_gives_the_files_to_the_data_directory_owner(
    small: Made, tmp_path: Path
) -> None:
    assert os.geteuid() == 0, "run the tests as root (as CI does): this restore takes the root path"
    nobody = 65534
    data, workspace = tmp_path / "data", tmp_path / "deep" / "workspace"
    data.mkdir(mode=0o750)
    os.chown(data, nobody, nobody)
    done = scaffold(
        "hub", "restore", str(small.backup), "--data-dir", str(data), "--workspace", str(workspace)
    )
    assert done.returncode == 0, done.stderr
    for path in [data, *data.rglob("*"), workspace, *workspace.rglob("*")]:
        assert (path.lstat().st_uid, path.lstat().st_gid) == (nobody, nobody), path
    assert stat.S_IMODE((data / "hub.sqlite3").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["hub.sqlite3", "workspace.bundle"])
def test_a_restore_refuses_a_tampered_backup_and_touches_nothing(
    small: Made, tmp_path: Path, name: str
) -> None:
    tampered = copy_of(small.backup, tmp_path)
    data = bytearray((tampered / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / name).write_bytes(bytes(data))
    target = tmp_path / "target"
    into = ("--data-dir", str(target / "data"), "--workspace", str(target / "workspace"))
    refused = scaffold("hub", "restore", str(tampered), *into)
    assert f"checksum mismatch: {tampered / name} is not the file the backup made" in one_error_line(refused)
    assert not target.exists()
    intact = scaffold("hub", "restore", str(small.backup), *into)
    assert intact.returncode == 0, intact.stderr  # the control


def test_a_restore_refuses_what_is_not_a_backup(small: Made, tmp_path: Path) -> None:
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    where = ["--data-dir", str(tmp_path / "data"), "--workspace", str(tmp_path / "workspace")]
    refused = scaffold("hub", "restore", str(nothing), *where)
    assert (
        one_error_line(refused) == f"scaffold: error: {nothing} is not a hub backup: it has no manifest.json"
    )
    odd = copy_of(small.backup, tmp_path)
    (odd / "manifest.json").write_text('{"format": "something else"}')
    assert "is not a hub backup" in one_error_line(scaffold("hub", "restore", str(odd), *where))
    (odd / "manifest.json").write_text("{not json")
    assert "manifest.json is unreadable" in one_error_line(scaffold("hub", "restore", str(odd), *where))
    missing = copy_of(small.backup, tmp_path / "m")
    (missing / "workspace.bundle").unlink()
    assert "workspace.bundle is missing" in one_error_line(scaffold("hub", "restore", str(missing), *where))
    assert not (tmp_path / "data").exists()


def test_a_restore_refuses_existing_data_unless_forced(small: Made, tmp_path: Path) -> None:
    data, workspace = tmp_path / "data", tmp_path / "workspace"
    where = ["--data-dir", str(data), "--workspace", str(workspace)]
    assert scaffold("hub", "restore", str(small.backup), *where).returncode == 0
    database = (data / "hub.sqlite3").read_bytes()
    refused = scaffold("hub", "restore", str(small.backup), *where)
    assert f"{data} holds a hub's data; pass --force" in one_error_line(refused)
    (data / "hub.sqlite3").rename(tmp_path / "moved")
    (workspace / "mine.txt").write_text("work in progress")
    refused = scaffold("hub", "restore", str(small.backup), *where)
    assert f"the workspace {workspace} is not empty; pass --force" in one_error_line(refused)
    forced = scaffold("hub", "restore", str(small.backup), *where, "--force")
    assert forced.returncode == 0, forced.stderr
    (aside,) = tmp_path.glob("workspace.before-restore-*")
    assert (aside / "mine.txt").read_text() == "work in progress" and not (workspace / "mine.txt").exists()
    assert (data / "hub.sqlite3").read_bytes() == database


def test_backup_into_keeps_the_newest_backups_and_deletes_nothing_else(small: Made, tmp_path: Path) -> None:
    into = tmp_path / "backups"
    for old in ("hub-20200101T000000Z", "hub-20210101T000000Z", "hub-20220101T000000Z"):
        shutil.copytree(small.backup, into / old)
    (into / "hub-20190101T000000Z").mkdir()  # named like one, but no manifest: not ours
    (into / "notes").mkdir()
    done = scaffold("hub", "backup", "--into", str(into), "--keep", "2", "--config", str(small.config))
    assert done.returncode == 0, done.stderr
    (new,) = [path for path in into.iterdir() if path.name.startswith("hub-20") and path.name > "hub-2023"]
    assert re.fullmatch(r"hub-\d{8}T\d{6}Z", new.name)
    assert sorted(path.name for path in into.iterdir()) == sorted(
        ["hub-20190101T000000Z", "notes", "hub-20220101T000000Z", new.name]
    )
    assert done.stdout.count("Deleted the old backup") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backup"], "give the backup's directory (DEST), or --into DIR"),
        (["backup", "x", "--into", "y"], "give the backup's directory (DEST), or --into DIR"),
        (["backup", "x", "--keep", "3"], "--keep N needs --into DIR and N of at least 1"),
        (["backup", "--into", "y", "--keep", "0"], "--keep N needs --into DIR and N of at least 1"),
    ],
)
def test_bad_backup_arguments_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    assert message in one_error_line(scaffold("hub", *args, "--data-dir", str(tmp_path / "none")))
    assert not (tmp_path / "none").exists()


def test_a_backup_of_no_hub_says_where_it_looked(tmp_path: Path) -> None:
    refused = scaffold("hub", "backup", str(tmp_path / "b"), "--data-dir", str(tmp_path / "none"))
    assert f"no hub database at {tmp_path / 'none' / 'hub.sqlite3'}" in one_error_line(refused)
    assert not (tmp_path / "b").exists() and not (tmp_path / "none").exists()


# -- the bundle's backup timer ------------------------------------------------------------------


@pytest.mark.parametrize("answers", ["remote-tls", "remote-plain"])
def test_the_backup_units_verify_and_the_readme_says_how_to_enable_them(tmp_path: Path, answers: str) -> None:
    project = render(tmp_path / "project", **ANSWER_SETS[answers]).dest
    slug = next(
        line.split(": ")[1]
        for line in (project / ".copier-answers.yml").read_text().splitlines()
        if line.startswith("project_slug:")
    )
    service = (project / "vps/hub-backup.service").read_text(encoding="utf-8")
    timer = (project / "vps/hub-backup.timer").read_text(encoding="utf-8")
    command = (
        f"/opt/{slug}/venv/bin/scaffold hub backup --into /var/backups/{slug} --keep 14 "
        f"--config /etc/{slug}/hub.toml"
    )
    assert f"ExecStart={command}" in service and f"User={slug}-hub" in service
    assert "OnCalendar=" in timer and "Persistent=true" in timer
    from scaffold.cli import _parser

    _parser().parse_args(command.split()[1:])  # the unit's command line parses
    # As for hub.service: systemd-analyze checks that ExecStart exists, so the copy names this
    # machine's scaffold; the timer is checked with its service beside it.
    units = tmp_path / "units"
    units.mkdir()
    (units / f"{slug}-hub-backup.service").write_text(
        service.replace(f"/opt/{slug}/venv/bin/scaffold", shutil.which("scaffold") or sys.executable)
    )
    (units / f"{slug}-hub-backup.timer").write_text(timer)
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", *map(str, sorted(units.iterdir()))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr  # warnings count too

    readme = (project / "vps/README.md").read_text(encoding="utf-8")
    said = (
        f"sudo systemctl enable --now {slug}-hub-backup.timer",
        "all but the newest 14",
        f"/var/backups/{slug}/hub-<UTC time>",
        f"scaffold hub restore /var/backups/{slug}/",
    )
    for words in said:
        assert words in readme


def test_the_bootstrap_installs_the_backup_units_but_does_not_enable_the_timer(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "run the tests as root (as CI does): this dry run takes the root path"
    project = render(tmp_path / "project", **ANSWER_SETS["remote-tls"], project_slug="backup-team").dest
    done = bootstrap(project / "vps", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    for unit in ("service", "timer"):
        assert (
            f"would: install the unit /etc/systemd/system/backup-team-hub-backup.{unit} (not enabled)"
            in done.stdout
        )
    assert not any(
        "enable" in line and "hub-backup" in line
        for line in done.stdout.splitlines()
        if not line.endswith("(not enabled)")
    ), done.stdout
    enables = re.findall(r"systemctl enable[^\n]*", (project / "vps/bootstrap.sh").read_text())
    assert enables == ['systemctl enable --quiet "$SERVICE"'], enables
    local = render(tmp_path / "local").dest
    assert not (local / "vps/hub-backup.timer").exists() and not (local / "vps/hub-backup.service").exists()
