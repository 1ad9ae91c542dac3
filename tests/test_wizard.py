"""The interactive wizard, driven through a real terminal with pexpect."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pexpect
import yaml

from scaffold.render import template_root
from tests.conftest import REPO

CTRL_U = "\x15"  # clear the prefilled default
DOWN = "\x1b[B"


def spawn_new(dest: Path, *args: str) -> pexpect.spawn:
    """`scaffold new DEST ARGS` in a real pseudo-terminal, wide enough for the help texts."""
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    return pexpect.spawn(
        sys.executable,
        ["-m", "scaffold", "new", str(dest), *args],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(50, 200),
    )


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
        child.expect("telemetry: Send Claude Code's usage telemetry")
        child.send("n")  # the opt-out
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
    assert answers["telemetry"] is False and not (dest / ".claude/telemetry.json").exists()
    saved = json.loads((dest / ".claude/settings.local.json").read_text())
    assert saved["env"]["VPS_API_KEY"] == key


def test_the_first_screen_links_the_decision_guide_before_the_first_question(tmp_path: Path) -> None:
    child = spawn_new(tmp_path / "guided")
    try:
        child.expect(r"Read the decision guide:\s+(\S+)")
        shown = Path(child.match.group(1))
        child.expect("project_name")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert shown == REPO / "docs/decision-guide.md"  # from a checkout, the file itself
    text = shown.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "## How many sessions a machine holds" in text


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


def test_ctrl_c_while_files_are_written_leaves_nothing(tmp_path: Path) -> None:
    """Interrupted mid-render (a template with many files makes that last seconds), the
    destination is as before and no staging directory is left beside it."""
    template = tmp_path / "slow-template"
    shutil.copytree(template_root() / "template", template / "template")
    shutil.copy2(template_root() / "copier.yml", template / "copier.yml")
    filler = template / "template" / "filler"
    filler.mkdir()
    for number in range(4000):
        (filler / f"f{number}.txt.jinja").write_text("{{ project_name }} {{ worker_count }}\n" * 20)
    parent = tmp_path / "parent"
    parent.mkdir()
    dest = parent / "team"
    env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    argv = ["-m", "scaffold", "new", str(dest), "--defaults", "--save-key", "--template", str(template)]
    child = pexpect.spawn(
        sys.executable,
        argv,
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(len(list(p.rglob("*.txt"))) > 50 for p in parent.glob(".team.*")):
            assert time.monotonic() < deadline, "the render never started"
            assert child.isalive(), child.read()
            time.sleep(0.05)
        child.sendintr()
        child.expect("cancelled; nothing was written")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
    assert list(parent.iterdir()) == []


def test_a_bad_given_answer_is_refused_before_the_first_prompt(tmp_path: Path) -> None:
    dest = tmp_path / "never"
    child = spawn_new(dest, "--data", "worker_count=99")
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    assert child.before.strip() == "scaffold: error: worker_count: Choose between 1 and 32 workers."
    assert not dest.exists()


def test_fewer_workers_than_roles_warns_and_lets_the_roles_be_chosen_again(tmp_path: Path) -> None:
    dest = tmp_path / "small-team"
    child = spawn_new(dest, "--data", "worker_count=2", "--no-save-key")
    try:
        for question in ("project_name", "project_slug", "deployment", "hub_url"):
            child.expect(question)
            child.send("\r")
        child.expect("worker_roles")
        child.send("\r")  # the three checked by default
        child.expect(
            "warning: worker_count 2 is below the 3 roles chosen: workers take the roles in turn, so no "
            "worker runs testing"
        )
        child.expect(r"Keep these roles anyway\?")
        child.send("n")
        child.expect("worker_roles")
        child.send(DOWN * 2 + " \r")  # uncheck testing
        child.expect("idle_timeout_minutes")
        child.send("\r")
        child.expect("workspace_path")
        child.send("\r")
        child.expect("telemetry")
        child.send("\r")  # yes, the default
        child.expect("Create it in")
        child.send("y")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert (answers["worker_count"], answers["worker_roles"]) == (2, ["backend", "frontend"])
    assert answers["telemetry"] is True and (dest / ".claude/telemetry.json").is_file()


def test_given_roles_are_warned_about_before_the_summary(tmp_path: Path) -> None:
    dest = tmp_path / "never"
    child = spawn_new(dest, "--data", "worker_roles=[backend, docs]", "--data", "idle_timeout_minutes=5")
    try:
        for question in ("project_name", "project_slug", "deployment", "hub_url"):
            child.expect(question)
            child.send("\r")
        child.expect("worker_count")
        child.send(CTRL_U + "1\r")
        child.expect("workspace_path")
        child.send("\r")
        child.expect("telemetry")
        child.send("\r")
        child.expect("scaffold: warning: worker_count 1 is below the 2 roles chosen: .* no worker runs docs")
        child.expect("Create it in")
        child.send("n")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130
    assert not dest.exists()
