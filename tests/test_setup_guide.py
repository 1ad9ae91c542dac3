"""The rendered setup guide's checks do what it says, run as written with the real tools: the MCP
check with the real Claude Code CLI, for both ways of giving the key (the environment, or only
`.claude/settings.local.json`, as `scaffold new --save-key` leaves it)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from scaffold.hub.services.auth import new_key
from tests.conftest import render
from tests.test_mcp import claude_env, hub_serving

KEY_PLACEHOLDER = "paste-the-key-here"


def section(guide: str, heading: str) -> str:
    """The text of the `## heading...` section, up to the next `## `."""
    start = guide.index(f"\n## {heading}")
    end = guide.find("\n## ", start + 1)
    return guide[start : end if end != -1 else None]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def run_as_written(claude_bin: Path, line: str, project: Path, env: dict[str, str]) -> str:
    words = shlex.split(line)
    assert words[0] == "claude", line
    result = subprocess.run(
        [str(claude_bin), *words[1:]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.stdout + result.stderr


def home_after_trust(tmp_path: Path, project: Path) -> Path:
    """A HOME as after `claude` in the project and its trust prompt accepted: nothing else, so
    the `vps` server is enabled by the project's own settings, as the guide says."""
    home = tmp_path / "home"
    home.mkdir()
    trusted = {"projects": {str(project): {"hasTrustDialogAccepted": True}}}
    (home / ".claude.json").write_text(json.dumps(trusted))
    return home


@pytest.mark.claude
@pytest.mark.parametrize("key_in", ["environment", "settings.local.json"])
def test_the_mcp_check_connects_for_both_ways_of_giving_the_key(
    claude_bin: Path, tmp_path: Path, key_in: str
) -> None:
    key, key_hash = new_key()
    with hub_serving(tmp_path, ("agent", key)) as hub:
        project = render(tmp_path / "project", hub_url=hub.url, api_key_hash=key_hash).dest
        guide = (project / "docs/setup-guide.md").read_text()
        give_key, check = section(guide, "2. Give the sessions the key"), section(guide, "3. Approve")
        env = claude_env(home_after_trust(tmp_path, project), hub.url, key)
        del env["VPS_API_URL"]  # .claude/settings.json gives it, as for a user
        if key_in == "settings.local.json":
            del env["VPS_API_KEY"]
            [by_hand] = fenced(give_key, "json")  # the file as the guide says to write it
            (project / ".claude/settings.local.json").write_text(by_hand.replace(KEY_PLACEHOLDER, key))

        [command, details] = [block.strip() for block in fenced(check, "sh")]
        expected = re.search(r"It should print `([^`]+)`", check)
        assert expected, check
        shown = run_as_written(claude_bin, command, project, env)
        assert expected[1] in shown, shown

        # The command that names the server and the reason, for the way the key was given.
        listing = details if key_in == "settings.local.json" else "claude mcp list"
        listed = run_as_written(claude_bin, listing, project, env)
        assert "vps:" in listed and "Connected" in listed, listed

        # A control: the same check tells a wrong key.
        if key_in == "environment":
            env["VPS_API_KEY"] = "not-a-key-of-this-hub"
        else:
            (project / ".claude/settings.local.json").write_text(by_hand.replace(KEY_PLACEHOLDER, "wrong"))
        assert "1 not connected" in run_as_written(claude_bin, command, project, env)


@pytest.mark.claude
def test_the_plain_listing_misses_a_key_given_only_in_settings_local_json(
    claude_bin: Path, tmp_path: Path
) -> None:
    """Why the guide does not check with a plain `claude mcp list`: it reads the key from the
    environment only, so it fails where sessions connect (what troubleshooting explains)."""
    project = render(tmp_path / "project", save_key=True)
    assert project.key is not None
    with hub_serving(tmp_path, ("agent", project.key)) as hub:
        env = claude_env(home_after_trust(tmp_path, project.dest), hub.url, project.key)
        del env["VPS_API_KEY"]
        listed = run_as_written(claude_bin, "claude mcp list", project.dest, env)
    assert "Failed to connect" in listed and "Missing environment variables: VPS_API_KEY" in listed, listed
    troubleshooting = (project.dest / "docs/troubleshooting.md").read_text()
    assert "Missing environment variables: VPS_API_KEY" in troubleshooting
