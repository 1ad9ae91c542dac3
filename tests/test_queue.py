"""The queue's rules (hub/tasks.py) on a real SQLite store, with a clock the tests move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaffold.errors import Conflict, InvalidRequest, LeaseConflict, NotFound
from scaffold.hub.core.lifecycle import TRANSITIONS
from scaffold.hub.core.types import TASK_STATES, NewTask, Task, Worker
from scaffold.hub.services.queue import Queue, QueueSettings
from scaffold.hub.store.base import TaskFilter
from scaffold.hub.store.sqlite import SQLiteStore
from tests.conftest import FakeClock
from tests.store_contract import new, stop_worker

LEASE = 60.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "hub.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(store: SQLiteStore, clock: FakeClock) -> Queue:
    return Queue(store, clock, QueueSettings(lease_seconds=LEASE, max_attempts=3, max_batch=5))


def nothing_written(queue: Queue) -> bool:
    return sum(queue.store.count_tasks().values()) == 0 and queue.store.last_event_id() == 0


def take(queue: Queue, worker: Worker) -> Task:
    """Claim without waiting; the queue must have a task for this worker."""
    task = asyncio.run(queue.claim(worker.id, None, 0))
    assert task is not None and task.lease_token is not None
    return task


# -- creating -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "cycle"),
    [
        ([new("a", ref="a", depends_on=("b",)), new("b", ref="b", depends_on=("a",))], "a -> b -> a"),
        ([new("self", ref="self", depends_on=("self",))], "self -> self"),
        (
            [
                new("free"),
                new("a", ref="a", depends_on=("b",)),
                new("b", ref="b", depends_on=("c",)),
                new("c", ref="c", depends_on=("d",)),
                new("d", ref="d", depends_on=("a",)),
            ],
            "a -> b -> c -> d -> a",
        ),
        (
            [
                new("c", ref="c", depends_on=("a",)),
                new("a", ref="a", depends_on=("b", "x")),
                new("x", ref="x"),
                new("b", ref="b", depends_on=("x", "c")),
            ],
            "c -> a -> b -> c",
        ),
    ],
    ids=["two", "self", "long", "diamond"],
)
def test_a_cycle_in_a_batch_is_refused_naming_its_refs(
    queue: Queue, batch: list[NewTask], cycle: str
) -> None:
    with pytest.raises(InvalidRequest, match="cycle") as refused:
        queue.create(batch, "coordinator")
    assert cycle in str(refused.value)
    assert nothing_written(queue)


def test_a_batch_without_a_cycle_may_share_dependencies(queue: Queue) -> None:
    tasks, created = queue.create(
        [
            new("top", depends_on=("left", "right")),
            new("left", ref="left", depends_on=("base",)),
            new("right", ref="right", depends_on=("base",)),
            new("base", ref="base"),
        ],
        "coordinator",
    )
    assert created
    assert [task.state for task in tasks] == ["blocked", "blocked", "blocked", "ready"]


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([], "at least one task"),
        ([new("a", depends_on=("ghost",))], "task 1 depends on ref 'ghost', which no task has"),
        ([new("a", ref="x"), new("b", ref="x")], "task 2: ref 'x' is used twice"),
        ([new("  ")], "task 1: the title is empty"),
        ([new("a"), new("b", required_capabilities=("GPU",))], "task 2: capability 'GPU'"),
        ([new("a", required_capabilities=("two words",))], "capability 'two words'"),
        ([new("a", required_capabilities=("",))], "capability ''"),
        ([new("a", required_capabilities=("-dash",))], "capability '-dash'"),
        ([new("a", required_capabilities=("x" * 65,))], "must be lowercase"),
        ([new(f"t{i}") for i in range(6)], "at most 5 tasks in one request"),
    ],
    ids=[
        "empty",
        "unknown-ref",
        "duplicate-ref",
        "blank-title",
        "upper",
        "space",
        "blank",
        "dash",
        "long",
        "max",
    ],
)
def test_a_bad_batch_is_refused_before_anything_is_written(
    queue: Queue, batch: list[NewTask], message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        queue.create(batch, "coordinator")
    assert message in str(refused.value)
    assert nothing_written(queue)


def test_good_capability_tags_and_a_full_batch_are_accepted(queue: Queue) -> None:
    tags = ("python", "node.js", "c_plus-plus", "x" * 64, "3d")
    tasks, created = queue.create([new("a", required_capabilities=tags)] * 5, "coordinator")
    assert created and len(tasks) == 5
    assert set(tasks[0].required_capabilities) == set(tags)


def test_create_uses_the_queue_clock_and_default_attempts(queue: Queue, clock: FakeClock) -> None:
    (task,), _ = queue.create([new("a")], "coordinator")
    assert (task.created_at, task.max_attempts) == (clock.now, 3)


# -- leases -------------------------------------------------------------------------------


def test_a_claim_leases_for_lease_seconds(queue: Queue, clock: FakeClock) -> None:
    queue.create([new("a")], "coordinator")
    worker = queue.store.register_worker("s-1", "backend", [], clock())
    task = take(queue, worker)
    assert (task.claimed_at, task.lease_expires_at) == (clock.now, clock.now + LEASE)


def test_an_expired_lease_is_reaped_only_after_lease_seconds(queue: Queue, clock: FakeClock) -> None:
    queue.create([new("a")], "coordinator")
    worker = queue.store.register_worker("s-1", "backend", [], clock())
    task = take(queue, worker)
    clock.advance(LEASE)
    assert queue.reap() == [], "a lease is good up to its expiry"
    assert queue.store.get_task(task.id).state == "claimed"
    clock.advance(0.001)
    (reaped,) = queue.reap()
    assert (reaped.id, reaped.state, reaped.attempts, reaped.lease_token) == (task.id, "ready", 1, None)
    with pytest.raises(LeaseConflict):
        queue.complete(task.id, task.lease_token or "", "late")
    again = take(queue, worker)
    assert again.id == task.id and again.lease_token != task.lease_token


def test_the_last_expired_lease_kills_the_task(queue: Queue, clock: FakeClock) -> None:
    queue.create([new("a", max_attempts=2)], "coordinator")
    worker = queue.store.register_worker("s-1", "backend", [], clock())
    for attempt, state in ((1, "ready"), (2, "dead")):
        task = take(queue, worker)
        clock.advance(LEASE + 1)
        (reaped,) = queue.reap()
        assert (reaped.id, reaped.state, reaped.attempts) == (task.id, state, attempt)
    assert asyncio.run(queue.claim(worker.id, None, 0)) is None


def test_a_heartbeat_extends_the_lease(queue: Queue, clock: FakeClock) -> None:
    queue.create([new("a")], "coordinator")
    worker = queue.store.register_worker("s-1", "backend", [], clock())
    task = take(queue, worker)
    clock.advance(LEASE - 1)
    beat = queue.heartbeat(task.id, task.lease_token or "")
    assert beat.lease_expires_at == clock.now + LEASE
    clock.advance(LEASE - 0.5)  # past the first lease, just before the new one ends
    assert queue.reap() == []
    assert queue.store.get_task(task.id).state == "claimed"
    done, changed = queue.complete(task.id, task.lease_token or "", "ok")
    assert changed and done.state == "done"


def test_a_lease_without_heartbeats_expires(queue: Queue, clock: FakeClock) -> None:
    queue.create([new("a")], "coordinator")
    worker = queue.store.register_worker("s-1", "backend", [], clock())
    task = take(queue, worker)
    clock.advance(LEASE - 1)
    queue.heartbeat(task.id, task.lease_token or "")
    clock.advance(LEASE + 0.5)
    assert [reaped.id for reaped in queue.reap()] == [task.id]


# -- claiming -----------------------------------------------------------------------------


def test_a_stopped_worker_cannot_claim(queue: Queue, clock: FakeClock) -> None:
    queue.create([new("a")], "coordinator")
    worker = queue.store.register_worker("s-1", "backend", [], clock())
    stop_worker(queue.store, worker.id, clock())
    with pytest.raises(Conflict, match="stopped"):
        asyncio.run(queue.claim(worker.id, None, 0))
    assert queue.store.count_tasks()["ready"] == 1
    with pytest.raises(NotFound):
        asyncio.run(queue.claim(worker.id + 100, None, 0))


def test_claim_capabilities_narrow_the_registered_ones_never_widen(queue: Queue, clock: FakeClock) -> None:
    queue.create([new("gpu", required_capabilities=("gpu",))], "coordinator")
    queue.create([new("py", required_capabilities=("python",))], "coordinator")
    worker = queue.store.register_worker("s-1", "backend", ["python"], clock())
    # Asking for a tag it never registered does not let it take the gpu task.
    assert asyncio.run(queue.claim(worker.id, ["gpu"], 0)) is None
    # Narrowing to nothing leaves it only untagged work (none here).
    assert asyncio.run(queue.claim(worker.id, [], 0)) is None
    task = asyncio.run(queue.claim(worker.id, None, 0))
    assert task is not None and task.title == "py"


def test_a_claim_that_finds_nothing_records_the_worker_as_seen(queue: Queue, clock: FakeClock) -> None:
    worker = queue.store.register_worker("s-1", "backend", [], clock())
    clock.advance(42)
    assert asyncio.run(queue.claim(worker.id, None, 0)) is None
    assert queue.store.get_worker(worker.id).last_seen == clock.now


def real_queue(store: SQLiteStore, max_wait: float = 600.0) -> Queue:
    return Queue(store, time.time, QueueSettings(lease_seconds=LEASE, max_wait_seconds=max_wait))


def test_a_long_poll_is_woken_when_a_task_is_created(store: SQLiteStore) -> None:
    queue = real_queue(store)
    worker = store.register_worker("s-1", "backend", [], time.time())

    async def scenario() -> tuple[Task | None, float]:
        began = time.monotonic()
        waiting = asyncio.create_task(queue.claim(worker.id, None, 5))
        await asyncio.sleep(0.1)
        assert not waiting.done(), "the claim returned before any task existed"
        queue.create([new("late")], "coordinator")
        task = await asyncio.wait_for(waiting, 3)
        return task, time.monotonic() - began

    task, elapsed = asyncio.run(scenario())
    assert task is not None and task.title == "late"
    assert elapsed < 1.0


def test_a_long_poll_is_woken_when_a_dependency_completes(store: SQLiteStore) -> None:
    queue = real_queue(store)
    (first, _), _ = queue.create(
        [new("first", ref="first"), new("then", depends_on=("first",))], "coordinator"
    )
    worker = store.register_worker("s-1", "backend", [], time.time())
    other = store.register_worker("s-2", "backend", [], time.time())
    held = take(queue, worker)
    assert held.id == first.id

    async def scenario() -> tuple[Task | None, float]:
        began = time.monotonic()
        waiting = asyncio.create_task(queue.claim(other.id, None, 5))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        queue.complete(held.id, held.lease_token or "", "ok")
        task = await asyncio.wait_for(waiting, 3)
        return task, time.monotonic() - began

    task, elapsed = asyncio.run(scenario())
    assert task is not None and task.title == "then"
    assert elapsed < 1.0


def test_a_long_poll_times_out_with_no_task(store: SQLiteStore) -> None:
    queue = real_queue(store)
    worker = store.register_worker("s-1", "backend", [], time.time())
    began = time.monotonic()
    assert asyncio.run(queue.claim(worker.id, None, 0.3)) is None
    elapsed = time.monotonic() - began
    assert 0.25 <= elapsed < 2.0
    assert store.get_worker(worker.id).last_seen >= time.time() - 2


def test_a_long_poll_waits_at_most_max_wait_seconds(store: SQLiteStore) -> None:
    queue = real_queue(store, max_wait=0.2)
    worker = store.register_worker("s-1", "backend", [], time.time())
    began = time.monotonic()
    assert asyncio.run(queue.claim(worker.id, None, 60)) is None
    assert time.monotonic() - began < 2.0


def test_shutdown_ends_a_waiting_claim_at_once(store: SQLiteStore) -> None:
    queue = real_queue(store)
    worker = store.register_worker("s-1", "backend", [], time.time())

    async def scenario() -> tuple[Task | None, float]:
        waiting = asyncio.create_task(queue.claim(worker.id, None, 5))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        began = time.monotonic()
        queue.shutdown()
        task = await asyncio.wait_for(waiting, 3)
        return task, time.monotonic() - began

    task, elapsed = asyncio.run(scenario())
    assert task is None
    assert elapsed < 0.5
    began = time.monotonic()
    assert asyncio.run(queue.claim(worker.id, None, 5)) is None, "a claim after shutdown must not wait"
    assert time.monotonic() - began < 0.5


# -- the transition table -----------------------------------------------------------------


def test_every_transition_in_the_table_happens(queue: Queue, clock: FakeClock) -> None:
    """Drive tasks through each row of TRANSITIONS and see no transition the table lacks."""
    store = queue.store
    seen: set[tuple[str, str]] = set()

    def snapshot() -> dict[int, tuple[str, float | None, int]]:
        tasks = store.list_tasks(TaskFilter(limit=1000))
        return {task.id: (task.state, task.lease_expires_at, task.attempts) for task in tasks}

    history = [snapshot()]

    def observe() -> None:
        """Record the transitions the last call caused, by comparing snapshots."""
        before, after = history[-1], snapshot()
        for task_id, (state, *rest) in after.items():
            if task_id not in before:
                seen.add(("(new)", state))
            elif before[task_id] != (state, *rest):
                seen.add((before[task_id][0], state))
        history.append(after)

    one = store.register_worker("s-1", "backend", [], clock())
    (_, b), _ = queue.create([new("a", ref="a"), new("b", ref="b", depends_on=("a",), max_attempts=3)], "c")
    observe()  # (new) -> ready, (new) -> blocked
    held = take(queue, one)
    observe()  # ready -> claimed
    clock.advance(10)
    queue.heartbeat(held.id, held.lease_token or "")
    observe()  # claimed -> claimed
    queue.complete(held.id, held.lease_token or "", "ok")
    observe()  # claimed -> done; b: blocked -> ready
    assert store.get_task(b.id).state == "ready"

    held = take(queue, one)
    observe()
    queue.fail(held.id, held.lease_token or "", "flaky")
    observe()  # claimed -> ready (attempt 1)
    held = take(queue, one)
    observe()
    queue.release(held.id, held.lease_token or "")
    observe()  # claimed -> ready (no attempt)
    take(queue, one)
    observe()
    stop_worker(store, one.id, clock())
    observe()  # claimed -> ready (the worker stopped; no attempt)
    two = store.register_worker("s-2", "backend", [], clock())
    take(queue, two)
    observe()
    clock.advance(LEASE + 1)
    queue.reap()
    observe()  # claimed -> ready (lease expired; attempt 2)
    held = take(queue, two)
    observe()
    queue.fail(held.id, held.lease_token or "", "broken")
    observe()  # claimed -> dead (attempt 3)
    assert store.get_task(b.id).state == "dead"

    (c,), _ = queue.create([new("c", max_attempts=1)], "c")
    observe()
    take(queue, two)
    observe()
    clock.advance(LEASE + 1)
    queue.reap()
    observe()  # claimed -> dead (lease expired on the last attempt)
    assert store.get_task(c.id).state == "dead"

    (d, e, f), _ = queue.create([new("d", ref="d"), new("e", depends_on=("d",)), new("f", priority=-1)], "c")
    observe()
    queue.cancel(e.id, "admin")
    observe()  # blocked -> cancelled
    held = take(queue, two)
    observe()
    assert held.id == d.id
    queue.cancel(d.id, "admin")
    observe()  # claimed -> cancelled
    with pytest.raises(LeaseConflict):
        queue.complete(d.id, held.lease_token or "", "too late")
    queue.cancel(f.id, "admin")
    observe()  # ready -> cancelled

    table = {(src, dst) for sources, dst, _ in TRANSITIONS for src in sources.split(", ")}
    states = {state for pair in table for state in pair} - {"(new)"}
    assert states == set(TASK_STATES), "the table names a state the store does not have"
    assert seen == table


def test_a_worker_stopped_while_it_waits_takes_no_task(store: SQLiteStore) -> None:
    queue = real_queue(store)
    worker = store.register_worker("s-1", "backend", [], time.time())

    async def scenario() -> None:
        waiting = asyncio.create_task(queue.claim(worker.id, None, 5))
        await asyncio.sleep(0.1)
        stop_worker(store, worker.id, time.time())
        queue.create([new("after the stop")], "coordinator")
        with pytest.raises(Conflict, match="stopped"):
            await asyncio.wait_for(waiting, 3)

    asyncio.run(scenario())
    assert store.count_tasks()["ready"] == 1


def test_one_queue_serves_successive_event_loops(store: SQLiteStore) -> None:
    """A test client without a lifespan runs each request on a new loop; the signal must follow."""
    queue = real_queue(store)
    worker = store.register_worker("s-1", "backend", [], time.time())
    assert asyncio.run(queue.claim(worker.id, None, 0.05)) is None
    assert asyncio.run(queue.claim(worker.id, None, 0.05)) is None

    async def woken() -> Task | None:
        waiting = asyncio.create_task(queue.claim(worker.id, None, 5))
        await asyncio.sleep(0.05)
        queue.create([new("a")], "coordinator")
        return await asyncio.wait_for(waiting, 1)

    task = asyncio.run(woken())
    assert task is not None and task.title == "a"


def test_claims_that_arrive_together_share_one_transaction(queue: Queue, clock: FakeClock) -> None:
    """Ten workers claim at once for five tasks: one commit, five distinct tasks, five misses."""
    queue.create([new(f"t{i}") for i in range(5)], "coordinator")
    workers = [queue.store.register_worker(f"s-{i}", "backend", [], clock()) for i in range(10)]
    commits: list[int] = []
    queue.store.on_commit.append(lambda: commits.append(1))  # type: ignore[attr-defined]

    async def all_at_once() -> list[Task | None]:
        return await asyncio.gather(*(queue.claim(worker.id, None, 0) for worker in workers))

    results = asyncio.run(all_at_once())
    got = [task.id for task in results if task is not None]
    assert len(got) == len(set(got)) == 5
    # One commit for the batch of claims, one per worker that found nothing (seen, idle).
    assert len(commits) == 1 + 5
