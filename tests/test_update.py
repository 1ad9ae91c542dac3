"""`scaffold update`: copier's 3-way merge, for a git template and for the bundled one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaffold import render as render_module
from scaffold.errors import TemplateError
from scaffold.render import template_root, update_project
from tests.conftest import git, render

USER_NOTE = "\n## Our conventions\n\nEvery task names its owner in the commit message.\n"
TEMPLATE_NOTE = "\n## Added in 0.2.0\n\nRestart a lost worker with /worker and its role.\n"


def scaffold(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def answers(project: Path) -> dict[str, object]:
    loaded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def copy_template(dest: Path) -> Path:
    root = template_root()
    dest.mkdir()
    shutil.copy2(root / "copier.yml", dest / "copier.yml")
    shutil.copytree(root / "template", dest / "template")
    return dest


@pytest.fixture
def template_repo(tmp_path: Path) -> Path:
    """A git repository of the template with tags 0.1.0 and 0.2.0 (0.2.0 adds a doc section)."""
    repo = copy_template(tmp_path / "template-repo")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template 0.1.0")
    git(repo, "tag", "0.1.0")
    with (repo / "template/docs/troubleshooting.md.jinja").open("a") as handle:
        handle.write(TEMPLATE_NOTE)
    git(repo, "commit", "-q", "-am", "template 0.2.0")
    git(repo, "tag", "0.2.0")
    return repo


def committed_project(tmp_path: Path, template_repo: Path) -> Path:
    project = tmp_path / "project"
    created = scaffold(
        "new",
        str(project),
        "--defaults",
        "--quiet",
        "--template",
        str(template_repo),
        "--vcs-ref",
        "0.1.0",
    )
    assert created.returncode == 0, created.stderr
    assert answers(project)["_commit"] == "0.1.0"
    assert answers(project)["_src_path"] == str(template_repo)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "rendered")
    return project


def test_update_keeps_user_edits_and_brings_template_changes(tmp_path: Path, template_repo: Path) -> None:
    project = committed_project(tmp_path, template_repo)
    before = answers(project)
    with (project / "CLAUDE.md").open("a") as handle:
        handle.write(USER_NOTE)
    git(project, "commit", "-q", "-am", "our conventions")

    updated = scaffold("update", str(project), "--vcs-ref", "0.2.0")

    assert updated.returncode == 0, updated.stderr
    assert USER_NOTE in (project / "CLAUDE.md").read_text()
    assert TEMPLATE_NOTE.strip() in (project / "docs/troubleshooting.md").read_text()
    after = answers(project)
    assert after["_commit"] == "0.2.0"
    # The key's hash is carried over, never asked for again (stdin was /dev/null).
    assert after["api_key_hash"] == before["api_key_hash"] != ""
    assert {k: v for k, v in after.items() if k != "_commit"} == {
        k: v for k, v in before.items() if k != "_commit"
    }
    assert "0.2.0" in updated.stdout


def test_update_reports_conflicts_with_their_files(tmp_path: Path, template_repo: Path) -> None:
    project = committed_project(tmp_path, template_repo)
    troubleshooting = project / "docs/troubleshooting.md"
    troubleshooting.write_text(troubleshooting.read_text() + "\n## Local additions\n\nOur own line.\n")
    git(project, "commit", "-q", "-am", "edit the same place as the template")

    updated = scaffold("update", str(project), "--vcs-ref", "0.2.0")

    assert updated.returncode == 3, updated.stderr
    assert "docs/troubleshooting.md" in updated.stderr
    errors = [line for line in updated.stderr.splitlines() if line.startswith("scaffold: error:")]
    assert len(errors) == 1 and "left conflicts in 1 file(s)" in errors[0]
    assert "Traceback" not in updated.stderr
    assert "<<<<<<<" in (project / "docs/troubleshooting.md").read_text()


def test_update_refuses_a_dirty_or_non_git_project(tmp_path: Path, template_repo: Path) -> None:
    project = committed_project(tmp_path, template_repo)
    (project / "CLAUDE.md").write_text("uncommitted\n")
    dirty = scaffold("update", str(project), "--vcs-ref", "0.2.0")
    assert dirty.returncode == 1
    assert (
        dirty.stderr.strip()
        == f"scaffold: error: {project} has uncommitted changes; commit or stash them first"
    )

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".copier-answers.yml").write_text("_src_path: /nowhere\n")
    not_git = scaffold("update", str(plain))
    assert not_git.returncode == 1
    assert "is not a git repository" in not_git.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    no_answers = scaffold("update", str(empty))
    assert no_answers.returncode == 1
    assert "has no .copier-answers.yml" in no_answers.stderr


def test_bundled_template_upgrades_after_a_new_package_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache snapshot gives a pip-installed template a history copier can merge across."""
    bundled = copy_template(tmp_path / "bundled")
    monkeypatch.setattr(render_module, "template_root", lambda: bundled)
    project = render(tmp_path / "project").dest
    first = answers(project)["_commit"]
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "rendered")
    with (project / "CLAUDE.md").open("a") as handle:
        handle.write(USER_NOTE)
    git(project, "commit", "-q", "-am", "our conventions")

    # A new package version ships a changed template.
    with (bundled / "template/docs/troubleshooting.md.jinja").open("a") as handle:
        handle.write(TEMPLATE_NOTE)
    second = update_project(project, template_ref=None, quiet=True, interactive=False)

    assert second != first
    assert USER_NOTE in (project / "CLAUDE.md").read_text()
    assert TEMPLATE_NOTE.strip() in (project / "docs/troubleshooting.md").read_text()


def test_bundled_update_without_the_old_version_says_what_to_do(tmp_path: Path) -> None:
    """A project made by an older package on another machine: its version is not cached here."""
    project = render(tmp_path / "project").dest
    answers_file = project / ".copier-answers.yml"
    answers_file.write_text(answers_file.read_text().replace("_commit: ", "_commit: 0.0.1+a"))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "rendered")
    with pytest.raises(TemplateError, match=r"is not in .* \(the cache was cleared"):
        update_project(project, template_ref=None, quiet=True, interactive=False)


def test_update_can_change_an_answer(tmp_path: Path, template_repo: Path) -> None:
    """Moving a local hub to a server: the changed answer re-renders the bundle."""
    project = committed_project(tmp_path, template_repo)
    assert not (project / "vps/hub.service").exists()
    updated = scaffold(
        "update", str(project), "--vcs-ref", "0.2.0",
        "--data", "deployment=remote", "--data", "hub_url=http://203.0.113.10:5555",
        "--data", "workspace_path=/srv/agent-team/workspace",
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert answers(project)["deployment"] == "remote"
    assert "User=agent-team-hub" in (project / "vps/hub.service").read_text()
    assert 'host = "0.0.0.0"' in (project / "vps/hub.toml").read_text()


def test_update_refuses_an_invalid_changed_answer(tmp_path: Path, template_repo: Path) -> None:
    project = committed_project(tmp_path, template_repo)
    updated = scaffold("update", str(project), "--vcs-ref", "0.2.0", "--data", "worker_count=0")
    assert updated.returncode == 1
    assert "Choose between 1 and 32 workers" in updated.stderr
    assert "Traceback" not in updated.stderr
    assert answers(project)["worker_count"] == 3
    assert git(project, "status", "--porcelain") == ""
