"""`scaffold new` from the command line: the key shown once, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def scaffold(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_new_with_defaults_shows_the_key_once_and_keeps_only_its_hash(tmp_path: Path) -> None:
    dest = tmp_path / "team"
    result = scaffold("new", str(dest), "--defaults", "--quiet", "--data", "worker_count=2")
    assert result.returncode == 0, result.stderr
    key_lines = [line for line in result.stdout.splitlines() if line.startswith("API key")]
    assert len(key_lines) == 1
    key = key_lines[0].rsplit(" ", 1)[1]
    assert result.stdout.count(key) == 1 and key not in result.stderr
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["api_key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert answers["worker_count"] == 2
    assert not (dest / ".claude/settings.local.json").exists()
    for path in dest.rglob("*"):
        if path.is_file():
            assert key not in path.read_text(), path


def test_save_key_writes_the_local_settings(tmp_path: Path) -> None:
    dest = tmp_path / "team"
    result = scaffold("new", str(dest), "--defaults", "--quiet", "--save-key")
    assert result.returncode == 0, result.stderr
    saved = json.loads((dest / ".claude/settings.local.json").read_text())["env"]["VPS_API_KEY"]
    assert f"API key (shown once; only its SHA-256 is in the project): {saved}" in result.stdout


def test_no_key_leaves_the_hash_empty_for_the_hub_to_fill(tmp_path: Path) -> None:
    dest = tmp_path / "team"
    result = scaffold("new", str(dest), "--defaults", "--quiet", "--no-key")
    assert result.returncode == 0, result.stderr
    assert "API key" not in result.stdout
    assert "the hub creates one on its first start" in result.stdout
    assert yaml.safe_load((dest / ".copier-answers.yml").read_text())["api_key_hash"] == ""


def test_a_given_hash_is_used_and_no_key_is_made(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"my own key").hexdigest()
    dest = tmp_path / "team"
    result = scaffold("new", str(dest), "--defaults", "-q", "--data", f"api_key_hash={digest}")
    assert result.returncode == 0, result.stderr
    assert "API key" not in result.stdout
    assert digest in (dest / "vps/hub.toml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--data", "worker_count=99"],
            "scaffold: error: worker_count: Choose between 1 and 32 workers.",
        ),
        (
            ["--data", "colour=blue"],
            "scaffold: error: colour: no such question; the questions are: project_name, ",
        ),
        (["--data", "worker_count"], "scaffold: error: --data takes KEY=VALUE, got 'worker_count'"),
        (["--data", "deployment=remote"], "scaffold: error: hub_url: an answer is required"),
        (
            ["--template", "/nonexistent/template"],
            "scaffold: error: template /nonexistent/template does not exist",
        ),
        (
            ["--no-key", "--data", "api_key_hash="],
            "scaffold: error: --no-key and --data api_key_hash=... contradict",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    dest = tmp_path / "team"
    result = scaffold("new", str(dest), "--defaults", *args)
    assert result.returncode == 1
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not dest.exists()


def test_a_non_empty_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = scaffold("new", str(tmp_path), "--defaults")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"scaffold: error: {tmp_path} already exists and is not empty; choose a new directory"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_prompts_need_a_terminal(tmp_path: Path) -> None:
    result = scaffold("new", str(tmp_path / "team"))
    assert result.returncode == 1
    assert "standard input is not a terminal: pass --defaults" in result.stderr


def test_every_command_has_help_with_an_example() -> None:
    top = scaffold("--help")
    assert top.returncode == 0
    for command in ("new", "update"):
        assert command in top.stdout
        detail = scaffold(command, "--help")
        assert detail.returncode == 0
        assert "example: scaffold " + command in detail.stdout
