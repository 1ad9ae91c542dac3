"""The table half of bench_hub.py: its targets, and `Numbers` turned into rows.

A row is (metric, value, target, ok): ok is None for a row that only informs.
"""

from __future__ import annotations

from collections.abc import Iterator

from hubmeasure import (
    CLIENTS,
    GATE_CLIENTS,
    IDLE_STREAMS_VS_NONE,
    LARGE_VS_SMALL,
    Numbers,
    Sizes,
    median,
    percentile,
)
from rawclaim import Rate

HTTP_VS_RAW = 0.25
HUB_VS_JSON = 1000.0
P99_MS = 50.0
WAKE_P50_MS = 20.0
RSS_MB = 150.0

Row = tuple[str, str, str, bool | None]


def per_second(rates: list[Rate]) -> float:
    return median([rate.per_second for rate in rates])


def cpu_us(rates: list[Rate]) -> float:
    return median([rate.cpu_us for rate in rates])


def thousands(count: int) -> str:
    return f"{count // 1000}k"


def rows(sizes: Sizes, n: Numbers) -> Iterator[Row]:
    yield from throughput_rows(sizes, n)
    yield from json_rows(sizes, n)
    yield from latency_rows(sizes, n)
    yield from stream_rows(sizes, n)
    yield from check_rows(n)


def throughput_rows(sizes: Sizes, n: Numbers) -> Iterator[Row]:
    raw_rates = [rate for paired in n.paired for rate in paired.raw]
    raw = per_second(raw_rates)
    yield (
        f"raw SQLite claims/s: bare UPDATE...RETURNING + commit ({cpu_us(raw_rates):.0f} us CPU/claim)",
        f"{raw:,.0f}",
        "",
        None,
    )
    if n.raw_statement:
        yield (
            f"raw SQLite claims/s: the store's claim statement ({cpu_us(n.raw_statement):.0f} us CPU/claim)",
            f"{per_second(n.raw_statement):,.0f}",
            "",
            None,
        )
    yield (
        f"SQLiteStore.claim()/s (+worker, event, Task) ({cpu_us(n.raw_store):.0f} us CPU/claim)",
        f"{per_second(n.raw_store):,.0f}",
        "",
        None,
    )
    for clients in CLIENTS:
        rates = n.http_rates(clients)
        hub = median([rate.cpu / rate.wall for rate in rates if rate.wall])
        cpu = f"CPU: hub {hub:.0%}, client {median(n.client_cpu[clients]):.0%}"
        yield (
            f"HTTP claims/s at {thousands(sizes.tasks_large)} tasks, {clients:>2} client(s) ({cpu})",
            f"{per_second(rates):,.0f}",
            "",
            None,
        )
    walls = [paired.wall_ratio for paired in n.paired]
    yield (
        "HTTP / raw bare claim, wall clock: lowest / median / highest paired round",
        f"{min(walls, default=0):.3f} / {median(walls):.3f} / {max(walls, default=0):.3f}",
        "",
        None,
    )
    cpu_ratio = median([paired.cpu_ratio for paired in n.paired])
    yield (
        "HTTP / raw bare claim, CPU time (raw us / hub us): median of the paired rounds",
        (f"{cpu_ratio:.3f}"),
        "",
        None,
    )
    ratios = [paired.ratio for paired in n.paired]
    yield (
        "HTTP / raw bare claim, running time: lowest / highest paired round",
        (f"{min(ratios, default=0):.3f} / {max(ratios, default=0):.3f}"),
        "",
        None,
    )
    ratio = median(ratios)
    yield (
        f"HTTP (best of 8/32 clients) / raw bare claim, running time: median of {len(ratios)} paired rounds",
        f"{ratio:.3f}",
        f">= {HTTP_VS_RAW}",
        ratio >= HTTP_VS_RAW,
    )
    hub_us = median([min(paired.http[c].cpu_us for c in GATE_CLIENTS) for paired in n.paired])
    yield "hub CPU per HTTP claim, us (best of 8/32 clients)", f"{hub_us:.0f}", "", None
    ceiling = max(per_second(n.ceiling[clients]) for clients in GATE_CLIENTS)
    ceiling_us = min(cpu_us(n.ceiling[clients]) for clients in GATE_CLIENTS)
    best = median([paired.http_per_second for paired in n.paired])
    yield (
        f"framework ceiling: minimal Starlette+uvicorn bare claim ({ceiling_us:.0f} us CPU/claim)",
        f"{ceiling:,.0f}",
        "",
        None,
    )
    yield "framework ceiling / raw bare claim (best of 8/32)", f"{ceiling / raw:.3f}", "", None
    yield "hub / framework ceiling (claims/s, best of 8/32)", f"{best / ceiling:.3f}", "", None
    small, large = median(n.small), median(n.large)
    sizes_text = f"{thousands(sizes.tasks_large)} / {thousands(sizes.tasks_small)} tasks"
    yield (
        f"8 clients claims/s at {thousands(sizes.tasks_small)} tasks (running time)",
        f"{small:,.0f}",
        "",
        None,
    )
    yield (
        f"8 clients claims/s at {thousands(sizes.tasks_large)} tasks (running time)",
        f"{large:,.0f}",
        "",
        None,
    )
    ratio = n.size_ratio
    yield (
        f"claims/s ratio {sizes_text} (8 clients): the median rates of {len(n.small)} rounds",
        f"{ratio:.3f}",
        f">= {LARGE_VS_SMALL}",
        ratio >= LARGE_VS_SMALL,
    )


def json_rows(sizes: Sizes, n: Numbers) -> Iterator[Row]:
    best = median([paired.http_per_second for paired in n.paired])
    json_s, compact_s, large_s = median(n.json_s), median(n.json_compact_s), median(n.json_large_s)
    small = thousands(sizes.json_tasks)
    yield (
        f"JSON-file queue ms/claim, {small} tasks, indent=2 (seed format)",
        f"{json_s * 1000:,.1f}",
        "",
        None,
    )
    yield f"JSON-file queue ms/claim, {small} tasks, compact", f"{compact_s * 1000:,.1f}", "", None
    hub_at = f"hub HTTP claims/s at {thousands(sizes.tasks_large)} tasks"
    yield f"{hub_at} / JSON(indent=2, {small} tasks) claims/s", f"{best * json_s:,.0f}x", "", None
    yield f"{hub_at} / JSON(compact, {small} tasks) claims/s", f"{best * compact_s:,.0f}x", "", None
    large = thousands(sizes.json_large_tasks)
    yield (
        f"JSON-file queue ms/claim, {large} tasks, indent=2 (seed format)",
        f"{large_s * 1000:,.0f}",
        "",
        None,
    )
    fewest = min(n.large_ready, default=0)
    yield "hub: fewest ready tasks before/after a paired round", f"{fewest:,}", "", None
    # the gate compares like with like: the hub held at least as many tasks as the JSON file
    yield (
        f"{hub_at} / JSON(indent=2, {large} tasks) claims/s",
        f"{best * large_s:,.0f}x",
        f">= {HUB_VS_JSON:,.0f}x",
        fewest >= sizes.json_large_tasks and best * large_s >= HUB_VS_JSON,
    )


def latency_rows(sizes: Sizes, n: Numbers) -> Iterator[Row]:
    p50, p99 = percentile(n.latencies_32, 0.50), percentile(n.latencies_32, 0.99)
    yield f"claim latency p50, 32 clients ({len(n.latencies_32)} claims)", f"{p50:.1f} ms", "", None
    yield "claim latency p99, 32 clients", f"{p99:.1f} ms", f"<= {P99_MS:.0f} ms", p99 <= P99_MS
    floor = n.minimal_latencies_32
    both = f"{percentile(floor, 0.5):.1f} / {percentile(floor, 0.99):.1f} ms"
    yield "framework ceiling: claim latency p50 / p99, 32 clients", both, "", None
    wake = median(n.wake_ms)
    yield (
        f"long-poll wake-up p50, create answered -> claim ({len(n.wake_ms)})",
        f"{wake:.1f} ms",
        f"<= {WAKE_P50_MS:.0f} ms",
        bool(n.wake_ms) and wake <= WAKE_P50_MS,
    )
    yield (
        "long-poll wake-up max / p50 from create sent",
        f"{max(n.wake_ms, default=0):.1f} / {median(n.wake_from_send_ms):.1f} ms",
        "",
        None,
    )
    yield (
        f"hub RSS with {n.polls_waiting} open long polls",
        f"{n.rss_mb:.1f} MB",
        f"<= {RSS_MB:.0f} MB",
        n.rss_mb <= RSS_MB and n.polls_waiting == sizes.longpolls,
    )
    yield (
        "long polls answered with a task",
        f"{n.polls_answered}/{sizes.longpolls}",
        "all",
        n.polls_answered == sizes.longpolls,
    )
    peaks = ", ".join(f"{name} {mb:.0f}" for name, mb in n.peak_mb.items())
    yield "hub peak RSS (VmHWM) over the run, MB", peaks, "", None


def stream_rows(sizes: Sizes, n: Numbers) -> Iterator[Row]:
    # the median of the rounds' p99s: a burst of noise from another process spoils one round, not all
    stream_p99 = {mode: median(p99s) for mode, p99s in n.stream_p99s.items()}
    counts = {mode: len(latencies) for mode, latencies in n.stream_latencies.items()}
    yield (
        f"claim p99 (median of {len(n.stream_p99s['none'])} rounds), 8 clients, no event stream "
        f"({counts['none']} claims)",
        f"{stream_p99['none']:.1f} ms",
        "",
        None,
    )
    idle = n.stream_traffic["idle"]
    yield (
        f"claim p99, 8 clients, {sizes.streams} idle event streams ({counts['idle']} claims, "
        f"{idle.events} events sent to the streams)",
        f"{stream_p99['idle']:.1f} ms",
        "",
        None,
    )
    ratio = n.idle_streams_ratio
    yield (
        f"claim p99 with {sizes.streams} idle streams / with none: the medians of the rounds' p99s",
        f"{ratio:.3f}",
        f"<= {IDLE_STREAMS_VS_NONE:.2f}",
        bool(n.stream_latencies["idle"]) and ratio <= IDLE_STREAMS_VS_NONE and idle.events == 0,
    )
    bursts = " / ".join(f"{sum(p99 > 10.0 for p99 in n.stream_p99s[mode])}" for mode in ("none", "idle"))
    yield "rounds whose claim p99 read over 10 ms (a stall of the machine), none / idle", bursts, "", None
    cpu = f"{cpu_us(n.stream_cpu['none']):.0f} / {cpu_us(n.stream_cpu['idle']):.0f}"
    yield f"hub CPU per claim, us, no / {sizes.streams} idle event streams (noise-proof view)", cpu, "", None
    live = n.stream_traffic["live"]
    if n.stream_latencies["live"]:
        yield (
            f"claim p99, {sizes.streams} live streams, each sent every claim ({live.events} events in all)",
            f"{stream_p99['live']:.1f} ms",
            "",
            None,
        )


def check_rows(n: Numbers) -> Iterator[Row]:
    yield (
        f"duplicate claims in responses ({n.claims_total} claims)",
        str(n.duplicates),
        "0",
        n.duplicates == 0,
    )
    yield "DB cross-check: claims without exactly one event", str(len(n.db_problems)), "0", not n.db_problems
    yield "request errors", str(len(n.errors)), "0", not n.errors
    yield "API task creation, tasks/s (batches of 1000)", f"{n.create_per_s:,.0f}", "", None
    others = [max(paired.others) for paired in n.paired]
    yield (
        "noise: other processes' cores in a paired round, median / max",
        f"{median(others):.2f} / {max(others, default=0):.2f} of 2",
        "",
        None,
    )
    waits = n.core_waits
    yield (
        "noise: a paired round's longest wait for a core, share of a run, median / max",
        f"{median(waits):.0%} / {max(waits, default=0):.0%}",
        "",
        None,
    )
    again = "; ".join(n.measured_again) or "none"
    yield "noise: gates missed once, then measured twice as long (judged on all)", again, "", None
    yield "noise: niceness of the raw loop, the hubs and the load clients", str(n.niceness), "", None
    yield (
        "noise: waited for quiet / still busy at round start",
        f"{n.waited:.0f} s / {median(n.others_at_start):.2f}",
        "",
        None,
    )
