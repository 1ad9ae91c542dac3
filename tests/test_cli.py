"""`scaffold new` from the command line: the key shown once, and one-line errors for bad input."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from scaffold.cli import _parser as scaffold_parser
from tests.conftest import git
from tests.hubproc import free_port


def scaffold(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


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
        (
            ["--data", "hub_port=8080"],
            "scaffold: error: hub_port: computed from domain and hub_url, not a question; answer those",
        ),
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


def test_fewer_workers_than_roles_is_one_warning_line(tmp_path: Path) -> None:
    result = scaffold("new", str(tmp_path / "team"), "--defaults", "--quiet", "--data", "worker_count=1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        "scaffold: warning: worker_count 1 is below the 3 roles chosen: workers take the roles in turn, so "
        "no worker runs frontend, testing and the playbooks leave them out; plan 3 workers, or choose fewer "
        "roles"
    )
    enough = scaffold("new", str(tmp_path / "enough"), "--defaults", "--quiet", "--data", "worker_count=3")
    assert enough.returncode == 0 and enough.stderr == ""


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


# -- every example of every --help runs ------------------------------------------------------

EXAMPLE = re.compile(r"^example: (.+)$", re.M)
FOR_EXAMPLE = re.compile(r"e\.g\. (\S.*?)(?: \(|$)")
# How an option's "e.g. --opt value" becomes a whole command: the rest of a command that runs.
WITH_FRAGMENT = {
    "scaffold new": "scaffold new data-team --defaults {}",
    "scaffold update": "scaffold update my-team {}",
    "scaffold deploy": "scaffold deploy --host root@203.0.113.10 {}",
    "scaffold team up": "scaffold team up --host root@203.0.113.10 {}",
}
# Run for real, in this order, in a temporary directory ("~" is a temporary HOME): the
# directory each runs in, relative to it.
RUN = [
    ("scaffold new my-team --defaults --data worker_count=4 --save-key", "."),
    ("scaffold new data-team --defaults --data 'worker_roles=[backend, testing]'", "."),
    ("scaffold update my-team --data worker_count=5", "."),
    ("scaffold hub serve --config my-team/vps/hub.toml", "."),
    ("export VPS_API_KEY=$(scaffold hub keys add worker-1 --role agent --config vps/hub.toml)", "my-team"),
    ("scaffold hub keys list --config vps/hub.toml", "my-team"),
    ("scaffold hub keys revoke worker-1 --config vps/hub.toml", "my-team"),
    ("scaffold hub backup ~/backups/hub-1 --config my-team/vps/hub.toml", "."),
    ("scaffold hub restore ~/backups/hub-1 --config my-team/vps/hub.toml", "."),
]
PARSED_ONLY = {
    "scaffold deploy --host root@203.0.113.10 --identity ~/.ssh/id_ed25519": "needs an SSH server, as root",
    "scaffold deploy --host root@203.0.113.10 --ssh-option ProxyJump=bastion": "needs an SSH jump host",
    # tests/test_team.py runs each with tmux, Claude Code, a hub and a scripted model
    "scaffold team up --workers 3 --trust": "needs Claude Code logged in and a hub",
    "scaffold team up --host root@203.0.113.10 --ssh-option ProxyJump=bastion": "needs an SSH jump host",
    "scaffold team up --workers 4 --role backend --role testing --headless": "needs Claude Code and a hub",
    "scaffold team status --json": "needs a running team",
    "scaffold team attach coordinator": "needs a running team and a terminal",
    "scaffold team logs w2 --follow": "needs a running team; follows until interrupted",
    "scaffold team down ~/my-team": "needs a running team",
}


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from all_parsers(sub)


def help_examples(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every example the help of every parser shows, as a whole command.

    An epilog's `example:` line is one, and must show on one line of an 80-column help. An
    option's "e.g." is one too: "e.g. --data x" as written, "e.g. x" as the option with x; it is
    completed with WITH_FRAGMENT. (A positional's "e.g." only suggests a name.)"""
    monkeypatch.setenv("COLUMNS", "80")
    found: list[str] = []
    for parser in all_parsers(scaffold_parser()):
        shown = parser.format_help()
        for example in EXAMPLE.findall(parser.epilog or ""):
            assert f"example: {example}\n" in shown, f"{parser.prog}: the example is wrapped"
            found.append(example)
        for action in parser._actions:
            for hint in FOR_EXAMPLE.findall(action.help or "") if action.option_strings else []:
                fragment = hint if hint.startswith("-") else f"{max(action.option_strings, key=len)} {hint}"
                assert parser.prog in WITH_FRAGMENT, f"{parser.prog}: say how to run {fragment!r}"
                found.append(WITH_FRAGMENT[parser.prog].format(fragment))
    return list(dict.fromkeys(found))


def test_every_help_example_is_run_or_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = help_examples(monkeypatch)
    assert len(examples) >= 10
    assert sorted(examples) == sorted([command for command, _ in RUN] + list(PARSED_ONLY))
    for command in PARSED_ONLY:
        scaffold_parser().parse_args(shlex.split(command)[1:])  # SystemExit(2) if it does not parse


def test_every_help_example_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(command: str, where: str = ".", then: str = "") -> subprocess.CompletedProcess[str]:
        shell = f"set -e; {command}; {then}" if then else command
        result = subprocess.run(
            ["bash", "-c", shell],
            cwd=tmp_path / where,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result

    steps = iter(RUN)
    made = run(next(steps)[0])
    assert made.stdout.count("Next: read") == 1 and "Next:" not in made.stderr, "said once"
    assert "`scaffold team up my-team`" in made.stdout, "names the launcher"
    assert answers_of(tmp_path / "my-team")["worker_count"] == 4
    assert (tmp_path / "my-team/.claude/settings.local.json").is_file()
    run(next(steps)[0])
    assert answers_of(tmp_path / "data-team")["worker_roles"] == ["backend", "testing"]

    git(tmp_path / "my-team", "init", "-q")
    git(tmp_path / "my-team", "add", "-A")
    git(tmp_path / "my-team", "commit", "-q", "-m", "rendered")
    run(next(steps)[0])
    assert answers_of(tmp_path / "my-team")["worker_count"] == 5

    # 5555 may be taken on a shared machine: the user's own edit of hub.toml, kept by updates.
    port = free_port()
    hub_toml = tmp_path / "my-team/vps/hub.toml"
    hub_toml.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", hub_toml.read_text()))
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        ["bash", "-c", f"exec {next(steps)[0]}"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(f"{url}/healthz", serve)
        command, where = next(steps)
        key = run(command, where, then='printf %s "$VPS_API_KEY"').stdout
        assert status_code(url, key) == 200
        command, where = next(steps)
        assert "worker-1" in run(command, where).stdout
        command, where = next(steps)
        run(command, where)
        assert status_code(url, key) == 401
        run(next(steps)[0])
        assert (home / "backups/hub-1").is_dir()
    finally:
        serve.send_signal(signal.SIGINT)
        _, errors = serve.communicate(timeout=30)
    assert serve.returncode == 0, errors

    # Restore as on a new machine: no data, no workspace.
    hub_home = home / ".local/share/vps-agent-scaffold" / answers_of(tmp_path / "my-team")["project_slug"]
    shutil.rmtree(hub_home)
    run(next(steps)[0])
    assert (hub_home / "hub-data").is_dir() and (hub_home / "workspace/.git").is_dir()
    assert next(steps, None) is None


def answers_of(project: Path) -> dict[str, Any]:
    loaded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def wait_for(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within 30 s")


def status_code(url: str, key: str) -> int:
    return httpx2.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code
