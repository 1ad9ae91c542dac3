"""The measuring half of bench_hub.py: the runs, in rounds, and what they leave in `Numbers`.

bench_hub.py's docstring says what is measured and why; hubtable.py turns `Numbers` into rows.
"""

from __future__ import annotations

import contextlib
import resource
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eventstreams import Drained, EventStreams
from hubprocess import BenchError, Hub, busy_cpu_seconds, cross_check, load, run_queue_seconds
from jsonqueue import JsonQueue
from loadclient import Job, Result
from rawclaim import BARE_CLAIM, Rate, raw_database, task_text, time_statement, time_store

import scaffold.hub.store.sqlite as sqlite_store
from scaffold.hub.core.limits import MAX_ID
from scaffold.hub.store.sqlite import SQLiteStore

CLIENTS = (1, 8, 32)
GATE_CLIENTS = (8, 32)  # the HTTP side of the gated ratios: the better of these two
STREAM_MODES = ("none", "idle", "live")
LARGE_VS_SMALL = 0.8  # claims/s at 100k tasks / at 1k: the median rates of the interleaved rounds
IDLE_STREAMS_VS_NONE = 1.10  # claim p99 with 500 idle streams / none: the medians of the rounds' p99s


@dataclass(frozen=True)
class Sizes:
    tasks_small: int = 1_000
    tasks_large: int = 100_000
    json_tasks: int = 10_000
    json_claims: int = 5
    json_large_tasks: int = 100_000
    json_large_claims: int = 3  # a JSON claim at 100k tasks takes seconds
    paired_rounds: int = 15  # raw + HTTP rounds of the gated ratio
    raw_seconds: float = 0.3  # per raw run; three raw runs per paired round
    raw_claims: int = 4_000  # at most, per raw run
    duration: float = 1.5  # seconds per HTTP run, at most
    rounds: int = 3  # of the paired rounds, those that also run 1 client, the store and the ceiling
    ratio_rounds: int = 9
    wake_rounds: int = 20
    longpolls: int = 32
    quiet_wait: float = 120.0  # seconds, in all: waiting for other processes to go quiet
    streams: int = 500
    stream_rounds: int = 16
    stream_claims: int = 1000  # per round and mode
    stream_live: bool = True  # also the streams at the head (slow: each gets every claim's event)


CI_SIZES = Sizes(
    json_claims=3,
    json_large_claims=2,
    paired_rounds=15,
    raw_seconds=0.2,
    raw_claims=3_000,
    duration=1.5,
    rounds=2,
    ratio_rounds=9,
    wake_rounds=10,
    quiet_wait=20.0,
    stream_rounds=16,
    stream_claims=1_000,
    stream_live=False,
)


def log(message: str) -> None:
    print(f"[bench_hub {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class PairedRound:
    """One round of the gate HTTP / raw: raw runs before, between and after the HTTP runs.

    The ratio is taken inside the round, so a slow drift of the machine (the host's clock, a
    neighbour for tens of seconds) moves both sides together; and each side's claims/s is over
    its running time: the wall time less what its thread spent waiting for a core.
    """

    raw: list[Rate] = field(default_factory=list)
    raw_waited: list[float] = field(default_factory=list)  # the raw loop's run-queue seconds
    http: dict[int, Rate] = field(default_factory=dict)  # clients -> claims, wall, hub CPU seconds
    http_waited: dict[int, float] = field(default_factory=dict)  # the hub's run-queue seconds
    others: list[float] = field(default_factory=list)  # other processes' cores, per run

    @property
    def raw_per_second(self) -> float:
        return median(
            [running_rate(rate, waited) for rate, waited in zip(self.raw, self.raw_waited, strict=True)]
        )

    @property
    def http_per_second(self) -> float:
        return max(running_rate(self.http[clients], self.http_waited[clients]) for clients in GATE_CLIENTS)

    @property
    def ratio(self) -> float:
        return self.http_per_second / self.raw_per_second if self.raw_per_second else 0.0

    @property
    def wall_ratio(self) -> float:
        """The same with plain wall time: what the scheduler gave each side goes in."""
        raw = median([rate.per_second for rate in self.raw])
        return max(self.http[clients].per_second for clients in GATE_CLIENTS) / raw if raw else 0.0

    @property
    def cpu_ratio(self) -> float:
        """Raw CPU us per claim / the hub's."""
        hub_us = min(self.http[clients].cpu_us for clients in GATE_CLIENTS)
        return median([rate.cpu_us for rate in self.raw]) / hub_us if hub_us else 0.0


def running_rate(rate: Rate, waited: float) -> float:
    """Claims per second of the time the process could run: wall time less its run-queue wait."""
    running = rate.wall - waited
    return rate.claims / running if running > 0 else 0.0


@dataclass
class Numbers:
    niceness: int = 0  # of this process and all it started
    paired: list[PairedRound] = field(default_factory=list)
    raw_statement: list[Rate] = field(default_factory=list)
    raw_store: list[Rate] = field(default_factory=list)
    one_client: list[Rate] = field(default_factory=list)
    ceiling: dict[int, list[Rate]] = field(default_factory=lambda: {n: [] for n in GATE_CLIENTS})
    client_cpu: dict[int, list[float]] = field(default_factory=lambda: {n: [] for n in CLIENTS})
    latencies_32: list[float] = field(default_factory=list)
    minimal_latencies_32: list[float] = field(default_factory=list)
    small: list[float] = field(default_factory=list)  # claims/s over the hub's running time
    large: list[float] = field(default_factory=list)  # the same rounds, in the same order
    json_s: list[float] = field(default_factory=list)
    json_compact_s: list[float] = field(default_factory=list)
    json_large_s: list[float] = field(default_factory=list)
    large_ready: list[int] = field(default_factory=list)  # before and after each paired round
    create_per_s: float = 0.0
    waited: float = 0.0
    others_at_start: list[float] = field(default_factory=list)
    wake_ms: list[float] = field(default_factory=list)
    wake_from_send_ms: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    polls_waiting: int = 0
    polls_answered: int = 0
    peak_mb: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duplicates: int = 0
    claims_total: int = 0
    db_problems: list[str] = field(default_factory=list)
    stream_latencies: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in STREAM_MODES})
    stream_p99s: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in STREAM_MODES})
    stream_cpu: dict[str, list[Rate]] = field(default_factory=lambda: {m: [] for m in STREAM_MODES})
    stream_traffic: dict[str, Drained] = field(default_factory=lambda: {m: Drained() for m in STREAM_MODES})
    measured_again: list[str] = field(default_factory=list)  # gates missed once, then measured twice as long

    @property
    def size_ratio(self) -> float:
        """Claims/s at the large size over the small: the median rate of each size's rounds."""
        small = median(self.small)
        return median(self.large) / small if small else 0.0

    @property
    def idle_streams_ratio(self) -> float:
        """Claim p99 with idle streams over none: the median of each mode's per-round p99s."""
        none = median(self.stream_p99s["none"])
        return median(self.stream_p99s["idle"]) / none if none else float("inf")

    def http_rates(self, clients: int) -> list[Rate]:
        if clients == 1:
            return self.one_client
        return [paired.http[clients] for paired in self.paired]

    @property
    def core_waits(self) -> list[float]:
        """Per paired round, the largest share of a run's wall time spent waiting for a core."""
        return [
            max(
                *(waited / rate.wall for rate, waited in zip(p.raw, p.raw_waited, strict=True)),
                *(p.http_waited[c] / p.http[c].wall for c in GATE_CLIENTS),
            )
            for p in self.paired
        ]


# -- the JSON-file queue --------------------------------------------------------------------


def time_json(path: Path, tasks: int, claims: int, indent: int | None) -> list[float]:
    """Seconds per claim on a JSON queue of `tasks` tasks."""
    queue = JsonQueue(path, indent=indent)
    queue.create([task_text(number) for number in range(1, tasks + 1)])
    times: list[float] = []
    seen: set[int] = set()
    for number in range(claims):
        start = time.perf_counter()
        task = queue.claim(f"worker-{number}")
        times.append(time.perf_counter() - start)
        if task is None or task["id"] in seen:
            raise BenchError(f"the JSON queue gave {task and task['id']} twice or nothing")
        seen.add(task["id"])
    path.unlink()
    return times


# -- a quiet machine ------------------------------------------------------------------------


def others_cpu(seconds: float = 0.5) -> float:
    """Cores busy on the machine over `seconds` while this run is idle: the other processes."""
    busy, start = busy_cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (busy_cpu_seconds() - busy) / (time.perf_counter() - start)


def wait_for_quiet(numbers: Numbers, budget: float, threshold: float = 0.3) -> None:
    """Before a round, wait for other processes to use less than `threshold` of a core.

    The machine is shared: a test suite running next to the benchmark takes the cores the hub
    and its clients need. Waiting is bounded by `budget` seconds for the whole run; the table
    says how long it took and how busy the machine still was.
    """
    start = time.monotonic()
    used = others_cpu()
    while used >= threshold and numbers.waited + time.monotonic() - start < budget:
        used = others_cpu()
    numbers.waited += time.monotonic() - start
    numbers.others_at_start.append(used)


def keep(numbers: Numbers, result: Result, what: str) -> Result:
    numbers.errors.extend(f"{what}: {error}" for error in result.errors)
    return result


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children: each load client, start-up included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_load(hub: Hub, job: Job, what: str, numbers: Numbers) -> tuple[Result, Rate, float, float]:
    """The job's result; its claims, wall time and the hub's CPU seconds; the seconds the hub's
    event loop waited for a core; and the cores other processes took meanwhile.

    Others: all the machine's busy time less the hub's, the load client's (reaped by `load`)
    and this process's (which holds the event streams), over the job's whole wall time.
    """
    busy, own, clients = busy_cpu_seconds(), time.process_time(), children_cpu_seconds()
    cpu, waited, began = hub.cpu_seconds(), hub.waited_seconds(), time.perf_counter()
    result = keep(numbers, load(hub, job), what)
    hub_cpu, waited, wall = (
        hub.cpu_seconds() - cpu,
        hub.waited_seconds() - waited,
        time.perf_counter() - began,
    )
    mine = hub_cpu + children_cpu_seconds() - clients + time.process_time() - own
    others = max(0.0, busy_cpu_seconds() - busy - mine) / wall
    # the hub's wait is spread over the job's whole time, the claims over `elapsed` only
    return result, Rate(result.claims, result.elapsed, hub_cpu), waited * result.elapsed / wall, others


def raw_run(path: Path, worker: int, sizes: Sizes, paired: PairedRound) -> None:
    """One raw bare-claim run of the round: its run-queue wait, and the cores others took."""
    busy, own, waited = busy_cpu_seconds(), time.process_time(), run_queue_seconds()
    began = time.perf_counter()
    rate = time_statement(path, BARE_CLAIM, worker, sizes.raw_seconds, sizes.raw_claims)
    mine, wall = time.process_time() - own, time.perf_counter() - began
    paired.raw.append(rate)
    paired.raw_waited.append((run_queue_seconds() - waited) * rate.wall / wall)
    paired.others.append(max(0.0, busy_cpu_seconds() - busy - mine) / wall)


def http_run(hub: Hub, clients: int, cap: int, sizes: Sizes, numbers: Numbers) -> tuple[Rate, float, float]:
    """One HTTP run on the large hub: (claims, wall, hub CPU), its run-queue wait, others' cores."""
    job = Job(0, "", workers=tuple(hub.workers[:clients]), max_requests=cap, duration=sizes.duration)
    result, rate, waited, others = timed_load(hub, job, f"{clients} clients", numbers)
    numbers.client_cpu[clients].append(result.cpu_seconds / result.elapsed)
    if clients == 32:
        numbers.latencies_32.extend(result.latencies_ms)
    return rate, waited, others


# -- the run --------------------------------------------------------------------------------


def measure(sizes: Sizes, work: Path, numbers: Numbers) -> None:
    wait_for_quiet(numbers, sizes.quiet_wait)
    log(f"JSON-file queue: {sizes.json_tasks} tasks, {sizes.json_claims} claims (indent=2, then compact)")
    numbers.json_s = time_json(work / "tasks.json", sizes.json_tasks, sizes.json_claims, 2)
    numbers.json_compact_s = time_json(work / "compact.json", sizes.json_tasks, sizes.json_claims, None)
    log(f"JSON-file queue: {sizes.json_large_tasks} tasks, {sizes.json_large_claims} claims (indent=2)")
    numbers.json_large_s = time_json(work / "large.json", sizes.json_large_tasks, sizes.json_large_claims, 2)

    raw_claims = 3 * sizes.paired_rounds * sizes.raw_claims
    log(f"raw SQLite: fresh databases of {raw_claims} (bare) and {sizes.raw_claims} ready tasks")
    bare_db, statement_db, store_db = (work / f"{name}.sqlite3" for name in ("bare", "statement", "store"))
    bare_worker = raw_database(bare_db, raw_claims)
    extra = sizes.rounds * sizes.raw_claims
    statement_worker = raw_database(statement_db, extra)
    store_worker = raw_database(store_db, extra)
    store_statement: str | None = getattr(sqlite_store, "_CLAIM", None)
    store = SQLiteStore(store_db)

    key = secrets.token_urlsafe(32)
    hubs: list[Hub] = []
    try:
        small, large = Hub("small", work, key), Hub("large", work, key)
        hubs += [small, large]
        for hub in hubs:
            hub.register_workers(max(*CLIENTS, sizes.longpolls))
        # An HTTP run ends after `duration` or `cap` claims (more than the hub serves in that
        # time here); before each paired round the large hub is topped up so that it still
        # holds `tasks_large` ready tasks after the round's (at most 2 1/3) runs.
        cap = int(sizes.duration * 8_000)
        held = sizes.tasks_large + 2 * cap + cap // 3
        minimal_db = work / "minimal.sqlite3"
        raw_database(minimal_db, 2 * cap * sizes.rounds + 1000)
        minimal = Hub("minimal", work, key, minimal_db)
        hubs.append(minimal)
        log(f"creating {held} tasks on the large hub through the API")
        start = time.perf_counter()
        large.create_tasks(held, 1)
        numbers.create_per_s = held / (time.perf_counter() - start)
        next_large = 1 + held

        log("warm-up (untimed)")
        keep(numbers, load(large, Job(0, "", workers=tuple(large.workers[:32]), max_requests=500)), "warm-up")
        small.create_tasks(sizes.tasks_small, 1)
        drain = Job(0, "", workers=tuple(small.workers[:8]), max_requests=sizes.tasks_small)
        keep(numbers, load(small, drain), "warm-up")
        next_small = 1 + sizes.tasks_small

        next_small = size_rounds(sizes, small, large, next_small, numbers)
        if numbers.size_ratio < LARGE_VS_SMALL:
            numbers.measured_again.append(f"100k / 1k read {numbers.size_ratio:.3f}")
            log(f"  the ratio reads {numbers.size_ratio:.3f}: as many rounds again, judged on all")
            next_small = size_rounds(sizes, small, large, next_small, numbers)

        log(
            f"{sizes.paired_rounds} paired rounds: raw, HTTP 8 clients, raw, HTTP 32 clients, raw "
            f"(<= {cap} claims per HTTP run); 1 client, the store and the ceiling in {sizes.rounds}"
        )
        for number in range(sizes.paired_rounds):
            ready = next_large - 1 - len(large.claimed)
            large.create_tasks(held - ready, next_large)
            next_large += held - ready
            numbers.large_ready.append(large.ready_tasks())
            wait_for_quiet(numbers, sizes.quiet_wait)
            paired = PairedRound()
            raw_run(bare_db, bare_worker, sizes, paired)
            for clients in GATE_CLIENTS if number % 2 == 0 else GATE_CLIENTS[::-1]:
                rate, waited, others = http_run(large, clients, cap, sizes, numbers)
                paired.http[clients], paired.http_waited[clients] = rate, waited
                paired.others.append(others)
                raw_run(bare_db, bare_worker, sizes, paired)
            numbers.paired.append(paired)
            numbers.large_ready.append(large.ready_tasks())
            log(
                f"  round {number + 1}: raw {paired.raw_per_second:,.0f}/s, HTTP "
                f"{paired.http_per_second:,.0f}/s (running time): ratio {paired.ratio:.3f}; wall clock "
                f"{paired.wall_ratio:.3f}, CPU {paired.cpu_ratio:.3f}; waited for a core "
                f"{numbers.core_waits[-1]:.0%}; others {max(paired.others):.2f} cores"
            )
            if number < sizes.rounds:
                extras(sizes, large, minimal, cap, numbers)
                numbers.raw_store.append(time_store(store, store_worker, sizes.raw_seconds, sizes.raw_claims))
                if store_statement is not None:
                    numbers.raw_statement.append(
                        time_statement(
                            statement_db,
                            store_statement,
                            statement_worker,
                            sizes.raw_seconds,
                            sizes.raw_claims,
                        )
                    )

        wait_for_quiet(numbers, sizes.quiet_wait)
        measure_long_polls(sizes, small, next_small, numbers)
        for hub in (small, large):
            numbers.peak_mb[hub.name] = hub.memory_mb("VmHWM")
    finally:
        store.close()
        for hub in hubs:
            hub.stop()
    for hub in hubs:
        numbers.claims_total += len(hub.claimed)
        numbers.duplicates += len(hub.claimed) - len(set(hub.claimed))
        numbers.db_problems += cross_check(hub) if hub.name != "minimal" else []


def size_rounds(sizes: Sizes, small: Hub, large: Hub, next_small: int, numbers: Numbers) -> int:
    """`ratio_rounds` interleaved runs of 8 clients at each size: claims/s over the hub's running
    time. The gate compares each size's median rate: a burst of noise spoils one run, and the
    ratio of two medians is steadier than the median of the rounds' ratios (two runs each)."""
    log(f"{sizes.ratio_rounds} rounds: 8 clients, {sizes.tasks_small} claims at each size")
    for number in range(sizes.ratio_rounds):
        wait_for_quiet(numbers, sizes.quiet_wait)
        small.create_tasks(sizes.tasks_small, next_small)
        next_small += sizes.tasks_small
        rates: dict[str, float] = {}
        for hub in (small, large) if number % 2 == 0 else (large, small):
            job = Job(0, "", workers=tuple(hub.workers[:8]), max_requests=sizes.tasks_small, duration=120.0)
            _, rate, waited, _ = timed_load(hub, job, "ratio", numbers)
            rates[hub.name] = running_rate(rate, waited)
        numbers.small.append(rates["small"])
        numbers.large.append(rates["large"])
    return next_small


def extras(sizes: Sizes, large: Hub, minimal: Hub, cap: int, numbers: Numbers) -> None:
    """The ungated HTTP runs: 1 client on the large hub, and the framework's ceiling."""
    rate, _, _ = http_run(large, 1, cap // 3, sizes, numbers)
    numbers.one_client.append(rate)
    for clients in GATE_CLIENTS:
        job = Job(0, "", workers=tuple(minimal.workers[:clients]), max_requests=cap, duration=sizes.duration)
        result, rate, _, _ = timed_load(minimal, job, f"minimal, {clients} clients", numbers)
        numbers.ceiling[clients].append(rate)
        if clients == 32:
            numbers.minimal_latencies_32.extend(result.latencies_ms)


def measure_long_polls(sizes: Sizes, small: Hub, next_small: int, numbers: Numbers) -> None:
    log(f"long-poll wake-up: {sizes.wake_rounds} rounds")
    eight = tuple(small.workers[:8])
    keep(numbers, load(small, Job(0, "", workers=eight, max_requests=10 * sizes.tasks_small)), "drain")
    wake = Job(
        0,
        "",
        mode="wakeup",
        workers=(small.workers[0],),
        wait=10.0,
        rounds=sizes.wake_rounds,
        instructions=task_text(0)[1],
    )
    result = keep(numbers, load(small, wake), "wake-up")
    numbers.wake_ms, numbers.wake_from_send_ms = result.wake_ms, result.wake_from_send_ms

    log(f"{sizes.longpolls} open long polls: hub RSS")

    def on_open(message: dict[str, Any]) -> None:
        time.sleep(0.2)
        numbers.polls_waiting = int(message["waiting"])
        numbers.rss_mb = small.memory_mb()
        small.create_tasks(sizes.longpolls, next_small)  # wakes them all

    polls = Job(0, "", mode="longpoll", workers=tuple(small.workers[: sizes.longpolls]), wait=30.0)
    numbers.polls_answered = keep(numbers, load(small, polls, on_open), "long polls").claims


def measure_streams(sizes: Sizes, work: Path, key: str, numbers: Numbers) -> None:
    """Claim latency on a hub with no stream and on one holding `sizes.streams` idle ones (and,
    in full runs, one whose streams get every event), in interleaved rounds.

    Each mode has a hub of its own, built alike, and its streams stay open for the whole
    measurement: what is measured is what open streams cost while they wait, not what opening
    500 of them costs (about 80,000 new objects, which the hub's young GC then walks: a 10-15 ms
    pause that lands wherever it lands). After the streams open, untimed claims let those objects
    age out of the young generation, as a dashboard's streams would over their first minutes.

    A round's p99 is the 10th-slowest of 1000 claims, and 8 clients in flight make one stall of
    the machine the slowest 8, so one round in five or so reads 15-25 ms instead of 3-5 on any
    hub. The gate compares each mode's median round, and a miss is measured again as long
    before it stands."""
    modes = STREAM_MODES if sizes.stream_live else STREAM_MODES[:2]
    hubs = {mode: Hub(f"streams-{mode}", work, key) for mode in modes}
    per_hub = sizes.stream_rounds * sizes.stream_claims
    warm_up, age = 500, 5_000
    try:
        with contextlib.ExitStack() as streams:
            for mode, hub in hubs.items():
                hub.register_workers(8)
                hub.create_tasks(warm_up + age + per_hub, 1)
                job = Job(0, "", workers=tuple(hub.workers), max_requests=warm_up, duration=120.0)
                keep(numbers, load(hub, job), f"{mode} streams, warm-up")
                if mode != "none":
                    status, body = hub.call("POST", "/v1/keys", {"name": "bench-viewer", "role": "viewer"})
                    if status != 201:
                        raise BenchError(f"create a viewer key: HTTP {status} {body}")
                    after = MAX_ID if mode == "idle" else None
                    held = streams.enter_context(
                        EventStreams(hub.port, str(body["key"]), sizes.streams, after)
                    )
                    numbers.stream_traffic[mode] = held.drained
                keep(numbers, load(hub, replace(job, max_requests=age)), f"{mode} streams, ageing")
            next_id = 1 + warm_up + age + per_hub
            stream_rounds(sizes, hubs, numbers)
            if numbers.idle_streams_ratio > IDLE_STREAMS_VS_NONE:
                numbers.measured_again.append(f"idle streams read {numbers.idle_streams_ratio:.3f}")
                log(
                    f"  the ratio reads {numbers.idle_streams_ratio:.3f}: as many rounds again, judged on all"
                )
                for hub in hubs.values():
                    hub.create_tasks(per_hub, next_id + per_hub)
                stream_rounds(sizes, hubs, numbers)
    finally:
        for hub in hubs.values():
            hub.stop()
    for hub in hubs.values():
        numbers.claims_total += len(hub.claimed)
        numbers.duplicates += len(hub.claimed) - len(set(hub.claimed))
        numbers.db_problems += cross_check(hub)


def stream_rounds(sizes: Sizes, hubs: dict[str, Hub], numbers: Numbers) -> None:
    """`stream_rounds` rounds of `stream_claims` timed claims on each mode's hub, the order
    turning every round."""
    modes = list(hubs)
    log(
        f"{sizes.stream_rounds} rounds: {sizes.stream_claims} claims (8 clients) on hubs with "
        f"{' / '.join(modes)} event streams ({sizes.streams})"
    )
    for number in range(sizes.stream_rounds):
        shift = number % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            hub = hubs[mode]
            wait_for_quiet(numbers, sizes.quiet_wait)
            job = Job(0, "", workers=tuple(hub.workers), max_requests=sizes.stream_claims, duration=120.0)
            result, rate, _, _ = timed_load(hub, job, f"{mode} streams", numbers)
            numbers.stream_cpu[mode].append(rate)
            numbers.stream_latencies[mode].extend(result.latencies_ms)
            numbers.stream_p99s[mode].append(percentile(result.latencies_ms, 0.99))
            log(f"  round {number + 1}, {mode} streams: claim p99 {numbers.stream_p99s[mode][-1]:.1f} ms")
