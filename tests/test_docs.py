"""The docs follow the code: generated parts are current, and every command is documented."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaffold.cli import _parser
from scaffold.hub.faces import apidoc
from scaffold.hub.faces.rest.http import Endpoint
from scaffold.hub.faces.rest.routes import ENDPOINTS, healthz

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_api_and_queue_docs_are_what_the_code_generates() -> None:
    changed = apidoc.outdated(DOCS)
    diffs = [
        "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path), "generated"))
        for path, (old, new) in changed.items()
    ]
    assert not changed, "run `python -m scaffold.hub.faces.apidoc` and commit docs/:\n" + "".join(diffs)


def test_a_new_route_makes_the_check_fail_until_the_docs_are_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    route = Endpoint("GET", "/v1/ping", healthz, "Answer pong", "viewer", responses={200: ("Pong", None)})
    monkeypatch.setattr(apidoc, "ENDPOINTS", [*ENDPOINTS, route])

    assert apidoc.main(["--check", "--docs", str(docs)]) == 1
    out = capsys.readouterr()
    assert "+| `GET` | [`/v1/ping`](#get_ping) | `viewer` | Answer pong |" in out.out
    assert "run `python -m scaffold.hub.faces.apidoc`" in out.err
    assert "/v1/ping" not in (docs / "api.md").read_text(encoding="utf-8")

    assert apidoc.main(["--docs", str(docs)]) == 0
    assert "### `GET /v1/ping`" in (docs / "api.md").read_text(encoding="utf-8")
    assert apidoc.main(["--check", "--docs", str(docs)]) == 0


def test_a_doc_without_its_generated_blocks_is_refused(tmp_path: Path) -> None:
    (tmp_path / "api.md").write_text("# API\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"docs/api.md must hold the generated blocks"):
        apidoc.outdated(tmp_path)


def test_the_event_types_in_api_md_are_the_ones_the_hub_writes() -> None:
    source = "".join(p.read_text(encoding="utf-8") for p in (REPO / "src/scaffold/hub").rglob("*.py"))
    written = set(re.findall(r'_?event\(\s*(?:db,\s*)?"([a-z_]+\.[a-z_]+)"', source))
    section = (DOCS / "api.md").read_text(encoding="utf-8").split("## The event stream")[1].split("\n## ")[0]
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", section))
    assert written, "no event types found: update this test's pattern"
    assert written == documented


def test_the_docs_say_how_work_reaches_main() -> None:
    """api.md's git history, queue.md and interfaces.md tell the merge queue's truth: a tree per
    task, exactly one commit per task on main, conflicts and the gate sending the task back; and
    none of them still says that one tree is shared."""
    api = " ".join((DOCS / "api.md").read_text(encoding="utf-8").split())
    history = api.split("## The workspace's git history", 1)[1].split(" ## ", 1)[0]
    for said in (
        "its checked-out branch is **main**",
        "its own git worktree",
        "`[workspace] shared_paths`",
        "`.git/info/exclude`",
        "exactly one commit per task",
        "undoes exactly that task",
        "409 `merge_conflict`",
        "409 `gate_failed`",
        "branch `task/<id>-<attempt>`",
        "committed at once as its own commit",
    ):
        assert said in history, said
    assert "`PYTHONDONTWRITEBYTECODE=1`" in api.split("## Running commands", 1)[1]
    queue = " ".join((DOCS / "queue.md").read_text(encoding="utf-8").split())
    assert "## Work reaches main" in queue and "409 `merge_conflict`" in queue
    interfaces = " ".join((DOCS / "interfaces.md").read_text(encoding="utf-8").split())
    assert "exactly one commit per task" in interfaces and "`worker_id?`" in interfaces
    for text in (api, queue, interfaces):
        assert "tree is shared" not in text and "shared tree" not in text


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command that does something (`scaffold hub keys add`), not the groups above it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))
            return
    yield " ".join(("scaffold", *path)), parser


def test_every_command_has_an_example_in_its_help_and_is_in_the_readme() -> None:
    found = dict(commands(_parser()))
    assert {
        "scaffold new",
        "scaffold update",
        "scaffold hub serve",
        "scaffold hub keys add",
        "scaffold hub keys list",
        "scaffold hub keys revoke",
    } <= set(found)
    for command, parser in found.items():
        example = re.search(rf"^example: .*\b{re.escape(command)} ", parser.format_help(), re.MULTILINE)
        assert example, f"`{command} --help` shows no example of it"
        assert re.search(rf"\b{re.escape(command)}\b", README), f"README.md does not mention `{command}`"


def test_the_readme_pytest_copie_example_runs(tmp_path: Path) -> None:
    """The example of "Testing changes to the template", run as the README says: its tests pass."""
    section = README.split("## Testing changes to the template", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert "copie.copy(" in example and "copie.update(" in example
    test_file = tmp_path / "test_my_change.py"
    test_file.write_text(example, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "VPS_SCAFFOLD_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    ran = subprocess.run(
        [*command, str(test_file), "--basetemp", str(tmp_path / "basetemp")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout[-3000:] + ran.stderr[-2000:]
