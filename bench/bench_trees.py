"""Per-task working trees and the merge queue (issue 12), through a real hub's REST API.

Real hubs in subprocesses (bench/hubprocess.py) on 127.0.0.1, each on its own workspace: a git
repository of small files in directories of 100, committed on main before the hub starts.

- Claim -> first write answered: a worker claims a task (`POST /v1/tasks/claim`) and at once
  creates a file (`PUT /v1/files/content?path=...&worker_id=W`, `If-None-Match: *`), the first
  call that needs the task's tree; the time from sending the claim to the write's answer. The
  task is then completed, so the next claim starts fresh. Two hubs, `--files` (10,000) and
  `--small-files` (1,000), in turns, so noise hits both alike: the p50 at 10,000 files has a
  target, the ratio of the two says how it grows with the workspace. Every write is checked to
  stay out of main until its task is merged, and to be on main after.
- Merge queue: its own pace, the gate: in each of `queue_rounds` rounds, 25 workers each claim
  a task and write its file (untimed), then all 25 complete at once, so merges are always
  waiting; merges per second is the rounds' merges over the time from sending a round's
  completions to its last answer. And end to end, for information: `--merge-tasks` tasks, 8
  workers on threads (one keep-alive connection each) claiming, writing one file of their own
  and completing as fast as they can, so their trees and writes share the machine with the
  merges: the completions after the first over the time from the first to the last. Then
  main's history is read back with git: one line of commits (each one's only parent the one
  before), exactly one commit per task, touching only its file, and the very commit its
  completion answered.
- Disk: `--disk-tasks` tasks claimed on the 10,000-file hub, one file written in each: what the
  trees directory and git's per-tree files (.git/worktrees) grew by, per task. After every task
  finished: the task trees left (target: none), what is left in the trees directories (a spare
  tree made in advance is no task's), worktrees and `task/*` branches left in git, and how much
  the repository grew per merged task (history: what should be all that is left). `/v1/status`
  must count the active trees.

    python bench/bench_trees.py          # 100 claims per size, 1,000 merged tasks
    python bench/bench_trees.py --ci     # 20 claims per size, 200 merged tasks

The --ci run's time is mostly the hub's: under two minutes on 2 cores when the targets hold.

Prints one table (metric, value, target, ok/MISSED) and the first problems found; exits 1 if a
target is missed or the run failed. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench_exec import percentile
from hubprocess import BenchError, Hub

CLAIM_P50_MS = 500.0
MERGES_PER_S = 20.0
FILES_PER_DIR = 100
REQUEST_TIMEOUT = 120.0
GIT_TIMEOUT = 300.0
SETTLE_SECONDS = 30.0
"""How long the trees of finished tasks may take to go after the last completion was answered,
and the trees' disk use to stop changing."""
STATUS_SECONDS = 15.0
"""How long /v1/status may take to show the trees of the tasks just claimed."""
IDLE_SECONDS = 4.0
"""A connection idle this long is opened again before its next request, as an HTTP client's pool
does: the hub's server (uvicorn) closes one idle for 5 s, and a request sent as it closes is lost."""
MAX_PROBLEMS = 4  # of each kind: the claim runs, main's history, request errors
# The bench's own commits (the workspaces' first): no hooks, no signing, whoever runs it.
GIT = (
    "git",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "user.name=bench",
    "-c",
    "user.email=bench@scaffold.invalid",
)
SPARE = "spare-"
"""How the hub names a tree made in advance, before a task takes it (any other entry is a task's)."""
TASK_SUBJECT = re.compile(r"task (\d+): ")

Row = tuple[str, str, str, bool | None]


@dataclass(frozen=True)
class Sizes:
    claims: int = 100
    files: int = 10_000
    small_files: int = 1_000
    merge_tasks: int = 1_000
    merge_files: int = 1_000
    workers: int = 8
    queue_workers: int = 25
    queue_rounds: int = 16
    disk_tasks: int = 16
    phase_seconds: float = 600.0
    """Each phase's loops stop after this long, done or not."""


CI_SIZES = Sizes(claims=20, merge_tasks=200, queue_rounds=8, disk_tasks=8, phase_seconds=120.0)


@dataclass
class Numbers:
    first_write_ms: dict[int, list[float]] = field(default_factory=dict)
    claim_ms: dict[int, list[float]] = field(default_factory=dict)
    write_ms: dict[int, list[float]] = field(default_factory=dict)
    claim_complete_ms: dict[int, list[float]] = field(default_factory=dict)
    early: int = 0
    """First writes seen in main before their task was merged."""
    checked: int = 0
    """Tasks whose first write was looked for in main."""
    not_merged: int = 0
    """Completed tasks whose file is not on main, or that got no commit."""
    merged: int = 0
    merge_created: int = 0
    merge_seconds: float = 0.0
    """The merge phase's wall time, from the workers' first claims to the last answer."""
    sustained_seconds: float = 0.0
    """From the first completion answered to the last: the queue running, the first trees made."""
    queue_merged: int = 0
    queue_seconds: float = 0.0
    """The queue phase's rounds: from sending every completion of a round to the last answer."""
    complete_ms: list[float] = field(default_factory=list)
    merge_first_write_ms: list[float] = field(default_factory=list)
    history_problems: list[str] = field(default_factory=list)
    history_growth: float = 0.0
    disk_idle: int = 0
    disk_per_task: float = 0.0
    trees_found: bool = False
    status_active: int | None = None
    status_bytes: int | None = None
    finished: int = 0
    task_trees_left: int = 0
    spares_left: int = 0
    bytes_left: int = 0
    worktrees_left: int = 0
    branches_left: int = 0
    problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class RequestFailed(Exception):
    """The hub answered a request with an unexpected status."""


def log(message: str) -> None:
    print(f"bench_trees: {message}", file=sys.stderr, flush=True)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        [*GIT, "-C", str(repo), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} in {repo} failed: {done.stderr.strip()[:500]}")
    return done.stdout


def make_workspace(path: Path, files: int) -> None:
    """`files` small files in directories of 100 (src/d0000/f000.txt), committed on main."""
    path.mkdir()
    for number in range(files):
        directory = path / "src" / f"d{number // FILES_PER_DIR:04d}"
        if number % FILES_PER_DIR == 0:
            directory.mkdir(parents=True)
        text = f"file {number}\n" + "x" * 100 + "\n"
        (directory / f"f{number % FILES_PER_DIR:03d}.txt").write_text(text, encoding="utf-8")
    git(path, "init", "--quiet", "--initial-branch=main")
    git(path, "add", "-A")
    git(path, "commit", "--quiet", "-m", f"{files} files")


def disk_bytes(path: Path) -> int:
    """Bytes in use under `path` as `du` counts them (blocks, a hard link once); 0 if missing."""
    if not path.exists():
        return 0
    # du exits 1 when a file vanishes while it walks (a tree being removed): its total still holds
    done = subprocess.run(
        ["du", "-s", "--block-size=1", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    fields = done.stdout.split()
    return int(fields[0]) if fields and fields[0].isdigit() else 0


def megabytes(count: float) -> str:
    return f"{count / 1024 / 1024:,.2f} MB"


def task_path(task_id: int) -> str:
    return f"tasks/{task_id // 100}/task-{task_id}.txt"


class Client:
    """One keep-alive connection to a hub, as one worker holds it."""

    def __init__(self, hub: Hub) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=REQUEST_TIMEOUT)
        self.auth = {"Authorization": f"Bearer {hub.key}"}
        self.answered = time.monotonic()

    def call(
        self,
        method: str,
        path: str,
        payload: object = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        """The status and the parsed answer; RequestFailed for a status not in `expect`."""
        sent = {**self.auth, **(headers or {})}
        body = content
        if payload is not None:
            body = json.dumps(payload).encode()
            sent["Content-Type"] = "application/json"
        elif content is not None:
            sent["Content-Type"] = "application/octet-stream"
        if time.monotonic() - self.answered > IDLE_SECONDS:
            self.conn.close()  # the server may be closing it right now: the request opens a new one
        try:
            self.conn.request(method, path, body=body, headers=sent)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next request opens a new connection
            raise
        self.answered = time.monotonic()
        if response.status not in expect:
            raise RequestFailed(f"{method} {path}: HTTP {response.status} {raw[:300]!r}")
        return response.status, json.loads(raw) if raw else None

    def close(self) -> None:
        self.conn.close()


def register_worker(client: Client, name: str) -> int:
    body = client.call("POST", "/v1/workers", {"session_id": name, "role": "bench"}, expect=(201,))[1]
    return int(body["id"])


def create_task(client: Client, title: str) -> int:
    body = client.call("POST", "/v1/tasks", {"title": title, "instructions": "write one file"}, expect=(201,))
    return int(body[1]["id"])


@dataclass
class Worked:
    """One task a worker claimed, wrote a file in and completed."""

    task_id: int
    path: str
    first_write_s: float
    claim_s: float
    complete_s: float
    commit: str | None
    seen_early: bool
    completed_at: float
    """When the completion was answered (time.perf_counter)."""


def claim_and_write(
    client: Client, worker: int, workspace: Path
) -> tuple[dict[str, Any], float, float, bool]:
    """Claim a task and create its file: the task (empty dict: none ready), the seconds from
    sending the claim to its answer and to the write's answer, and whether the file was in main
    before the task was merged."""
    sent = time.perf_counter()
    status, task = client.call("POST", "/v1/tasks/claim", {"worker_id": worker}, expect=(200, 204))
    claimed = time.perf_counter()
    if status == 204:
        return {}, claimed - sent, 0.0, False
    path = task_path(int(task["id"]))
    client.call(
        "PUT",
        f"/v1/files/content?path={path}&worker_id={worker}",
        content=f"task {task['id']}\n".encode(),
        headers={"If-None-Match": "*"},
        expect=(201,),
    )
    written = time.perf_counter()
    return task, claimed - sent, written - sent, (workspace / path).exists()


def complete(client: Client, task: dict[str, Any]) -> tuple[float, str | None]:
    """Complete a claimed task: the seconds the answer took, and the commit it names."""
    start = time.perf_counter()
    payload = {"lease_token": task["lease_token"], "result": f"wrote {task_path(int(task['id']))}"}
    body = client.call("POST", f"/v1/tasks/{task['id']}/complete", payload)[1]
    commit = body.get("commit")
    return time.perf_counter() - start, commit if isinstance(commit, str) else None


def work_one(client: Client, worker: int, workspace: Path) -> Worked | None:
    """Claim, write, complete; None when no task is ready."""
    task, claim_s, first_write_s, early = claim_and_write(client, worker, workspace)
    if not task:
        return None
    complete_s, commit = complete(client, task)
    task_id = int(task["id"])
    ended = time.perf_counter()
    return Worked(task_id, task_path(task_id), first_write_s, claim_s, complete_s, commit, early, ended)


@dataclass
class Side:
    """One hub of the claim phase, with its workspace, its worker and its connection."""

    files: int
    hub: Hub
    workspace: Path
    client: Client
    worker: int = 0


def start_hub(name: str, work: Path, files: int, hubs: list[Hub]) -> tuple[Hub, Path]:
    workspace = work / f"{name}-workspace"
    log(f"{name}: a workspace of {files:,} files")
    make_workspace(workspace, files)
    hub = Hub(
        name,
        work,
        secrets.token_urlsafe(32),
        extra_config=f"[workspace]\npath = {json.dumps(str(workspace))}\n",
    )
    hubs.append(hub)
    return hub, workspace


def claim_cycle(side: Side, number: int, n: Numbers, timed: bool) -> None:
    """Create one task, claim it, write its first file, complete it; check main before and after."""
    client = side.client
    try:
        created = create_task(client, f"claim run {number}")
        worked = work_one(client, side.worker, side.workspace)
    except (RequestFailed, OSError, http.client.HTTPException) as error:
        n.errors.append(f"{side.hub.name}: {error}")
        return
    if worked is None or worked.task_id != created:
        n.problems.append(f"{side.hub.name}: claimed {worked and worked.task_id}, expected task {created}")
        return
    n.checked += 1
    n.finished += 1
    if worked.seen_early:
        n.early += 1
        n.problems.append(f"{side.hub.name}: task {created}'s first write was in main before its merge")
    if worked.commit is None or not (side.workspace / worked.path).exists():
        n.not_merged += 1
        n.problems.append(
            f"{side.hub.name}: task {created} done with commit {worked.commit}, file on main: "
            f"{(side.workspace / worked.path).exists()}"
        )
    if timed:
        n.first_write_ms.setdefault(side.files, []).append(worked.first_write_s * 1000)
        n.claim_ms.setdefault(side.files, []).append(worked.claim_s * 1000)
        n.write_ms.setdefault(side.files, []).append((worked.first_write_s - worked.claim_s) * 1000)
        n.claim_complete_ms.setdefault(side.files, []).append(worked.complete_s * 1000)


def claim_phase(sides: list[Side], sizes: Sizes, n: Numbers) -> None:
    for side in sides:
        side.worker = register_worker(side.client, f"claimer-{side.files}")
    deadline = time.monotonic() + sizes.phase_seconds
    for number in range(-1, sizes.claims):  # run -1 warms up
        if time.monotonic() > deadline:
            n.errors.append(f"claim runs: stopped after {sizes.phase_seconds:g} s at run {number}")
            break
        # the order swaps every run: what comes first after a completion waits on its leftovers
        for side in sides if number % 2 else reversed(sides):
            claim_cycle(side, number, n, timed=number >= 0)
        if number >= 0 and number % 10 == 9:
            log(f"claim runs: {number + 1}/{sizes.claims}")


def trees_dir(client: Client, workspace: Path) -> tuple[Path, dict[str, Any] | None]:
    """The trees directory (from /v1/status when it says, else `<workspace>.trees`), and the
    status's `trees` object if it has one."""
    status = client.call("GET", "/v1/status")[1]
    trees = status.get("trees")
    if isinstance(trees, dict) and isinstance(trees.get("path"), str):
        return Path(trees["path"]), trees
    return workspace.with_name(workspace.name + ".trees"), trees if isinstance(trees, dict) else None


def tree_bytes(trees: Path, workspace: Path) -> int:
    """The trees and git's own files for each of them (a worktree's index lives in .git/worktrees),
    once two readings in a row agree: the hub may be making a spare tree in the background."""
    end = time.monotonic() + SETTLE_SECONDS
    reading = disk_bytes(trees) + disk_bytes(workspace / ".git" / "worktrees")
    while time.monotonic() < end:
        time.sleep(0.5)
        previous, reading = reading, disk_bytes(trees) + disk_bytes(workspace / ".git" / "worktrees")
        if reading == previous:
            break
    return reading


def disk_phase(side: Side, sizes: Sizes, n: Numbers) -> None:
    """Claim `disk_tasks` tasks, write one file in each; what the trees take; complete them."""
    client = side.client
    trees, _ = trees_dir(client, side.workspace)
    n.disk_idle = tree_bytes(trees, side.workspace)
    held = []
    try:
        for number in range(sizes.disk_tasks):
            worker = register_worker(client, f"disk-{number}")
            created = create_task(client, f"disk {number}")
            task, _, _, early = claim_and_write(client, worker, side.workspace)
            if task.get("id") != created:
                n.problems.append(f"disk: claimed {task.get('id')}, expected task {created}")
                continue
            n.checked += 1
            n.early += early
            held.append(task)
        trees, status = trees_dir(client, side.workspace)
        n.trees_found = trees.is_dir()
        if held:
            n.disk_per_task = (tree_bytes(trees, side.workspace) - n.disk_idle) / len(held)
        # the hub may show disk use a few seconds old (walking the trees costs): wait, bounded
        end = time.monotonic() + STATUS_SECONDS
        while status is not None and status.get("active") != len(held) and time.monotonic() < end:
            time.sleep(0.5)
            status = trees_dir(client, side.workspace)[1]
        if status is not None:
            n.status_active = status.get("active")
            n.status_bytes = status.get("bytes")
        for task in held:
            complete(client, task)
            n.finished += 1
    except (RequestFailed, OSError, http.client.HTTPException) as error:
        n.errors.append(f"disk: {error}")
    log(f"disk: {len(held)} tasks held trees of {megabytes(n.disk_per_task)} each")


def merge_worker(
    hub: Hub,
    worker: int,
    workspace: Path,
    start: threading.Event,
    deadline: float,
    limit: int,
    worked: list[Worked],
    n: Numbers,
) -> None:
    client = Client(hub)
    try:
        start.wait(REQUEST_TIMEOUT)
        for _ in range(limit):
            if time.monotonic() > deadline:
                n.errors.append(f"merge worker {worker}: stopped at the phase's time limit")
                return
            try:
                done = work_one(client, worker, workspace)
            except (RequestFailed, OSError, http.client.HTTPException) as error:
                n.errors.append(f"merge worker {worker}: {error}")
                continue
            if done is None:
                return
            worked.append(done)  # list.append holds under the GIL: no lock needed
    finally:
        client.close()


def merge_phase(hub: Hub, workspace: Path, sizes: Sizes, n: Numbers) -> None:
    client = Client(hub)
    base = git(workspace, "rev-parse", "main").strip()
    git_before = disk_bytes(workspace / ".git")
    workers = [register_worker(client, f"merger-{number}") for number in range(sizes.workers)]
    for first in range(0, sizes.merge_tasks, 500):
        batch = [
            {"title": f"merge {number}", "instructions": "write one file"}
            for number in range(first, min(first + 500, sizes.merge_tasks))
        ]
        body = client.call("POST", "/v1/tasks", {"tasks": batch}, expect=(201,))[1]
        n.merge_created += len(body["tasks"])
    client.close()
    start = threading.Event()
    worked: list[Worked] = []
    deadline = time.monotonic() + sizes.phase_seconds
    threads = [
        threading.Thread(
            target=merge_worker,
            args=(hub, worker, workspace, start, deadline, sizes.merge_tasks, worked, n),
            daemon=True,
        )
        for worker in workers
    ]
    for thread in threads:
        thread.start()
    log(f"merge: {len(workers)} workers on {sizes.merge_tasks} tasks")
    began = time.perf_counter()
    start.set()
    for thread in threads:
        thread.join(sizes.phase_seconds + REQUEST_TIMEOUT)
    n.merge_seconds = time.perf_counter() - began
    answered = sorted(w.completed_at for w in worked)
    n.sustained_seconds = answered[-1] - answered[0] if answered else 0.0
    if any(thread.is_alive() for thread in threads):
        raise BenchError("a merge worker did not stop")
    n.merged = len(worked)
    n.finished += len(worked)
    n.complete_ms = [w.complete_s * 1000 for w in worked]
    n.merge_first_write_ms = [w.first_write_s * 1000 for w in worked]
    early = [w.task_id for w in worked if w.seen_early]
    n.checked += len(worked)
    n.early += len(early)
    n.problems += [f"merge: task {task}'s write was in main before its merge" for task in early[:3]]
    n.history_problems = check_history(workspace, base, worked)
    n.history_growth = (disk_bytes(workspace / ".git") - git_before) / max(1, len(worked))
    log(f"merge: {len(worked)} merged in {n.merge_seconds:.1f} s")


def queue_phase(hub: Hub, workspace: Path, sizes: Sizes, n: Numbers) -> None:
    """The merge queue's own pace: in each round `queue_workers` workers each claim a task and
    write its file (untimed), then all complete at once, so the queue always has merges waiting;
    merges per second is every round's merges over the rounds' time from sending the
    completions to the last answer."""
    client = Client(hub)
    base = git(workspace, "rev-parse", "main").strip()
    workers = [register_worker(client, f"queued-{number}") for number in range(sizes.queue_workers)]
    clients = [Client(hub) for _ in workers]
    worked: list[Worked] = []
    try:
        tasks = [
            {"title": f"queued {number}", "instructions": "write one file"} for number in range(len(workers))
        ]
        log(f"queue: {sizes.queue_rounds} rounds of {len(workers)} completions at once")
        with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
            for _ in range(sizes.queue_rounds):
                n.merge_created += len(
                    client.call("POST", "/v1/tasks", {"tasks": tasks}, expect=(201,))[1]["tasks"]
                )
                staged = [
                    (c, claim_and_write(c, worker, workspace))
                    for c, worker in zip(clients, workers, strict=True)
                ]
                began = time.perf_counter()
                answers = list(pool.map(lambda pair: complete(pair[0], pair[1][0]), staged))
                n.queue_seconds += time.perf_counter() - began
                ended = time.perf_counter()
                for (_, (task, claim_s, write_s, early)), (complete_s, commit) in zip(
                    staged, answers, strict=True
                ):
                    task_id = int(task["id"])
                    worked.append(
                        Worked(
                            task_id, task_path(task_id), write_s, claim_s, complete_s, commit, early, ended
                        )
                    )
    finally:
        for each in (client, *clients):
            each.close()
    n.queue_merged = len(worked)
    n.finished += len(worked)
    n.checked += len(worked)
    n.early += sum(w.seen_early for w in worked)
    n.history_problems += check_history(workspace, base, worked)
    log(f"queue: {len(worked)} merged in {n.queue_seconds:.1f} s of rounds")


def check_history(workspace: Path, base: str, worked: list[Worked]) -> list[str]:
    """What is wrong with main since `base`: a commit whose only parent is not the one before,
    a task without exactly one commit, a commit touching more than its task's file, a commit
    that is not the one the completion answered."""
    problems = []
    previous = base
    for line in git(workspace, "log", "--reverse", "--format=%H %P", f"{base}..main").splitlines():
        sha, *parents = line.split()
        if parents != [previous]:
            problems.append(
                f"commit {sha[:10]} has parents {[p[:10] for p in parents]}, not only {previous[:10]}"
            )
        previous = sha
    commits: dict[int, list[str]] = {}
    listing = git(workspace, "log", "--reverse", "--format=@%H %s", "--name-only", f"{base}..main")
    for entry in listing.split("@")[1:]:
        head, *names = [line for line in entry.splitlines() if line]
        sha, _, subject = head.partition(" ")
        match = TASK_SUBJECT.match(subject)
        if match is None:
            problems.append(f"commit {sha[:10]} is no task's: {subject!r}")
            continue
        task_id = int(match[1])
        commits.setdefault(task_id, []).append(sha)
        if names != [task_path(task_id)]:
            problems.append(f"commit {sha[:10]} of task {task_id} touches {names[:5]}")
    for done in worked:
        shas = commits.pop(done.task_id, [])
        if len(shas) != 1:
            problems.append(f"task {done.task_id} has {len(shas)} commits on main")
        elif done.commit != shas[0]:
            problems.append(f"task {done.task_id} answered commit {done.commit}, main has {shas[0][:10]}")
    problems += [f"task {task} has commits on main but was not completed" for task in commits]
    return problems


def leftovers(client: Client, workspace: Path, n: Numbers) -> None:
    """What finished tasks left: their trees (waited for a while), the spare trees and the
    bytes of the trees directory, worktrees besides main and the spares, task branches."""
    trees, _ = trees_dir(client, workspace)
    end = time.monotonic() + SETTLE_SECONDS
    while True:
        entries = list(trees.iterdir()) if trees.is_dir() else []
        task_trees = [entry for entry in entries if not entry.name.startswith(SPARE)]
        if not task_trees or time.monotonic() > end:
            break
        time.sleep(0.2)
    n.task_trees_left += len(task_trees)
    n.spares_left += len(entries) - len(task_trees)
    n.bytes_left += disk_bytes(trees)
    listed = git(workspace, "worktree", "list", "--porcelain").splitlines()
    paths = [Path(line.removeprefix("worktree ")) for line in listed if line.startswith("worktree ")]
    n.worktrees_left += sum(path != workspace and not path.name.startswith(SPARE) for path in paths)
    n.branches_left += len(git(workspace, "for-each-ref", "--format=%(refname)", "refs/heads/task/").split())


def median_ms(values: list[float]) -> float:
    return percentile(values, 0.5)


def rows(sizes: Sizes, n: Numbers) -> Iterator[Row]:
    big, small = n.first_write_ms.get(sizes.files, []), n.first_write_ms.get(sizes.small_files, [])
    p50 = median_ms(big)
    yield (
        f"claim -> first write answered p50, {sizes.files:,} files ({len(big)} claims)",
        f"{p50:.1f} ms",
        f"<= {CLAIM_P50_MS:.0f} ms",
        bool(big) and p50 <= CLAIM_P50_MS,
    )
    yield (
        f"claim -> first write answered p99, {sizes.files:,} files",
        f"{percentile(big, 0.99):.1f} ms",
        "",
        None,
    )
    yield (
        f"claim -> first write answered p50, {sizes.small_files:,} files",
        f"{median_ms(small):.1f} ms",
        "",
        None,
    )
    ratio = p50 / median_ms(small) if small and median_ms(small) else 0.0
    yield (
        f"p50 ratio {sizes.files:,} / {sizes.small_files:,} files (growth with the workspace)",
        f"{ratio:.2f}",
        "",
        None,
    )
    claim, write = median_ms(n.claim_ms.get(sizes.files, [])), median_ms(n.write_ms.get(sizes.files, []))
    parts = f"{claim:.1f} / {write:.1f} ms"
    yield f"of which claim answered / then first write answered, p50, {sizes.files:,} files", parts, "", None
    merges = " / ".join(
        f"{median_ms(n.claim_complete_ms.get(files, [])):.1f}" for files in (sizes.files, sizes.small_files)
    )
    yield (
        f"then completion (merge) answered p50, {sizes.files:,} / {sizes.small_files:,} files",
        f"{merges} ms",
        "",
        None,
    )
    yield (
        f"first writes seen in main before their task merged ({n.checked} tasks)",
        str(n.early),
        "0",
        n.early == 0,
    )
    yield (
        "claim runs' tasks done without their file on main (or no commit)",
        str(n.not_merged),
        "0",
        n.not_merged == 0,
    )
    # sustained: the merges after the first over the time since it, so the making of the first
    # trees, when every worker claims at once, is not counted against the queue
    rate = (n.merged - 1) / n.sustained_seconds if n.sustained_seconds else 0.0
    queued = n.queue_merged / n.queue_seconds if n.queue_seconds else 0.0
    yield (
        f"merge queue: merges/s with {sizes.queue_workers} completions waiting at once "
        f"({n.queue_merged} tasks, {sizes.merge_files:,} files)",
        f"{queued:.1f}",
        f">= {MERGES_PER_S:.0f}",
        queued >= MERGES_PER_S,
    )
    yield (
        f"end to end: merges/s, {sizes.workers} workers claiming, writing, completing ({n.merged} tasks)",
        f"{rate:.1f}",
        "",
        None,
    )
    overall = n.merged / n.merge_seconds if n.merge_seconds else 0.0
    yield "merges/s over the whole phase, from the first claims", f"{overall:.1f}", "", None
    latencies = f"{median_ms(n.complete_ms):.1f} / {percentile(n.complete_ms, 0.99):.1f} ms"
    yield "completion (merge) answered p50 / p99, under that load", latencies, "", None
    busy = f"{median_ms(n.merge_first_write_ms):.1f} / {percentile(n.merge_first_write_ms, 0.99):.1f} ms"
    yield "claim -> first write answered p50 / p99, under that load", busy, "", None
    yield (
        "merge tasks completed / created",
        f"{n.merged + n.queue_merged}/{n.merge_created}",
        "all",
        n.merged + n.queue_merged == n.merge_created,
    )
    yield (
        "merges that ran concurrently or out of line (see problems)",
        str(len(n.history_problems)),
        "0",
        not n.history_problems,
    )
    yield (
        f"disk per active task, {sizes.files:,} files ({sizes.disk_tasks} tasks; trees + .git/worktrees)",
        megabytes(n.disk_per_task) if n.trees_found else "no trees dir",
        "",
        None,
    )
    yield "trees + .git/worktrees with no task active (spare trees)", megabytes(n.disk_idle), "", None
    active = "absent" if n.status_active is None else str(n.status_active)
    yield (
        f"/v1/status trees.active with {sizes.disk_tasks} tasks active (bytes: {n.status_bytes})",
        active,
        str(sizes.disk_tasks),
        n.status_active == sizes.disk_tasks,
    )
    yield (
        f"task trees left after {n.finished} finished tasks",
        str(n.task_trees_left),
        "0",
        n.task_trees_left == 0,
    )
    yield (
        "left in the trees directories: spare trees made in advance, bytes",
        f"{n.spares_left}, {megabytes(n.bytes_left)}",
        "",
        None,
    )
    left = f"{n.worktrees_left} / {n.branches_left}"
    yield "git worktrees besides main and spares / task/* branches left", left, "0 / 0", left == "0 / 0"
    yield "repository growth per merged task (.git: history)", f"{n.history_growth / 1024:,.1f} KB", "", None
    yield "request errors", str(len(n.errors)), "0", not n.errors


@contextmanager
def hubs_stopped(keep: bool) -> Iterator[tuple[Path, list[Hub]]]:
    """A work directory and the hubs started in it; a failed run prints the hubs' logs and exits 1."""
    work = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    hubs: list[Hub] = []
    try:
        yield work, hubs
    except (BenchError, RequestFailed, OSError, http.client.HTTPException) as error:
        log(str(error))
        for hub in hubs:
            log(f"hub {hub.name}'s log ends:\n{hub.log_tail()}")
        raise SystemExit(1) from None
    finally:
        for hub in hubs:
            hub.stop()
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(sizes: Sizes, keep: bool) -> Numbers:
    n = Numbers()
    with hubs_stopped(keep) as (work, hubs):
        sides = []
        for name, files in (("large", sizes.files), ("small", sizes.small_files)):
            hub, workspace = start_hub(name, work, files, hubs)
            sides.append(Side(files, hub, workspace, Client(hub)))
        large, small = sides
        claim_phase(sides, sizes, n)
        leftovers(small.client, small.workspace, n)
        small.client.close()
        small.hub.stop()  # the next phases run alone
        disk_phase(large, sizes, n)
        leftovers(large.client, large.workspace, n)
        large.client.close()
        large.hub.stop()
        hub, workspace = start_hub("merge", work, sizes.merge_files, hubs)
        merge_phase(hub, workspace, sizes, n)
        queue_phase(hub, workspace, sizes, n)
        client = Client(hub)
        leftovers(client, workspace, n)
        client.close()
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="small sizes: about a minute")
    parser.add_argument("--claims", type=int, help="timed claims per workspace size (default 100; --ci 20)")
    parser.add_argument("--files", type=int, help="files in the large workspace (default 10000)")
    parser.add_argument("--small-files", type=int, help="files in the small workspace (default 1000)")
    parser.add_argument(
        "--merge-tasks", type=int, help="tasks merged by the workers (default 1000; --ci 200)"
    )
    parser.add_argument("--merge-files", type=int, help="files in the merge hub's workspace (default 1000)")
    parser.add_argument("--workers", type=int, help="concurrent workers merging (default 8)")
    parser.add_argument(
        "--queue-rounds", type=int, help="rounds of 25 completions at once (default 16; --ci 8)"
    )
    parser.add_argument(
        "--disk-tasks", type=int, help="tasks active at once for the disk row (default 16; --ci 8)"
    )
    parser.add_argument(
        "--phase-seconds", type=float, help="each phase's loops stop after this long (default 600; --ci 120)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (workspaces, hub logs)")
    args = parser.parse_args()
    overrides = {
        "claims": args.claims,
        "files": args.files,
        "small_files": args.small_files,
        "merge_tasks": args.merge_tasks,
        "merge_files": args.merge_files,
        "workers": args.workers,
        "queue_rounds": args.queue_rounds,
        "disk_tasks": args.disk_tasks,
        "phase_seconds": args.phase_seconds,
    }
    sizes = CI_SIZES if args.ci else Sizes()
    sizes = replace(sizes, **{name: value for name, value in overrides.items() if value is not None})
    if min(sizes.claims, sizes.small_files, sizes.merge_tasks, sizes.workers, sizes.disk_tasks) < 1:
        parser.error("every size must be at least 1")
    if sizes.phase_seconds <= 0:
        parser.error("--phase-seconds must be positive")
    if sizes.files <= sizes.small_files:
        parser.error("--files must be more than --small-files")

    started = time.perf_counter()
    n = run(sizes, args.keep)
    table = list(rows(sizes, n))
    width = max(len(row[0]) for row in table)
    print(f"{'metric':<{width}}  {'value':>16}  {'target':<10}  result")
    for metric, value, target, ok in table:
        verdict = "" if ok is None else "ok" if ok else "MISSED"
        print(f"{metric:<{width}}  {value:>16}  {target:<10}  {verdict}")
    mode = "--ci" if args.ci else "full"
    print(f"({mode} run, {time.perf_counter() - started:.0f} s; hubs on 127.0.0.1)")
    for kind in (n.problems, n.history_problems, n.errors):
        for problem in kind[:MAX_PROBLEMS]:
            print(f"  problem: {problem}")
        if len(kind) > MAX_PROBLEMS:
            print(f"  ... and {len(kind) - MAX_PROBLEMS} more like it")
    return 1 if any(ok is False for *_, ok in table) else 0


if __name__ == "__main__":
    sys.exit(main())
