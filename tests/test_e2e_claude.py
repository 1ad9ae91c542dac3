"""End to end: the real Claude Code CLI in a rendered project, a real hub, a scripted model.

`claude -p` runs in a project rendered with the hub's URL, its key saved as `scaffold new
--save-key` does, in a throwaway HOME that trusts the project. The model behind it is
tests/fakemodel.py on 127.0.0.1: policies that act as the playbooks tell a coordinator or a
worker to, reading the tool results and hook messages Claude Code sends back. So the skills'
text, the MCP tools, the permissions in settings.json and the hooks all run for real; the
assertions read the hub's state and its workspace.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import git, render
from tests.fakemodel import Call, End, FakeModel, Policy, Step, Turn, found, search
from tests.hubproc import HubProcess, free_port, open_db_readonly, running_hub, write_config
from tests.test_api import serving
from tests.test_mcp import claude_env, trusting_home

pytestmark = pytest.mark.claude

RUN_TIMEOUT = 240.0  # seconds for one `claude -p`; each takes a few seconds plus the idle wait
REGISTER = r"(python3 \.claude/skills/vps-workspace/scripts/vps\.py workers register [^\n`]+)"
TOKEN = r"lease_token ([A-Za-z0-9_-]+)"


@dataclass
class Finished:
    code: int
    events: list[dict[str, Any]]
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        return next(event for event in self.events if event.get("type") == "result")

    @property
    def notices(self) -> list[str]:
        """What hooks told the user (systemMessage), as Claude Code reports it."""
        return [
            str(event.get("content", ""))
            for event in self.events
            if event.get("type") == "system" and event.get("subtype") == "informational"
        ]


@dataclass
class Team:
    """A rendered project, its hub (started and stopped by the test) and a HOME for Claude Code."""

    claude: Path
    project: Path
    key: str
    home: Path
    config: Path
    port: int
    hub: HubProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def workspace(self) -> Path:
        return self.config.parent / "workspace"

    def rest(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)

    def idle_minutes(self, minutes: float) -> None:
        """How long an idle worker waits, in the git-ignored local settings (they win over the project's)."""
        local = self.project / ".claude/settings.local.json"
        settings = json.loads(local.read_text(encoding="utf-8"))
        settings["env"]["VPS_WORKER_IDLE_MINUTES"] = str(minutes)
        local.write_text(json.dumps(settings), encoding="utf-8")

    def start(self, prompt: str, model: FakeModel, api: str, *args: str) -> subprocess.Popen[str]:
        env = claude_env(self.home, self.url, self.key, ANTHROPIC_BASE_URL=api)
        del env["VPS_API_URL"], env["VPS_API_KEY"]  # from the project's settings, as for a user
        return subprocess.Popen(
            [str(self.claude), "-p", prompt, "--output-format", "stream-json", "--verbose", *args],
            cwd=self.project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, prompt: str, policy: Policy, *args: str) -> tuple[Finished, FakeModel]:
        model = FakeModel(policy)
        with serving(model.app) as api:
            return finish(self.start(prompt, model, api, *args)), model

    def tasks(self) -> list[dict[str, Any]]:
        with self.rest() as rest:
            return list(rest.get("/v1/tasks").json()["tasks"])

    def task(self, task_id: int) -> dict[str, Any]:
        with self.rest() as rest:
            return dict(rest.get(f"/v1/tasks/{task_id}").json())

    def workers(self) -> list[dict[str, Any]]:
        with self.rest() as rest:
            return list(rest.get("/v1/workers").json()["workers"])

    def create(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.rest() as rest:
            made = rest.post("/v1/tasks", json={"tasks": tasks})
            assert made.status_code == 201, made.text
            return list(made.json()["tasks"])

    def claims(self) -> list[tuple[int, int]]:
        """(task id, worker id) of every claim the hub recorded, from its event log (hub stopped)."""
        with contextlib.closing(open_db_readonly(self.config.parent / "hub-data")) as db:
            rows = db.execute("SELECT task_id, worker_id FROM events WHERE type = 'task.claimed' ORDER BY id")
            return [(row["task_id"], row["worker_id"]) for row in rows]


def finish(process: subprocess.Popen[str]) -> Finished:
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(
            f"claude -p did not finish within {RUN_TIMEOUT} s:\n{out[-3000:]}\n{err[-2000:]}"
        ) from None
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Finished(process.returncode, events, err)


@pytest.fixture
def team(tmp_path: Path, claude_bin: Path) -> Iterator[Team]:
    with team_of(tmp_path, claude_bin) as made:
        yield made


@contextlib.contextmanager
def team_of(tmp_path: Path, claude_bin: Path, queue: dict[str, float] | None = None) -> Iterator[Team]:
    port = free_port()
    project = render(tmp_path / "project", save_key=True, hub_url=f"http://127.0.0.1:{port}")
    assert project.key is not None
    home = trusting_home(tmp_path, project.dest)
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    config = write_config(hub_dir, keys=[("team", "agent", project.key)], queue=queue)
    made = Team(claude_bin, project.dest, project.key, home, config, port)
    with running_hub(config, port=port) as hub:
        made.hub = hub
        yield made


def file_task(title: str, path: str, content: str, **fields: Any) -> dict[str, Any]:
    """A task whose instructions name one file to write; the worker model reads them."""
    instructions = f"## Objective\n{title}\n\n## Steps\nfile: {path}\ncontent: {content}\n"
    return {"title": title, "instructions": instructions, "required_capabilities": ["backend"], **fields}


# -- the models ---------------------------------------------------------------------------------


@dataclass
class WorkerModel:
    """Plays a worker as the /worker skill and WORKER_CLAUDE.md say: register with the command the
    skill shows, claim through MCP, write the file the task names, complete, end the turn; take
    the next task from the Stop hook's message. With `stop_holding`, it first tries to stop while
    it holds its first task."""

    stop_holding: bool = False
    run_code: bool = False  # after writing a .py file, import it with run_command (in the task's tree)
    worker_id: int = 0
    task: dict[str, Any] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    handed: list[int] = field(default_factory=list)  # tasks that came in a Stop hook's reason
    sent_back: int = 0

    def __call__(self, turn: Turn) -> Step:
        if turn.result is None:
            return self.read(turn.text)
        name, text, is_error = turn.result
        assert not is_error, f"{name} failed: {text[:500]}"
        if name == "Bash":
            self.worker_id = int(found(r"registered worker (\d+)", text))
            return search(
                "claim_task", "write_file", "complete_task", *(["run_command"] if self.run_code else [])
            )
        if name == "ToolSearch":
            return Call("mcp__vps__claim_task", {"worker_id": self.worker_id, "wait": 2})
        if name == "mcp__vps__claim_task":
            claimed = json.loads(text)
            if "lease_token" not in claimed:
                return End("No task came; ending the turn.")
            self.task = {
                "id": claimed["id"],
                "lease_token": claimed["lease_token"],
                "instructions": claimed["instructions"],
            }
            if self.stop_holding and not self.sent_back:
                return End("I will stop here.")
            return self.write()
        if name == "mcp__vps__write_file" and self.run_code:
            module = found(r"file: parts/(\w+)\.py", self.task["instructions"])
            program = f"import sys; sys.path.insert(0, 'parts'); import {module}"
            return Call(
                "mcp__vps__run_command", {"argv": ["python3", "-c", program], "worker_id": self.worker_id}
            )
        if name in ("mcp__vps__write_file", "mcp__vps__run_command"):
            if name == "mcp__vps__run_command":
                assert json.loads(text)["exit_code"] == 0, text
            task_id, token = self.task["id"], self.task["lease_token"]
            return Call("mcp__vps__complete_task", {"task_id": task_id, "lease_token": token, "result": "ok"})
        if name == "mcp__vps__complete_task":
            self.done.append(self.task["id"])
            return End(f"Task {self.task['id']} is done.")
        raise AssertionError(f"unexpected tool result from {name}")

    def read(self, text: str) -> Step:
        if "workers register --session" in text:
            return Call("Bash", {"command": found(REGISTER, text), "description": "Register as a worker"})
        if "The hub gave you task" in text:
            task_id = int(found(r"The hub gave you task (\d+)", text))
            self.handed.append(task_id)
            self.task = {"id": task_id, "lease_token": found(TOKEN, text), "instructions": text}
            return self.write()
        if "You still hold task" in text:
            self.sent_back += 1
            assert int(found(r"You still hold task (\d+)", text)) == self.task["id"]
            return self.write()
        return End("Waiting for work.")

    def write(self) -> Call:
        instructions = self.task["instructions"]
        path, content = found(r"file: (\S+)", instructions), found(r"content: (.+)", instructions)
        return Call(
            "mcp__vps__write_file", {"path": path, "content": content + "\n", "worker_id": self.worker_id}
        )


# -- scenarios ----------------------------------------------------------------------------------


def test_a_coordinator_creates_tasks_with_a_dependency_and_is_never_held(team: Team) -> None:
    batch = {
        "tasks": [
            {
                "ref": "schema",
                "title": "Design the schema",
                "instructions": "## Objective\nschema",
                "required_capabilities": ["backend"],
                "priority": 2,
            },
            {
                "ref": "api",
                "title": "Build the API",
                "instructions": "## Objective\napi",
                "depends_on": ["schema"],
                "required_capabilities": ["backend"],
            },
            {
                "ref": "ui",
                "title": "Draw the page",
                "instructions": "## Objective\nui",
                "required_capabilities": ["frontend"],
            },
        ]
    }
    script = iter([search("create_tasks"), Call("mcp__vps__create_tasks", batch)])

    def coordinator(turn: Turn) -> Step:
        if turn.result is not None and turn.result[0] == "mcp__vps__create_tasks":
            assert not turn.result[2], turn.result[1]
            return End("Three tasks are queued.")
        return next(script)

    finished, model = team.run("/coordinator", coordinator)
    assert finished.code == 0, finished.stderr
    assert finished.result["permission_denials"] == []
    assert not any("Stop hook" in json.dumps(request["messages"][-1]) for request in model.requests)
    tasks = {task["title"]: task for task in team.tasks()}
    assert sorted(tasks) == ["Build the API", "Design the schema", "Draw the page"]
    assert tasks["Build the API"]["depends_on"] == [tasks["Design the schema"]["id"]]
    assert [tasks[title]["state"] for title in ("Design the schema", "Build the API", "Draw the page")] == [
        "ready",
        "blocked",
        "ready",
    ]
    assert team.workers() == []  # the coordinator never registered


def test_a_worker_claims_writes_completes_and_the_stop_hook_hands_it_the_next_task(team: Team) -> None:
    team.idle_minutes(0.05)  # 3 s without a task, then it may stop
    first, second = team.create(
        [file_task("First", "notes/first.txt", "one"), file_task("Second", "notes/second.txt", "two")]
    )
    worker = WorkerModel()
    finished, model = team.run("/worker backend", worker)
    assert finished.code == 0, finished.stderr
    assert model.errors == []
    assert finished.result["permission_denials"] == []
    [registered] = team.workers()
    assert registered["role"] == "backend"
    assert registered["status"] == "stopped", "\n".join(map(str, [*model.steps, *finished.notices]))
    for task in (first, second):
        shown = team.task(task["id"])
        assert (shown["state"], shown["worker_id"]) == ("done", registered["id"])
        assert shown["commit"] is not None  # the hub committed the task's work
    assert (team.workspace / "notes/first.txt").read_text() == "one\n"
    assert (team.workspace / "notes/second.txt").read_text() == "two\n"
    assert worker.handed == [second["id"]]  # the second came through the Stop hook, not a claim
    assert any("is stopped" in notice for notice in finished.notices), finished.notices


def test_a_worker_holding_a_task_is_sent_back_and_stops_once_it_completed(team: Team) -> None:
    team.idle_minutes(0.05)
    [made] = team.create([file_task("Only", "only.txt", "held")])
    worker = WorkerModel(stop_holding=True)
    finished, model = team.run("/worker backend", worker)
    assert finished.code == 0, finished.stderr
    assert model.errors == []
    assert worker.sent_back == 1
    shown = team.task(made["id"])
    assert shown["state"] == "done" and shown["attempts"] == 0
    assert (team.workspace / "only.txt").read_text() == "held\n"
    assert [w["status"] for w in team.workers()] == ["stopped"]


def test_the_hub_down_lets_a_worker_stop(team: Team) -> None:
    session = str(uuid.uuid4())
    with team.rest() as rest:
        assert rest.post("/v1/workers", json={"session_id": session, "role": "backend"}).status_code == 201
    team.create([file_task("Waiting", "never.txt", "x")])
    assert team.hub is not None
    team.hub.stop()
    began = time.monotonic()
    finished, _ = team.run("Carry on.", lambda turn: End("Nothing to do."), "--session-id", session)
    assert finished.code == 0, finished.stderr
    assert time.monotonic() - began < 60  # not held waiting for a hub that is gone
    assert any("cannot reach the hub" in notice for notice in finished.notices), finished.notices
    with running_hub(team.config, port=team.port) as hub:
        team.hub = hub
        [task] = team.tasks()
        assert task["state"] == "ready"  # nothing was claimed
        assert [w["status"] for w in team.workers()] == ["idle"]


@pytest.mark.usefixtures("bubblewrap")
def test_three_workers_at_once_never_get_the_same_task_and_main_gets_one_commit_each(team: Team) -> None:
    """Three real sessions at once, each task in its own tree: every task is done once, main gets
    exactly one commit per task holding only that task's file, and no bytecode reaches history
    although each worker imports the module it wrote."""
    team.idle_minutes(0.25)  # 15 s: they wait in their Stop hooks until the tasks come
    models = [FakeModel(WorkerModel(run_code=True)) for _ in range(3)]
    with contextlib.ExitStack() as apis:
        urls = [apis.enter_context(serving(model.app)) for model in models]
        running = [team.start("/worker backend", model, url) for model, url in zip(models, urls, strict=True)]
        deadline = time.monotonic() + 120
        while len(team.workers()) < 3:
            assert time.monotonic() < deadline, "the three workers did not register"
            assert all(process.poll() is None for process in running), "a session ended early"
            time.sleep(0.2)
        made = team.create([file_task(f"Part {n}", f"parts/mod_{n}.py", f"VALUE = {n}") for n in range(9)])
        results = [finish(process) for process in running]
    assert [result.code for result in results] == [0, 0, 0], [result.stderr for result in results]
    assert all(model.errors == [] for model in models), [model.errors for model in models]
    workers = {worker["id"]: worker for worker in team.workers()}
    tasks = [team.task(task["id"]) for task in made]
    assert all(task["state"] == "done" and task["attempts"] == 0 for task in tasks)
    workers_by_task = {task["id"]: task["worker_id"] for task in tasks}
    assert len(set(workers_by_task.values()) & set(workers)) >= 2  # they worked side by side
    assert team.hub is not None
    team.hub.stop()  # its event log, read from disk
    claims = team.claims()
    assert sorted(task_id for task_id, _ in claims) == sorted(task["id"] for task in made)  # each once
    assert all(workers_by_task[task_id] == worker_id for task_id, worker_id in claims)
    for n in range(9):
        assert (team.workspace / f"parts/mod_{n}.py").read_text() == f"VALUE = {n}\n"
    done = [task_id for model in models for task_id in model.policy.done]  # type: ignore[attr-defined]
    assert sorted(done) == sorted(task["id"] for task in made)
    # main: one commit per task, each holding only its task's file, in a line; no bytecode anywhere
    for n, task in enumerate(tasks):
        changed = git(team.workspace, "show", "--name-only", "--format=", task["commit"]).split()
        assert changed == [f"parts/mod_{n}.py"], (task["id"], changed)
    subjects = git(team.workspace, "log", "--format=%s").splitlines()
    assert sorted(line for line in subjects if line.startswith("task ")) == sorted(
        f"task {task['id']}: {task['title']}" for task in tasks
    )
    assert all(len(line.split()) <= 2 for line in git(team.workspace, "log", "--format=%H %P").splitlines())
    history = git(team.workspace, "log", "--all", "--name-only", "--format=")
    assert ".pyc" not in history and "__pycache__" not in history


def test_session_start_after_resume_gives_a_worker_back_its_task(team: Team) -> None:
    team.idle_minutes(0.05)
    session = str(uuid.uuid4())
    first, _ = team.run("Hello.", lambda turn: End("Hello."), "--session-id", session)
    assert first.code == 0, first.stderr
    [made] = team.create([file_task("Resumed", "resumed.txt", "again")])
    with team.rest() as rest:
        worker_id = rest.post("/v1/workers", json={"session_id": session, "role": "backend"}).json()["id"]
        held = rest.post("/v1/tasks/claim", json={"worker_id": worker_id}).json()
    worker = WorkerModel(worker_id=worker_id)

    def resumed(turn: Turn) -> Step:
        if turn.result is None and not worker.task:
            text = turn.text
            assert f"You hold task {held['id']}" in text and held["lease_token"] in text, text[-2000:]
            worker.task = {"id": held["id"], "lease_token": found(TOKEN, text), "instructions": text}
            return worker.write()
        return worker(turn)

    finished, model = team.run("Carry on.", resumed, "--resume", session)
    assert finished.code == 0, finished.stderr
    assert model.errors == []
    assert team.task(made["id"])["state"] == "done"
    assert (team.workspace / "resumed.txt").read_text() == "again\n"


# -- liveness -----------------------------------------------------------------------------------

LOST = 30.0  # the hub's worker_lost_seconds in the liveness test: the least it accepts
BEAT = 15.0  # the hooks' LIVENESS_SECONDS


def processes_mentioning(text: str) -> list[str]:
    """The command lines of live processes that name `text` (the hooks of one project)."""
    found_lines = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            found_lines.append(cmdline)
    return found_lines


def test_a_thinking_worker_stays_alive_and_a_killed_one_is_lost_within_the_bound(
    tmp_path: Path, claude_bin: Path
) -> None:
    """Dead from idle: while the model thinks past the bound with no tool call, the session's
    watcher keeps the worker alive; once its `claude` is SIGKILLed while the Stop hook waits for
    work, the worker shows as lost within worker_lost_seconds + one beat, and nothing of the
    session (watcher, hook) is left running."""
    with team_of(tmp_path, claude_bin, queue={"worker_lost_seconds": LOST}) as team:
        team.idle_minutes(30)  # the Stop hook would wait for work for half an hour
        registered, thought = threading.Event(), threading.Event()

        def worker(turn: Turn) -> Step:
            if turn.result is None and "workers register --session" in turn.text:
                return Call("Bash", {"command": found(REGISTER, turn.text), "description": "Register"})
            if turn.result is not None and turn.result[0] == "Bash" and not thought.is_set():
                registered.set()
                time.sleep(LOST + 10)  # a long think: no tool call, no claim
                thought.set()
            return End("Waiting for work.")

        model = FakeModel(worker)
        with serving(model.app) as api:
            process = team.start("/worker backend", model, api)
            try:
                assert registered.wait(120), "the worker did not register"
                statuses = []
                while not thought.is_set():
                    statuses += [w["status"] for w in team.workers()]
                    assert process.poll() is None
                    time.sleep(2)
                assert statuses and set(statuses) == {"idle"}, statuses  # never lost while thinking
                assert processes_mentioning("session-watch.py"), "no watcher runs for the session"
                time.sleep(3)  # the turn ends and the Stop hook waits for work
                assert [w["status"] for w in team.workers()] == ["idle"]
                assert processes_mentioning(str(team.project / ".claude/hooks/worker-stop-check.py"))
                process.kill()
                killed = time.monotonic()
                while team.workers()[0]["status"] != "lost":
                    assert time.monotonic() - killed < LOST + BEAT + 5, "the killed worker is not lost"
                    time.sleep(0.5)
                seen_lost = time.monotonic() - killed
            finally:
                process.kill()
                process.communicate()
        leftovers = processes_mentioning(str(team.project))
        assert leftovers == [], leftovers
        assert seen_lost >= LOST - BEAT - 1  # lost because it went quiet, not sooner
    assert model.errors == []
