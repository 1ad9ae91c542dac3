"""How fast the hub takes Claude Code's telemetry (OTLP/HTTP JSON), and what it costs the claims.

A real hub (`python -m scaffold hub serve`, bench/hubprocess.py) on 127.0.0.1 gets the exports a
fleet of Claude Code sessions would send, in the shape Claude Code 2.1.329 sends them (captured in
issue 14): `POST /otlp/v1/logs` with `claude_code.api_request` records (session.id,
event.sequence, event.timestamp, model, token counts, cost_usd_micros) and `POST /otlp/v1/metrics`
with `claude_code.cost.usage` / `claude_code.token.usage` delta sums, with an agent key. Each
export holds 20 records (or points) of one session, the size Claude Code sends (its export every
5 s held 19 records, 2 of them api_request), every sequence and every metric window unique, so
every one is stored. Some sessions are registered workers holding a claimed task (so
attribution has a task to find), the others are no worker (the coordinator's line).

Measured, in one run, because on a shared 2-core machine only numbers taken close together hold:

- ingestion: exports sent flat out by a few concurrent clients (an asyncio process of their own,
  bodies built before the clock starts), data points accepted per second end to end over HTTP
  (log records + metric points answered 200): target >= 2,000/s, the median of the runs; and the
  hub's CPU per 1,000 points;
- claim latency with and without ingestion, in alternating rounds: 8 clients claiming from a
  queue (bench/loadclient.py, as bench_hub measures claims), alone, then with exports arriving
  at the target rate of 2,000 points/s (paced: the issue's "with the hub's other work
  unaffected" at the rate it asks for, not a saturated hub). Gated: the median round's p99 with
  ingestion within the hub's claim target (bench_hub's P99_MS); its ratio to the median round's
  p99 without is printed beside it (see P99_RATIO_SPREAD for why it is no gate);
- a re-sent export adds nothing: GET /v1/usage before and after re-sending a logs and a
  metrics export already taken;
- every record is counted once and where it belongs: /v1/usage's total requests equal the log
  records accepted, the metrics' tokens equal the token points sent, the workers' tasks and the
  coordinator's line hold their sessions' records.

    python bench/bench_otlp.py          # 3 ingestion runs of 1,500 exports, 8 claim rounds per mode
    python bench/bench_otlp.py --ci     # smaller: under a minute
    python bench/bench_otlp.py --records 200 --ingest-exports 150   # exports of 200 records

Prints one table (metric, value, target, ok/MISSED); exits 1 if a target is missed or something
misbehaved. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hubmeasure import others_cpu, percentile
from hubprocess import BenchError, Hub, load
from hubtable import P99_MS
from loadclient import Connection, Job, ProtocolError

RECORDS = 20  # per export, by default: records of a logs export, points of a metrics export
INGEST_TARGET = 2_000.0  # data points per second (issue 14)
PACED_RATE = INGEST_TARGET  # points per second while the claims are timed
# The issue's gate: "the hub's other work unaffected (claim p99 still within its target during
# ingestion)": the median round's p99 with ingestion within bench_hub's claim target, P99_MS.
# The hub serves everything from one event loop (and one GIL), and 2,000 points/s is ~15 % of it
# (70-110 ms of CPU per 1,000 points), so claims do wait behind some of it: p50 ~3 -> ~3.5 ms.
# The p99 with / without ingestion is printed, not gated. A round's p99 is its 5th-slowest claim
# of 500, and a shared machine's burst decides it: the same code read these ratios in --ci runs.
# The slow claims of a round with ingestion wait behind 25-40 ms of the loop's own work (the
# claims of 8 clients flat out, and exports): a probe of the hub's loop found its thread on the
# CPU through each such wait, in JSON and SQLite, with no GC pause, lock or fsync in it.
P99_RATIO_SPREAD = "0.49-3.96"
INPUT, OUTPUT, CACHE_READ, CACHE_CREATION, COST_MICROS = 100, 20, 1_000, 50, 1_234
TOKENS = INPUT + OUTPUT + CACHE_READ + CACHE_CREATION
MODEL = "claude-opus-5-5"
USER = "89fb62eeeb44c33f9efb64bc479202b4e89675c23aa8e2aacc1e3559d976cfdd"


@dataclass(frozen=True)
class Sizes:
    sessions: int = 6  # fake Claude Code sessions exporting
    worker_sessions: int = 4  # of those, registered workers holding a task
    records: int = RECORDS  # per export
    clients: int = 4  # concurrent exporters in the flat-out runs
    ingest_runs: int = 3
    ingest_exports: int = 1_500  # per run, logs and metrics alternating
    claim_rounds: int = 8  # per mode
    claims: int = 1_000  # per round, 8 clients
    quiet_wait: float = 60.0  # seconds in all, waiting for other processes to go quiet


CI_SIZES = Sizes(ingest_runs=2, ingest_exports=600, claim_rounds=6, claims=500, quiet_wait=10.0)


def log(message: str) -> None:
    print(f"[bench_otlp {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the exports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """Which export of a job: logs or metrics, whose session, its first sequence number."""

    kind: str  # "logs" or "metrics"
    session: str
    first_seq: int
    records: int  # log records, or metric points (a multiple of 5: a cost and 4 token points a window)


def plan(sessions: list[str], count: int, first_seq: int, records: int) -> list[Export]:
    """`count` exports, logs and metrics alternating, the sessions in turn; sequence numbers from
    `first_seq` on, each session's unique across the exports (the next plan starts after them)."""
    exports = []
    for number in range(count):
        pair = number // 2
        block = first_seq + (pair // len(sessions)) * records
        kind = "logs" if number % 2 == 0 else "metrics"
        exports.append(Export(kind, sessions[pair % len(sessions)], block, records))
    return exports


def next_seq(sessions: list[str], count: int, first_seq: int, records: int) -> int:
    pairs = (count + 1) // 2
    return first_seq + ((pairs + len(sessions) - 1) // len(sessions)) * records


def attr(key: str, value: str | int | float | bool) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": value}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def common(session: str) -> list[dict[str, Any]]:
    return [
        attr("user.id", USER),
        attr("session.id", session),
        attr("anthropic.provider", "firstParty"),
        attr("anthropic.custom_base_url", True),
        attr("terminal.type", "non-interactive"),
    ]


def resource() -> dict[str, Any]:
    return {
        "attributes": [
            attr("host.arch", "amd64"),
            attr("os.type", "linux"),
            attr("service.name", "claude-code"),
            attr("service.version", "2.1.329"),
        ],
        "droppedAttributesCount": 0,
    }


def iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


def logs_body(export: Export, base_ns: int) -> dict[str, Any]:
    """`claude_code.api_request` records, as Claude Code 2.1.329 sends them. A record's time
    is `base_ns` plus its sequence in microseconds: after the workers' claims, before now."""
    records = []
    for seq in range(export.first_seq, export.first_seq + export.records):
        ns = base_ns + seq * 1_000
        records.append(
            {
                "timeUnixNano": str(ns),
                "observedTimeUnixNano": str(ns),
                "body": {"stringValue": "claude_code.api_request"},
                "attributes": [
                    *common(export.session),
                    attr("event.name", "api_request"),
                    attr("event.timestamp", iso(ns)),
                    attr("event.sequence", seq),
                    attr("prompt.id", f"prompt-{seq // 10}"),
                    attr("model", MODEL),
                    attr("input_tokens", INPUT),
                    attr("output_tokens", OUTPUT),
                    attr("cache_read_tokens", CACHE_READ),
                    attr("cache_creation_tokens", CACHE_CREATION),
                    attr("cache_creation_5m_tokens", CACHE_CREATION),
                    attr("cache_creation_1h_tokens", 0),
                    attr("cost_usd", COST_MICROS / 1e6),
                    attr("cost_usd_micros", COST_MICROS),
                    attr("duration_ms", 52),
                    attr("ttft_ms", 14),
                    attr("speed", "normal"),
                    attr("query_source", "sdk"),
                    attr("effort", "medium"),
                ],
                "droppedAttributesCount": 0,
            }
        )
    scope = {"name": "com.anthropic.claude_code.events", "version": "2.1.329"}
    return {
        "resourceLogs": [{"resource": resource(), "scopeLogs": [{"scope": scope, "logRecords": records}]}]
    }


def metrics_body(export: Export, base_ns: int) -> dict[str, Any]:
    """Delta points: windows of one session, each a cost point and four token points."""
    windows = export.records // 5
    cost, tokens = [], []
    for window in range(export.first_seq, export.first_seq + windows):
        start, end = base_ns + window * 1_000, base_ns + window * 1_000 + 1_000
        labels = [*common(export.session), attr("model", MODEL), attr("query_source", "main")]
        times = {"startTimeUnixNano": str(start), "timeUnixNano": str(end)}
        cost.append({"attributes": labels, **times, "asDouble": COST_MICROS / 1e6})
        for kind, value in (("input", INPUT), ("output", OUTPUT), ("cacheRead", CACHE_READ)):
            tokens.append({"attributes": [*labels, attr("type", kind)], **times, "asDouble": value})
        tokens.append(
            {"attributes": [*labels, attr("type", "cacheCreation")], **times, "asDouble": CACHE_CREATION}
        )

    def delta_sum(name: str, unit: str, points: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": name,
            "unit": unit,
            "sum": {"aggregationTemporality": 1, "isMonotonic": True, "dataPoints": points},
        }

    metrics = [
        delta_sum("claude_code.cost.usage", "USD", cost),
        delta_sum("claude_code.token.usage", "tokens", tokens),
    ]
    scope = {"name": "com.anthropic.claude_code", "version": "2.1.329"}
    return {
        "resourceMetrics": [{"resource": resource(), "scopeMetrics": [{"scope": scope, "metrics": metrics}]}]
    }


def body(export: Export, base_ns: int) -> bytes:
    make = logs_body if export.kind == "logs" else metrics_body
    return json.dumps(make(export, base_ns), separators=(",", ":")).encode()


# -- the exporting client (its own process) -----------------------------------------------------


@dataclass(frozen=True)
class IngestJob:
    port: int
    key: str
    sessions: list[str]
    first_seq: int
    exports: int
    records: int
    base_ns: int
    clients: int = 4
    rate: float = 0.0  # points per second; 0: flat out
    timeout: float = 120.0


@dataclass
class IngestResult:
    sent: int = 0
    points: int = 0  # of the exports answered 200
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    taken: list[int] = field(default_factory=list)  # the exports answered 200, by number


async def ingest(job: IngestJob, stop: threading.Event) -> IngestResult:
    """Send the job's exports from `clients` keep-alive connections: flat out, or paced at `rate`
    points a second, until all are sent or `stop` is set (by the orchestrator)."""
    result = IngestResult()
    exports = plan(job.sessions, job.exports, job.first_seq, job.records)

    def request(export: Export) -> bytes:
        payload = body(export, job.base_ns)
        head = (
            f"POST /otlp/v1/{export.kind} HTTP/1.1\r\nHost: 127.0.0.1:{job.port}\r\n"
            f"Authorization: Bearer {job.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    # Flat out, the bodies are built before the clock starts (the client shares the machine's two
    # cores with the hub); paced, one at a time as they fall due (a few ms, ten times a second).
    built = [request(export) for export in exports] if not job.rate else []
    conns = [await Connection.open("127.0.0.1", job.port) for _ in range(job.clients)]
    emit({"event": "ready"})
    next_export = 0
    began = time.perf_counter()
    cpu = time.process_time()

    async def client(conn: Connection) -> None:
        nonlocal next_export
        while next_export < len(exports) and not stop.is_set():
            number = next_export
            next_export += 1
            if job.rate:
                due = began + number * job.records / job.rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if stop.is_set():
                    return
            raw = built[number] if built else request(exports[number])
            sent = time.perf_counter()
            status, answer = await conn.request(raw)
            result.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
            result.sent += 1
            result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
            if status == 200:
                result.points += job.records
                result.taken.append(number)
            elif len(result.errors) < 5:
                result.errors.append(
                    f"{exports[number].kind}: HTTP {status}: {answer[:300].decode(errors='replace')}"
                )

    try:
        async with asyncio.timeout(job.timeout):
            outcomes = await asyncio.gather(*(client(conn) for conn in conns), return_exceptions=True)
    except TimeoutError:
        outcomes = [TimeoutError(f"the exports did not finish within {job.timeout} s")]
    result.elapsed = time.perf_counter() - began
    result.cpu_seconds = time.process_time() - cpu
    for outcome in outcomes:
        if isinstance(outcome, (OSError, ProtocolError, asyncio.IncompleteReadError, TimeoutError)):
            result.errors.append(repr(outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
    for conn in conns:
        conn.close()
    return result


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def client_main() -> int:
    job = IngestJob(**json.loads(sys.stdin.readline()))
    stop = threading.Event()

    def watch_stdin() -> None:  # a line (or the end of stdin) from the orchestrator stops it
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    emit(asdict(asyncio.run(ingest(job, stop))))
    return 0


class Ingestion:
    """An exporting client in its own process: started, ready (bodies built), stopped, its result."""

    def __init__(self, job: IngestJob) -> None:
        self.job = job
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.watchdog = threading.Timer(job.timeout + 60.0, self.proc.kill)
        self.watchdog.start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(asdict(job)) + "\n")
        self.proc.stdin.flush()
        ready = self.proc.stdout.readline()
        if not ready:
            self.finish()
            raise BenchError(f"the exporting client failed (exit {self.proc.returncode})")

    def finish(self, stop: bool = False) -> IngestResult:
        """Its result once all its exports are sent; with `stop`, once those in flight are."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            if stop:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        finally:
            self.watchdog.cancel()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if not line:
            raise BenchError(f"the exporting client failed (exit {self.proc.returncode})")
        return IngestResult(**json.loads(line))


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Numbers:
    measured_again: bool = False  # a claim gate missed, and the rounds ran once more
    ingest_rates: list[float] = field(default_factory=list)  # points per second, per flat-out run
    hub_ms_per_1000: list[float] = field(default_factory=list)  # hub CPU ms per 1,000 points
    export_ms: list[float] = field(default_factory=list)  # each flat-out export's latency
    client_cpu: list[float] = field(default_factory=list)  # the exporting client's cores
    paced_rates: list[float] = field(default_factory=list)  # points/s during the timed claims
    p99: dict[str, list[float]] = field(default_factory=lambda: {"without": [], "with": []})
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"without": [], "with": []})
    resent: tuple[int, int, float, float] | None = None  # requests before/after, metric tokens too
    records: int = 0  # log records accepted
    metric_tokens: int = 0  # tokens in the token points accepted
    per_session: dict[str, int] = field(default_factory=dict)  # records accepted, per session
    usage: dict[str, Any] = field(default_factory=dict)
    by_task: dict[str, Any] = field(default_factory=dict)
    task_of: dict[str, int] = field(default_factory=dict)  # worker session -> its claimed task
    others: list[float] = field(default_factory=list)
    waited: float = 0.0
    errors: list[str] = field(default_factory=list)


def wait_for_quiet(numbers: Numbers, budget: float, threshold: float = 0.3) -> None:
    """Before a run, wait (bounded in all by `budget` seconds) for others to leave the cores."""
    start = time.monotonic()
    used = others_cpu()
    while used >= threshold and numbers.waited + time.monotonic() - start < budget:
        used = others_cpu()
    numbers.waited += time.monotonic() - start
    numbers.others.append(used)


def account(numbers: Numbers, job: IngestJob, result: IngestResult, what: str) -> None:
    """Keep what the hub accepted: log records per session and token points."""
    numbers.errors += [f"{what}: {error}" for error in result.errors]
    exports = plan(job.sessions, job.exports, job.first_seq, job.records)
    for export in (exports[number] for number in result.taken):
        if export.kind == "logs":
            numbers.records += export.records
            numbers.per_session[export.session] = numbers.per_session.get(export.session, 0) + export.records
        else:
            numbers.metric_tokens += (export.records // 5) * TOKENS


def usage(hub: Hub, by: str) -> dict[str, Any]:
    status, answer = hub.call("GET", f"/v1/usage?by={by}")
    if status != 200:
        raise BenchError(f"GET /v1/usage?by={by}: HTTP {status} {answer}")
    return dict(answer)


def post(hub: Hub, agent_key: str, export: Export, base_ns: int) -> int:
    """One export sent again, with the agent key: its HTTP status."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {agent_key}", "Content-Type": "application/json"}
        conn.request("POST", f"/otlp/v1/{export.kind}", body=body(export, base_ns), headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def measure(sizes: Sizes, work: Path, numbers: Numbers) -> None:
    admin, agent = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    digest = hashlib.sha256(agent.encode()).hexdigest()
    agent_config = f'[[keys]]\nname = "exporter"\nrole = "agent"\nsha256 = "{digest}"\n'
    hub = Hub("hub", work, admin, extra_config=agent_config)
    try:
        sessions = [f"{number:08d}-6723-4482-9896-5d7fd21b101e" for number in range(sizes.sessions)]
        # The worker sessions claim the first tasks; the claim rounds take the rest.
        hub.create_tasks(sizes.worker_sessions, 1)
        for session in sessions[: sizes.worker_sessions]:
            status, worker = hub.call("POST", "/v1/workers", {"session_id": session, "role": "bench"})
            if status != 201:
                raise BenchError(f"register worker: HTTP {status} {worker}")
            status, task = hub.call("POST", "/v1/tasks/claim", {"worker_id": worker["id"]})
            if status != 200:
                raise BenchError(f"claim for session {session}: HTTP {status} {task}")
            numbers.task_of[session] = int(task["id"])
        hub.register_workers(8)
        rounds_claims = 2 * sizes.claim_rounds * sizes.claims
        hub.create_tasks(rounds_claims + 500, 1 + sizes.worker_sessions)
        base_ns = time.time_ns()  # records are timed from here on: after the claims above
        seq = 0

        def job(exports: int, **extra: Any) -> IngestJob:
            nonlocal seq
            made = IngestJob(hub.port, agent, sessions, seq, exports, sizes.records, base_ns, **extra)
            seq = next_seq(sessions, exports, seq, sizes.records)
            return made

        log("warm-up (untimed): 20 exports, 500 claims")
        warm = job(20, clients=sizes.clients)
        account(numbers, warm, Ingestion(warm).finish(), "warm-up")
        load(hub, Job(0, "", workers=tuple(hub.workers), max_requests=500, duration=60.0))
        first = None
        for number in range(sizes.ingest_runs):
            wait_for_quiet(numbers, sizes.quiet_wait)
            flat = job(sizes.ingest_exports, clients=sizes.clients)
            first = first or flat
            exporter = Ingestion(flat)
            cpu = hub.cpu_seconds()
            result = exporter.finish()
            hub_cpu = hub.cpu_seconds() - cpu
            account(numbers, flat, result, f"ingestion run {number + 1}")
            rate = result.points / result.elapsed if result.elapsed else 0.0
            numbers.ingest_rates.append(rate)
            numbers.hub_ms_per_1000.append(hub_cpu * 1e6 / result.points if result.points else 0.0)
            numbers.export_ms += result.latencies_ms
            numbers.client_cpu.append(result.cpu_seconds / result.elapsed if result.elapsed else 0.0)
            log(
                f"  ingestion run {number + 1}: {result.points} points in {result.elapsed:.2f} s: "
                f"{rate:,.0f}/s"
            )

        claim_rounds(sizes, hub, numbers, job)
        if not gates_met(numbers):
            # A shared machine's burst lands in some rounds' p99: measure as many rounds again
            # and judge on all of them, as bench_hub does for its stream gate.
            numbers.measured_again = True
            log("  a claim gate missed: as many rounds again, judged on all")
            hub.create_tasks(rounds_claims, 1 + sizes.worker_sessions + rounds_claims + 500)
            claim_rounds(sizes, hub, numbers, job)

        log("re-sending a logs and a metrics export already taken")
        try:
            before = usage(hub, "task")
            assert first is not None
            statuses = [
                post(hub, agent, export, base_ns)
                for export in plan(sessions, 2, first.first_seq, sizes.records)
            ]
            if statuses != [200, 200]:
                numbers.errors.append(f"re-sent exports answered {statuses}")
            after = usage(hub, "task")
        except BenchError as error:  # no usage to read: the rows say "not measured"
            numbers.errors.append(str(error))
            return
        numbers.resent = (
            int(before["total"]["requests"]),
            int(after["total"]["requests"]),
            float(before["metrics"]["tokens"]),
            float(after["metrics"]["tokens"]),
        )
        numbers.usage, numbers.by_task = after, {str(row["key"]): row for row in after["rows"]}
    finally:
        hub.stop()


# -- the table ----------------------------------------------------------------------------------

Row = tuple[str, str, str, bool | None]


def claim_rounds(sizes: Sizes, hub: Hub, numbers: Numbers, job: Callable[..., IngestJob]) -> None:
    """Claim rounds, without and with paced ingestion in turn."""
    log(f"{sizes.claim_rounds} rounds: {sizes.claims} claims (8 clients) without and with ingestion")
    claims = Job(0, "", workers=tuple(hub.workers), max_requests=sizes.claims, duration=60.0)
    for number in range(sizes.claim_rounds):
        for mode in ("without", "with") if number % 2 == 0 else ("with", "without"):
            wait_for_quiet(numbers, sizes.quiet_wait)
            paced_exporter = None
            if mode == "with":
                # enough exports for a minute at the paced rate; it is stopped when the claims end
                paced_exporter = Ingestion(
                    job(int(60 * PACED_RATE / sizes.records), clients=2, rate=PACED_RATE)
                )
                time.sleep(0.3)  # exports are arriving before the first claim
            claimed = load(hub, claims)
            numbers.errors += [f"claims {mode} ingestion: {error}" for error in claimed.errors]
            if paced_exporter is not None:
                paced = paced_exporter.finish(stop=True)
                account(numbers, paced_exporter.job, paced, "paced ingestion")
                numbers.paced_rates.append(paced.points / paced.elapsed if paced.elapsed else 0.0)
            numbers.latencies[mode] += claimed.latencies_ms
            numbers.p99[mode].append(percentile(claimed.latencies_ms, 0.99))
        log(
            f"  round {number + 1}: claim p99 {numbers.p99['without'][-1]:.1f} ms without, "
            f"{numbers.p99['with'][-1]:.1f} ms with ingestion ({numbers.paced_rates[-1]:,.0f} points/s)"
        )


def gates_met(n: Numbers) -> bool:
    return 0 < median(n.p99["with"]) <= P99_MS


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def rows(sizes: Sizes, n: Numbers) -> list[Row]:
    table: list[Row] = []
    rate = median(n.ingest_rates)
    table.append(
        (
            f"OTLP ingestion, points/s ({sizes.clients} clients, {sizes.records} per export; median of "
            f"{len(n.ingest_rates)} runs)",
            f"{rate:,.0f}",
            f">= {INGEST_TARGET:,.0f}",
            rate >= INGEST_TARGET,
        )
    )
    runs = " / ".join(f"{value:,.0f}" for value in n.ingest_rates)
    table.append(("  the runs, points/s", runs, "", None))
    table.append(("hub CPU per 1,000 points (ms, median)", f"{median(n.hub_ms_per_1000):.1f}", "", None))
    table.append(
        (
            "export latency p50 / p99, flat out (ms)",
            f"{percentile(n.export_ms, 0.5):.1f} / {percentile(n.export_ms, 0.99):.1f}",
            "",
            None,
        )
    )
    table.append(("exporting client's CPU (cores, median)", f"{median(n.client_cpu):.2f}", "", None))
    without, with_ = median(n.p99["without"]), median(n.p99["with"])
    table.append(
        (
            f"claim p99 without ingestion (median of {len(n.p99['without'])} rounds, 8 clients)",
            f"{without:.1f} ms",
            "",
            None,
        )
    )
    table.append(
        (
            f"claim p99 with ingestion at {median(n.paced_rates):,.0f} points/s (median of rounds)",
            f"{with_:.1f} ms",
            f"<= {P99_MS:.0f} ms",
            0 < with_ <= P99_MS,
        )
    )
    ratio = with_ / without if without else float("inf")
    table.append(
        (f"claim p99 with / without ingestion (--ci runs read {P99_RATIO_SPREAD})", f"{ratio:.2f}", "", None)
    )
    table.append(
        (
            "claim p50 without / with ingestion (all claims)",
            f"{percentile(n.latencies['without'], 0.5):.1f} / {percentile(n.latencies['with'], 0.5):.1f} ms",
            "",
            None,
        )
    )
    if n.resent is None:
        table.append(
            ("a re-sent export adds nothing (requests, metric tokens)", "not measured", "nothing", False)
        )
    else:
        before, after, tokens_before, tokens_after = n.resent
        table.append(
            (
                "a re-sent export adds nothing: requests, metric tokens before -> after",
                f"{before} -> {after}, {tokens_before:.0f} -> {tokens_after:.0f}",
                "unchanged",
                before == after and tokens_before == tokens_after,
            )
        )
    total = int(n.usage.get("total", {}).get("requests", -1)) if n.usage else -1
    table.append(
        (
            "/v1/usage total requests / log records accepted",
            f"{total} / {n.records}",
            "equal",
            total == n.records,
        )
    )
    tokens = float(n.usage.get("metrics", {}).get("tokens", -1)) if n.usage else -1
    table.append(
        (
            "/v1/usage metrics tokens / token points sent",
            f"{tokens:.0f} / {n.metric_tokens}",
            "equal",
            tokens == n.metric_tokens,
        )
    )
    on_tasks = [
        (int(n.by_task.get(str(task), {}).get("requests", 0)), n.per_session.get(session, 0))
        for session, task in n.task_of.items()
    ]
    attributed = sum(got for got, _ in on_tasks)
    expected = sum(want for _, want in on_tasks)
    table.append(
        (
            f"records on the {len(n.task_of)} workers' tasks / their sessions' records",
            f"{attributed} / {expected}",
            "equal, each",
            bool(on_tasks) and all(got == want for got, want in on_tasks),
        )
    )
    coordinator = int(n.by_task.get("coordinator", {}).get("requests", 0))
    others = sum(count for session, count in n.per_session.items() if session not in n.task_of)
    table.append(
        (
            "coordinator line / the other sessions' records",
            f"{coordinator} / {others}",
            "equal",
            coordinator == others,
        )
    )
    table.append(("request errors", str(len(n.errors)), "0", not n.errors))
    table.append(
        ("claim rounds measured again (a gate missed the first time)", str(n.measured_again), "", None)
    )
    table.append(("seconds waited for a quiet machine", f"{n.waited:.0f}", "", None))
    table.append(("others' cores at the start of a run, max", f"{max(n.others, default=0.0):.2f}", "", None))
    return table


def main() -> int:
    if sys.argv[1:] == ["--client"]:
        return client_main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="small sizes: under a minute")
    parser.add_argument("--ingest-exports", type=int, help="exports per run (default 1,500; --ci 600)")
    parser.add_argument("--claim-rounds", type=int, help="claim rounds per mode (default 8; --ci 6)")
    parser.add_argument("--claims", type=int, help="claims per round (default 1000; --ci 500)")
    parser.add_argument(
        "--records", type=int, help="records (or metric points) per export, a multiple of 5 (default 20)"
    )
    parser.add_argument("--quiet-wait", type=float, help="seconds in all to wait for a quiet machine")
    args = parser.parse_args()
    overrides = {
        "ingest_exports": args.ingest_exports,
        "claim_rounds": args.claim_rounds,
        "claims": args.claims,
        "records": args.records,
        "quiet_wait": args.quiet_wait,
    }
    sizes = CI_SIZES if args.ci else Sizes()
    sizes = replace(sizes, **{name: value for name, value in overrides.items() if value is not None})
    if sizes.ingest_exports < 2 or sizes.claim_rounds < 1 or sizes.claims < 100:
        parser.error("--ingest-exports must be at least 2, --claim-rounds 1, --claims 100")
    if sizes.records < 5 or sizes.records % 5:
        parser.error(f"--records must be a positive multiple of 5, got {sizes.records}")

    work = Path(tempfile.mkdtemp(prefix="bench-otlp-"))
    numbers = Numbers()
    started = time.perf_counter()
    try:
        measure(sizes, work, numbers)
    except (BenchError, OSError) as error:
        print(f"bench_otlp: {error}", file=sys.stderr)
        log_file = work / "hub" / "hub.log"
        if log_file.exists():
            print(log_file.read_text(errors="replace")[-2000:], file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = rows(sizes, numbers)
    width = max(len(row[0]) for row in table)
    print(f"{'metric':<{width}}  {'value':>24}  {'target':<12}  result")
    for metric, value, target, ok in table:
        verdict = "" if ok is None else "ok" if ok else "MISSED"
        print(f"{metric:<{width}}  {value:>24}  {target:<12}  {verdict}")
    mode = "--ci" if args.ci else "full"
    print(f"({mode} run, {time.perf_counter() - started:.0f} s)")
    for problem in numbers.errors[:10]:
        print(f"  problem: {problem}")
    return 1 if any(ok is False for *_, ok in table) else 0


if __name__ == "__main__":
    sys.exit(main())
