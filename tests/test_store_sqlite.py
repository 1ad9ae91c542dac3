"""SQLiteStore: the store contract on a real file, plus what only SQLite has (WAL, schema
versions, the claim's index, several connections on one file)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaffold.errors import HubError, InvalidRequest, StoreClosed
from scaffold.hub.core import lifecycle
from scaffold.hub.core.types import TaskState
from scaffold.hub.store.base import TaskFilter
from scaffold.hub.store.migrations import MIGRATIONS
from scaffold.hub.store.sqlite import _CLAIM, SQLiteStore
from tests.store_contract import (
    ACTOR,
    LEASE,
    T0,
    StoreContract,
    claimed,
    complete,
    create,
    new,
    register,
    sha,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "hub.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(path)
    yield opened
    opened.close()


class TestSQLiteStore(StoreContract):
    """Every rule of the store contract, on a SQLite file."""


def test_the_database_is_in_wal_mode(store: SQLiteStore, path: Path) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_the_schema_is_versioned(store: SQLiteStore, path: Path) -> None:
    assert store.schema_version == len(MIGRATIONS)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()


def test_reopening_the_database_keeps_every_row(store: SQLiteStore, path: Path) -> None:
    store.add_key("alice", "agent", sha("alice"), "cli", T0)
    store.sync_config_keys([("coord", "admin", sha("coord"))], T0)
    store.set_plan("goal", "plan", ACTOR, T0)
    a, _ = create(store, new("a", ref="a"), new("b", depends_on=("a",)))
    worker = register(store, caps=("python",))
    held = claimed(store, worker)
    store.add_message("coordinator", "all", "discovery", "found it", T0)
    store.create_tasks([new("c")], 3, ACTOR, T0, ("key-1", "hash-1"))

    def snapshot(opened: SQLiteStore) -> tuple[object, ...]:
        return (
            opened.list_keys(),
            opened.get_plan(),
            opened.list_tasks(TaskFilter(limit=1000)),
            opened.list_workers(),
            opened.read_messages(None, 0, 1000),
            opened.events_after(0, 1000),
        )

    before = snapshot(store)
    store.close()
    reopened = SQLiteStore(path)
    try:
        assert snapshot(reopened) == before
        assert reopened.schema_version == len(MIGRATIONS)
        # The state is live, not only readable: the lease and the idempotency key still hold.
        done, changed = complete(reopened, held.id, held.lease_token or "", "ok", T0 + 1)
        assert changed and done.id == a.id
        _, fresh = reopened.create_tasks([new("c")], 3, ACTOR, T0, ("key-1", "hash-1"))
        assert not fresh
    finally:
        reopened.close()


def test_a_database_from_a_newer_hub_is_refused(store: SQLiteStore, path: Path) -> None:
    store.close()
    newer = len(MIGRATIONS) + 1
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {newer}")
    db.close()
    with pytest.raises(HubError, match=rf"newer hub \(schema {newer}, this hub knows {len(MIGRATIONS)}\)"):
        SQLiteStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == newer
    db.close()


def test_a_closed_store_refuses_calls(store: SQLiteStore) -> None:
    store.close()
    with pytest.raises(StoreClosed):
        store.get_plan()
    with pytest.raises(StoreClosed):
        store.set_plan("goal", "plan", ACTOR, T0)
    store.close()  # closing twice is harmless


def test_listeners_hear_each_commit_but_no_refused_write(store: SQLiteStore) -> None:
    heard: list[int] = []
    store.on_commit.append(lambda: heard.append(store.last_event_id()))
    create(store, new("a"))
    assert heard == [store.last_event_id()]
    with pytest.raises(InvalidRequest):
        store.create_tasks([new("b", depends_on=(999,))], 3, ACTOR, T0)
    assert len(heard) == 1


# -- the claim query ----------------------------------------------------------------------


def _claim_params(caps: str = "[]") -> dict[str, object]:
    """The claim rule's values for the statement, as the store passes them."""
    return {**lifecycle.claim(1, (), "t", T0 + LEASE, T0).take.changes, "caps": caps}


def test_the_claim_walks_the_partial_ready_index(store: SQLiteStore, path: Path) -> None:
    db = sqlite3.connect(path)
    plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {_CLAIM}", _claim_params()))
    db.close()
    assert "USING INDEX tasks_ready" in plan, plan
    assert "TEMP B-TREE" not in plan, f"the claim sorts every ready task: {plan}"


def _claim_steps(path: Path) -> int:
    """SQLite VM steps one claim takes, counted on its own connection and rolled back."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db = sqlite3.connect(path, isolation_level=None)
    db.set_progress_handler(count, 1)
    db.execute("BEGIN IMMEDIATE")
    row = db.execute(_CLAIM, _claim_params()).fetchone()
    db.execute("ROLLBACK")
    db.set_progress_handler(None, 1)
    db.close()
    assert row is not None, "the claim found no task"
    return steps


@pytest.mark.parametrize("crowd", ["blocked", "ready"])
def test_a_claim_costs_the_same_however_many_tasks_wait(tmp_path: Path, crowd: TaskState) -> None:
    costs = []
    for many in (10, 3000):
        opened = SQLiteStore(tmp_path / f"{crowd}-{many}.sqlite3")
        (root,) = create(opened, new("root", ref="root", priority=5))
        depends_on: tuple[int | str, ...] = (root.id,) if crowd == "blocked" else ()
        opened.create_tasks([new(f"t{i}", depends_on=depends_on) for i in range(many)], 3, ACTOR, T0)
        assert opened.count_tasks()[crowd] >= many
        costs.append(_claim_steps(opened.path))
        opened.close()
    few, crowded = costs
    assert crowded < few * 1.5 + 50, f"a claim took {few} steps among 10 {crowd} tasks, {crowded} among 3000"


# -- concurrency --------------------------------------------------------------------------


def test_two_connections_claiming_from_threads_never_share_a_task(store: SQLiteStore, path: Path) -> None:
    total, threads = 200, 4
    tasks = create(store, *(new(f"t{i}", priority=i % 3) for i in range(total)))
    workers = [register(store, f"s-{n}") for n in range(threads)]
    got: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start, first = threading.Barrier(threads, timeout=30), threading.Barrier(threads, timeout=30)

    def drain(number: int) -> None:
        # Half the threads share the fixture's connection, half open their own on the same file.
        own = SQLiteStore(path) if number % 2 else store
        try:
            start.wait()
            # All claim at once, and none goes on before each holds its first task: on a busy
            # machine one thread could otherwise drain the queue before another got going.
            task = own.claim(workers[number].id, (), f"tok-{number}", T0 + LEASE, T0)
            first.wait()
            while task is not None:
                got[number].append(task.id)
                time.sleep(0.001)  # the work: without it one thread can drain the queue alone
                done, changed = complete(own, task.id, f"tok-{number}", "", T0)
                assert changed and done.worker_id == workers[number].id
                task = own.claim(workers[number].id, (), f"tok-{number}", T0 + LEASE, T0)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread below
            errors.append(error)
        finally:
            if own is not store:
                own.close()

    began = time.monotonic()
    pool = [threading.Thread(target=drain, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in pool), "the claimers did not finish in 30 s"
    assert time.monotonic() - began < 30
    assert errors == []
    claimed_ids = [task_id for ids in got for task_id in ids]
    assert len(claimed_ids) == len(set(claimed_ids)) == total
    assert set(claimed_ids) == {task.id for task in tasks}
    assert all(got), f"a thread got no task, so it never contended: {[len(ids) for ids in got]}"
    assert store.count_tasks()["done"] == total
    claim_events = [e for e in store.events_after(0, 10_000) if e.type == "task.claimed"]
    assert len(claim_events) == total


def test_a_key_changed_by_another_connection_counts_at_once(store: SQLiteStore, path: Path) -> None:
    # The store keeps the keys it has found; `scaffold hub keys` writes from another process.
    store.add_key("worker", "agent", sha("worker"), "cli", T0)
    found = store.find_key(sha("worker"))
    assert found is not None and found.role == "agent"
    other = SQLiteStore(path)
    try:
        other.revoke_key("worker", T0 + 1)
        assert store.find_key(sha("worker")) is None, "a revoked key still let its holder in"
        other.add_key("late", "viewer", sha("late"), "cli", T0 + 2)
        late = store.find_key(sha("late"))
        assert late is not None and late.name == "late"
    finally:
        other.close()
    store.revoke_key("late", T0 + 3)  # and a key changed here is forgotten here
    assert store.find_key(sha("late")) is None
