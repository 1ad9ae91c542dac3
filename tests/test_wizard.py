"""The interactive wizard, driven through a real terminal with pexpect."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import yaml

CTRL_U = "\x15"  # clear the prefilled default
DOWN = "\x1b[B"


def spawn_new(dest: Path) -> pexpect.spawn:
    """`scaffold new DEST` in a real pseudo-terminal, wide enough for the help texts."""
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    return pexpect.spawn(
        sys.executable, ["-m", "scaffold", "new", str(dest)],
        env=env, encoding="utf-8", timeout=30, dimensions=(50, 200),
    )  # fmt: skip


def test_wizard_asks_validates_and_renders(tmp_path: Path) -> None:
    dest = tmp_path / "wizard-team"
    child = spawn_new(dest)
    try:
        child.expect("project_name: Human name")
        child.send(CTRL_U + "Wizard Team\r")
        child.expect("project_slug")
        child.send("\r")  # the derived slug, wizard-team
        child.expect("deployment")
        child.send("\r")  # local
        child.expect("hub_url")
        child.send("\r")
        child.expect("worker_count")
        child.send(CTRL_U + "99\r")
        child.expect("Choose between 1 and 32 workers")  # the validator from copier.yml
        child.send(CTRL_U + "4\r")
        child.expect("worker_roles")
        child.send(DOWN * 3 + " \r")  # add devops to the three checked by default
        child.expect("idle_timeout_minutes")
        child.send("\r")
        child.expect("workspace_path")
        child.send("\r")
        child.expect("Create it in")
        child.send("y")
        child.expect("Save the API key")
        child.send("y")
        child.expect(r"API key \(shown once; only its SHA-256 is in the project\): (\S+)")
        key = child.match.group(1)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "Wizard Team"
    assert answers["project_slug"] == "wizard-team"
    assert answers["worker_count"] == 4
    assert answers["worker_roles"] == ["backend", "frontend", "testing", "devops"]
    saved = json.loads((dest / ".claude/settings.local.json").read_text())
    assert saved["env"]["VPS_API_KEY"] == key


def test_wizard_cancelled_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "never"
    child = spawn_new(dest)
    try:
        child.expect("project_name")
        child.sendcontrol("c")
        child.expect("cancelled; nothing was written")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
    assert not dest.exists()
