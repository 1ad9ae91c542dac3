"""`scaffold team`: start, watch and stop a coordinator and its workers, here or on other hosts.

tmux keeps every session of a team, one tmux server per team (its own socket, `tmux -L NAME`),
started by this command so its sessions inherit this command's environment, and never mixed with
a person's own tmux. Interactive mode gives each session a window a person can attach to: the
coordinator (`claude "/coordinator"`), each worker (`claude "/worker ROLE"`), and `screens`,
which sends each window's screen to the hub once a second. Headless mode runs, in each worker's
window, the project's slot supervisor (`.claude/skills/vps-workspace/scripts/team.py slot`),
which runs `claude -p "/worker ROLE"` again and again while there is work. On a laptop tmux is
what keeps that loop alive when the terminal closes: it is already needed for interactive mode,
lets a person attach and look, and is not another daemon. On a server the bundle's systemd unit
(`SLUG-worker@SLOT`) runs the same supervisor across logouts and reboots.

Every check happens before anything starts (the roles, the hub, each host's tools, login, trust
and size), and a start that fails halfway stops what it started, so a refused `team up` leaves
nothing behind. The hub keeps what the team is doing (`/v1/team`); `.claude/team/launch.json`
keeps where its sessions run, so `status`, `attach`, `logs` and `down` find them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from scaffold.deploy import Target
from scaffold.errors import TeamError
from scaffold.render import read_answers
from scaffold.team import hostprobe, sizing
from scaffold.team.hosts import Host, parse_host

SCRIPTS = Path(".claude/skills/vps-workspace/scripts")
TEAM_DIR = Path(".claude/team")
RECORD = TEAM_DIR / "launch.json"
COORDINATOR = "coordinator"
SCREENS = "screens"
MAX_WORKERS = 32
WINDOW = ("200", "50")  # columns, rows of a detached session's windows: what the dashboard shows
STOP_GRACE = 10.0  # seconds each session gets to end after tmux hangs up, before it is killed


@dataclass(frozen=True)
class Slot:
    name: str
    role: str | None  # None: the coordinator
    host: Host
    session_id: str


@dataclass(frozen=True)
class Launch:
    """A started team, as .claude/team/launch.json records it."""

    project: Path
    mode: str  # interactive | headless
    hosts: tuple[Host, ...]
    slots: tuple[Slot, ...]

    def save(self) -> None:
        path = self.project / RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        labels = [host.label for host in self.hosts]
        data = {
            "mode": self.mode,
            "hosts": [host.to_json() for host in self.hosts],
            "slots": [
                {
                    "slot": s.name,
                    "role": s.role,
                    "host": labels.index(s.host.label),
                    "session_id": s.session_id,
                }
                for s in self.slots
            ],
        }
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        scratch.replace(path)

    @classmethod
    def load(cls, project: Path) -> Launch | None:
        path = project / RECORD
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            hosts = tuple(Host.from_json(host) for host in data["hosts"])
            slots = tuple(
                Slot(item["slot"], item["role"], hosts[item["host"]], item["session_id"])
                for item in data["slots"]
            )
            return cls(project, data["mode"], hosts, slots)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise TeamError(f"{path} is damaged ({error}); remove it after checking nothing runs") from None

    def slot(self, name: str) -> Slot:
        for slot in self.slots:
            if slot.name == name:
                return slot
        names = ", ".join(slot.name for slot in self.slots)
        raise TeamError(f"no slot {name!r} in this team; its slots are: {names}")


def project_dir(start: Path) -> Path:
    """The rendered project at or above `start`."""
    start = start.expanduser().resolve()
    for folder in (start, *start.parents):
        if (folder / ".copier-answers.yml").is_file() and (folder / SCRIPTS / "vps.py").is_file():
            return folder
    raise TeamError(
        f"{start} is not in a project made by `scaffold new` (no .copier-answers.yml with .claude/)"
    )


# -- the hub, through the project's own client --------------------------------------------------


def client_module(project: Path) -> ModuleType:
    """The project's vps.py: the one client of the hub, which finds the URL and the key as the
    hooks do (the environment, else .claude/settings.local.json and settings.json)."""
    path = project / SCRIPTS / "vps.py"
    spec = importlib.util.spec_from_file_location("scaffold_team_vps", path)
    if spec is None or spec.loader is None:
        raise TeamError(f"{path} cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Hub:
    def __init__(self, project: Path) -> None:
        self.vps = client_module(project)
        try:
            self.client = self.vps.Client.from_env(project)
        except self.vps.HubError as error:
            raise TeamError(f"the project's hub: {error}") from None

    @property
    def url(self) -> str:
        return str(self.client.url)

    def call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        try:
            return self.client.request(method, path, body=body).data
        except self.vps.HubError as error:
            if missing_ok and error.exit_code == self.vps.EXIT_NOT_FOUND:
                return None
            raise TeamError(f"the hub at {self.url}: {error}") from None

    def team(self) -> dict[str, Any]:
        return dict(self.call("GET", "/v1/team"))


# -- up -----------------------------------------------------------------------------------------


def assign_roles(
    answers: dict[str, Any], known: Collection[str], workers: int | None, roles: Sequence[str]
) -> list[str]:
    """Worker i takes role ((i - 1) mod n) of the list, as the setup guide's table says: the
    project's worker_roles, or the --role list given. `known`: the roles the hub has."""
    chosen = list(roles) or list(answers.get("worker_roles") or [])
    for role in chosen:
        if known and role not in known:
            raise TeamError(f"unknown role {role!r}; the roles are: {', '.join(sorted(known))}")
    if not chosen:
        raise TeamError("the project names no worker roles: pass --role ROLE")
    count = workers if workers is not None else int(answers.get("worker_count") or len(chosen))
    if not 1 <= count <= MAX_WORKERS:
        raise TeamError(f"--workers must be between 1 and {MAX_WORKERS}, not {count}")
    return [chosen[index % len(chosen)] for index in range(count)]


def plan(hosts: Sequence[Host], roles: Sequence[str], headless: bool) -> list[Slot]:
    """The coordinator (interactive only) on the first host, workers spread over the hosts in turn."""
    slots = [] if headless else [Slot(COORDINATOR, None, hosts[0], str(uuid.uuid4()))]
    for index, role in enumerate(roles):
        slots.append(Slot(f"w{index + 1}", role, hosts[index % len(hosts)], str(uuid.uuid4())))
    return slots


def host_problems(host: Host, facts: dict[str, Any], headless: bool, claude: str) -> list[str]:
    """What keeps `host` from running sessions, each a line saying what to do."""
    where = host.label
    problems = []
    if facts.get("claude") is None:
        problems.append(f"{where}: `{claude}` is not installed or not on PATH (install Claude Code there)")
    if facts.get("tmux") is None:
        problems.append(f"{where}: tmux is not installed (apt-get install tmux)")
    if not facts.get("project"):
        problems.append(f"{where}: the project is not checked out at {host.project} (git clone it there)")
    elif headless and not facts.get("team_script"):
        problems.append(
            f"{where}: the checkout at {host.project} predates `scaffold team`: pull, or scaffold update"
        )
    if facts.get("claude") is not None and not facts.get("logged_in"):
        problems.append(
            f"{where}: Claude Code is not logged in: run `claude` there once (or set ANTHROPIC_API_KEY)"
        )
    if problems:
        return problems
    # Claude Code ignores the project's settings.json permissions in a folder it does not trust,
    # `claude -p` included: a worker could not even run vps.py to register.
    if not facts.get("trusted"):
        folder = facts.get("trust_root") or host.project
        problems.append(
            f"{where}: Claude Code does not trust {folder} yet: open `claude` there once and accept, "
            "or pass --trust to record that you trust it"
        )
    if headless:
        return problems
    # An interactive session would stop at these questions where nobody looks.
    if not facts.get("onboarded"):
        problems.append(f"{where}: Claude Code's first-run setup is not done: run `claude` there once")
    if facts.get("api_key") == "rejected":
        problems.append(
            f"{where}: Claude Code was told not to use this ANTHROPIC_API_KEY: unset it or approve it"
        )
    elif facts.get("api_key") == "unanswered":
        problems.append(
            f"{where}: Claude Code would ask whether to use the ANTHROPIC_API_KEY of the environment: "
            "pass --trust to say yes, or unset it"
        )
    return problems


def window_command(slot: Slot, headless: bool, claude: str, telemetry: bool = False) -> str:
    script = str(SCRIPTS / "team.py")
    if slot.name == SCREENS:
        return shlex.join(["python3", script, "screens", "--tmux", slot.host.tmux, "--host", slot.host.label])
    assert slot.role is not None or slot.name == COORDINATOR
    if headless:
        assert slot.role is not None
        argv = ["python3", script, "slot", "--slot", slot.name, "--role", slot.role]
        return shlex.join([*argv, "--host", slot.host.label, "--claude", claude])
    prompt = "/coordinator" if slot.role is None else f"/worker {slot.role}"
    # Claude Code reads its telemetry settings from a --settings file, not from the project's
    # settings (a headless slot's supervisor adds it the same way).
    settings = ["--settings", hostprobe.TELEMETRY] if telemetry else []
    return shlex.join([claude, *settings, "--session-id", slot.session_id, prompt])


def start_host(
    host: Host, slots: Sequence[Slot], headless: bool, claude: str, telemetry: bool = False
) -> None:
    """One tmux server and session on `host` with a window per slot (and `screens` if interactive);
    `telemetry`: the host's checkout has the telemetry settings, so its sessions report usage."""
    windows = list(slots)
    if not headless:
        windows.append(Slot(SCREENS, None, host, ""))
    argv = ["tmux", "-L", host.tmux]
    for index, slot in enumerate(windows):
        command = window_command(slot, headless, claude, telemetry)
        if index == 0:
            argv += ["new-session", "-d", "-s", host.tmux, "-x", WINDOW[0], "-y", WINDOW[1]]
        else:
            argv += [";", "new-window", "-d", "-t", host.tmux]
        argv += ["-n", slot.name, "-c", str(host.project), command]
    host.run(argv)


def stop_host(host: Host, extra_sessions: Sequence[int] = ()) -> list[int]:
    """Close the team's tmux session on `host` and make sure every process of it ended: tmux hangs
    up on each window; whatever is still there after STOP_GRACE is killed. The pids killed."""
    panes = host.run(
        ["tmux", "-L", host.tmux, "list-panes", "-s", "-t", host.tmux, "-F", "#{pane_pid}"], check=False
    )
    sessions = [int(pid) for pid in panes.stdout.split() if pid.isdigit()] if panes.returncode == 0 else []
    host.run(["tmux", "-L", host.tmux, "kill-session", "-t", host.tmux], check=False)
    sessions += [sid for sid in extra_sessions if sid not in sessions]
    if not sessions:
        return []
    answer = host.probe("reap", "--sessions", ",".join(map(str, sessions)), "--grace", str(STOP_GRACE))
    return [int(pid) for pid in answer.get("killed", [])]


def up(
    project: Path,
    *,
    workers: int | None = None,
    roles: Sequence[str] = (),
    headless: bool = False,
    hosts: Sequence[str] = (),
    ssh: Target | None = None,
    force: bool = False,
    trust: bool = False,
    claude: str = "claude",
    wait: float = 90.0,
    out: TextIO = sys.stdout,
) -> Launch:
    project = project_dir(project)
    answers = read_answers(project)
    if workers is not None and not 1 <= workers <= MAX_WORKERS:  # before asking anything of the hub
        raise TeamError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}")
    machines = [parse_host(spec, project, ssh or Target()) for spec in hosts] or [Host(Target(), project)]
    labels = [host.label for host in machines]
    if len(set(labels)) != len(labels):
        raise TeamError("a --host is named twice")
    hub = Hub(project)
    previous = Launch.load(project)
    if previous is not None and any(live_windows(previous).values()):
        raise TeamError("the team is already up (`scaffold team status`; `scaffold team down` stops it)")
    hub.team()  # reachable, and the key is good
    # The project's roles are the hub's: vps/hub.toml's [roles] is rendered from the same answers.
    assigned = assign_roles(answers, answers.get("worker_roles") or (), workers, roles)
    mode = "headless" if headless else "interactive"
    slots = plan(machines, assigned, headless)
    problems = []
    telemetry: dict[str, bool] = {}
    for host in machines:
        args = ["check", "--project", str(host.project), "--tmux", host.tmux, "--claude", claude]
        facts = host.probe(*args, *(["--trust"] if trust else []), *(["--headless"] if headless else []))
        if facts.get("running"):
            raise TeamError(
                f"the team is already up on {host.label} (`scaffold team status`; `scaffold team down`)"
            )
        problems += host_problems(host, facts, headless, claude)
        telemetry[host.label] = bool(facts.get("telemetry"))
        sessions = sum(1 for slot in slots if slot.host == host)
        too_many = sizing.check(
            host.label, int(facts.get("cpus") or 1), int(facts.get("mem_kb") or 0) // 1024, sessions
        )
        if too_many and not force:
            problems.append(too_many)
    if problems:
        raise TeamError("cannot start the team:\n  " + "\n  ".join(problems))
    launch = Launch(project, mode, tuple(machines), tuple(slots))
    started: list[Host] = []
    try:
        for host in machines:
            mine = [slot for slot in slots if slot.host == host]
            start_host(host, mine, headless, claude, telemetry[host.label])
            started.append(host)
            for slot in slots:  # a headless slot's supervisor tells the hub about itself
                if slot.host == host and not headless:
                    hub.call("PUT", f"/v1/team/slots/{slot.name}", slot_record(slot))
        launch.save()
    except BaseException:
        for host in started:
            stop_host(host)
        for slot in slots:
            hub.call("DELETE", f"/v1/team/slots/{slot.name}", missing_ok=True)
        raise
    print(f"started {len(slots)} session(s) on {', '.join(labels)} ({mode})", file=out)
    missing = wait_registered(hub, launch, wait)
    show_status(project, out=out)
    if missing:
        raise TeamError(
            f"{', '.join(missing)} did not register with the hub within {wait:.0f} s; the team is up: see "
            "`scaffold team logs SLOT` or `scaffold team attach SLOT`, or `scaffold team down`"
        )
    return launch


def slot_record(slot: Slot) -> dict[str, Any]:
    """An interactive slot as the hub keeps it: its session id joins it to the worker it registers."""
    role = slot.role or COORDINATOR
    return {
        "host": slot.host.label,
        "role": role,
        "mode": "interactive",
        "state": "starting",
        "session_id": slot.session_id,
    }


def wait_registered(hub: Hub, launch: Launch, seconds: float) -> list[str]:
    """The worker slots still without a registered worker (nor failed) after `seconds`."""
    waiting = {slot.name for slot in launch.slots if slot.role is not None}
    deadline = time.monotonic() + seconds
    while waiting:
        for view in hub.team().get("slots", []):
            if view.get("worker") or view.get("state") == "failed":
                waiting.discard(view.get("slot"))
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    return sorted(waiting, key=lambda name: int(name[1:]) if name[1:].isdigit() else 0)


# -- status, logs, attach -----------------------------------------------------------------------


def state_of(view: dict[str, Any] | None, window: bool | None) -> str:
    """starting, working, idle, restarting, failed, lost or stopped: what a person asks of a slot."""
    if window is False:
        return "stopped"
    if view is None:
        return "starting"
    worker = view.get("worker") or {}
    recorded = str(view.get("state") or "starting")
    if recorded in ("restarting", "failed", "stopped"):
        return recorded
    status = worker.get("status")
    if status == "active":
        return "working"
    if status in ("idle", "lost"):
        return str(status)
    if status == "stopped":
        return "idle" if recorded == "idle" else "stopped"
    return "idle" if recorded == "idle" else "starting"


def live_windows(launch: Launch) -> dict[str, set[str] | None]:
    """Per host label, the team's tmux windows there (None: the host could not be asked)."""
    found: dict[str, set[str] | None] = {}
    for host in launch.hosts:
        try:
            done = host.run(
                ["tmux", "-L", host.tmux, "list-windows", "-t", host.tmux, "-F", "#W"], check=False
            )
        except TeamError:
            found[host.label] = None
            continue
        found[host.label] = set(done.stdout.split()) if done.returncode == 0 else set()
    return found


def rows(project: Path) -> list[dict[str, Any]]:
    launch = Launch.load(project)
    hub = Hub(project)
    views = {view["slot"]: view for view in hub.team().get("slots", [])}
    if launch is None and not views:
        raise TeamError(f"no team is running for {project} (start one with `scaffold team up`)")
    windows = live_windows(launch) if launch else {}
    names = [slot.name for slot in launch.slots] if launch else []
    names += sorted(name for name in views if name not in names)
    table = []
    for name in names:
        view = views.get(name)
        slot = next((s for s in launch.slots if s.name == name), None) if launch else None
        label = slot.host.label if slot else str((view or {}).get("host") or "?")
        there = windows.get(label)
        window = None if slot is None or there is None else name in there
        worker = (view or {}).get("worker") or {}
        table.append(
            {
                "slot": name,
                "host": label,
                "role": slot.role or COORDINATOR if slot else (view or {}).get("role"),
                "worker": worker.get("id"),
                "state": state_of(view, window)
                if name != COORDINATOR
                else ("stopped" if window is False else "running"),
                "task": worker.get("current_task"),
                "idle": worker.get("idle_seconds"),
                "restarts": (view or {}).get("restarts") or 0,
            }
        )
    return table


def show_status(project: Path, *, as_json: bool = False, out: TextIO = sys.stdout) -> list[dict[str, Any]]:
    table = rows(project_dir(project))
    if as_json:
        print(json.dumps(table, indent=2), file=out)
        return table
    heads = ["SLOT", "HOST", "ROLE", "WORKER", "STATE", "TASK", "IDLE", "RESTARTS"]
    cells = [
        [
            row["slot"],
            row["host"],
            row["role"] or "",
            "" if row["worker"] is None else str(row["worker"]),
            row["state"],
            "" if row["task"] is None else str(row["task"]),
            "" if row["idle"] is None else f"{row['idle']:.0f}s",
            str(row["restarts"]),
        ]
        for row in table
    ]
    widths = [max(len(line[column]) for line in [heads, *cells]) for column in range(len(heads))]
    for line in [heads, *cells]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(), file=out
        )
    return table


def running_launch(project: Path) -> Launch:
    launch = Launch.load(project)
    if launch is None:
        raise TeamError(f"no team is running for {project} (start one with `scaffold team up`)")
    return launch


def attach(project: Path, slot_name: str | None, exec_: Callable[[list[str]], Any] | None = None) -> None:
    """Replace this process with `tmux attach` to the slot's window (over ssh -t for another host)."""
    launch = running_launch(project_dir(project))
    slot = launch.slot(slot_name) if slot_name else launch.slots[0]
    argv = slot.host.command(
        ["tmux", "-L", slot.host.tmux, "attach-session", "-t", f"{slot.host.tmux}:{slot.name}"], tty=True
    )
    if not sys.stdin.isatty() and exec_ is None:
        raise TeamError("attach needs a terminal: run it in one")
    (exec_ or (lambda line: os.execvp(line[0], line)))(argv)  # noqa: S606 (tmux, no shell)


def logs(
    project: Path, slot_name: str, *, lines: int = 200, follow: bool = False, out: TextIO = sys.stdout
) -> None:
    """A headless slot's log; an interactive slot's screen and scrollback."""
    launch = running_launch(project_dir(project))
    slot = launch.slot(slot_name)
    if launch.mode == "interactive":
        argv = [
            "tmux",
            "-L",
            slot.host.tmux,
            "capture-pane",
            "-p",
            "-S",
            f"-{lines}",
            "-t",
            f"{slot.host.tmux}:{slot.name}",
        ]
        print(slot.host.run(argv).stdout.rstrip("\n"), file=out)
        return
    log = str(TEAM_DIR / f"{slot.name}.log")
    if follow:
        os.execvp("tail", slot.host.command(["tail", "-n", str(lines), "-F", log]))  # noqa: S606
    done = slot.host.run(["tail", "-n", str(lines), log], check=False)
    if done.returncode != 0:
        raise TeamError(f"{slot.name} on {slot.host.label} has no log yet ({log})")
    print(done.stdout.rstrip("\n"), file=out)


# -- down ---------------------------------------------------------------------------------------


def down(project: Path, *, out: TextIO = sys.stdout) -> int:
    """Stop every session of the team; the tasks they held go back to the queue at once and their
    workers are marked stopped. Returns how many tasks went back."""
    project = project_dir(project)
    launch = Launch.load(project)
    hub = Hub(project)
    try:
        views = hub.team().get("slots", [])
        hub_note = ""
    except TeamError as error:  # stop the processes all the same; say what could not be done
        views, hub_note = [], f"; the hub could not be told ({error})"
    if launch is None and not views:
        raise TeamError(f"no team is running for {project}: nothing to stop")
    if launch is None:  # slots that report to the hub, but that no `team up` here started
        names = ", ".join(str(view.get("slot")) for view in views)
        unit = f"{read_answers(project).get('project_slug', 'PROJECT')}-worker@SLOT"
        raise TeamError(
            f"the hub's slots ({names}) were not started by `scaffold team up` here: stop them where they "
            f"run (on a server, `systemctl stop {unit}`)"
        )
    killed: list[int] = []
    for host in launch.hosts:
        children = [
            int(view["pid"])
            for view in views
            if view.get("host") == host.label and isinstance(view.get("pid"), int)
        ]
        killed += stop_host(host, children)
    ours = {slot.name for slot in launch.slots}
    released = 0
    if not hub_note:
        for view in views:
            worker = view.get("worker")
            if view.get("slot") not in ours:
                continue  # another launcher's, or a server's systemd unit's
            if worker and worker.get("status") != "stopped":
                released += 1 if worker.get("current_task") is not None else 0
                hub.call("DELETE", f"/v1/workers/{worker['id']}", missing_ok=True)
            hub.call("DELETE", f"/v1/team/slots/{view['slot']}", missing_ok=True)
    (project / RECORD).unlink(missing_ok=True)
    count = len(launch.slots)
    extra = (
        f"; {len(killed)} process(es) did not stop in {STOP_GRACE:.0f} s and were killed" if killed else ""
    )
    print(f"stopped {count} session(s); {released} task(s) went back to the queue{extra}{hub_note}", file=out)
    return released
