"""How many sessions a host holds: the fit, the refusal's line, and the host check (hostprobe.py)
run for real: its size, Claude Code's answers, and reaping what a stop leaves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from scaffold.deploy import Target
from scaffold.team import sizing
from scaffold.team.hosts import Host
from tests.conftest import alive


def mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


@pytest.mark.parametrize(
    ("cpus", "mem_mb", "fit"),
    [
        (1, 970, 1),  # the seeds' e2-micro, 1 GB: "0-1 agents"
        (2, 7960, 8),  # e2-standard-2, 8 GB: memory for 16, CPU for 8
        (4, 15990, 16),  # e2-standard-4, 16 GB
        (16, 4096, 7),  # memory bound: (4096 - 512) // 450
        (1, 512, 0),  # nothing left over the reserve
        (0, 100_000, 0),
        (8, 0, 0),
    ],
)
def test_sessions_that_fit_take_the_tighter_of_memory_and_cpu(cpus: int, mem_mb: int, fit: int) -> None:
    assert sizing.sessions_that_fit(cpus, mem_mb) == fit


def test_more_cores_or_memory_never_fit_fewer_sessions() -> None:
    sizes = [(cpus, mem) for cpus in range(0, 17) for mem in range(0, 33_000, 250)]
    for cpus, mem in sizes:
        fit = sizing.sessions_that_fit(cpus, mem)
        assert fit >= 0
        assert sizing.sessions_that_fit(cpus + 1, mem) >= fit
        assert sizing.sessions_that_fit(cpus, mem + 250) >= fit


def test_check_passes_exactly_what_fits_and_says_so_in_one_line_otherwise() -> None:
    fit = sizing.sessions_that_fit(2, 4096)
    assert fit == 7
    assert sizing.check("local", 2, 4096, fit) is None
    assert sizing.check("local", 2, 4096, 1) is None
    line = sizing.check("agent@build-1", 2, 4096, 12)
    assert line is not None and "\n" not in line
    need_mb = 12 * sizing.MB_PER_SESSION + sizing.RESERVE_MB
    need_cpus = 12 * sizing.CPU_PER_SESSION
    assert line == (
        f"agent@build-1: 12 sessions need ~{need_mb} MB and {need_cpus:g} CPUs; it has 4096 MB and 2 CPUs: "
        "7 fit (--force to start anyway)"
    )
    assert sizing.check("tiny", 1, 600, 1) == (
        f"tiny: 1 sessions need ~{sizing.MB_PER_SESSION + sizing.RESERVE_MB} MB and "
        f"{sizing.CPU_PER_SESSION:g} CPUs; it has 600 MB and 1 CPUs: 0 fit (--force to start anyway)"
    )


def test_the_figures_stay_within_what_was_measured_and_the_seeds_rule() -> None:
    """A long working session peaked at ~440 MB (bench/bench_session.py) and the seeds say
    300-500 MB: a figure below the measured peak would let a host run out of memory."""
    assert 440 <= sizing.MB_PER_SESSION <= 500
    assert 0 < sizing.CPU_PER_SESSION <= 0.5
    assert sizing.RESERVE_MB >= 80 + 256  # the hub after the benchmark, and the system


def test_the_host_check_reports_this_machines_cores_memory_and_tools(tmp_path: Path) -> None:
    facts = Host(Target(), tmp_path).probe(
        "check", "--project", str(tmp_path), "--tmux", "t", "--claude", "sh"
    )
    assert facts["cpus"] == len(os.sched_getaffinity(0))
    assert facts["mem_kb"] // 1024 == mem_total_mb()
    assert facts["claude"] == shutil.which("sh")
    assert facts["project"] is False and facts["running"] is False


def test_the_host_check_reads_and_records_claude_codes_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Claude Code would ask, read from its ~/.claude.json; --trust records the yes."""
    home, project = tmp_path / "home", tmp_path / "work" / "project"
    home.mkdir()
    project.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + "k" * 20 + "TAIL5678901234567890")
    host = Host(Target(), project)
    check = ["check", "--project", str(project), "--tmux", "t"]
    facts = host.probe(*check)
    assert (facts["trusted"], facts["onboarded"], facts["api_key"], facts["logged_in"]) == (
        False,
        False,
        "unanswered",
        True,
    )
    assert not (home / ".claude.json").exists()  # asking records nothing
    host.probe(*check, "--trust", "--headless")  # claude -p never asks about the key
    config = json.loads((home / ".claude.json").read_text())
    assert config["projects"][str(project)]["hasTrustDialogAccepted"] is True
    assert "customApiKeyResponses" not in config
    facts = host.probe(*check, "--trust")
    assert (facts["trusted"], facts["api_key"]) == (True, "approved")
    config = json.loads((home / ".claude.json").read_text())
    assert config["customApiKeyResponses"]["approved"] == ["TAIL5678901234567890"]
    config = {
        "hasCompletedOnboarding": True,
        "projects": {str(tmp_path / "work"): {"hasTrustDialogAccepted": True}},
    }
    config["customApiKeyResponses"] = {"approved": [], "rejected": ["TAIL5678901234567890"]}
    (home / ".claude.json").write_text(json.dumps(config))
    facts = host.probe(*check)  # a trusted parent folder counts
    assert (facts["trusted"], facts["onboarded"], facts["api_key"]) == (True, True, "rejected")


def test_a_project_inside_a_repository_is_trusted_by_the_repositorys_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claude Code asks trust for the top of the git work tree (seen with 2.1.329: the README's
    demo/ inside this checkout), so that is the folder checked and recorded."""
    home, repo = tmp_path / "home", tmp_path / "checkout"
    project = repo / "demo"
    home.mkdir()
    project.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    (home / ".claude.json").write_text(
        json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}})
    )
    host = Host(Target(), project)
    facts = host.probe("check", "--project", str(project), "--tmux", "t")
    assert (facts["trusted"], facts["trust_root"]) == (False, str(repo))  # the demo's own entry counts not
    host.probe("check", "--project", str(project), "--tmux", "t", "--trust", "--headless")
    config = json.loads((home / ".claude.json").read_text())
    assert config["projects"][str(repo)]["hasTrustDialogAccepted"] is True


def test_reaping_a_session_kills_what_outlives_the_grace(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(["setsid", "sh", "-c", "trap '' HUP TERM; sleep 60 & wait"])
    try:
        time.sleep(0.3)
        members = [
            int(pid)
            for pid in subprocess.run(
                ["pgrep", "-s", str(stubborn.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
        ]
        assert len(members) == 2, members  # the shell and its sleep
        answer = Host(Target(), tmp_path).probe("reap", "--sessions", str(stubborn.pid), "--grace", "0.5")
        assert sorted(answer["killed"]) == sorted(members)
        stubborn.wait(5)
        assert not [pid for pid in members if alive(pid)]
    finally:
        stubborn.kill()
        stubborn.wait()
