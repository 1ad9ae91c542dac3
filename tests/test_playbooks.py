"""The rendered text is true: every command, tool, route, file, setting and variable that
CLAUDE.md, the playbooks, the skills and the docs of a rendered project name exists.

Names are taken from the `code spans` of the rendered markdown and checked against the real
thing: the MCP server's tool list, the hub's routes and schemas, the `scaffold` and `vps.py`
parsers, the rendered files, the hub settings. A span that is none of these kinds (an example
from a product's code, a shell command) is left alone; EXAMPLES lists the few that look like one
of the kinds but belong to the examples of the workspace's code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaffold.cli import _parser as scaffold_parser
from scaffold.errors import HubError
from scaffold.hub.core.schemas import COMPONENTS
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.faces.mcp.tools import TOOLS
from scaffold.hub.faces.rest.routes import ENDPOINTS
from tests.conftest import ANSWER_SETS, built_hub, render
from tests.test_vps_client import commands, load_vps

TEXTS = [
    "CLAUDE.md",
    "README.md",
    ".claude/COORDINATOR_CLAUDE.md",
    ".claude/WORKER_CLAUDE.md",
    ".claude/skills/*/SKILL.md",
    "docs/*.md",
    "vps/README.md",
    "templates/*.md",
]
# Spans that look like a name of ours but are examples of the product code in the workspace.
# Named, never rendered: examples, and what a running slot writes (its log)
EXAMPLES = {"docs/api.md", "docs/specs/<topic>.md", "docs/", ".claude/team/w1.log"}
CLAUDE_COMMANDS = {"/hooks", "/exit", "/mcp", "/resume", "/clear", "/compact"}
SYSTEM_DIRS = {"/tmp", "/etc", "/opt", "/srv", "/var", "/usr", "/home", "/root"}
ENV_PREFIX = "VPS_"


def spans(project: Path) -> Iterator[tuple[str, str]]:
    """(file, code span) for every inline code span and every line of a fenced block."""
    for pattern in TEXTS:
        for path in sorted(project.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            name = str(path.relative_to(project))
            for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
                for line in block.splitlines():
                    yield name, line.strip()
            for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S)):
                yield name, span.strip()


@pytest.fixture(scope="module", params=["defaults", "remote-tls"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VPS_SCAFFOLD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        made = render(
            tmp_path_factory.mktemp("rendered") / "project", save_key=True, **ANSWER_SETS[request.param]
        )
    return made.dest


@pytest.fixture(scope="module")
def served_paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every path the hub's app routes, as its routes declare them."""
    with built_hub(tmp_path_factory.mktemp("hub"), roles=()) as made:
        return {route.path for route in made.app.routes}  # type: ignore[attr-defined]


def named(project: Path, kind: str) -> list[tuple[str, str]]:
    """The spans of one kind, with where they appear."""
    return [(where, span) for where, span in spans(project) if KINDS[kind](span)]


def is_tool(span: str) -> bool:
    return bool(re.fullmatch(r"(mcp__vps__)?[a-z]+_[a-z_]+", span)) and span.split("__")[-1] in TOOL_NAMES


TOOL_NAMES = {tool.name for tool in TOOLS}
KINDS: dict[str, Any] = {
    "tool": lambda span: span.startswith("mcp__vps__") or is_tool(span),
    "route": lambda span: bool(re.search(r"(?:^|\s|\d)(/v1/|/healthz|/mcp\b|/openapi\.json)", span)),
    "file": lambda span: bool(
        re.fullmatch(
            r"(\.claude/|docs/|templates/|vps/)\S*|CLAUDE\.md|README\.md|"
            r"\.mcp\.json|\.copier-answers\.yml",
            span,
        )
    ),
    "vps": lambda span: span.startswith(("vps.py ", "python3 .claude/skills/vps-workspace/scripts/vps.py")),
    "scaffold": lambda span: span.startswith("scaffold ") and not span.startswith("scaffold:"),
    "env": lambda span: ENV_PREFIX in span,
    "skill": lambda span: bool(re.fullmatch(r"/[a-z][a-z-]*( .*)?", span)),
    "hook": lambda span: bool(re.fullmatch(r"[a-z-]+\.py", span)),
}


def test_every_mcp_tool_named_exists(project: Path) -> None:
    found = named(project, "tool")
    assert len(found) > 20
    for where, span in found:
        tool = span.removeprefix("mcp__vps__")
        assert tool in TOOL_NAMES or tool in ("*", "<tool>"), f"{where}: no MCP tool {span!r}"


ROUTE = re.compile(r"(?:(GET|POST|PUT|DELETE) )?\S*?(/v1/[^\s`?]*|/healthz|/mcp|/openapi\.json)")


def shape(path: str) -> str:
    """A path with its ids and placeholders ({id}, <task id>, ID, 42) all alike."""
    return re.sub(r"\{[^}]+\}|<[^>]+>|\bID\b|\b\d+\b", "{x}", path)


def test_every_route_named_is_served(project: Path, served_paths: set[str]) -> None:
    found = named(project, "route")
    assert len(found) > 3
    served = {shape(path): path for path in served_paths}
    methods = {(endpoint.method, endpoint.path) for endpoint in ENDPOINTS}
    for where, span in found:
        for method, path in ROUTE.findall(span):
            assert shape(path) in served, f"{where}: {span!r} names {path}, which the hub does not serve"
            if method:
                assert (method, served[shape(path)]) in methods, f"{where}: the hub has no {method} {path}"


def test_the_dashboard_and_the_hub_url_named_are_served(project: Path, served_paths: set[str]) -> None:
    urls = [(where, span) for where, span in spans(project) if re.match(r"https?://\S+/\S*$", span)]
    for where, span in urls:
        path = "/" + span.split("/", 3)[3] if span.count("/") >= 3 else "/"
        path = path.split("?")[0]
        assert path in served_paths or path.startswith("/v1/"), f"{where}: {span!r}: the hub serves no {path}"
    assert "/" in served_paths  # the dashboard the docs send users to


def test_every_file_named_is_in_the_rendered_project(project: Path) -> None:
    found = named(project, "file")
    assert len(found) > 10
    for where, span in found:
        if span in EXAMPLES:
            continue
        assert (project / span.rstrip("/")).exists(), f"{where}: {span} is not in the rendered project"


def test_every_vps_command_named_parses(project: Path) -> None:
    parser = load_vps().build_parser()
    every = set(commands(parser))
    found = [
        (where, "vps.py " + span)
        for where, span in spans(project)
        if re.fullmatch(r"(plan|tasks|workers|messages|files) [a-z|]+( .*)?", span)
    ]
    found += named(project, "vps")
    assert len(found) > 10
    for where, span in found:
        rest = span.split("vps.py", 1)[1].split(" #")[0].strip()
        if not rest or rest.startswith("<"):  # the bare program, or its synopsis
            continue
        group, _, tail = rest.partition(" ")
        actions = tail.split(" ", 1)[0]
        if "|" in actions:  # `workers show|heartbeat|deregister`
            for action in actions.split("|"):
                assert f"{group} {action}" in every, f"{where}: vps.py has no {group} {action}"
            continue
        assert f"{group} {actions}".strip() in every or group in every, f"{where}: {span}"
        if len(rest.split()) > 2:  # a whole command line, not just its name: it must parse
            args = shlex.split(re.sub(r"\bID\b|<[^>]*>|\bPATH\b|\bETAG\b", "7", rest.split(" < ")[0]))
            assert parses(parser, args), f"{where}: `{span}` does not parse"


def parses(parser: argparse.ArgumentParser, words: list[str]) -> bool:
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(words)
    except SystemExit:
        return False
    return True


def test_every_scaffold_command_named_parses(project: Path) -> None:
    parser = scaffold_parser()
    found = named(project, "scaffold")
    assert found
    for where, span in found:
        words = [
            "x" if word in ("NAME", "REF") else word for word in shlex.split(span.replace("...", "x"))[1:]
        ]
        completions: tuple[list[str], ...] = ([], ["x"], ["--local"])  # a bare name: `scaffold deploy`
        if not any(parses(parser, [*words, *rest]) for rest in completions):
            pytest.fail(f"{where}: `{span}` is not a scaffold command")


def error_codes() -> set[str]:
    """The code of every error the hub answers: HubError's subclasses, at any depth."""
    classes: list[type[HubError]] = [HubError]
    for cls in classes:  # grows as it goes
        classes.extend(cls.__subclasses__())
    return {cls.code for cls in classes}


def test_every_setting_field_and_error_code_named_exists(project: Path) -> None:
    settings, codes = set(HubSettings.__dataclass_fields__), error_codes()
    fields: set[str] = set()

    def collect(schema: Any) -> None:
        if isinstance(schema, dict):
            fields.update(schema.get("properties", {}))
            for value in schema.values():
                collect(value)
        elif isinstance(schema, list):
            for value in schema:
                collect(value)

    collect(COMPONENTS)
    for endpoint in ENDPOINTS:
        collect(endpoint.body)
        fields.update(endpoint.query)
        for _, schema in endpoint.responses.values():
            collect(schema)
    hub_toml = (project / "vps/hub.toml").read_text(encoding="utf-8")
    for where, span in spans(project):
        if re.fullmatch(r"[a-z]+(_[a-z]+)+", span) and span not in TOOL_NAMES:
            known = span in fields | settings | codes or span in hub_toml
            assert known, f"{where}: no field, setting or error code {span!r}"
        if re.fullmatch(r"\[\[?[a-z]+\]\]?", span):
            assert span in hub_toml or span.strip("[]") in ("exec", "roles", "keys"), f"{where}: {span}"


def test_every_environment_variable_named_is_used(project: Path) -> None:
    code = "".join(
        path.read_text(encoding="utf-8")
        for path in (project / ".claude").rglob("*")
        if path.is_file() and path.suffix in (".py", ".json")
    )
    for where, span in named(project, "env"):
        for variable in re.findall(r"VPS_[A-Z_]+", span):
            assert variable in code, f"{where}: {variable} is read by nothing in .claude/"


def test_every_skill_and_hook_named_exists(project: Path) -> None:
    skills = {path.parent.name for path in (project / ".claude/skills").glob("*/SKILL.md")}
    for where, span in named(project, "skill"):
        command = span.split()[0]
        if command in CLAUDE_COMMANDS | SYSTEM_DIRS or command.startswith("/v1") or command == "/healthz":
            continue
        assert command.lstrip("/") in skills, f"{where}: no skill {command}"
    scripts = {path.name for path in (project / ".claude").rglob("*.py")}
    for where, span in named(project, "hook"):
        assert span in scripts, f"{where}: no script {span} in .claude/"


def test_the_hooks_named_in_settings_exist(project: Path) -> None:
    settings = json.loads((project / ".claude/settings.json").read_text(encoding="utf-8"))
    registered = [
        hook["command"]
        for groups in settings["hooks"].values()
        for group in groups
        for hook in group["hooks"]
    ]
    assert len(registered) == 3
    for command in registered:
        script = re.search(r"\$CLAUDE_PROJECT_DIR/([^\"]+\.py)", command)
        assert script is not None and (project / script[1]).is_file(), command


# The MCP tools that act in the caller's task tree when given its worker id, and on main without.
TREE_TOOLS = (
    "read_file",
    "list_files",
    "grep_files",
    "write_file",
    "edit_file",
    "delete_file",
    "move_file",
    "run_command",
)
# What the text said while every worker shared one tree; none of it is true any more.
SHARED_TREE_CLAIMS = (
    "shared workspace",
    "the tree is shared",
    "the same tree",
    "uncommitted edits",
    "edits stay in the workspace",
    "finds them there",
    "land in the next task's commit",
)


def text(project: Path, *patterns: str) -> str:
    """The rendered files of the patterns, one string; each pattern must match a file."""
    found = [path for pattern in patterns for path in sorted(project.glob(pattern))]
    assert len(found) >= len(patterns), patterns
    return "\n".join(path.read_text(encoding="utf-8") for path in found)


def test_workers_are_told_to_pass_their_worker_id_to_every_file_and_command_tool(project: Path) -> None:
    """A call without worker_id acts on main, so a worker that forgets it writes outside its task:
    the playbook names each tool that takes it, and the tools do take it."""
    schemas = {tool.name: tool.schema for tool in TOOLS}
    playbook = text(project, ".claude/WORKER_CLAUDE.md")
    tree = playbook.split("## Your task's tree", 1)[1].split("\n## ", 1)[0]
    assert "Pass your worker id" in tree and "`worker_id`" in tree and "acts on main" in tree
    skill = text(project, ".claude/skills/vps-workspace/SKILL.md")
    for tool in TREE_TOOLS:
        assert "worker_id" in schemas[tool]["properties"], f"{tool} takes no worker_id"
        assert f"`{tool}`" in tree and f"`{tool}`" in skill, f"{tool} is not named with worker_id"
    assert "without `worker_id`" in skill and "acts on main" in skill


def test_the_texts_describe_one_commit_per_task_on_main(project: Path) -> None:
    """How work reaches main, as the playbooks and guides tell it: one commit per task, `git
    revert` of it undoes that task only, a conflict or a failed gate sends the task back."""
    coordinator = " ".join(text(project, ".claude/COORDINATOR_CLAUDE.md").split())
    for said in (
        "exactly one commit per task",
        "`task <id>: <title>`",
        "`Task:` and `Worker:` trailers",
        "undoes exactly that task",
        "branch `task/<id>-<attempt>`",
        "you get a message",
        "`shared_paths` under `[workspace]`",
        "`gate` under `[queue]`",
        "committed at once as its own commit",
    ):
        assert said in coordinator, said
    worker = " ".join(text(project, ".claude/WORKER_CLAUDE.md").split())
    for said in ("exactly one commit", "409 `merge_conflict`", "409 `gate_failed`", "starts clean"):
        assert said in worker, said
    guides = " ".join(text(project, "docs/setup-guide.md", "docs/coordinator-guide.md").split())
    assert "exactly one commit" in guides and "`shared_paths`" in guides and "`gate`" in guides
    everything = " ".join(text(project, *TEXTS).split()).lower()
    for claim in SHARED_TREE_CLAIMS:
        assert claim not in everything, f"a rendered text still says {claim!r}"


def test_spend_and_budgets_are_explained_where_telemetry_is_on_and_nowhere_else(tmp_path: Path) -> None:
    on = render(tmp_path / "on", save_key=True).dest
    guide = (on / "docs/setup-guide.md").read_text(encoding="utf-8")
    assert "python3 .claude/skills/vps-workspace/scripts/vps.py usage --by task" in guide
    assert "claude --settings .claude/telemetry.json" in guide and "telemetry=false" in guide
    budget = (on / "vps/hub.toml").read_text(encoding="utf-8").split("\n[budget]\n", 1)[1].split("\n[", 1)[0]
    for key in re.findall(r"^# ([a-z_]+) = ", budget, flags=re.M):
        assert f"`{key}" in guide, f"the setup guide's budget table lacks {key}"
    coordinator = (on / ".claude/COORDINATOR_CLAUDE.md").read_text(encoding="utf-8")
    assert "usage --by task" in coordinator and "Budget: task N" in coordinator
    assert '"Budget:"' in (on / ".claude/WORKER_CLAUDE.md").read_text(encoding="utf-8")
    off = render(tmp_path / "off", telemetry=False).dest
    for pattern in TEXTS:
        for path in off.glob(pattern):
            text = path.read_text(encoding="utf-8")
            assert "telemetry.json" not in text and "vps.py usage" not in text, path
            assert "Budget:" not in text, path
    assert "telemetry=true" in (off / "docs/setup-guide.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("check", "wrong"),
    [
        ("test_every_mcp_tool_named_exists", "`mcp__vps__claim_tasks`"),
        ("test_every_route_named_is_served", "`POST /v1/tasks/{id}/finish`"),
        ("test_every_file_named_is_in_the_rendered_project", "`docs/quickstart.md`"),
        ("test_every_vps_command_named_parses", "`vps.py tasks take 7`"),
        ("test_every_scaffold_command_named_parses", "`scaffold publish --host user@host`"),
        ("test_every_setting_field_and_error_code_named_exists", "`lease_minutes`"),
        ("test_every_setting_field_and_error_code_named_exists", "`merge_refused`"),
        ("test_every_environment_variable_named_is_used", "`VPS_WORKER_COUNT`"),
        ("test_every_skill_and_hook_named_exists", "`/reviewer`"),
    ],
)
def test_each_check_catches_a_wrong_name(
    project: Path, served_paths: set[str], tmp_path: Path, check: str, wrong: str
) -> None:
    """The checks above are not vacuous: one wrong name added to CLAUDE.md makes each fail."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    claude_md = copy / "CLAUDE.md"
    claude_md.write_text(claude_md.read_text(encoding="utf-8") + f"\nRun {wrong} now.\n", encoding="utf-8")
    function = globals()[check]
    arguments = {"project": copy, "served_paths": served_paths}
    needed = function.__code__.co_varnames[: function.__code__.co_argcount]
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        function(**{name: arguments[name] for name in needed})
