"""A rendered project's own Python is held to this project's rules.

The hooks and the client (.claude/**/*.py) are the code a user opens in their own repository: they
are rendered from the template (a `.py.jinja` would differ from what template/ holds), then checked
here as the project holds them, with this repository's ruff rule set and formatter and mypy --strict.
Each check has a control: a copy of a rendered hook with a fault of the kind it must find.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, render

CONFIG = REPO / "pyproject.toml"  # [tool.ruff] and [tool.mypy]: the rules of this repository
RUN_TIMEOUT = 300.0  # seconds for one ruff or mypy run over eight files


def tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ruff or mypy of this environment: dev dependencies, installed with pytest itself."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return tool("ruff", *args, "--config", str(CONFIG), "--no-cache")


def mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    # Strict, as in [tool.mypy]; the paths given replace its `files`. No cache: nothing is written.
    return tool("mypy", "--config-file", str(CONFIG), "--strict", "--cache-dir", os.devnull, *map(str, paths))


@pytest.fixture
def claude(tmp_path: Path) -> Path:
    """The .claude folder of a freshly rendered project."""
    return render(tmp_path / "project").dest / ".claude"


def python_of(claude: Path) -> list[Path]:
    files = sorted(claude.glob("**/*.py"))
    template = REPO / "template" / ".claude"
    sources = [*template.rglob("*.py"), *template.rglob("*.py.jinja")]
    expected = {path.relative_to(template).as_posix().removesuffix(".jinja") for path in sources}
    assert {path.relative_to(claude).as_posix() for path in files} == expected
    assert len(files) == 8, files  # six hooks, the client and team.py: what the checks below cover
    return files


def test_ruff_passes_on_the_rendered_python_and_finds_a_fault(claude: Path) -> None:
    files = python_of(claude)
    checked = ruff("check", *map(str, files))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    formatted = ruff("format", "--check", *map(str, files))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr

    # The control: PTH105 is not among ruff's default rules, so finding it shows the rule set
    # applied is this repository's; the missing spaces are the formatter's to find.
    control = claude / "hooks" / "heartbeat-control.py"
    control.write_text((claude / "hooks" / "heartbeat.py").read_text() + "\n\nos.replace('a','b')\n")
    checked = ruff("check", "--output-format", "concise", str(control))
    assert checked.returncode == 1 and "heartbeat-control.py:" in checked.stdout, checked.stdout
    assert "PTH105" in checked.stdout, checked.stdout
    formatted = ruff("format", "--check", str(control))
    assert formatted.returncode == 1 and "heartbeat-control.py" in formatted.stdout + formatted.stderr


def test_mypy_strict_passes_on_the_rendered_python_and_finds_a_fault(claude: Path) -> None:
    python_of(claude)
    folders = [claude / "hooks", claude / "skills" / "vps-workspace" / "scripts"]
    checked = mypy(*folders)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no issues found in 8 source files" in checked.stdout, checked.stdout

    # The control: a hook named as the hooks are (with a dash) misusing the State of hooklib, which
    # mypy reports only when it checks such a file and follows its import of hooklib (and vps).
    control = claude / "hooks" / "heartbeat-control.py"
    broken = 'def blocks() -> float:\n    return State("session").get("blocks", default="none")\n'
    source = (claude / "hooks" / "heartbeat.py").read_text()
    control.write_text(source.replace("\n\ndef main() -> None:", f"\n\n{broken}\n\ndef main() -> None:", 1))
    checked = mypy(*folders)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "heartbeat-control.py:" in checked.stdout, checked.stdout
    assert '"get" of "State" has incompatible type "str"' in checked.stdout, checked.stdout
    assert "Found 1 error in 1 file (checked 9 source files)" in checked.stdout, checked.stdout
