"""What Claude Code's telemetry costs a session: `claude -p` with the OTLP exporter on and off.

The real Claude Code binary (tools/fetch-claude-code.sh) runs `claude -p "say hi" --output-format
json` in a project rendered from the template (its hooks, its MCP server and its key in
`.claude/settings.local.json`, all pointed at a real hub), with a fresh HOME per run (no login;
the project trusted), against the scripted model of tests/fakemodel.py served on 127.0.0.1 by
this process, so the model answers at once and what is left is the client's own time. With
telemetry, the run starts as the launcher starts it, `--settings .claude/telemetry.json`: the
exporter on, OTLP logs and metrics over HTTP/JSON to the hub's `/otlp`, the key's header from
the project's `otelHeadersHelper` (a python3 process at start); without, the same command
without that file.

Runs are paired and alternate (with first in odd pairs), so a drift of the shared machine moves
both sides alike. Per run: the wall time until the process exits (what a user or a script waits
for: Claude Code flushes its exporters when it shuts down, and that wait is in it), the time
until its JSON answer was on stdout, and its peak RSS (from wait4). The table gives the medians
and the ratio with / without, and that the hub received the telemetry runs' requests.

This is reported, not a product target: the issue asks for the overhead to be measured. The
one gate is loose, to catch a broken exporter (a session waiting on an endpoint that never
answers, a timeout at exit): the median run with telemetry must take at most twice the median
run without.

    python bench/bench_telemetry.py           # 8 pairs
    python bench/bench_telemetry.py --ci      # 3 pairs, under a minute

Prints one table (metric, value, target, ok/MISSED); exits 1 if the gate is missed or a run
failed. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hubprocess import BenchError, Hub

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the scripted model the tests use

from tests.conftest import render  # noqa: E402 - the repository's root goes on the path first
from tests.fakemodel import End, FakeModel, Turn  # noqa: E402
from tests.test_api import serving  # noqa: E402

WALL_BOUND = 2.0  # median wall time with telemetry / without: a broken exporter, not a target
RUN_TIMEOUT = 120.0  # seconds for one `claude -p`
PROMPT = "say hi"
ANSWER = "hi"


def log(message: str) -> None:
    print(f"[bench_telemetry {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def claude_binary() -> Path:
    done = subprocess.run(
        ["bash", str(REPO / "tools/fetch-claude-code.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"no Claude Code binary: {done.stderr.strip()}")
    return Path(done.stdout.strip())


TELEMETRY_ARGS = ("--settings", ".claude/telemetry.json")  # as scaffold team starts a session


@dataclass
class Run:
    wall: float  # seconds until the process exited
    answered: float  # seconds until its stdout had the JSON answer
    peak_mb: float
    requests: int  # model requests it made


@dataclass
class Numbers:
    runs: dict[str, list[Run]] = field(default_factory=lambda: {"without": [], "with": []})
    counted: int | None = None  # requests the hub counted from the telemetry
    errors: list[str] = field(default_factory=list)


def one_run(
    claude: Path,
    project: Path,
    work: Path,
    number: int,
    env: dict[str, str],
    args: tuple[str, ...],
    model: FakeModel,
) -> Run:
    """`claude -p ARGS` in the project with a fresh HOME; its times, peak RSS and requests."""
    run_dir = work / f"run-{number}"
    home = run_dir / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude.json").write_text(
        json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}), encoding="utf-8"
    )
    before = len(model.requests)
    began = time.perf_counter()
    proc = subprocess.Popen(
        [str(claude), "-p", PROMPT, "--output-format", "json", *args],
        cwd=project,
        env={**env, "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    answered: list[float] = []
    out: list[bytes] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            if not answered and b"}" in chunk:
                answered.append(time.perf_counter() - began)
            out.append(chunk)

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    killer = threading.Timer(RUN_TIMEOUT, proc.kill)
    killer.start()
    try:
        # wait4 rather than Popen.wait: it also gives the process's peak RSS
        _, status, rusage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    stdout = b"".join(out).decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"claude -p exited {proc.returncode}: {stderr.strip()[-500:] or stdout[-500:]}")
    try:
        result = json.loads(stdout)
    except ValueError:
        raise BenchError(f"claude -p printed no JSON: {stdout[-300:]!r}") from None
    if ANSWER not in str(result.get("result", "")):
        raise BenchError(f"claude -p answered {str(result)[:300]}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return Run(
        wall, answered[0] if answered else wall, rusage.ru_maxrss / 1024.0, len(model.requests) - before
    )


def usage_requests(hub: Hub) -> int | None:
    """Requests the hub has counted from the telemetry, or None if it could not say."""
    try:
        status, answer = hub.call("GET", "/v1/usage?by=model")
    except OSError:
        return None
    return int(answer["total"]["requests"]) if status == 200 else None


def measure(pairs: int, work: Path, numbers: Numbers) -> None:
    claude = claude_binary()
    admin, agent = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    digest = hashlib.sha256(agent.encode()).hexdigest()
    hub = Hub(
        "hub", work, admin, extra_config=f'[[keys]]\nname = "session"\nrole = "agent"\nsha256 = "{digest}"\n'
    )

    def say_hi(turn: Turn) -> End:
        return End(ANSWER)

    model = FakeModel(say_hi, max_steps=100 * pairs + 100)
    try:
        with serving(model.app) as api:
            base = {
                "PATH": os.environ["PATH"],
                "ANTHROPIC_API_KEY": "not-used",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "ANTHROPIC_BASE_URL": api,
            }
            project = render(work / "project", hub_url=f"http://127.0.0.1:{hub.port}").dest
            (project / ".claude" / "settings.local.json").write_text(
                json.dumps({"env": {"VPS_API_KEY": agent}}), encoding="utf-8"
            )
            args: dict[str, tuple[str, ...]] = {"without": (), "with": TELEMETRY_ARGS}
            log("warm-up run (untimed): the binary into the page cache")
            one_run(claude, project, work, 0, base, (), model)
            before = usage_requests(hub) or 0
            log(f"{pairs} pairs of runs, with and without telemetry, alternating")
            for number in range(pairs):
                for mode in ("with", "without") if number % 2 == 0 else ("without", "with"):
                    number_of_run = 2 * number + (mode == "with") + 1
                    run = one_run(claude, project, work, number_of_run, base, args[mode], model)
                    numbers.runs[mode].append(run)
                log(
                    f"  pair {number + 1}: {numbers.runs['without'][-1].wall:.2f} s without, "
                    f"{numbers.runs['with'][-1].wall:.2f} s with telemetry"
                )
            after = usage_requests(hub)
            numbers.counted = None if after is None else after - before
    finally:
        hub.stop()


Row = tuple[str, str, str, bool | None]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def rows(n: Numbers) -> list[Row]:
    without, with_ = n.runs["without"], n.runs["with"]
    walls = {mode: median([run.wall for run in runs]) for mode, runs in n.runs.items()}
    table: list[Row] = [
        (
            f"claude -p wall time without telemetry (median of {len(without)})",
            f"{walls['without']:.2f} s",
            "",
            None,
        ),
        ("claude -p wall time with telemetry (median)", f"{walls['with']:.2f} s", "", None),
    ]
    ratio = walls["with"] / walls["without"] if walls["without"] else float("inf")
    table.append(
        ("wall time with / without (medians)", f"{ratio:.2f}", f"<= {WALL_BOUND:.1f}", ratio <= WALL_BOUND)
    )
    pairs = [w.wall / wo.wall for w, wo in zip(with_, without, strict=False) if wo.wall]
    table.append(("  the pairs' ratios, median", f"{median(pairs):.2f}", "", None))
    table.append(
        (
            "time to the JSON answer without / with (medians)",
            f"{median([r.answered for r in without]):.2f} / {median([r.answered for r in with_]):.2f} s",
            "",
            None,
        )
    )
    flush = median([r.wall - r.answered for r in with_]), median([r.wall - r.answered for r in without])
    table.append(
        ("answer -> exit with / without (the shutdown flush)", f"{flush[0]:.2f} / {flush[1]:.2f} s", "", None)
    )
    table.append(
        (
            "peak RSS without / with (medians)",
            f"{median([r.peak_mb for r in without]):.0f} / {median([r.peak_mb for r in with_]):.0f} MB",
            "",
            None,
        )
    )
    sent = sum(run.requests for run in with_)
    counted = "no /v1/usage" if n.counted is None else str(n.counted)
    # every request of a telemetry run reaches the hub before the run ends (the shutdown flush)
    arrived = None if n.counted is None else n.counted == sent
    table.append(
        ("model requests of the telemetry runs / counted by the hub", f"{sent} / {counted}", "equal", arrived)
    )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="3 pairs of runs")
    parser.add_argument("--pairs", type=int, help="pairs of runs (default 8; --ci 3)")
    args = parser.parse_args()
    pairs = args.pairs or (3 if args.ci else 8)
    if pairs < 1:
        parser.error("--pairs must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    numbers = Numbers()
    started = time.perf_counter()
    try:
        measure(pairs, work, numbers)
    except (BenchError, OSError) as error:
        print(f"bench_telemetry: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = rows(numbers)
    width = max(len(row[0]) for row in table)
    print(f"{'metric':<{width}}  {'value':>20}  {'target':<8}  result")
    for metric, value, target, ok in table:
        verdict = "" if ok is None else "ok" if ok else "MISSED"
        print(f"{metric:<{width}}  {value:>20}  {target:<8}  {verdict}")
    print(f"({'--ci' if args.ci else 'full'} run, {pairs} pairs, {time.perf_counter() - started:.0f} s)")
    return 1 if any(ok is False for *_, ok in table) else 0


if __name__ == "__main__":
    sys.exit(main())
