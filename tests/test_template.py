"""The rendered thin client and bundle: files, formats, secrets, for several answer sets."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scaffold.hub.core.settings import HubSettings, load_settings
from scaffold.render import bundled_template
from scaffold.wizard import NewProject
from tests.conftest import git, render
from tests.fakemodel import Call, End, FakeModel, Policy, Step, Usage
from tests.hubproc import running_hub, write_config
from tests.test_api import serving
from tests.test_mcp import claude_env, trusting_home

EXPECTED_FILES = [
    "CLAUDE.md",
    "README.md",
    ".gitignore",
    ".copier-answers.yml",
    ".mcp.json",
    ".claude/COORDINATOR_CLAUDE.md",
    ".claude/WORKER_CLAUDE.md",
    ".claude/settings.json",
    ".claude/.claude-plugin/plugin.json",
    ".claude/skills/coordinator/SKILL.md",
    ".claude/skills/worker/SKILL.md",
    ".claude/skills/vps-workspace/SKILL.md",
    "templates/task-instruction.md",
    "docs/setup-guide.md",
    "docs/coordinator-guide.md",
    "docs/worker-guide.md",
    "docs/task-format.md",
    "docs/troubleshooting.md",
    "vps/README.md",
    "vps/hub.toml",
]
SKILL_NAME = re.compile(r"[a-z0-9-]{1,64}")


def answers_of(project: NewProject) -> dict[str, Any]:
    loaded = yaml.safe_load((project.dest / ".copier-answers.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def frontmatter(path: Path) -> dict[str, Any]:
    text = path.read_text()
    assert text.startswith("---\n"), f"{path} has no frontmatter"
    head = text[4 : text.index("\n---", 4)]
    loaded = yaml.safe_load(head)
    assert isinstance(loaded, dict)
    return loaded


def test_plain_copier_renders_the_template(copie: Any) -> None:
    """copier alone, without the wizard, renders a complete project (pytest-copie)."""
    result = copie.copy(
        extra_answers={"project_name": "Plain Copier", "worker_roles": ["testing"]},
        template_dir=Path(bundled_template().src),
    )
    assert result.exit_code == 0, result.exception
    for name in EXPECTED_FILES:
        assert (result.project_dir / name).is_file(), name
    assert result.answers["api_key_hash"] == ""
    assert "hub creates an admin key" in (result.project_dir / "vps/hub.toml").read_text()


def test_every_expected_file_is_rendered(rendered: NewProject) -> None:
    for name in EXPECTED_FILES:
        assert (rendered.dest / name).is_file(), f"{name} is missing"


def test_no_jinja_and_no_placeholders_are_left(rendered: NewProject) -> None:
    for path in rendered.dest.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            text = path.read_text()
            assert "{{" not in text and "{%" not in text, f"unrendered Jinja in {path}"
            assert not re.search(r"\b(TODO|TBD|FIXME|XXX)\b", text), f"placeholder in {path}"


def test_settings_validate_against_the_schemastore_schema(
    rendered: NewProject, settings_schema: Path
) -> None:
    schema = json.loads(settings_schema.read_text())
    settings = json.loads((rendered.dest / ".claude/settings.json").read_text())
    jsonschema.validate(settings, schema, cls=jsonschema.validators.validator_for(schema))
    assert settings["env"]["VPS_API_URL"] == rendered.answers["hub_url"]
    idle = int(rendered.answers["idle_timeout_minutes"]) * 60
    assert (
        f"idle_timeout_minutes = {rendered.answers['idle_timeout_minutes']}\n"
        in (rendered.dest / "vps/hub.toml").read_text()
    )
    [stop] = settings["hooks"]["Stop"][0]["hooks"]
    wait = int(stop["command"].rsplit("--wait ", 1)[1])
    assert wait >= 540 and stop["timeout"] == wait + 60
    assert 6 * wait >= idle  # the whole idle time fits in fewer rounds than Claude Code's 8 blocks
    assert "VPS_API_KEY" not in settings["env"]
    assert "vps" in settings["enabledMcpjsonServers"]


def test_the_schema_check_can_fail(rendered: NewProject, settings_schema: Path) -> None:
    schema = json.loads(settings_schema.read_text())
    settings = json.loads((rendered.dest / ".claude/settings.json").read_text())
    settings["permissions"]["defaultMode"] = "whenever"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(settings, schema, cls=jsonschema.validators.validator_for(schema))


TELEMETRY_ENV = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
    "OTEL_LOGS_EXPORT_INTERVAL": "5000",
    "OTEL_METRIC_EXPORT_INTERVAL": "60000",
}


def test_telemetry_settings_point_claude_code_at_the_hub_without_the_key(
    rendered: NewProject, settings_schema: Path
) -> None:
    """On by default: .claude/telemetry.json (for `claude --settings`) holds the exporter's variables,
    .claude/settings.json the helper that gives it the key; neither holds the key."""
    schema = json.loads(settings_schema.read_text())
    telemetry = json.loads((rendered.dest / ".claude/telemetry.json").read_text())
    jsonschema.validate(telemetry, schema, cls=jsonschema.validators.validator_for(schema))
    endpoint = rendered.answers["hub_url"] + "/otlp"
    assert telemetry["env"] == {**TELEMETRY_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    settings = json.loads((rendered.dest / ".claude/settings.json").read_text())
    helper = settings["otelHeadersHelper"]
    assert helper == 'python3 "${CLAUDE_PROJECT_DIR:-.}/.claude/hooks/otel-headers.py"'
    assert (rendered.dest / ".claude/hooks/otel-headers.py").is_file()
    # Claude Code ignores these in a project's settings: they would only mislead a reader.
    assert not [name for name in settings["env"] if name.startswith(("OTEL_", "CLAUDE_CODE_ENABLE"))]
    assert answers_of(rendered)["telemetry"] is True
    for text in (json.dumps(telemetry), json.dumps(settings), json.dumps(answers_of(rendered))):
        assert "VPS_API_KEY" not in text and "Bearer" not in text
        assert rendered.key is None or rendered.key not in text


def test_telemetry_answered_no_renders_none_of_it(tmp_path: Path) -> None:
    project = render(tmp_path / "p", save_key=True, telemetry=False)
    assert not (project.dest / ".claude/telemetry.json").exists()
    settings = (project.dest / ".claude/settings.json").read_text()
    assert "otelHeadersHelper" not in settings and "OTEL" not in settings
    assert answers_of(project)["telemetry"] is False
    assert "telemetry.json" not in (project.dest / "README.md").read_text()
    assert project.key_file is not None
    assert json.loads(project.key_file.read_text()) == {"env": {"VPS_API_KEY": project.key}}


def scripted(*steps: Step) -> Policy:
    """A model that answers each request with the next step."""
    pending = iter(steps)
    return lambda turn: next(pending)


@pytest.mark.claude
def test_claude_code_sends_a_rendered_projects_usage_to_the_hub_with_the_saved_key(
    tmp_path: Path, claude_bin: Path
) -> None:
    """The real CLI in a rendered project, against a real hub and a scripted model: started with
    `--settings .claude/telemetry.json` its requests reach /v1/usage, authenticated by the
    otelHeadersHelper with the key of settings.local.json; started without, it sends nothing
    (Claude Code takes no telemetry variable from a project's own settings: the reason for the file)."""
    key = "telemetry-key-for-template-tests-0123456789abc"
    with running_hub(write_config(tmp_path, keys=[("owner", "admin", key)])) as hub:
        project = render(tmp_path / "project", hub_url=hub.url)
        local = {"env": {"VPS_API_KEY": key}}  # as `scaffold new` saves it
        (project.dest / ".claude/settings.local.json").write_text(json.dumps(local))
        home = trusting_home(tmp_path, project.dest)
        usages = [Usage(input=1000, output=200, cache_read=50), Usage(input=10, output=20)]
        env = claude_env(home, hub.url, key)
        del env["VPS_API_KEY"]  # only where `scaffold new` put it
        for run, flags in enumerate(([], ["--settings", ".claude/telemetry.json"])):
            model = FakeModel(scripted(Call("Bash", {"command": "true"}, usages[0]), End("done", usages[1])))
            with serving(model.app) as api:
                done = subprocess.run(
                    [str(claude_bin), "-p", "go", *flags, "--allowedTools", "Bash"],
                    cwd=project.dest,
                    env={**env, "ANTHROPIC_BASE_URL": api},
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            assert done.returncode == 0, done.stderr
            assert "otelHeadersHelper failed" not in done.stderr
            with hub.client(key) as rest:
                report = rest.get("/v1/usage", params={"by": "task"}).json()
            if run == 0:
                assert report["total"]["requests"] == 0, report
        expected = sum(usage.tokens for usage in model.usages)
        assert report["total"]["tokens"] == expected and report["total"]["requests"] == len(model.usages)
        assert [row["key"] for row in report["rows"]] == ["coordinator"]  # a session that is no worker


def test_the_budget_table_of_hub_toml_names_every_budget_setting_and_each_line_loads(
    rendered: NewProject, tmp_path: Path
) -> None:
    """Uncommenting the [budget] lines, as a user does, gives a hub.toml the hub accepts with each
    budget set; together they name every budget setting the hub has."""
    hub_toml = (rendered.dest / "vps/hub.toml").read_text()
    table = hub_toml.split("\n[budget]\n", 1)[1].split("\n[", 1)[0]
    lines = re.findall(r"^# ([a-z_]+ = \S+)$", table, flags=re.M)
    names = {line.split(" = ")[0] for line in lines}
    budget_fields = {name for name in HubSettings.__dataclass_fields__ if name.startswith("budget_")}
    assert {f"budget_{name}" for name in names} == budget_fields
    assert tomllib.loads(hub_toml)["budget"] == {}  # shipped: no budget
    config = tmp_path / "hub.toml"
    config.write_text(hub_toml.replace(table, "\n".join(lines) + "\n"))
    loaded = load_settings(config)
    for line in lines:
        name, value = line.split(" = ")
        assert getattr(loaded, f"budget_{name}") == tomllib.loads(f"v = {value}")["v"], name


def test_skills_have_valid_frontmatter(rendered: NewProject) -> None:
    skills = sorted((rendered.dest / ".claude/skills").glob("*/SKILL.md"))
    assert [p.parent.name for p in skills] == ["coordinator", "vps-workspace", "worker"]
    for path in skills:
        meta = frontmatter(path)
        assert SKILL_NAME.fullmatch(str(meta.get("name", ""))), path
        assert meta["name"] == path.parent.name
        description = str(meta.get("description", ""))
        assert 0 < len(description) <= 1024, path


def test_mcp_server_is_http_and_takes_the_key_from_the_environment(rendered: NewProject) -> None:
    server = json.loads((rendered.dest / ".mcp.json").read_text())["mcpServers"]["vps"]
    assert server["type"] == "http"
    assert server["url"] == "${VPS_API_URL:-" + rendered.answers["hub_url"] + "}/mcp"
    assert server["headers"] == {"Authorization": "Bearer ${VPS_API_KEY}"}


def test_worker_playbook_has_a_section_per_chosen_role(rendered: NewProject) -> None:
    playbook = (rendered.dest / ".claude/WORKER_CLAUDE.md").read_text()
    headings = re.findall(r"^#{2,4} .*$", playbook, flags=re.MULTILINE)
    catalog = {
        "backend": "Backend",
        "frontend": "Frontend",
        "testing": "Testing",
        "devops": "DevOps",
        "data": "Data",
        "docs": "Documentation",
    }
    for role, title in catalog.items():
        has_section = any(title in heading for heading in headings)
        assert has_section == (role in rendered.answers["worker_roles"]), (role, headings)


# What the coordinator and the workers read, and the docs on writing tasks: they name a role only
# if some worker takes it. (The setup and worker guides also say which chosen roles none takes.)
ROLE_TEXTS = [
    "CLAUDE.md",
    "README.md",
    ".claude/COORDINATOR_CLAUDE.md",
    ".claude/WORKER_CLAUDE.md",
    ".claude/skills/*/SKILL.md",
    "docs/coordinator-guide.md",
    "docs/task-format.md",
    "docs/troubleshooting.md",
]


def test_with_fewer_workers_than_roles_the_playbooks_name_only_roles_that_run(tmp_path: Path) -> None:
    project = render(tmp_path / "project", worker_count="2", worker_roles="[backend, testing, docs]").dest
    running = {"backend", "testing"}
    named: set[str] = set()
    for pattern in ROLE_TEXTS:
        for path in project.glob(pattern):
            text = path.read_text()
            roles = set(re.findall(r"/worker ([a-z]+)", text))
            roles |= set(re.findall(r"^\| `([a-z]+)`", text, flags=re.MULTILINE))  # role tables
            roles |= set(re.findall(r"^\s*`([a-z]+)` \(", text, flags=re.MULTILINE))  # role lists
            roles &= {"backend", "frontend", "testing", "devops", "data", "docs"}
            assert roles <= running, f"{path.name} names {roles - running}, which no worker runs"
            assert "Documentation" not in text and "`writing`" not in text, path
            named |= roles
    assert named == running
    coordinator = (project / ".claude/COORDINATOR_CLAUDE.md").read_text()
    assert '"required_capabilities": []' in coordinator, "the docs task of the example requires nothing"
    guide = (project / "docs/setup-guide.md").read_text()
    assert "no worker takes\n`docs`" in guide and "`scaffold update --data worker_count=3`" in guide


def test_hub_config_matches_the_answers(rendered: NewProject) -> None:
    config = tomllib.loads((rendered.dest / "vps/hub.toml").read_text())
    answers = rendered.answers
    assert config["workspace"]["path"] == answers["workspace_path"]
    assert config["queue"]["idle_timeout_minutes"] == answers["idle_timeout_minutes"]
    assert [key["sha256"] for key in config.get("keys", [])] == [answers["api_key_hash"]]
    behind_proxy = answers["deployment"] == "local" or bool(answers.get("domain"))
    assert (config["server"]["host"] == "127.0.0.1") == behind_proxy


def test_caddyfile_only_with_a_domain(rendered: NewProject) -> None:
    caddyfile = rendered.dest / "vps/Caddyfile"
    domain = answers_of(rendered).get("domain")
    assert caddyfile.exists() == bool(domain)
    if domain:
        text = caddyfile.read_text()
        assert text.count(f"{domain} {{") == 1
        assert "reverse_proxy 127.0.0.1:5555" in text


def test_systemd_unit_only_for_a_remote_hub_and_confined(rendered: NewProject) -> None:
    path = rendered.dest / "vps/hub.service"
    assert path.exists() == (rendered.answers["deployment"] == "remote")
    if not path.exists():
        return
    unit = path.read_text()
    for setting in (
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
    ):
        assert setting in unit
    slug = rendered.answers["project_slug"]
    assert f"User={slug}-hub" in unit


def test_no_plaintext_key_anywhere(rendered: NewProject) -> None:
    assert rendered.key is not None and len(rendered.key) >= 43
    digest = hashlib.sha256(rendered.key.encode()).hexdigest()
    assert answers_of(rendered)["api_key_hash"] == digest
    for path in rendered.dest.rglob("*"):
        if path.is_file():
            assert rendered.key not in path.read_text(errors="replace"), f"the key leaked into {path}"


def test_saved_key_is_private_and_ignored_by_git(tmp_path: Path) -> None:
    project = render(tmp_path / "p", save_key=True)
    assert project.key_file == project.dest / ".claude/settings.local.json"
    assert json.loads(project.key_file.read_text()) == {"env": {"VPS_API_KEY": project.key}}
    assert project.key_file.stat().st_mode & 0o077 == 0
    git(project.dest, "init", "-q")
    git(project.dest, "add", "-A")
    tracked = git(project.dest, "ls-files").split()
    assert ".claude/settings.local.json" not in tracked
    assert ".claude/settings.json" in tracked


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("worker_count=99", "Choose between 1 and 32 workers"),
        ("hub_url=localhost:5555", "Enter the hub URL as http(s)://host[:port]"),
        ("api_key_hash=not-a-hash", "64 lowercase hex"),
    ],
)
def test_copier_itself_refuses_invalid_answers(tmp_path: Path, data: str, message: str) -> None:
    """Plain copier applies the same validators. (Its CLI shows a traceback that ends with the
    message for a bad --data answer, copier-org/copier#1436; `scaffold new` prints one line.)"""
    dest = tmp_path / "p"
    copier = [sys.executable, "-m", "copier", "copy", "--defaults"]
    result = subprocess.run(
        [*copier, "--data", data, bundled_template().src, str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1]
    assert not dest.exists() or not any(dest.iterdir())


def test_the_bundle_readme_lists_every_file_of_the_bundle(rendered: NewProject) -> None:
    bundle = rendered.dest / "vps"
    table = (bundle / "README.md").read_text().split("## Files", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)`(?:, `([^`]+)`)?", table, flags=re.M))
    names = {name for pair in listed for name in pair if name}
    assert names == {path.name for path in bundle.iterdir()}


def test_the_readme_explains_every_file_under_dot_claude(rendered: NewProject) -> None:
    table = (rendered.dest / "README.md").read_text().split("## What is here", 1)[1].split("\n## ", 1)[0]
    explained = set(re.findall(r"`(\.claude/[^`]*)`", table))
    for path in sorted((rendered.dest / ".claude").rglob("*")):
        if path.is_file():
            name = str(path.relative_to(rendered.dest))
            covered = [row for row in explained if name == row or name.startswith(row.rstrip("/") + "/")]
            assert covered, f"README.md does not say what {name} is"
