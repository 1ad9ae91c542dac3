"""A lean HTTP/1.1 load generator for the hub's claim endpoint, run in its own process.

A Python HTTP client such as httpx costs more CPU per request than the hub spends answering it,
so on a 2-core machine it would measure the client. This one uses asyncio streams (uvloop when
installed), one keep-alive connection per simulated client, request bytes built once, and reads
only the status line, the headers and a Content-Length body. bench_hub.py starts it as a
subprocess so it never shares the hub's (or the orchestrator's) GIL:

    python bench/loadclient.py < job.json    # one JSON job in; JSON lines out, the last = result

Modes:
- `claim`: each client claims in a loop until `max_requests` (shared) are sent, `duration` has
  passed, or (with `stop_on_empty`) the hub answers 204. Records each claim's latency and id.
- `wakeup`: for `rounds` rounds, one client long-polls a claim (`wait`), another creates a task;
  records the time from the create response to the claim response.
- `longpoll`: every client sends a claim with `wait`; once they are all waiting it prints
  `{"event": "open"}` and then waits for their answers (someone else creates the tasks).
Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

CLAIM_PATH = "/v1/tasks/claim"
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Job:
    port: int
    key: str
    mode: str = "claim"
    workers: tuple[int, ...] = ()
    max_requests: int = 1000
    duration: float = 10.0
    wait: float = 0.0
    stop_on_empty: bool = True
    rounds: int = 20
    title: str = "wake-up task"
    instructions: str = "x"
    timeout: float = 30.0
    host: str = "127.0.0.1"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        raw = json.loads(text)
        raw["workers"] = tuple(raw["workers"])
        return cls(**raw)


@dataclass
class Result:
    requests: int = 0
    claims: int = 0
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    ids: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    wake_ms: list[float] = field(default_factory=list)
    wake_from_send_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.claims / self.elapsed if self.elapsed > 0 else 0.0

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls(**json.loads(text))

    def record(self, status: int, body: bytes) -> None:
        self.requests += 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if status == 200:
            self.claims += 1
            self.ids.append(task_id(body))
        elif status != 204 and len(self.errors) < 10:
            self.errors.append(f"HTTP {status}: {body[:300].decode(errors='replace')}")


class ProtocolError(Exception):
    pass


def task_id(body: bytes) -> int:
    """The id of a claimed task: the hub's JSON starts with it; parse properly otherwise."""
    if body.startswith(b'{"id":'):
        end = body.find(b",", 6)
        if end > 6 and body[6:end].isdigit():
            return int(body[6:end])
    return int(json.loads(body)["id"])


def request_bytes(job: Job, method: str, path: str, payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {job.host}:{job.port}\r\n"
        f"Authorization: Bearer {job.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: send bytes, read one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEADER_BYTES)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        if len(raw) > 16 * 1024:
            await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise ProtocolError(f"not an HTTP/1.1 response: {head[:80]!r}")
        status = int(head[9:12])
        length = 0
        for line in head[:-4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ProtocolError("chunked responses are not supported")
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


async def run_claims(job: Job) -> Result:
    result = Result()
    conns = [await Connection.open(job.host, job.port) for _ in job.workers]
    start = asyncio.Event()
    issued = 0
    deadline = time.perf_counter() + 3600.0

    async def client(conn: Connection, worker: int) -> None:
        nonlocal issued
        raw = request_bytes(job, "POST", CLAIM_PATH, {"worker_id": worker})
        await start.wait()
        while issued < job.max_requests and time.perf_counter() < deadline:
            issued += 1
            sent = time.perf_counter()
            status, body = await conn.request(raw)
            if status == 200:
                result.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
            result.record(status, body)
            if status not in (200, 204) or (status == 204 and job.stop_on_empty):
                return

    pairs = zip(conns, job.workers, strict=True)
    clients = [asyncio.create_task(client(conn, worker)) for conn, worker in pairs]
    await asyncio.sleep(0.05)  # every client is parked on `start`
    cpu = time.process_time()
    began = time.perf_counter()
    deadline = began + job.duration
    start.set()
    try:
        async with asyncio.timeout(job.duration + job.timeout):
            outcomes = await asyncio.gather(*clients, return_exceptions=True)
    except TimeoutError:
        outcomes = [TimeoutError(f"the job did not finish within {job.duration + job.timeout} s")]
    result.elapsed = time.perf_counter() - began
    result.cpu_seconds = time.process_time() - cpu
    result.errors.extend(repr(o) for o in outcomes if isinstance(o, BaseException))
    for conn in conns:
        conn.close()
    return result


async def _timed(conn: Connection, raw: bytes) -> tuple[int, bytes, float]:
    status, body = await conn.request(raw)
    return status, body, time.perf_counter()


async def run_wakeup(job: Job) -> Result:
    result = Result()
    claimer = await Connection.open(job.host, job.port)
    creator = await Connection.open(job.host, job.port)
    claim_raw = request_bytes(job, "POST", CLAIM_PATH, {"worker_id": job.workers[0], "wait": job.wait})
    create_raw = request_bytes(
        job, "POST", "/v1/tasks", {"title": job.title, "instructions": job.instructions}
    )
    began = time.perf_counter()
    try:
        async with asyncio.timeout(job.rounds * (job.wait + 2.0) + job.timeout):
            for _ in range(job.rounds):
                pending = asyncio.create_task(_timed(claimer, claim_raw))
                await asyncio.sleep(0.1)  # the claim is parked in the hub's long poll
                if pending.done():  # a task was ready already: not a wake-up
                    status, body, _ = pending.result()
                    result.record(status, body)
                    result.errors.append(f"the claim did not wait (HTTP {status})")
                    continue
                sent = time.perf_counter()
                created, body = await creator.request(create_raw)
                answered = time.perf_counter()
                if created != 201:
                    result.errors.append(f"create: HTTP {created}: {body[:200]!r}")
                status, body, claimed_at = await pending
                result.record(status, body)
                if status == 200:
                    # The claim's answer may even arrive first: that counts as no delay.
                    result.wake_ms.append(max(0.0, claimed_at - answered) * 1000.0)
                    result.wake_from_send_ms.append((claimed_at - sent) * 1000.0)
    except (TimeoutError, OSError, ProtocolError, asyncio.IncompleteReadError) as error:
        result.errors.append(repr(error))
    result.elapsed = time.perf_counter() - began
    claimer.close()
    creator.close()
    return result


async def run_longpolls(job: Job) -> Result:
    result = Result()
    conns = [await Connection.open(job.host, job.port) for _ in job.workers]
    raws = [request_bytes(job, "POST", CLAIM_PATH, {"worker_id": w, "wait": job.wait}) for w in job.workers]
    began = time.perf_counter()
    polls = [asyncio.create_task(_timed(conn, raw)) for conn, raw in zip(conns, raws, strict=True)]
    await asyncio.sleep(0.5)  # all of them are parked in the hub
    waiting = sum(not poll.done() for poll in polls)
    emit({"event": "open", "waiting": waiting})
    try:
        async with asyncio.timeout(job.wait + job.timeout):
            outcomes = await asyncio.gather(*polls, return_exceptions=True)
    except TimeoutError:
        outcomes = [TimeoutError("the long polls did not end")]
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.errors.append(repr(outcome))
        else:
            result.record(outcome[0], outcome[1])
            result.latencies_ms.append((outcome[2] - began) * 1000.0)
    result.elapsed = time.perf_counter() - began
    for conn in conns:
        conn.close()
    return result


def run(job: Job) -> Result:
    modes = {"claim": run_claims, "wakeup": run_wakeup, "longpoll": run_longpolls}
    coro: Coroutine[Any, Any, Result] = modes[job.mode](job)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    return uvloop.run(coro)


def emit(message: dict[str, Any]) -> None:
    """One JSON line on stdout, written whole: an unbuffered stdout (PYTHONUNBUFFERED) may write
    a large line only in part, and print() would not notice."""
    data = memoryview((json.dumps(message, separators=(",", ":")) + "\n").encode())
    while data:
        data = data[os.write(sys.stdout.fileno(), data) :]


def main() -> int:
    job = Job.from_json(sys.stdin.readline())
    result = run(job)
    result.latencies_ms = [round(ms, 3) for ms in result.latencies_ms]
    emit(asdict(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
