"""How many Claude Code sessions a host holds, from what one session was measured to take.

bench/bench_session.py measures the real Claude Code binary in a rendered project against a real
hub, its model scripted on 127.0.0.1, from /proc: the memory and CPU of a session's whole process
tree (`claude`, its hooks, the commands it runs, a worker's watcher). Measured here (Claude Code
2.1.329, 2 cores, 24 GB, Linux, shared with other work; several runs), RSS and cores:

    idle interactive (`claude` at its prompt in tmux)    ~225 MB            0.005-0.02 cores
    idle worker (`claude -p`, waiting in its Stop hook)  ~262 MB            ~0.01 cores
    working 8-30 s, tool call after tool call            ~275 MB, peak 480  0.8-1.7 cores
    working 150 s (some 600 tool calls)                  ~337 MB, peak 435  1.1 cores

Almost all of it is private to the session: only the binary's own pages (some 50 MB) are shared
when several sessions run, so a second session costs nearly as much as the first. The seeds'
rule of thumb is about 0.5 CPU and 300-500 MB per session.

Memory is what must fit: a host out of memory kills sessions. Claude Code keeps the whole
conversation in memory, so a session grows as it works: MB_PER_SESSION covers the long working
run's peak (~435 MB, of which `claude` itself ~380 MB). RESERVE_MB is kept for the system, tmux,
sshd and the hub when it runs there (about 80 MB after the benchmark). The short runs' peaks are
hooks overlapping (up to a dozen python3 processes of 10-20 MB when calls come 4-5 a second),
which a real model's pace does not produce.

CPU only has to be enough: a host short of CPU runs its sessions slower, it does not lose them.
The working figure above is an upper bound of the client's own work: the scripted model answers
at once, so the session never waits. It is about 0.3 CPU seconds per tool call (the `claude`
process, the PostToolUse hook's python3, a Bash command's). A real model takes seconds for each
step and a session spends most of its time waiting on the network: at a step every 3 s or more, a
working session averages a tenth of a core or less, with bursts while its tools run.
CPU_PER_SESSION allows a step every second or so, and leaves what the sessions' own commands
take to the host's spare cores.
"""

from __future__ import annotations

import math

MB_PER_SESSION = 450
"""Memory per session, MB: in bench/bench_session.py a working session's `claude` reached ~380 MB
after 150 s of tool calls (some 600), ~435 MB with its hooks; idle sessions took ~225-265 MB.
The seeds say 300-500 MB."""

CPU_PER_SESSION = 0.25
"""Cores per session: idle ones took 0.005-0.02 cores in bench/bench_session.py, a working one
~0.3 CPU seconds per tool call (up to ~1.7 cores with a model that never waits); the seeds say
about 0.5 CPU, counting the agents' own builds and tests, which run on the hub's host here."""

RESERVE_MB = 512
"""Memory kept for the system, tmux, sshd and the hub (~80 MB when it runs on the host)."""


def sessions_that_fit(cpus: int, mem_total_mb: int) -> int:
    """How many sessions a host with `cpus` cores and `mem_total_mb` MB of memory holds."""
    by_memory = max(mem_total_mb - RESERVE_MB, 0) // MB_PER_SESSION
    by_cpu = math.floor(max(cpus, 0) / CPU_PER_SESSION)
    return int(min(by_memory, by_cpu))


def check(host: str, cpus: int, mem_total_mb: int, sessions: int) -> str | None:
    """None when `sessions` fit on `host`, else one line saying what they need and what fits."""
    fit = sessions_that_fit(cpus, mem_total_mb)
    if sessions <= fit:
        return None
    need_mb = sessions * MB_PER_SESSION + RESERVE_MB
    need_cpus = sessions * CPU_PER_SESSION
    return (
        f"{host}: {sessions} sessions need ~{need_mb} MB and {need_cpus:g} CPUs; it has {mem_total_mb} MB "
        f"and {cpus} CPUs: {fit} fit (--force to start anyway)"
    )
