"""`scaffold update`: copier's 3-way merge, for a git template and for the bundled one."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaffold import render as render_module
from scaffold.cli import main
from scaffold.errors import TemplateError
from scaffold.render import record_release, template_root, update_project
from tests.conftest import REPO, git, render

USER_NOTE = "\n## Our conventions\n\nEvery task names its owner in the commit message.\n"
TEMPLATE_NOTE = "\n## Added in 0.2.0\n\nRestart a lost worker with /worker and its role.\n"


def scaffold(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


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


def test_bundled_update_from_an_unknown_version_says_what_to_do(tmp_path: Path) -> None:
    """A project made by a newer package than the one installed here."""
    project = render(tmp_path / "project").dest
    answers_file = project / ".copier-answers.yml"
    text = answers_file.read_text()
    answers_file.write_text(re.sub(r"_commit: .*", "_commit: 9.9.9+0123456789ab", text))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "rendered")
    with pytest.raises(TemplateError, match=r"template 9.9.9\+0123456789ab, which .* does not know"):
        update_project(project, template_ref=None, quiet=True, interactive=False)


def test_update_of_a_missing_directory_says_so(tmp_path: Path) -> None:
    missing = scaffold("update", str(tmp_path / "nonexistent"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"scaffold: error: {tmp_path / 'nonexistent'}: no such directory"


def test_update_can_change_an_answer(tmp_path: Path, template_repo: Path) -> None:
    """Moving a local hub to a server: the changed answer re-renders the bundle."""
    project = committed_project(tmp_path, template_repo)
    assert not (project / "vps/hub.service").exists()
    updated = scaffold(
        "update",
        str(project),
        "--vcs-ref",
        "0.2.0",
        "--data",
        "deployment=remote",
        "--data",
        "hub_url=http://203.0.113.10:5555",
        "--data",
        "workspace_path=/srv/agent-team/workspace",
    )
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


def test_moving_to_a_server_as_the_local_readme_says(tmp_path: Path, template_repo: Path) -> None:
    """The one story of moving a local project to a server: the rendered vps/README.md's
    `scaffold update` line, run as written, turns the bundle into the server's."""
    project = committed_project(tmp_path, template_repo)
    readme = (project / "vps/README.md").read_text()
    guide = (project / "docs/setup-guide.md").read_text()
    assert "render a new project" not in guide and "render a project" not in readme
    assert '"Moving to a server" in\n`vps/README.md`' in guide
    moving = readme[readme.index("### Moving to a server") :]
    [line] = [line for line in moving.splitlines() if line.startswith("scaffold update ")]
    words = shlex.split(line.replace("SERVER", "203.0.113.10"))
    updated = scaffold(*words[1:], cwd=project)
    assert updated.returncode == 0, updated.stderr
    assert answers(project)["deployment"] == "remote"
    for name in ("hub.service", "hub-backup.service", "hub-backup.timer", "bootstrap.sh"):
        assert (project / "vps" / name).is_file(), name
    assert 'host = "0.0.0.0"' in (project / "vps/hub.toml").read_text()
    assert "systemctl status agent-team-hub" in (project / "vps/README.md").read_text()


NEW_QUESTION = (
    "\nreview_policy:\n  type: str\n  help: How strictly the coordinator reviews.\n  default: strict\n"
)


@pytest.mark.parametrize("recorded", ["portable", "absolute-by-an-older-package"])
def test_bundled_project_updates_on_another_machine_with_a_newer_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: str
) -> None:
    """Version A renders under HOME 1; version B, installed under HOME 2 with an empty cache,
    updates it from the template history it ships."""
    monkeypatch.delenv("VPS_SCAFFOLD_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    package_a = copy_template(tmp_path / "package-a")
    monkeypatch.setattr(render_module, "__version__", "0.1.0")
    record_release(package_a)
    home_1 = tmp_path / "home-1"
    home_1.mkdir()
    monkeypatch.setenv("HOME", str(home_1))
    monkeypatch.setattr(render_module, "template_root", lambda: package_a)
    project = tmp_path / "project"
    assert main(["new", str(project), "--defaults", "--quiet"]) == 0
    before = answers(project)
    assert before["_src_path"] == "~/.cache/vps-agent-scaffold/template"
    if recorded == "absolute-by-an-older-package":
        answers_file = project / ".copier-answers.yml"
        old_path = str(home_1 / ".cache/vps-agent-scaffold/template")
        answers_file.write_text(answers_file.read_text().replace(str(before["_src_path"]), old_path))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "rendered")
    with (project / "CLAUDE.md").open("a") as handle:
        handle.write(USER_NOTE)
    git(project, "commit", "-q", "-am", "our conventions")

    # Version B: a changed doc and a new question; its release adds it to A's history.
    package_b = tmp_path / "package-b"
    shutil.copytree(package_a, package_b)
    with (package_b / "template/docs/troubleshooting.md.jinja").open("a") as handle:
        handle.write(TEMPLATE_NOTE + "Review policy: {{ review_policy }}\n")
    with (package_b / "copier.yml").open("a") as handle:
        handle.write(NEW_QUESTION)
    monkeypatch.setattr(render_module, "__version__", "0.2.0")
    record_release(package_b)
    shutil.rmtree(home_1)  # the first machine is gone
    home_2 = tmp_path / "home-2"
    home_2.mkdir()
    monkeypatch.setenv("HOME", str(home_2))
    monkeypatch.setattr(render_module, "template_root", lambda: package_b)

    assert main(["update", str(project), "--defaults", "--quiet"]) == 0

    assert USER_NOTE in (project / "CLAUDE.md").read_text()
    troubleshooting = (project / "docs/troubleshooting.md").read_text()
    assert TEMPLATE_NOTE.strip() in troubleshooting
    assert "Review policy: strict" in troubleshooting
    after = answers(project)
    assert str(after["_commit"]).startswith("0.2.0+")
    assert after["_src_path"] == "~/.cache/vps-agent-scaffold/template"
    assert after["api_key_hash"] == before["api_key_hash"] != ""
    assert after["review_policy"] == "strict"
    assert git(project, "ls-files", "-v", ".copier-answers.yml").startswith("H ")  # skip-worktree cleared


def test_release_history_tags_name_their_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each release adds one tag on top; recording the same template again changes nothing."""
    package = copy_template(tmp_path / "package")
    monkeypatch.setattr(render_module, "__version__", "0.1.0")
    first = record_release(package)
    assert record_release(package) == first
    (package / "template/NEW.md").write_text("new\n")
    monkeypatch.setattr(render_module, "__version__", "0.2.0")
    second = record_release(package)
    heads = subprocess.run(
        ["git", "bundle", "list-heads", str(package / "template-history.bundle")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sorted(line.split()[1] for line in heads.splitlines()) == [
        f"refs/tags/{first}",
        f"refs/tags/{second}",
    ]
    assert first.startswith("0.1.0+") and second.startswith("0.2.0+")


def test_project_from_a_git_url_updates_with_plain_copier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scaffold new --template URL` (a bare clone of this repository, as file://) renders the
    revision whose questions it asked; plain `copier update` then brings a pushed change."""
    monkeypatch.setenv("COPIER_CACHE_DIR", str(tmp_path / "copier-cache"))  # copier mirrors URLs there
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(REPO), str(work))
    shutil.rmtree(work / "template")
    shutil.copytree(template_root() / "template", work / "template")
    shutil.copy2(template_root() / "copier.yml", work / "copier.yml")
    git(work, "add", "-A")
    git(work, "commit", "-q", "--allow-empty", "-m", "the template as in this checkout")
    bare = tmp_path / "vps-agent-scaffold.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    url = bare.as_uri()
    project = tmp_path / "project"
    created = scaffold("new", str(project), "--defaults", "--quiet", "--template", url)
    assert created.returncode == 0, created.stderr
    assert answers(project)["_src_path"] == url
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "rendered")

    with (work / "template/docs/troubleshooting.md.jinja").open("a") as handle:
        handle.write(TEMPLATE_NOTE)
    git(work, "commit", "-q", "-am", "a template change")
    git(work, "push", "-q", str(bare), "HEAD")
    updated = subprocess.run(
        [str(Path(sys.executable).parent / "copier"), "update", "--defaults", "--skip-answered"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert updated.returncode == 0, updated.stderr
    assert TEMPLATE_NOTE.strip() in (project / "docs/troubleshooting.md").read_text()


def test_rejected_hunks_of_plain_copier_show_in_git_status_and_stop_scaffold_update(
    tmp_path: Path, template_repo: Path
) -> None:
    """`copier update --conflict rej` exits 0 and leaves `.rej` files: the project's .gitignore
    must not hide them, and `scaffold update` must not run over them (copier's inline merge
    would consume them, the rejected hunk lost)."""
    project = committed_project(tmp_path, template_repo)
    troubleshooting = project / "docs/troubleshooting.md"
    troubleshooting.write_text(troubleshooting.read_text() + "\n## Local additions\n\nOur own line.\n")
    git(project, "commit", "-q", "-am", "edit the same place as the template")

    copier = [sys.executable, "-m", "copier", "update", "--defaults", "--quiet", "--conflict", "rej"]
    plain = subprocess.run(
        [*copier, "--vcs-ref", "0.2.0", str(project)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )

    assert plain.returncode == 0, plain.stderr
    assert (project / "docs/troubleshooting.md.rej").is_file()
    assert "?? docs/troubleshooting.md.rej" in git(project, "status", "--porcelain").splitlines()
    git(project, "commit", "-q", "-am", "the update, its .rej still to apply")
    for hidden in (False, True):  # also where an ignore rule of the user's hides .rej files
        if hidden:
            (project / ".git/info/exclude").write_text("*.rej\n")
        refused = scaffold("update", str(project), "--vcs-ref", "0.2.0")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        [line] = refused.stderr.splitlines()
        assert line.startswith("scaffold: error: ") and "docs/troubleshooting.md.rej" in line
        assert (project / "docs/troubleshooting.md.rej").is_file()
