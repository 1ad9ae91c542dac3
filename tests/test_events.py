"""Open event streams cost nothing while nothing happens (issue 9, item 7).

Against a real uvicorn on 127.0.0.1 with the lease reaper running every 50 ms: a quiet stream
gets no data and one keep-alive per keep-alive interval (not one per reaper pass), and makes no
store query; commits that append no event wake nobody; a new event still arrives at once, and
`Last-Event-ID` resume works from memory and from the database alike.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from scaffold.hub.core.types import Event, NewTask
from scaffold.hub.services.container import Services
from scaffold.hub.services.events import RECENT_EVENTS, EventBus
from scaffold.hub.store.sqlite import SQLiteStore
from tests.conftest import Keys, MakeHub
from tests.test_api import MAX_BODY, TIMEOUT, bearer, hub_of, serving

REAP_INTERVAL = 0.05  # 20 reaper passes a second: each used to wake every stream
KEEPALIVE = 0.5


@dataclass
class Counted:
    """How often each wrapped store method was called (since the last `reset`)."""

    calls: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.calls.clear()

    def total(self) -> int:
        return sum(self.calls.values())


def count_calls(hub: Services, names: tuple[str, ...]) -> Counted:
    counted = Counted()
    for name in names:
        original: Callable[..., Any] = getattr(hub.store, name)

        def wrapper(*args: Any, _name: str = name, _original: Callable[..., Any] = original) -> Any:
            counted.calls[_name] = counted.calls.get(_name, 0) + 1
            return _original(*args)

        setattr(hub.store, name, wrapper)
    return counted


@pytest.fixture
def app(make_hub: MakeHub) -> Starlette:
    made = make_hub(max_body_bytes=MAX_BODY, reap_interval_seconds=REAP_INTERVAL)
    made.services.bus.keepalive = KEEPALIVE
    return made.app


@pytest.fixture
def live(app: Starlette) -> Iterator[str]:
    with serving(app) as url:
        yield url


class RawStream:
    """`GET /v1/events` on a plain socket: what arrives and when, read with a deadline."""

    def __init__(self, url: str, key: str, last_event_id: int | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        request = f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n{resume}\r\n"
        self.sock.sendall(request.encode())
        self.text = ""
        self.read_until(lambda text: "retry:" in text, TIMEOUT)
        assert self.text.startswith("HTTP/1.1 200"), self.text[:200]

    def read_until(self, done: Callable[[str], bool], seconds: float) -> bool:
        """Read until `done(text so far)` or `seconds` pass; whether `done` came true."""
        deadline = time.monotonic() + seconds
        while not done(self.text):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            assert chunk, "the hub closed the stream"
            self.text += chunk.decode()
        return True

    def read_for(self, seconds: float) -> str:
        """Everything that arrives within `seconds` from now."""
        start = len(self.text)
        self.read_until(lambda _: False, seconds)
        return self.text[start:]

    def close(self) -> None:
        self.sock.close()


def containing(marker: str) -> Callable[[str], bool]:
    return lambda text: marker in text


def ids_in(text: str) -> list[int]:
    return [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]


def test_a_quiet_stream_gets_keepalives_per_interval_and_makes_no_query(
    app: Starlette, live: str, keys: Keys
) -> None:
    """Over 2.6 s: ~52 reaper passes and 20 empty claims (commits without an event), one
    keep-alive per 0.5 s, no data, no store query, no wake-up of the bus."""
    hub = hub_of(app)
    with httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.agent)) as agent:
        worker = agent.post("/v1/workers", json={"session_id": "s", "role": "backend"}).json()["id"]
        counted = count_calls(hub, ("events_after", "last_event_id", "reap"))
        commits: list[float] = []
        published: list[int] = []
        hub.store.on_commit.append(lambda: commits.append(time.monotonic()))  # type: ignore[attr-defined]
        hub.store.on_events.append(lambda events: published.append(len(events)))  # type: ignore[attr-defined]
        stream = RawStream(live, keys.viewer)
        try:
            counted.reset()
            window = 5 * KEEPALIVE + 0.1
            started = time.monotonic()
            text = ""
            for _ in range(20):  # commits that append no event, spread over the window
                assert agent.post("/v1/tasks/claim", json={"worker_id": worker}).status_code == 204
                text += stream.read_for(window / 20)
            text += stream.read_for(max(0.0, started + window - time.monotonic()))
            elapsed = time.monotonic() - started
        finally:
            stream.close()
    passes = counted.calls.pop("reap", 0)
    assert passes >= 0.5 * elapsed / REAP_INTERVAL, f"the reaper ran only {passes} times"
    assert len(commits) >= 20 and published == [], "the empty claims committed without events"
    keepalives = text.count(": keep-alive")
    assert 4 <= keepalives <= 6, f"{keepalives} keep-alives in {elapsed:.1f} s (interval {KEEPALIVE} s)"
    assert ids_in(text) == [], "a quiet stream got data"
    assert counted.total() == 0, f"a quiet stream queried the store: {counted.calls}"


def test_the_first_keepalive_comes_after_the_interval_not_before(live: str, keys: Keys) -> None:
    stream = RawStream(live, keys.viewer)
    try:
        opened = time.monotonic()
        assert stream.read_until(containing(": keep-alive"), 3 * KEEPALIVE)
        waited = time.monotonic() - opened
    finally:
        stream.close()
    assert 0.8 * KEEPALIVE <= waited <= 2 * KEEPALIVE, f"first keep-alive after {waited:.2f} s"


def test_a_new_event_arrives_at_once_without_a_query(app: Starlette, live: str, keys: Keys) -> None:
    hub = hub_of(app)
    counted = count_calls(hub, ("events_after",))
    streams = [RawStream(live, keys.viewer) for _ in range(3)]
    try:
        with httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.agent)) as agent:
            for round_ in range(3):
                time.sleep(0.3)  # quiet first: the streams are asleep
                sent = time.monotonic()
                created = agent.post("/v1/tasks", json={"title": f"t{round_}", "instructions": "i"})
                assert created.status_code == 201
                marker = f"id: {hub.store.last_event_id()}\n"
                for stream in streams:
                    assert stream.read_until(containing(marker), TIMEOUT)
                    assert time.monotonic() - sent < 1.0, "the event took a second or more"
        for stream in streams:
            assert len(ids_in(stream.text)) == 3
    finally:
        for stream in streams:
            stream.close()
    # The streams keep up, so they read the events the bus holds instead of the database.
    assert counted.total() == 0, counted.calls


def test_resume_from_memory_and_from_the_database(app: Starlette, live: str, keys: Keys) -> None:
    """More events than the bus keeps: an old Last-Event-ID is served from the database in
    order, a recent one from memory, and both streams then go on live."""
    hub = hub_of(app)
    with httpx2.Client(base_url=live, timeout=TIMEOUT, headers=bearer(keys.admin)) as admin:
        for first in range(0, RECENT_EVENTS + 100, 200):  # batches that fit the test's body limit
            tasks = [{"title": f"t{n}", "instructions": "i"} for n in range(first, first + 200)]
            admin.post("/v1/tasks", json={"tasks": tasks}).raise_for_status()
        newest = hub.store.last_event_id()
        counted = count_calls(hub, ("events_after",))
        old, recent = RawStream(live, keys.viewer, 2), RawStream(live, keys.viewer, newest - 5)
        try:
            assert old.read_until(containing(f"id: {newest}\n"), TIMEOUT)
            assert recent.read_until(containing(f"id: {newest}\n"), TIMEOUT)
            from_database = counted.calls.get("events_after", 0)
            admin.put("/v1/plan", json={"goal": "g", "plan": "p"}).raise_for_status()
            for stream in (old, recent):
                assert stream.read_until(containing(f"id: {newest + 1}\n"), TIMEOUT)
        finally:
            old.close()
            recent.close()
    assert ids_in(old.text) == list(range(3, newest + 2))
    assert ids_in(recent.text) == list(range(newest - 4, newest + 2))
    # 500 events a query until the old stream reaches what the bus holds; the recent one: none
    assert 1 <= from_database <= 4, counted.calls
    assert counted.calls.get("events_after", 0) == from_database


# -- the bus and the store, without a server -------------------------------------------------


def event(event_id: int) -> Event:
    return Event(event_id, 0.0, "task.created", event_id, None, "a", {})


def test_the_bus_serves_from_memory_only_what_it_holds_whole() -> None:
    bus = EventBus(newest=10, keep=3)
    assert bus.recent_after(10) == ([], 10)
    assert bus.recent_after(9) is None, "event 10 came before the bus: it must come from the database"
    bus.publish([event(11), event(12)])
    bus.publish([event(13), event(14)])  # 11 falls out
    assert bus.newest == 14
    assert bus.recent_after(10) is None
    texts, newest = bus.recent_after(12) or ([], 0)
    assert newest == 14 and [t.split("\n")[0] for t in texts] == ["id: 13", "id: 14"]
    assert bus.recent_after(14) == ([], 14)
    bus.publish([event(16)])  # 15 came from another process: only the database has it
    assert bus.recent_after(14) is None
    assert bus.recent_after(15) is not None


def test_the_bus_wakes_only_the_streams_behind_a_new_event() -> None:
    """A stream at the newest id wakes for the next event; one parked beyond it does not."""
    bus = EventBus(newest=5)

    async def scenario() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        woken: list[str] = []

        async def stream(name: str, after_id: int) -> None:
            await bus.wait_beyond(after_id, 1.0)
            woken.append(name)

        waiting = [asyncio.create_task(stream("head", 5)), asyncio.create_task(stream("parked", 100))]
        await asyncio.sleep(0.05)
        bus.publish([])  # a commit that appended nothing
        await asyncio.sleep(0.05)
        assert woken == [], "a commit without events woke a stream"
        bus.publish([event(6)])
        await asyncio.sleep(0.05)
        assert woken == ["head"]
        started = loop.time()
        await asyncio.wait_for(bus.wait_beyond(5, TIMEOUT), TIMEOUT)  # already newer: at once
        at_once = loop.time() - started
        await asyncio.wait_for(asyncio.gather(*waiting), TIMEOUT)  # the parked one times out
        return woken, at_once

    woken, at_once = asyncio.run(scenario())
    assert woken == ["head", "parked"] and at_once < 0.05
    assert bus._waiting == {}, "a finished wait left its waiter behind"


def test_a_reaper_pass_with_nothing_due_commits_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    try:
        commits: list[int] = []
        store.on_commit.append(lambda: commits.append(1))
        assert [store.reap(1000.0 + n) for n in range(10)] == [[]] * 10
        assert commits == [], "a reaper pass with nothing to reap opened a write transaction"
        # control: a lease that has expired is still reaped (one commit, one event)
        (task,), _ = store.create_tasks([NewTask("t", "i")], 3, "a", 1000.0)
        worker = store.register_worker("s", "backend", [], 1000.0)
        assert store.claim(worker.id, [], "token", 1010.0, 1000.0) is not None
        commits.clear()
        (reaped,) = store.reap(1011.0)
        assert reaped.id == task.id and reaped.state == "ready" and len(commits) == 1
    finally:
        store.close()
