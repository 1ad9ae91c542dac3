"""bench/bench_otlp.py and bench/bench_telemetry.py end to end at their smallest: every row printed,
every correctness row holding.

The sizes are the smallest the benches take (a real hub, 2 ingestion runs of 10 exports, one claim
round each way; one pair of `claude -p` runs), so each takes well under a minute. The speed
targets are judged in the benches' own full runs, not in a test sharing the machine with others:
exit 1 with only speed rows missed is accepted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # seconds: for a bench that hangs anyway
HEADER = ["metric", "value", "target", "result"]

OTLP_SMALLEST = (
    "--ci",
    "--ingest-exports",
    "10",
    "--claim-rounds",
    "1",
    "--claims",
    "200",
    "--quiet-wait",
    "0",
)
OTLP_ROWS = (
    "OTLP ingestion, points/s",
    "hub CPU per 1,000 points",
    "claim p99 without ingestion",
    "claim p99 with ingestion at",
    "claim p99 with / without ingestion",
    "a re-sent export adds nothing: requests, metric tokens before -> after",
    "/v1/usage total requests / log records accepted",
    "/v1/usage metrics tokens / token points sent",
    "records on the 4 workers' tasks / their sessions' records",
    "coordinator line / the other sessions' records",
    "request errors",
)
OTLP_SPEED = ("OTLP ingestion, points/s", "claim p99 with")

TELEMETRY_ROWS = (
    "claude -p wall time without telemetry (median of 1)",
    "claude -p wall time with telemetry (median)",
    "wall time with / without (medians)",
    "answer -> exit with / without (the shutdown flush)",
    "peak RSS without / with (medians)",
    "model requests of the telemetry runs / counted by the hub",
)
TELEMETRY_SPEED = ("wall time with / without",)


def run_bench(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    # its own process group: a bench that hangs is stopped with the hubs and sessions it started
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        stdout, stderr = bench.communicate(timeout=TIMEOUT)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.communicate()
    return bench.returncode, stdout.splitlines(), f"stdout:\n{stdout}\nstderr (end):\n{stderr[-3000:]}"


def check_table(
    code: int, lines: list[str], report: str, rows: tuple[str, ...], speed: tuple[str, ...]
) -> None:
    assert lines and lines[0].split() == HEADER, report
    for row in rows:
        assert any(line.startswith(row) for line in lines), f"no row {row!r}\n{report}"
    missed = [line for line in lines if line.endswith("MISSED") and not line.startswith(speed)]
    assert not missed, report
    assert "problem:" not in "\n".join(lines), report
    assert code == (1 if any(line.endswith("MISSED") for line in lines) else 0), report


def test_bench_otlp_smallest_run_has_every_row_and_every_correctness_row_holds() -> None:
    check_table(*run_bench("bench_otlp.py", *OTLP_SMALLEST), OTLP_ROWS, OTLP_SPEED)


def test_bench_otlp_refuses_sizes_it_cannot_measure() -> None:
    code, _, report = run_bench("bench_otlp.py", "--ci", "--claims", "5")
    assert code == 2 and "--claims 100" in report, report


@pytest.mark.claude
def test_bench_telemetry_smallest_run_has_every_row(claude_bin: Path) -> None:
    check_table(*run_bench("bench_telemetry.py", "--pairs", "1"), TELEMETRY_ROWS, TELEMETRY_SPEED)
