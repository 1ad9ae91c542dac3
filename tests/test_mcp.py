"""The hub's MCP endpoint over HTTP: the SDK's own client against a real uvicorn, and the real
Claude Code CLI. MCP and REST are two adapters over one set of services, so what one does the
other sees."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jsonschema
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from scaffold.hub.core.types import Role
from scaffold.hub.faces.mcp.tools import TOOLS
from tests.conftest import built_hub, render
from tests.fakemodel import Call, End, FakeModel, Policy, Step, Turn, search
from tests.test_api import bearer, serving

TIMEOUT = 10.0  # seconds: the bound of every HTTP call and of each scenario
BUDGET_TOKENS = 6000  # the whole tools/list, measured as characters / 4

CORE_TOOLS = {
    "get_plan",
    "set_plan",
    "create_tasks",
    "list_tasks",
    "get_task",
    "claim_task",
    "heartbeat_task",
    "complete_task",
    "fail_task",
    "release_task",
    "cancel_task",
    "get_status",
    "send_message",
    "read_messages",
}


@dataclass(frozen=True)
class Hub:
    url: str
    workspace: Path
    viewer: str
    agent: str
    admin: str

    def rest(self, key: str) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, headers=bearer(key), timeout=TIMEOUT)


@contextlib.contextmanager
def hub_serving(directory: Path, *extra_keys: tuple[Role, str]) -> Iterator[Hub]:
    """The hub's app served by uvicorn on 127.0.0.1; extra keys are (role, key)."""
    more = [(f"extra-{n}", role, key) for n, (role, key) in enumerate(extra_keys)]
    with built_hub(directory, more_keys=more, exec_timeout_seconds=TIMEOUT) as made, serving(made.app) as url:
        yield Hub(url, made.workspace, made.keys.viewer, made.keys.agent, made.keys.admin)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with hub_serving(tmp_path) as serving_hub:
        yield serving_hub


@contextlib.asynccontextmanager
async def connected(url: str, key: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=bearer(key), timeout=TIMEOUT) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        yield client


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(3 * TIMEOUT):
            await scenario()

    anyio.run(bounded)


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    text = result.content[0]
    assert text.type == "text" and json.loads(text.text) == result.structured_content
    return result.structured_content


async def refused(client: Client, tool: str, **args: Any) -> dict[str, str]:
    """The tool error of a call the hub refuses: REST's {code, message}, and the same as text."""
    result = await client.call_tool(tool, args)
    assert result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    error: dict[str, str] = result.structured_content["error"]
    text = result.content[0]
    assert text.type == "text" and text.text == f"{error['code']}: {error['message']}"
    return error


# -- the tool list -------------------------------------------------------------------------


def test_lists_the_tools_interfaces_md_names(hub: Hub) -> None:
    documented = Path(__file__).parent.parent / "docs" / "interfaces.md"
    section = documented.read_text(encoding="utf-8").split("## MCP tools", 1)[1].split("Main arguments", 1)[0]

    async def scenario() -> None:
        async with connected(hub.url, hub.viewer) as client:
            tools = (await client.list_tools()).tools
        names = [tool.name for tool in tools]
        assert len(names) == len(set(names))
        assert set(names) >= CORE_TOOLS
        assert set(names) == {tool.name for tool in TOOLS}
        for tool in tools:
            assert f"`{tool.name}`" in section, f"{tool.name} is not in docs/interfaces.md"
            assert tool.description and len(tool.description) <= 160, tool.name
            # The Messages API takes one object schema per tool, with no oneOf/anyOf/allOf at the top.
            assert tool.input_schema["type"] == "object", tool.name
            assert not {"oneOf", "anyOf", "allOf"} & set(tool.input_schema), tool.name
            jsonschema.Draft202012Validator.check_schema(tool.input_schema)

    run(scenario)


def test_the_tool_list_fits_the_token_budget(hub: Hub) -> None:
    async def scenario() -> None:
        async with connected(hub.url, hub.viewer) as client:
            tools = (await client.list_tools()).tools
        served = [
            {"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools
        ]
        tokens = len(json.dumps(served)) / 4
        assert tokens <= BUDGET_TOKENS, f"the tool list costs {tokens:.0f} tokens"

    run(scenario)


# -- keys and roles ------------------------------------------------------------------------

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("not-a-key-of-this-hub"), {"X-API-Key": "nope"}],
    ids=["no key", "wrong bearer", "wrong x-api-key"],
)
def test_refuses_a_missing_or_wrong_key_with_401(hub: Hub, headers: dict[str, str]) -> None:
    with httpx2.Client(base_url=hub.url, timeout=TIMEOUT) as http:
        response = http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


def test_accepts_the_key_as_x_api_key(hub: Hub) -> None:
    with httpx2.Client(base_url=hub.url, timeout=TIMEOUT) as http:
        response = http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "X-API-Key": hub.viewer})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["serverInfo"]["name"] == "vps"


def test_the_sdk_client_cannot_connect_with_a_wrong_key(hub: Hub) -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async def scenario() -> None:
        hooks = {"request": [], "response": [record]}
        async with (
            httpx2.AsyncClient(
                headers=bearer("not-a-key-of-this-hub"), timeout=TIMEOUT, event_hooks=hooks
            ) as http,
            Client(streamable_http_client(f"{hub.url}/mcp", http_client=http)) as client,
        ):
            await client.list_tools()

    with pytest.raises(ExceptionGroup):  # the SDK's own error, from its task groups
        run(scenario)
    assert statuses and set(statuses) == {401}


def test_each_tool_checks_the_role_it_needs(hub: Hub) -> None:
    task = {"title": "t", "instructions": "do it"}

    async def scenario() -> None:
        async with connected(hub.url, hub.viewer) as viewer:
            error = await refused(viewer, "create_tasks", tasks=[task])
            assert error["code"] == "forbidden"
            assert "create_tasks needs the agent role" in error["message"]
            assert "viewer" in error["message"]
            assert (await call(viewer, "get_status"))["progress"]["total"] == 0  # reading is fine
        async with connected(hub.url, hub.agent) as agent:
            created = await call(agent, "create_tasks", tasks=[task])
            task_id = created["tasks"][0]["id"]
            error = await refused(agent, "cancel_task", task_id=task_id)
            assert error["code"] == "forbidden" and "admin" in error["message"]
        async with connected(hub.url, hub.admin) as admin:
            assert (await call(admin, "cancel_task", task_id=task_id))["state"] == "cancelled"

    run(scenario)
    with hub.rest(hub.viewer) as rest:
        tasks = rest.get("/v1/tasks").json()["tasks"]
    assert [(t["title"], t["state"]) for t in tasks] == [("t", "cancelled")]


# -- one service, two adapters -------------------------------------------------------------


def test_the_task_life_through_mcp_is_what_rest_shows(hub: Hub) -> None:
    with hub.rest(hub.agent) as rest:
        worker = rest.post("/v1/workers", json={"session_id": "s-1", "role": "backend"}).json()["id"]
    batch = [
        {"ref": "schema", "title": "Schema", "instructions": "Write the schema.", "priority": 5},
        {
            "title": "API",
            "instructions": "Serve it.",
            "depends_on": ["schema"],
            "required_capabilities": ["docs"],
        },
    ]
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with connected(hub.url, hub.agent) as client:
            created = await call(client, "create_tasks", tasks=batch, idempotency_key="plan-1")
            assert created["created"] is True
            first, second = created["tasks"]
            assert (first["state"], second["state"]) == ("ready", "blocked")
            assert second["depends_on"] == [first["id"]]
            again = await call(client, "create_tasks", tasks=batch, idempotency_key="plan-1")
            assert again == {**created, "created": False}

            claim = await call(client, "claim_task", worker_id=worker, wait=0)
            assert claim["id"] == first["id"] and claim["state"] == "claimed"
            token = claim["lease_token"]
            nothing = await call(client, "claim_task", worker_id=worker, wait=0.1)
            assert nothing["task"] is None and "no ready task" in nothing["message"]

            beat = await call(client, "heartbeat_task", task_id=first["id"], lease_token=token)
            assert beat["lease_token"] == token and beat["lease_expires_at"] >= claim["lease_expires_at"]
            stale = await refused(client, "complete_task", task_id=first["id"], lease_token="stale")
            assert stale["code"] == "lease_conflict"
            done = await call(client, "complete_task", task_id=first["id"], lease_token=token, result="ok")
            assert done["state"] == "done" and "lease_token" not in done
            listed = await call(client, "list_tasks", state=["ready"])
            assert [t["id"] for t in listed["tasks"]] == [second["id"]]
            assert "instructions" not in listed["tasks"][0] and listed["next_cursor"] is None
            seen.update(first=await call(client, "get_task", task_id=first["id"]), second=second)
            seen["status"] = await call(client, "get_status")

    run(scenario)
    with hub.rest(hub.viewer) as rest:
        first = rest.get(f"/v1/tasks/{seen['first']['id']}").json()
        second = rest.get(f"/v1/tasks/{seen['second']['id']}").json()
        status = rest.get("/v1/status").json()
    assert first == seen["first"]
    assert (first["state"], first["result"], first["worker_id"]) == ("done", "ok", worker)
    assert second["state"] == "ready"
    counts = {"blocked": 0, "ready": 1, "claimed": 0, "done": 1, "dead": 0, "cancelled": 0}
    expected = {"total": 2, "done": 1, "percent": 50.0, "counts": counts}
    assert status["progress"] == seen["status"]["progress"] == expected
    # The backend worker is live but lacks the tag: the coordinator sees it through either adapter.
    assert (
        status["unclaimable"]
        == seen["status"]["unclaimable"]
        == [{"id": second["id"], "required_capabilities": ["docs"], "missing": ["docs"]}]
    )


def test_a_task_claimed_over_rest_is_failed_and_released_over_mcp(hub: Hub) -> None:
    with hub.rest(hub.agent) as rest:
        worker = rest.post("/v1/workers", json={"session_id": "s-2", "role": "backend"}).json()["id"]
        rest.post("/v1/tasks", json={"title": "t", "instructions": "i", "max_attempts": 2})
        claim = rest.post("/v1/tasks/claim", json={"worker_id": worker}).json()

    async def scenario() -> None:
        async with connected(hub.url, hub.agent) as client:
            failed = await call(
                client,
                "fail_task",
                task_id=claim["id"],
                lease_token=claim["lease_token"],
                error="the build is broken",
            )
            assert (failed["state"], failed["attempts"], failed["error"]) == (
                "ready",
                1,
                "the build is broken",
            )
            again = await call(client, "claim_task", worker_id=worker)
            released = await call(
                client, "release_task", task_id=again["id"], lease_token=again["lease_token"]
            )
            assert (released["state"], released["attempts"]) == ("ready", 1)

    run(scenario)


def test_an_idempotency_key_spans_both_adapters(hub: Hub) -> None:
    tasks = [{"title": "once", "instructions": "only once"}]
    with hub.rest(hub.agent) as rest:
        response = rest.post("/v1/tasks", json={"tasks": tasks, "idempotency_key": "k"})
        assert response.status_code == 201

    async def scenario() -> None:
        async with connected(hub.url, hub.agent) as client:
            again = await call(client, "create_tasks", tasks=tasks, idempotency_key="k")
            assert again == {"tasks": response.json()["tasks"], "created": False}
            other = await refused(
                client, "create_tasks", tasks=[{"title": "x", "instructions": "y"}], idempotency_key="k"
            )
            assert other["code"] == "conflict"

    run(scenario)


def test_plan_and_messages(hub: Hub) -> None:
    with hub.rest(hub.agent) as rest:
        worker = rest.post("/v1/workers", json={"session_id": "s-3", "role": "docs"}).json()["id"]

    async def scenario() -> None:
        async with connected(hub.url, hub.agent) as client:
            plan = await call(client, "set_plan", goal="Ship", plan="# Plan\n1. ship")
            assert (await call(client, "get_plan")) == plan
            sent = await call(client, "send_message", to=worker, body="look at the schema")
            assert (sent["to"], sent["kind"], sent["sender"]) == (f"worker:{worker}", "message", "agent-key")
            await call(client, "send_message", to="role:docs", body="docs moved", kind="discovery")
            await call(client, "send_message", to="coordinator", body="for the coordinator only")
            read = await call(client, "read_messages", reader=f"worker:{worker}")
            assert [m["body"] for m in read["messages"]] == ["look at the schema", "docs moved"]
            later = await call(client, "read_messages", reader=f"worker:{worker}", since=read["next_cursor"])
            assert later == {"messages": [], "next_cursor": read["next_cursor"]}
            for_coordinator = await call(client, "read_messages", reader="coordinator")
            assert [m["body"] for m in for_coordinator["messages"]] == ["for the coordinator only"]
            error = await refused(client, "send_message", to="nobody", body="x")
            assert error["code"] == "invalid_request" and "cannot send to 'nobody'" in error["message"]

    run(scenario)
    with hub.rest(hub.viewer) as rest:
        assert rest.get("/v1/plan").json()["goal"] == "Ship"
        messages = rest.get("/v1/messages", params={"for": f"worker:{worker}"}).json()["messages"]
    assert [m["body"] for m in messages] == ["look at the schema", "docs moved"]


def test_bad_arguments_are_tool_errors_that_say_what_is_wrong(hub: Hub) -> None:
    async def scenario() -> None:
        async with connected(hub.url, hub.admin) as client:
            missing = await refused(client, "claim_task")
            assert missing["code"] == "invalid_request" and "worker_id" in missing["message"]
            typo = await refused(client, "get_task", task_id=1, extra=True)
            assert typo["code"] == "invalid_request" and "arguments" in typo["message"]
            bad = await refused(client, "create_tasks", tasks=[{"title": "", "instructions": "x"}])
            assert bad["code"] == "invalid_request" and "title" in bad["message"]
            cycle = [{"ref": "a", "title": "a", "instructions": "x", "depends_on": ["a"]}]
            assert (await refused(client, "create_tasks", tasks=cycle))["code"] == "invalid_request"
            assert (await refused(client, "get_task", task_id=404))["code"] == "not_found"
            assert (await refused(client, "get_task", task_id=1.5))["code"] == "invalid_request"
            assert (await refused(client, "list_tasks", cursor="9" * 19))["code"] == "invalid_request"
            # an unknown tool is a protocol error (the MCP spec), not a tool error
            with pytest.raises(MCPError, match="no tool 'no_such_tool'") as unknown:
                await client.call_tool("no_such_tool", {})
            assert unknown.value.code == INVALID_PARAMS
            task = (await call(client, "create_tasks", tasks=[{"title": "t", "instructions": "i"}]))["tasks"][
                0
            ]
            assert (await call(client, "get_task", task_id=float(task["id"])))["id"] == task["id"]

    run(scenario)


def test_files_through_mcp_are_the_files_rest_serves(hub: Hub) -> None:
    async def scenario() -> None:
        async with connected(hub.url, hub.agent) as client:
            created = await call(client, "write_file", path="src/app.py", content="print('hi')\n")
            assert (created["path"], created["created"], created["size"]) == ("src/app.py", True, 12)
            again = await refused(client, "write_file", path="src/app.py", content="x")
            assert again["code"] == "stale_file"  # no etag: create only, never a silent overwrite
            read = await call(client, "read_file", path="src/app.py")
            assert read == {
                "path": "src/app.py",
                "content": "print('hi')\n",
                "etag": created["etag"],
                "size": 12,
            }
            replaced = await call(
                client, "write_file", path="src/app.py", content="print('héllo')\n", etag=read["etag"]
            )
            assert replaced["created"] is False and replaced["size"] == len("print('héllo')\n".encode())
            stale = await refused(client, "write_file", path="src/app.py", content="x", etag=read["etag"])
            assert stale["code"] == "stale_file"
            edited = await call(client, "edit_file", path="src/app.py", old="héllo", new="hello")
            assert edited["replacements"] == 1
            assert (await call(client, "read_file", path="src/app.py"))["content"] == "print('hello')\n"
            found = await call(client, "grep_files", pattern="hel+o", glob="**/*.py")
            assert [(m["path"], m["line"]) for m in found["matches"]] == [("src/app.py", 1)]
            moved = await call(client, "move_file", **{"from": "src/app.py", "to": "src/main.py"})
            assert moved == {"from": "src/app.py", "to": "src/main.py", "type": "file"}
            listed = await call(client, "list_files", path="src")
            assert [(e["path"], e["type"]) for e in listed["entries"]] == [("src/main.py", "file")]
            outside = await refused(client, "read_file", path="../hub.sqlite3")
            assert outside["code"] == "path_refused"
        async with connected(hub.url, hub.viewer) as viewer:
            assert (await call(viewer, "list_files"))["entries"]
            assert (await refused(viewer, "delete_file", path="src/main.py"))["code"] == "forbidden"

    run(scenario)
    with hub.rest(hub.viewer) as rest:
        response = rest.get("/v1/files/content", params={"path": "src/main.py"})
    assert response.content == b"print('hello')\n"
    assert (hub.workspace / "src" / "main.py").read_text() == "print('hello')\n"


def test_read_file_refuses_what_is_not_utf8_text(hub: Hub) -> None:
    (hub.workspace / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\xff")

    async def scenario() -> None:
        async with connected(hub.url, hub.viewer) as client:
            error = await refused(client, "read_file", path="image.bin")
            assert error["code"] == "invalid_request" and "not UTF-8 text" in error["message"]

    run(scenario)


def test_reservations_guard_writes(hub: Hub) -> None:
    with hub.rest(hub.agent) as rest:
        first, second = (
            rest.post("/v1/workers", json={"session_id": f"s-{n}", "role": "backend"}).json()["id"]
            for n in (1, 2)
        )

    async def scenario() -> None:
        async with connected(hub.url, hub.agent) as client:
            held = await call(client, "reserve_paths", worker_id=first, globs=["src/api/"], ttl_seconds=60)
            [reservation] = held["reservations"]
            assert (reservation["glob"], reservation["exclusive"]) == ("src/api/**", True)
            blocked = await refused(client, "write_file", path="src/api/x.py", content="x", worker_id=second)
            assert blocked["code"] == "reserved" and f"worker {first}" in blocked["message"]
            overlap = await refused(client, "reserve_paths", worker_id=second, globs=["src/**"])
            assert overlap["code"] == "reserved"
            mine = await call(client, "write_file", path="src/api/x.py", content="x", worker_id=first)
            assert mine["created"] is True
            released = await call(client, "release_paths", worker_id=first)
            assert [r["id"] for r in released["released"]] == [reservation["id"]]
            await call(client, "write_file", path="src/api/y.py", content="y", worker_id=second)
            assert (await call(client, "release_paths", worker_id=first)) == {"released": []}

    run(scenario)
    with hub.rest(hub.viewer) as rest:
        assert rest.get("/v1/reservations").json() == {"reservations": []}


@pytest.mark.usefixtures("bubblewrap")
def test_run_command(hub: Hub) -> None:
    async def scenario() -> None:
        async with connected(hub.url, hub.agent) as client:
            ran = await call(client, "run_command", argv=["sh", "-c", "echo out; echo err >&2; pwd; exit 3"])
            assert (ran["exit_code"], ran["stderr"], ran["timed_out"]) == (3, "err\n", False)
            assert ran["stdout"] == f"out\n{hub.workspace.resolve()}\n"
            shell = {"shell": "echo $GREETING", "env": {"GREETING": "hi"}}
            assert (await call(client, "run_command", **shell))["stdout"] == "hi\n"
            both = await refused(client, "run_command", argv=["true"], **{"shell": "true"})
            assert both["code"] == "invalid_request" and "exactly one of argv" in both["message"]
            outside = await refused(client, "run_command", argv=["true"], cwd="../..")
            assert outside["code"] == "path_refused"
        async with connected(hub.url, hub.viewer) as viewer:
            assert (await refused(viewer, "run_command", argv=["true"]))["code"] == "forbidden"

    run(scenario)


# -- the real Claude Code CLI --------------------------------------------------------------


def claude_env(home: Path, url: str, key: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),  # a throwaway home: no user settings, no login
        "ANTHROPIC_API_KEY": "not-used",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Nothing listens there: the CLI stays on 127.0.0.1 (resolving api.anthropic.com alone
        # costs `claude mcp list` some 18 s where there is no DNS).
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "VPS_API_URL": url,
        "VPS_API_KEY": key,
        **extra,
    }


def trusting_home(tmp_path: Path, project: Path) -> Path:
    """A HOME where the project's .mcp.json servers are enabled without asking, and the project
    is trusted (as after its trust dialog), so its .claude/settings.json permissions apply."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(json.dumps({"enableAllProjectMcpServers": True}))
    trusted = {"projects": {str(project): {"hasTrustDialogAccepted": True}}}
    (home / ".claude.json").write_text(json.dumps(trusted))
    return home


def claude_mcp_list(claude_bin: Path, project: Path, home: Path, url: str, key: str) -> str:
    result = subprocess.run(
        [str(claude_bin), "mcp", "list"],
        cwd=project,
        env=claude_env(home, url, key),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.stdout + result.stderr


@pytest.mark.claude
def test_claude_code_connects_to_the_vps_server_and_fails_with_a_wrong_key(
    claude_bin: Path, tmp_path: Path
) -> None:
    project = render(tmp_path / "project", save_key=True)
    assert project.key is not None
    home = trusting_home(tmp_path, project.dest)
    with hub_serving(tmp_path, ("agent", project.key)) as serving_hub:
        listed = claude_mcp_list(claude_bin, project.dest, home, serving_hub.url, project.key)
        assert "vps:" in listed and "Connected" in listed, listed
        listed = claude_mcp_list(claude_bin, project.dest, home, serving_hub.url, "not-a-key-of-this-hub")
        assert "vps:" in listed and "Failed to connect" in listed and "401" in listed, listed


CLAUDE_CALL = {"tasks": [{"title": "From Claude Code", "instructions": "Made through MCP."}]}


def create_tasks_once(created: list[tuple[str, bool]]) -> Policy:
    """A model that loads the schema of `mcp__vps__create_tasks` (Claude Code defers MCP tools
    behind ToolSearch), calls it, and ends the turn with its result kept in `created`."""

    def policy(turn: Turn) -> Step:
        if turn.result is None:
            return search("create_tasks")
        name, text, is_error = turn.result
        if name == "ToolSearch":
            return Call("mcp__vps__create_tasks", CLAUDE_CALL)
        created.append((text, is_error))
        return End()

    return policy


@pytest.mark.claude
def test_claude_code_calls_a_vps_tool(claude_bin: Path, tmp_path: Path) -> None:
    """`claude -p` in a rendered project, its model scripted: the vps tools reach the model with
    their schemas, a call runs on the hub, and the tool's result goes back to the model."""
    project = render(tmp_path / "project", save_key=True)
    assert project.key is not None
    home = trusting_home(tmp_path, project.dest)
    created: list[tuple[str, bool]] = []
    model = FakeModel(create_tasks_once(created))
    with hub_serving(tmp_path, ("agent", project.key)) as serving_hub, serving(model.app) as api:
        env = claude_env(home, serving_hub.url, project.key, ANTHROPIC_BASE_URL=api)
        result = subprocess.run(
            [str(claude_bin), "-p", "Queue the task.", "--output-format", "json"],
            cwd=project.dest,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        with serving_hub.rest(serving_hub.viewer) as rest:
            tasks = rest.get("/v1/tasks").json()["tasks"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["permission_denials"] == []
    assert [task["title"] for task in tasks] == ["From Claude Code"]
    requests = [request for request in model.requests if "tools" in request]
    deferred = json.dumps(requests[0]["messages"])
    assert all(f"mcp__vps__{tool.name}" in deferred for tool in TOOLS), (
        "Claude Code does not offer every tool"
    )
    loaded = {tool["name"]: tool for tool in requests[1]["tools"]}["mcp__vps__create_tasks"]
    schema = {tool.name: tool.schema for tool in TOOLS}["create_tasks"]
    assert as_javascript_reads_it(loaded["input_schema"]) == as_javascript_reads_it(schema)
    [(text, is_error)] = created
    assert not is_error and "From Claude Code" in text, text


def as_javascript_reads_it(value: Any) -> Any:
    """JSON as a JavaScript number reads it: integers past 2**53 lose precision (2**63 - 1 is 2**63)."""
    return json.loads(json.dumps(value), parse_int=lambda text: float(text) if len(text) > 15 else int(text))
