"""The real Claude Code CLI accepts the rendered `.claude` folder (`claude plugin validate`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import render

pytestmark = pytest.mark.claude


def validate(claude_bin: Path, project: Path, home: Path) -> tuple[int, dict[str, Any]]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),  # a throwaway home: no user settings, no login
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    result = subprocess.run(
        [str(claude_bin), "plugin", "validate", "--strict", "--json", ".claude"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize(
    "data",
    [{}, {"deployment": "remote", "domain": "hub.example.com", "worker_roles": "[devops, docs]"}],
    ids=["defaults", "remote"],
)
def test_rendered_claude_folder_passes_strict_validation(
    claude_bin: Path, tmp_path: Path, data: dict[str, Any]
) -> None:
    project = render(tmp_path / "project", **data).dest
    code, report = validate(claude_bin, project, tmp_path / "home")
    assert code == 0, json.dumps(report, indent=2)
    text = json.dumps(report)
    for skill in ("coordinator", "worker", "vps-workspace"):
        assert skill in text, f"the validator did not see the {skill} skill"


def test_validation_fails_on_a_broken_skill(claude_bin: Path, tmp_path: Path) -> None:
    """A control: the same command rejects a skill without frontmatter description."""
    project = render(tmp_path / "project").dest
    skill = project / ".claude/skills/worker/SKILL.md"
    skill.write_text("---\nname: worker\n---\nRegister and work.\n")
    code, report = validate(claude_bin, project, tmp_path / "home")
    assert code != 0, json.dumps(report, indent=2)
