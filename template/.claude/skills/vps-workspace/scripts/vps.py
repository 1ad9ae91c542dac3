#!/usr/bin/env python3
"""vps.py: a client of the hub's REST API for the command line and the hooks. Standard library only.

    python3 .claude/skills/vps-workspace/scripts/vps.py [--json] COMMAND ...   (--help lists them)

VPS_API_URL and VPS_API_KEY come from the environment, else from `env` in .claude/settings.local.json
or .claude/settings.json of the current directory, a parent, or this file's project: Claude Code
passes that `env` to the commands and hooks it runs, a terminal of your own does not have it. The
key only goes into the Authorization header; it is never printed.

`tasks claim`, `reserve`, `unreserve`, every `files` command, `exec` and `workers
show|heartbeat|deregister` without an id act for this session's worker (or --worker): the one the
hub has for the session id (GET /v1/workers?session_id=) from --session, else
CLAUDE_CODE_SESSION_ID (Claude Code sets it for the commands it runs), else CLAUDE_SESSION_ID;
nothing is stored locally. The `files` commands and `exec` send that worker's id, so they act in
the working tree of the task it holds (the hub's choice); without a worker, or for a worker that
holds no task, they act on main. `messages read` reads for that worker (else everything) and
`messages send` signs as worker:<id>.

Exit codes: 0 ok; 1 other (also a 403 path_refused or disabled, a 409 that is not a lost lease, a
command run by `exec` that failed); 2 usage, or 422 invalid request; 3 network: not configured,
unreachable, redirected, 502/503/504; 4 auth: 401, 403 forbidden (the key's role), 429; 5 not
found (404, or the session is no worker); 6 lease lost (409 lease_conflict); 7 stale file (412);
8 reserved (423). One line on stderr says what failed.

The hooks import this module rather than repeat it (importing it has no side effects); their
hooklib.py puts this folder on sys.path first (it says why), then:

    from vps import Client, HubError, EXIT_NETWORK
    client = Client.from_env(cwd)                  # HubError when VPS_API_URL/KEY are missing
    worker = client.find_worker(session_id)        # a dict, or None when not registered
    task = client.claim(worker["id"], wait=540)    # a dict with lease_token, or None
    mine = client.session(session_id)              # {worker, tasks (with lease_token)}, or None
    client.call("workers.heartbeat", worker["id"]) # any route of ROUTES by name: a Reply
    # every failure raises HubError, whose exit_code is one of the codes above
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from email.message import Message
from http.client import HTTPException
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_NETWORK, EXIT_AUTH = 0, 1, 2, 3, 4
EXIT_NOT_FOUND, EXIT_LEASE_LOST, EXIT_STALE, EXIT_RESERVED = 5, 6, 7, 8
TIMEOUT = 30.0  # seconds for one request
MARGIN = 30.0  # added to a long poll's wait or a command's run time
EXEC_TIMEOUT = 600.0  # the hub's default [exec] timeout_seconds, when the caller names none
SESSION_VARS = ("CLAUDE_CODE_SESSION_ID", "CLAUDE_SESSION_ID")

# Every route the client calls: name -> (method, path); {id} is a task, worker or reservation id,
# or a team slot's name.
ROUTES = {
    "status": ("GET", "/v1/status"),
    "usage": ("GET", "/v1/usage"),
    "plan.show": ("GET", "/v1/plan"),
    "plan.set": ("PUT", "/v1/plan"),
    "tasks.list": ("GET", "/v1/tasks"),
    "tasks.show": ("GET", "/v1/tasks/{id}"),
    "tasks.create": ("POST", "/v1/tasks"),
    "tasks.claim": ("POST", "/v1/tasks/claim"),
    "tasks.heartbeat": ("POST", "/v1/tasks/{id}/heartbeat"),
    "tasks.complete": ("POST", "/v1/tasks/{id}/complete"),
    "tasks.fail": ("POST", "/v1/tasks/{id}/fail"),
    "tasks.release": ("POST", "/v1/tasks/{id}/release"),
    "tasks.cancel": ("POST", "/v1/tasks/{id}/cancel"),
    "workers.register": ("POST", "/v1/workers"),
    "workers.list": ("GET", "/v1/workers"),
    "workers.show": ("GET", "/v1/workers/{id}"),
    "workers.heartbeat": ("POST", "/v1/workers/{id}/heartbeat"),
    "workers.deregister": ("DELETE", "/v1/workers/{id}"),
    "workers.runs": ("POST", "/v1/workers/{id}/runs"),
    "session.show": ("GET", "/v1/session"),
    "session.heartbeat": ("POST", "/v1/session/heartbeat"),
    "messages.send": ("POST", "/v1/messages"),
    "messages.read": ("GET", "/v1/messages"),
    "files.ls": ("GET", "/v1/files"),
    "files.cat": ("GET", "/v1/files/content"),
    "files.put": ("PUT", "/v1/files/content"),
    "files.edit": ("POST", "/v1/files/edit"),
    "files.rm": ("POST", "/v1/files/delete"),
    "files.mv": ("POST", "/v1/files/move"),
    "files.grep": ("POST", "/v1/files/grep"),
    "reserve": ("POST", "/v1/reservations"),
    "unreserve": ("POST", "/v1/reservations/{id}/release"),
    "exec": ("POST", "/v1/exec"),
    # team.py, the slot supervisor and screen streamer: {id} is a slot name there
    "team.show": ("GET", "/v1/team"),
    "team.slot": ("PUT", "/v1/team/slots/{id}"),
    "team.screen": ("PUT", "/v1/team/slots/{id}/screen"),
}
# An error answer's status, or (status, error code), -> exit code; anything else is EXIT_OTHER.
EXIT_BY_STATUS = {
    401: EXIT_AUTH,
    404: EXIT_NOT_FOUND,
    412: EXIT_STALE,
    422: EXIT_USAGE,
    423: EXIT_RESERVED,
    429: EXIT_AUTH,
    502: EXIT_NETWORK,
    503: EXIT_NETWORK,
    504: EXIT_NETWORK,
}
EXIT_BY_CODE = {(403, "forbidden"): EXIT_AUTH, (409, "lease_conflict"): EXIT_LEASE_LOST}


class HubError(Exception):
    """A call that failed, or a client that cannot call; `exit_code` says which kind. For an error
    answer of the hub, `status` and `code` are its HTTP status and error code and `reason` its
    message alone (for a hook to pass on, as the hub's budget refusals); else they are empty."""

    def __init__(
        self, message: str, exit_code: int = EXIT_OTHER, status: int = 0, code: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.exit_code, self.status, self.code, self.reason = exit_code, status, code, reason


class Reply(NamedTuple):
    status: int
    headers: Message
    data: Any  # the parsed JSON; bytes for other content; None for an empty body


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Following a redirect would send the key wherever it points; report it instead.
    def redirect_request(self, *args: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def setting(name: str, cwd: Path | None = None) -> str:
    """The environment variable, else `env.<name>` of the nearest Claude Code settings that have it."""
    if os.environ.get(name):
        return os.environ[name]
    here, script = (cwd or Path.cwd()).resolve(), Path(__file__).resolve()
    project = script.parents[4:5]  # <project>/.claude/skills/vps-workspace/scripts/vps.py
    for directory in [here, *here.parents, *project]:
        for file in ("settings.local.json", "settings.json"):
            try:
                value = json.loads((directory / ".claude" / file).read_text(encoding="utf-8"))["env"][name]
            except (OSError, ValueError, LookupError, TypeError):
                continue
            if isinstance(value, str) and value:
                return value
    return ""


class Client:
    """The hub's REST API; every call raises HubError when it fails."""

    def __init__(self, url: str, key: str, timeout: float = TIMEOUT) -> None:
        self.url, self._key, self.timeout = url.rstrip("/"), key, timeout

    @classmethod
    def from_env(cls, cwd: Path | None = None, timeout: float = TIMEOUT) -> Client:
        url, key = setting("VPS_API_URL", cwd), setting("VPS_API_KEY", cwd)
        if not url.startswith(("http://", "https://")):
            problem = f"is {url!r}, not an http(s) URL" if url else "is not set"
            raise HubError(f"VPS_API_URL {problem} (.claude/settings.json sets it)", EXIT_NETWORK)
        if not key:
            raise HubError(
                "VPS_API_KEY is not set: put it in the environment or in env.VPS_API_KEY "
                "of .claude/settings.local.json",
                EXIT_AUTH,
            )
        return cls(url, key, timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """One HTTP request: `body` goes as JSON, `raw` as bytes; empty query values are left out."""
        query = {name: value for name, value in (query or {}).items() if value not in (None, [], "")}
        url = self.url + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        sent = {"Authorization": f"Bearer {self._key}", "Accept": "application/json", **(headers or {})}
        if body is not None:
            raw, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif raw is not None:
            sent["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(url, data=raw, headers=sent, method=method)  # noqa: S310 (http(s) only)
        seconds = timeout or self.timeout
        try:
            with _OPENER.open(request, timeout=seconds) as answer:
                return Reply(answer.status, answer.headers, _decode(answer.read(), answer.headers))
        except urllib.error.HTTPError as error:
            with error:
                raise self._refused(method, path, error) from None
        except (OSError, HTTPException) as error:  # URLError is an OSError
            reason = getattr(error, "reason", None) or error
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                reason = f"no answer within {seconds:g} s"
            raise HubError(f"cannot reach the hub at {self.url}: {reason}", EXIT_NETWORK) from None

    def _refused(self, method: str, path: str, error: urllib.error.HTTPError) -> HubError:
        status, data = error.code, _decode(error.read(), error.headers)
        if 300 <= status < 400:
            return HubError(
                f"the hub at {self.url} redirects to {error.headers.get('Location')}: "
                "point VPS_API_URL there (https?)",
                EXIT_NETWORK,
                status,
            )
        detail = data.get("error") if isinstance(data, dict) else None
        code = str(detail.get("code", "")) if isinstance(detail, dict) else ""
        message = str(detail.get("message", "")) if isinstance(detail, dict) else str(error.reason)
        if status == 429 and error.headers.get("Retry-After"):
            message += f" (retry after {error.headers['Retry-After']} s)"
        exit_code = EXIT_BY_CODE.get((status, code), EXIT_BY_STATUS.get(status, EXIT_OTHER))
        reason = " ".join(message.split())  # one line
        summary = f"{method} {path}: {status} {code or 'error'}: {reason}"
        return HubError(summary, exit_code, status, code, reason)

    def call(self, route: str, ident: int | str | None = None, **options: Any) -> Reply:
        """The route of ROUTES named `route`, its {id} filled with `ident`; options as for request."""
        method, path = ROUTES[route]
        return self.request(method, path.replace("{id}", str(ident)), **options)

    def find_worker(self, session_id: str) -> dict[str, Any] | None:
        """The worker registered with this Claude Code session, or None."""
        workers = self.call("workers.list", query={"session_id": session_id}).data["workers"]
        return dict(workers[0]) if workers else None

    def session(self, session_id: str, heartbeat: bool = False) -> dict[str, Any] | None:
        """{worker, tasks}: the session's worker and the tasks it holds with their lease tokens, or
        None when the session is no worker. `heartbeat` also touches it and extends those leases."""
        try:
            if heartbeat:
                return dict(self.call("session.heartbeat", body={"session_id": session_id}).data)
            return dict(self.call("session.show", query={"session_id": session_id}).data)
        except HubError as error:
            if error.status == 404:
                return None
            raise

    def claim(
        self, worker_id: int, wait: float = 0, capabilities: list[str] | None = None
    ) -> dict[str, Any] | None:
        """The best ready task for the worker, with its lease_token; None if none came within `wait`."""
        body: dict[str, Any] = {"worker_id": worker_id, "wait": wait}
        if capabilities is not None:
            body["capabilities"] = capabilities
        reply = self.call("tasks.claim", body=body, timeout=wait + MARGIN)
        return None if reply.status == 204 else dict(reply.data)


def _decode(raw: bytes, headers: Message) -> Any:
    if raw and headers.get_content_type().endswith("json"):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw or None


# -- the command line: one function per command group -------------------------------------------

Args = argparse.Namespace
Text = Callable[[Any], str]


def say(args: Args, data: Any, text: str | Text) -> int:
    """Print the answer: its JSON with --json, else the text (or what `text` makes of it)."""
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(text if isinstance(text, str) else text(data))
    return EXIT_OK


def lines(items: Iterable[Any], line: Text, empty: str = "") -> str:
    """One line per item, or `empty` when there is none."""
    return "\n".join(map(line, items)) or empty


def read_input(args: Args, what: str) -> bytes:
    """The content of --file, or stdin unless it is a terminal."""
    if getattr(args, "file", None):
        try:
            return Path(args.file).read_bytes()
        except OSError as error:
            raise HubError(f"cannot read {args.file}: {error.strerror}", EXIT_USAGE) from None
    given = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    if not given:  # a forgotten `< FILE` must not write an empty plan or file
        raise HubError(f"no {what} on stdin: give it with < FILE or --file FILE", EXIT_USAGE)
    return given


def session_of(args: Args) -> str:
    return getattr(args, "session", None) or next(filter(None, map(os.environ.get, SESSION_VARS)), "")


def session_worker(client: Client, args: Args, required: bool = False) -> int:
    """The worker id given (--worker or a positional id), else this session's worker, else 0."""
    given, session = getattr(args, "worker", None) or getattr(args, "id", None), session_of(args)
    found = None if given or not session else client.find_worker(session)
    worker = int(given or (found or {}).get("id", 0))
    if required and not worker and not session:
        raise HubError("which worker? Give its id, or --session ID of a registered session", EXIT_USAGE)
    if required and not worker:
        raise HubError(f"session {session} is not a registered worker: `workers register` it", EXIT_NOT_FOUND)
    return worker


def expires(task: dict[str, Any]) -> str:
    return f"expires in {task['lease_expires_at'] - time.time():.0f} s"


def task_text(task: dict[str, Any]) -> str:
    worker = f", worker {task['worker_id']}" if task.get("worker_id") else ""
    attempts = f"attempts {task['attempts']}/{task['max_attempts']}"
    text = [
        f"task {task['id']} [{task['state']}] {task['title']}",
        f"priority {task['priority']}, {attempts}{worker}",
    ]
    for label, field in (("depends on", "depends_on"), ("requires", "required_capabilities")):
        if task.get(field):
            text.append(f"{label}: {', '.join(map(str, task[field]))}")
    if task.get("lease_token"):
        text.append(f"lease token: {task['lease_token']} ({expires(task)})")
    text += [f"{field}: {task[field]}" for field in ("commit", "result", "error") if task.get(field)]
    return "\n".join(text) + (f"\n\n{task['instructions']}" if task.get("instructions") else "")


def task_line(task: dict[str, Any]) -> str:
    worker = f"w{task['worker_id']}" if task.get("worker_id") else "-"
    return (
        f"{task['id']:>6}  {task['state']:<9} p{task['priority']:<4} "
        f"{task['attempts']}/{task['max_attempts']}  {worker:<5} {task['title']}"
    )


def worker_line(worker: dict[str, Any]) -> str:
    task = f"task {worker['current_task']}" if worker.get("current_task") else "no task"
    return (
        f"{worker['id']:>4}  {worker['role']:<12} {worker['status']:<8} {task:<10} "
        f"seen {time.time() - worker['last_seen']:.0f} s ago  [{', '.join(worker['capabilities'])}]  "
        f"session {worker['session_id']}"
    )


def run_status(client: Client, args: Args) -> int:
    status = client.call("status").data
    progress, goal = status["progress"], status["plan"]["goal"].strip()
    counts = "".join(f", {n} {state}" for state, n in progress["counts"].items() if n)
    stuck = ", ".join(map(str, status["stuck"]))
    text = [
        f"goal: {goal.splitlines()[0] if goal else '(none)'}",
        f"tasks: {progress['done']}/{progress['total']} done ({progress['percent']}%){counts}",
    ]
    if stuck:
        text.append(f"stuck (a dependency is dead or cancelled): {stuck}")
    for task in status.get("unclaimable", []):  # absent from hubs older than the field
        missing = ", ".join(task["missing"])
        text.append(f"unclaimable (no live worker has all its tags): {task['id']} lacks {missing}")
    if status.get("usage"):  # absent from hubs older than the field
        text.append(spend_line(status["usage"]))
    text += [f"workers: {len(status['workers'])}", *map(worker_line, status["workers"])]
    return say(args, status, "\n".join(text))


def spend_line(usage: dict[str, Any]) -> str:
    """Today's spend and burn rate, and whether a budget stops claims, from /v1/status `usage`."""
    today, budget = usage["today"], usage.get("budget") or {}
    line = (
        f"spend today (UTC): ${today['cost_usd']:.2f}, {today['tokens']:,} tokens in {today['requests']} "
        f"requests; burn ${usage['burn_usd_per_hour']:.2f}/h"
    )
    if budget.get("fleet_day_usd"):
        line += f"; fleet budget ${budget['fleet_day_usd']:.2f}/day"
    if budget.get("claims") == "stopped":
        line += f"; CLAIMS STOPPED: {budget.get('reason') or 'a budget is spent'}"
    return line


USAGE_BY = ("task", "worker", "role", "model", "day")


def a_day(text: str) -> str:
    """A UTC day as YYYY-MM-DD (argparse type: a bad one is a usage error)."""
    try:
        time.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day as YYYY-MM-DD") from None
    return text


def run_usage(client: Client, args: Args) -> int:
    report = client.call("usage", query={"by": args.by, "day": args.day}).data
    return say(args, report, usage_text)


def usage_text(report: dict[str, Any]) -> str:
    """The usage report as an aligned table, highest cost first, then the total and the cross-checks."""
    rows = sorted(report["rows"], key=lambda row: -float(row["cost_usd"]))
    table = [("key", "label", "requests", "tokens", "cost")]
    table += [(str(row["key"]), _cut(str(row["label"]), 40), *_counts(row)) for row in rows]
    table.append(("total", "", *_counts(report["total"])))
    widths = [max(len(line[column]) for line in table) for column in range(5)]
    text = [
        "  ".join(
            cell.rjust(width) if column >= 2 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    window = report.get("from") or "all days"
    if report.get("to") and report["to"] != report.get("from"):
        window += f" to {report['to']}"
    metrics, runs = report.get("metrics") or {}, report.get("runs") or {}
    text.insert(0, f"usage by {report['by']}, {window} (UTC), from each model request:")
    if metrics:
        own = f"${metrics['cost_usd']:.4f}, {metrics['tokens']:,} tokens"
        text.append(f"cross-check, Claude Code's own metrics: {own}")
    if runs.get("count"):
        text.append(f"headless runs' own results: {runs['count']} runs, ${runs['cost_usd']:.4f}")
    return "\n".join(text)


def _counts(row: dict[str, Any]) -> tuple[str, str, str]:
    return f"{row['requests']:,}", f"{row['tokens']:,}", f"${float(row['cost_usd']):.4f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_plan(client: Client, args: Args) -> int:
    if args.action == "show":
        plan = client.call("plan.show").data
        shown = f"# Goal\n\n{plan['goal']}\n\n{plan['plan']}" if plan["goal"] or plan["plan"] else "(no plan)"
        return say(args, plan, shown)
    text = read_input(args, "plan (markdown)").decode("utf-8", "replace")
    goal = args.goal if args.goal is not None else client.call("plan.show").data["goal"]
    plan = client.call("plan.set", body={"goal": goal, "plan": text}).data
    return say(args, plan, f"plan set: {len(plan['plan'])} characters")


def run_tasks(client: Client, args: Args) -> int:
    action, ident = args.action, getattr(args, "id", None)
    if action == "list":
        states = [state for given in args.status or [] for state in given.split(",") if state]
        query = {"state": states, "worker_id": args.worker, "cursor": args.cursor, "limit": args.limit}
        page = client.call("tasks.list", query=query).data
        more = f"\nmore: tasks list --cursor {page['next_cursor']}" if page["next_cursor"] else ""
        return say(args, page, lines(page["tasks"], task_line, "no tasks") + more)
    if action == "show":
        return say(args, client.call("tasks.show", ident).data, task_text)
    if action == "create":
        try:
            given = json.loads(read_input(args, "tasks (JSON)"))
        except ValueError as error:
            raise HubError(f"the tasks are not valid JSON: {error}", EXIT_USAGE) from None
        body = {"tasks": given} if isinstance(given, list) else given
        if args.idempotency_key and isinstance(body, dict):
            body["idempotency_key"] = args.idempotency_key
        reply = client.call("tasks.create", body=body)
        tasks = reply.data.get("tasks", [reply.data])
        again = " (created before: the idempotency key was seen)" if reply.status == 200 else ""
        return say(args, reply.data, f"{len(tasks)} task(s){again}:\n" + lines(tasks, task_line))
    if action == "claim":
        capabilities = args.capabilities.split(",") if args.capabilities else None
        task = client.claim(session_worker(client, args, required=True), args.wait or 0, capabilities)
        return say(args, task, task_text(task) if task else "no task for this worker")
    if action == "cancel":
        task = client.call("tasks.cancel", ident).data
        return say(args, task, f"task {task['id']} cancelled")
    body = {"lease_token": args.lease_token}
    if action == "complete" and args.result is not None:
        body["result"] = args.result
    if action == "fail":
        body["error"] = args.reason
    task = client.call(f"tasks.{action}", ident, body=body).data
    if action == "heartbeat":
        return say(args, task, f"task {task['id']}: lease extended, {expires(task)}")
    attempts = f" after {task['attempts']} of {task['max_attempts']} attempts" if action == "fail" else ""
    return say(args, task, f"task {task['id']} is {task['state']}{attempts}")


def run_workers(client: Client, args: Args) -> int:
    action = args.action
    if action == "register":
        if not session_of(args):
            raise HubError("give --session ID: the Claude Code session id", EXIT_USAGE)
        body: dict[str, Any] = {"session_id": session_of(args), "role": args.role}
        if args.capabilities is not None:
            body["capabilities"] = [tag for tag in args.capabilities.split(",") if tag]
        worker = client.call("workers.register", body=body).data
        tags = ", ".join(worker["capabilities"]) or "-"
        return say(args, worker, f"registered worker {worker['id']} ({worker['role']}): capabilities {tags}")
    if action == "list":
        workers = client.call("workers.list", query={"session_id": args.session}).data
        return say(args, workers, lines(workers["workers"], worker_line, "no workers"))
    if action == "me":
        if not session_of(args):
            raise HubError(
                "which session? Give --session ID (Claude Code sets CLAUDE_CODE_SESSION_ID)", EXIT_USAGE
            )
        mine = client.session(session_of(args))
        if mine is None:
            raise HubError(f"session {session_of(args)} is not a registered worker", EXIT_NOT_FOUND)
        held = "\n\n".join(map(task_text, mine["tasks"])) or "no task held"
        return say(args, mine, worker_line(mine["worker"]) + "\n\n" + held)
    worker = client.call(f"workers.{action}", session_worker(client, args, required=True)).data
    done = f"worker {worker['id']} is {worker['status']}"
    return say(args, worker, done if action == "deregister" else worker_line(worker))


def run_messages(client: Client, args: Args) -> int:
    if args.action == "send":
        text = read_input(args, "message").decode() if args.text == "-" else args.text
        to: Any = int(args.to) if args.to.isdigit() else args.to
        sender = getattr(args, "from")
        me = None if sender else session_worker(client, args)
        body: dict[str, Any] = {"to": to, "kind": args.kind or "message", "body": text}
        if sender or me:
            body["sender"] = sender or f"worker:{me}"
        message = client.call("messages.send", body=body).data
        return say(args, message, f"message {message['id']} sent to {message['to']}")
    reader = getattr(args, "for")
    if reader is None:
        me = session_worker(client, args)
        reader = f"worker:{me}" if me else "all"
    query = {"for": None if reader == "all" else reader, "cursor": args.cursor, "limit": args.limit}
    page = client.call("messages.read", query=query).data
    shown = lines(page["messages"], "#{id} {sender} -> {to} [{kind}]: {body}".format_map)
    count = f"{len(page['messages'])} message(s); read the next ones with --cursor {page['next_cursor']}"
    return say(args, page, f"{shown}\n{count}" if shown else count)


def run_files(client: Client, args: Args) -> int:
    action = args.action
    # The hub serves a worker that holds a task from its task's tree, anyone else from main; a
    # worker's own exclusive reservations do not stop its writes.
    worker = session_worker(client, args) or None
    if action == "cat":
        reply = client.call("files.cat", query={"path": args.path, "worker_id": worker})
        content, etag = reply.data or b"", (reply.headers.get("ETag") or "").strip('"')
        if args.json:
            text = content.decode("utf-8", "replace")
            return say(args, {"path": args.path, "etag": etag, "content": text}, "")
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        print(f"etag: {etag}", file=sys.stderr)
        return EXIT_OK
    if action == "ls":
        query = {"path": args.path, "glob": args.glob, "limit": args.limit, "worker_id": worker}
        page = client.call("files.ls", query=query).data
        shown = lines(page["entries"], lambda e: e["path"] + "/" * (e["type"] == "dir"), "no files")
        return say(args, page, shown + "\n(more: raise --limit)" * page["truncated"])
    if action == "grep":
        options = {
            "pattern": args.pattern,
            "path": args.path,
            "glob": args.glob,
            "max_matches": args.max,
            "ignore_case": args.ignore_case,
            "fixed_string": args.fixed,
            "worker_id": worker,
        }
        found = client.call("files.grep", body={k: v for k, v in options.items() if v}).data
        shown = lines(found["matches"], lambda m: f"{m['path']}:{m['line']}: {m['text']}", "no match")
        return say(args, found, shown + "\n(stopped at a limit)" * found["truncated"])
    given = getattr(args, "etag", None)  # as `files cat` prints it, or quoted as in the header
    match = given if given in (None, "*") else '"' + given.strip('"') + '"'
    # `*` matches any version, so it replaces another worker's change unseen: only on request.
    if action == "put" and match == "*" and not args.force:
        raise HubError(
            "--etag '*' replaces the file whatever it holds now; give the etag files cat "
            "printed, or add --force to overwrite",
            EXIT_USAGE,
        )
    if action == "put":
        condition = {"If-Match": match} if match else {"If-None-Match": "*"}  # create only
        reply = client.call(
            "files.put",
            query={"path": args.path, "worker_id": worker},
            raw=read_input(args, "content"),
            headers=condition,
        )
        done = f"{'created' if reply.status == 201 else 'replaced'} {args.path}; etag {reply.data['etag']}"
        return say(args, reply.data, done)
    body: dict[str, Any]
    if action == "edit":
        body = {"path": args.path, "old": args.old, "new": args.new, "etag": match, "replace_all": args.all}
    elif action == "mv":
        body = {"from": getattr(args, "from"), "to": args.to, "overwrite": args.overwrite}
    else:
        body = {"path": args.path, "etag": match}
    body["worker_id"] = worker
    body = {field: value for field, value in body.items() if value not in (None, False)}
    data = client.call(f"files.{action}", body=body).data
    said = {"edit": "edited {path}; etag {etag}", "mv": "moved {from} to {to}", "rm": "deleted {path}"}
    return say(args, data, said[action].format(**data))


def run_reserve(client: Client, args: Args) -> int:
    worker = session_worker(client, args, required=True)
    if args.command == "unreserve":
        ended = [client.call("unreserve", ident, body={"worker_id": worker}).data for ident in args.ids]
        return say(args, {"reservations": ended}, f"released {len(ended)} reservation(s)")
    body = {
        "worker_id": worker,
        "globs": args.globs,
        "exclusive": not args.shared,
        "ttl_seconds": args.ttl,
        "task_id": args.task,
    }
    made = client.call("reserve", body={k: v for k, v in body.items() if v is not None}).data
    return say(args, made, lines(made["reservations"], reservation_line))


def reservation_line(reservation: dict[str, Any]) -> str:
    kind = "exclusive" if reservation["exclusive"] else "shared"
    expires_in = f"expires in {reservation['expires_at'] - time.time():.0f} s"
    return f"reservation {reservation['id']}: {reservation['glob']} ({kind}, {expires_in})"


def run_exec(client: Client, args: Args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if bool(args.shell) == bool(argv):
        raise HubError("give either -- ARGV... or --shell 'COMMAND LINE'", EXIT_USAGE)
    body: dict[str, Any] = {"shell": args.shell} if args.shell else {"argv": argv}
    try:
        env = dict(pair.split("=", 1) for pair in args.env or [])
    except ValueError:
        raise HubError("--env takes NAME=VALUE", EXIT_USAGE) from None
    options = {
        "cwd": args.cwd,
        "timeout_seconds": args.timeout,
        "env": env or None,
        "task_id": args.task,
        "lease_token": args.lease_token,
        "worker_id": session_worker(client, args) or None,  # in its task's tree, as the files commands
    }
    body.update({field: value for field, value in options.items() if value is not None})
    result = client.call("exec", body=body, timeout=(args.timeout or EXEC_TIMEOUT) + MARGIN).data
    if args.json:
        say(args, result, "")
    else:
        sys.stdout.write(result.get("stdout", ""))
        sys.stderr.write(result.get("stderr", ""))
    if result.get("truncated"):
        print("vps.py: the output was cut at the hub's [exec] max_output_bytes", file=sys.stderr)
    if result.get("timed_out"):
        raise HubError("the command timed out and was killed")
    if result.get("exit_code") != 0:
        raise HubError(f"the command exited with {result.get('exit_code')}")
    return EXIT_OK


# -- the parser ----------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with two changes: a usage error is one line (exit 2), and an option that takes a
    value takes the next word even when it starts with "-" (a lease token, a line of a markdown
    list), which argparse alone would take for an option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.valued: set[str] = set()  # the options that take a value; before argparse adds -h
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **options: Any) -> argparse.Action:
        action = super().add_argument(*names, **options)
        if action.option_strings and action.nargs is None:  # one value: not a switch
            self.valued.update(action.option_strings)
        return action

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """`--option VALUE` read as `--option=VALUE`, up to a `--`."""
        words: list[str] = []
        for word in sys.argv[1:] if args is None else args:
            if words and words[-1] in self.valued and "--" not in words:
                words[-1] += f"={word}"
            else:
                words.append(word)
        return super().parse_known_args(words, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


Commands = argparse._SubParsersAction  # what add_subparsers returns: add_parser adds a command


def command(commands: Commands[Parser], name: str, text: str, example: str) -> Parser:
    """A command: `text` is its line in the list and its description, `example` a command line."""
    parser = commands.add_parser(name, help=text, description=text, epilog=f"example: vps.py {example}")
    # --json after the command too, without resetting one given before it
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the hub's JSON")
    return parser


def group(
    commands: Commands[Parser], name: str, text: str, run: Callable[[Client, Args], int]
) -> Commands[Parser]:
    """A group of commands (`vps.py tasks claim`): `run` runs each of them, by args.action."""
    parser = commands.add_parser(name, help=text, description=text)
    parser.set_defaults(run=run)
    return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def for_worker(parser: Parser) -> None:
    """Which worker acts (and so, for files and exec, in which task's tree): by default this session's."""
    parser.add_argument("--worker", type=int)
    parser.add_argument("--session")


def with_lease(parser: Parser) -> None:
    """The task's id and the lease token of its claim."""
    parser.add_argument("id", type=int)
    parser.add_argument("--lease-token", required=True)


def build_parser() -> Parser:
    """Every command and its arguments. A new command is one more `command(...)` here, with a
    `run` function (set_defaults) that takes the client and the parsed arguments."""
    main = Parser(prog="vps.py", description="The hub's REST API on the command line.")
    main.add_argument("--json", action="store_true", help="print the hub's JSON answer")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = command(
        commands, "status", "progress, stuck and unclaimable tasks, workers and the plan", "status"
    )
    status.set_defaults(run=run_status)

    usage = command(
        commands,
        "usage",
        "tokens and cost of the model requests, grouped --by task (default), worker, role, model or "
        "day, highest cost first; --day YYYY-MM-DD (UTC) for one day",
        "usage --by worker --day 2026-11-30",
    )
    usage.add_argument("--by", choices=USAGE_BY, default="task")
    usage.add_argument("--day", type=a_day)
    usage.set_defaults(run=run_usage)

    plan = group(commands, "plan", "the goal and master plan", run_plan)
    command(plan, "show", "print the goal and the plan", "plan show")
    plan_set = command(
        plan,
        "set",
        "replace the plan with markdown from stdin or --file; the goal stays unless --goal",
        "plan set < plan.md",
    )
    plan_set.add_argument("--goal")
    plan_set.add_argument("--file")

    tasks = group(commands, "tasks", "the task queue", run_tasks)
    listed = command(
        tasks,
        "list",
        "one page of tasks in id order; --status takes states, comma-separated",
        "tasks list --status ready,claimed",
    )
    listed.add_argument("--status", action="append")
    listed.add_argument("--worker", type=int)
    listed.add_argument("--cursor")
    listed.add_argument("--limit", type=int)
    show_task = command(tasks, "show", "one task with its instructions", "tasks show 42")
    show_task.add_argument("id", type=int)
    create = command(
        tasks,
        "create",
        "create tasks from JSON on stdin or --file: a task, a list, or {tasks: [...]}",
        "tasks create --idempotency-key batch-1 < tasks.json",
    )
    create.add_argument("--file")
    create.add_argument("--idempotency-key")
    claim = command(
        tasks,
        "claim",
        "claim the best ready task for this session's worker, waiting up to --wait seconds",
        "tasks claim --wait 60",
    )
    claim.add_argument("--wait", type=float)
    claim.add_argument("--capabilities")
    for_worker(claim)
    extend = command(tasks, "heartbeat", "extend the lease", "tasks heartbeat 42 --lease-token T")
    with_lease(extend)
    complete = command(
        tasks,
        "complete",
        "mark the task done; --result: what changed, how it was verified",
        "tasks complete 42 --lease-token T --result R",
    )
    with_lease(complete)
    complete.add_argument("--result")
    fail = command(
        tasks,
        "fail",
        "report that the task cannot be done as written, and why",
        "tasks fail 42 --lease-token T --reason R",
    )
    with_lease(fail)
    fail.add_argument("--reason", required=True)
    release = command(tasks, "release", "give the task back to the queue", "tasks release 42 --lease-token T")
    with_lease(release)
    cancel = command(tasks, "cancel", "cancel a task (admin key)", "tasks cancel 42")
    cancel.add_argument("id", type=int)

    workers = group(commands, "workers", "worker sessions", run_workers)
    register = command(
        workers,
        "register",
        "register this session as a worker; --capabilities a,b (default: the role's)",
        "workers register --role backend",
    )
    register.add_argument("--session")
    register.add_argument("--role", required=True)
    register.add_argument("--capabilities")
    all_workers = command(workers, "list", "all workers, or the one of --session", "workers list")
    all_workers.add_argument("--session")
    me = command(
        workers, "me", "this session's worker and the tasks it holds, with their lease tokens", "workers me"
    )
    me.add_argument("--session")
    show_worker = command(workers, "show", "one worker (default: this session's)", "workers show 3")
    show_worker.add_argument("id", nargs="?", type=int)
    show_worker.add_argument("--session")
    beat = command(
        workers, "heartbeat", "record that the worker (default: this session's) is alive", "workers heartbeat"
    )
    beat.add_argument("id", nargs="?", type=int)
    beat.add_argument("--session")
    deregister = command(
        workers,
        "deregister",
        "stop the worker (default: this session's); its tasks go back to the queue",
        "workers deregister 3",
    )
    deregister.add_argument("id", nargs="?", type=int)
    deregister.add_argument("--session")

    messages = group(commands, "messages", "messages and discoveries", run_messages)
    send = command(
        messages,
        "send",
        "send TEXT (- reads stdin) to a worker id, role:NAME, coordinator or all",
        "messages send --to all --kind discovery 'X is Y'",
    )
    send.add_argument("text")
    send.add_argument("--to", required=True)
    send.add_argument("--kind", choices=["message", "discovery"])
    send.add_argument("--from")
    read = command(
        messages,
        "read",
        "messages after --cursor for worker:ID, coordinator or all (default: the session's)",
        "messages read --cursor 12",
    )
    read.add_argument("--for")
    read.add_argument("--cursor")
    read.add_argument("--limit", type=int)

    files = group(
        commands, "files", "workspace files: the tree of this session's worker's task, else main", run_files
    )
    ls = command(
        files,
        "ls",
        "list a directory (default: the root), or with --glob every path below it that matches",
        "files ls src/",
    )
    ls.add_argument("path", nargs="?")
    ls.add_argument("--glob")
    ls.add_argument("--limit", type=int)
    for_worker(ls)
    cat = command(files, "cat", "print a file; its ETag goes to stderr", "files cat src/app.py")
    cat.add_argument("path")
    for_worker(cat)
    put = command(
        files,
        "put",
        "write stdin (or --file) to a file: replace the version --etag names (from files cat), "
        "else create it; --etag '*' --force replaces whatever is there",
        'files put a.py --etag "$ETAG" < a.py',
    )
    put.add_argument("path")
    put.add_argument("--etag")
    put.add_argument("--file")
    put.add_argument("--force", action="store_true")
    for_worker(put)
    edit = command(
        files,
        "edit",
        "replace the exact text --old, found once (or every time: --all), by --new",
        "files edit a.py --old 'x = 1' --new 'x = 2'",
    )
    edit.add_argument("path")
    edit.add_argument("--old", required=True)
    edit.add_argument("--new", required=True)
    edit.add_argument("--all", action="store_true")
    edit.add_argument("--etag")
    for_worker(edit)
    rm = command(files, "rm", "delete a file or an empty directory", "files rm src/unused.py")
    rm.add_argument("path")
    rm.add_argument("--etag")
    for_worker(rm)
    mv = command(
        files,
        "mv",
        "move a file or directory; --overwrite replaces a file at TO",
        "files mv src/a.py src/b.py",
    )
    mv.add_argument("from")
    mv.add_argument("to")
    mv.add_argument("--overwrite", action="store_true")
    for_worker(mv)
    grep = command(
        files,
        "grep",
        "lines matching a Python regular expression (--fixed: plain text) below PATH",
        "files grep 'def main' src/",
    )
    grep.add_argument("pattern")
    grep.add_argument("path", nargs="?")
    grep.add_argument("--glob")
    grep.add_argument("--ignore-case", action="store_true")
    grep.add_argument("--fixed", action="store_true")
    grep.add_argument("--max", type=int)
    for_worker(grep)

    reserve = command(
        commands,
        "reserve",
        "reserve paths for this session's worker: exclusive unless --shared, for "
        "--ttl seconds (default 900) or until --task ends",
        'reserve "src/app/*.py"',
    )
    reserve.add_argument("globs", nargs="+")
    reserve.add_argument("--shared", action="store_true")
    reserve.add_argument("--ttl", type=float)
    reserve.add_argument("--task", type=int)
    for_worker(reserve)
    reserve.set_defaults(run=run_reserve)
    unreserve = command(commands, "unreserve", "release this session's worker's reservations", "unreserve 7")
    unreserve.add_argument("ids", nargs="+", type=int)
    for_worker(unreserve)
    unreserve.set_defaults(run=run_reserve)

    execute = command(
        commands,
        "exec",
        "run -- ARGV... or --shell LINE in the workspace (this session's worker's task tree, else "
        "main; or --cwd below it); --task and --lease-token keep its lease alive",
        "exec -- pytest -q",
    )
    execute.add_argument("argv", nargs=argparse.REMAINDER)
    execute.add_argument("--shell")
    execute.add_argument("--cwd")
    execute.add_argument("--timeout", type=float)
    execute.add_argument("--env", action="append")
    execute.add_argument("--task", type=int)
    execute.add_argument("--lease-token")
    for_worker(execute)
    execute.set_defaults(run=run_exec)
    return main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(Client.from_env(), args))
    except HubError as error:
        print(f"vps.py: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
