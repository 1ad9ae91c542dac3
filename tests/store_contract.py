"""The contract every `Store` keeps, written once against the abstract interface.

A concrete store's test module subclasses `StoreContract` and provides a `store` fixture (as
huey's `StorageTests` does), so a PostgreSQL store runs these same tests unchanged. Nothing here
may look past `Store`: no SQL, no private attributes. The contract has two halves:

- `StorageContract`: what a store implements. Its records (keys, plan, tasks, workers,
  reservations, messages, events) and its primitives: a decided `Transition` applied atomically
  with its events, on the task as it is inside the write; the claim's pick of the best ready task.
- `LifecycleContract`: the queue's rules (scaffold.hub.core.lifecycle), run over the store through
  those primitives exactly as `Queue` runs them. A store writes no code for this half: it passes
  when its primitives keep the first half.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial

import pytest

from scaffold.errors import Conflict, InvalidRequest, LeaseConflict, NotFound, Reserved
from scaffold.hub.core import lifecycle
from scaffold.hub.core.lifecycle import ClaimRequest, ClaimTerms, Transition
from scaffold.hub.core.otlp import ApiRequest, MetricPoint
from scaffold.hub.core.types import TASK_STATES, NewTask, Plan, Role, Spent, Task, Worker
from scaffold.hub.store.base import Store, TaskFilter

T0 = 1_000_000.0
LEASE = 60.0
ACTOR = "tester"


def sha(label: str) -> str:
    """A distinct, well-formed SHA-256 hex digest per label."""
    return (label.encode().hex() + "0" * 64)[:64]


def new(
    title: str = "task",
    *,
    priority: int = 0,
    depends_on: tuple[int | str, ...] = (),
    ref: str | None = None,
    required_capabilities: tuple[str, ...] = (),
    max_attempts: int | None = None,
) -> NewTask:
    return NewTask(title, f"do {title}", priority, depends_on, ref, required_capabilities, max_attempts)


def create(store: Store, *tasks: NewTask, now: float = T0, max_attempts: int = 3) -> list[Task]:
    created, fresh = store.create_tasks(list(tasks), max_attempts, ACTOR, now)
    assert fresh
    return created


def register(store: Store, session: str = "session-1", caps: tuple[str, ...] = (), now: float = T0) -> Worker:
    return store.register_worker(session, "backend", caps, now)


def claim(store: Store, worker: Worker, now: float = T0, caps: tuple[str, ...] | None = None) -> Task | None:
    token = secrets.token_urlsafe(16)
    return store.claim(worker.id, worker.capabilities if caps is None else caps, token, now + LEASE, now)


def claimed(store: Store, worker: Worker, now: float = T0) -> Task:
    task = claim(store, worker, now)
    assert task is not None, "a ready task was expected"
    assert task.lease_token is not None
    return task


def event_types(store: Store, after: int) -> list[str]:
    return [event.type for event in store.events_after(after, 1000)]


def states(store: Store, *tasks: Task) -> list[str]:
    return [store.get_task(task.id).state for task in tasks]


# -- the queue's rules through the store's primitives, as Queue applies them (time explicit) -----


def heartbeat(store: Store, task_id: int, token: str, lease_until: float, now: float) -> Task:
    rule = partial(lifecycle.heartbeat, token=token, lease_until=lease_until, now=now)
    return store.transition(task_id, rule, now)[0]


def complete(store: Store, task_id: int, token: str, result: str, now: float) -> tuple[Task, bool]:
    return store.transition(task_id, partial(lifecycle.complete, token=token, result=result, now=now), now)


def fail(store: Store, task_id: int, token: str, error: str, now: float) -> Task:
    return store.transition(task_id, partial(lifecycle.fail, token=token, error=error, now=now), now)[0]


def release(store: Store, task_id: int, token: str, now: float) -> Task:
    return store.transition(task_id, partial(lifecycle.release, token=token, now=now), now)[0]


def cancel(store: Store, task_id: int, actor: str, now: float) -> Task:
    return store.transition(task_id, partial(lifecycle.cancel, actor=actor, now=now), now)[0]


def stop_worker(store: Store, worker_id: int, now: float) -> Worker:
    return store.stop_worker(worker_id, now, partial(lifecycle.worker_stopped, now=now))


LeaseCall = Callable[[Store, int, str, float], object]

LEASE_CALLS: dict[str, LeaseCall] = {
    "heartbeat": lambda store, task_id, token, now: heartbeat(store, task_id, token, now + LEASE, now),
    "complete": lambda store, task_id, token, now: complete(store, task_id, token, "result", now),
    "fail": lambda store, task_id, token, now: fail(store, task_id, token, "error", now),
    "release": lambda store, task_id, token, now: release(store, task_id, token, now),
}


class StorageContract:
    """Mixin: what a store implements, one test per rule of `Store`."""

    def test_add_key_then_find_it_by_hash(self, store: Store) -> None:
        added = store.add_key("alice", "agent", sha("alice"), "cli", T0)
        assert (added.name, added.role, added.sha256, added.source) == ("alice", "agent", sha("alice"), "cli")
        assert added.revoked_at is None
        assert store.find_key(sha("alice")) == added
        assert store.find_key(sha("nobody")) is None
        assert store.list_keys() == [added]

    def test_add_key_with_a_taken_name_or_hash_is_a_conflict(self, store: Store) -> None:
        store.add_key("alice", "agent", sha("alice"), "cli", T0)
        with pytest.raises(Conflict):
            store.add_key("alice", "admin", sha("other"), "cli", T0 + 1)
        with pytest.raises(Conflict):
            store.add_key("bob", "admin", sha("alice"), "cli", T0 + 1)
        assert [key.name for key in store.list_keys()] == ["alice"]
        assert store.find_key(sha("other")) is None
        key = store.find_key(sha("alice"))
        assert key is not None and key.role == "agent"

    def test_a_revoked_name_can_be_reused(self, store: Store) -> None:
        store.add_key("alice", "agent", sha("alice-1"), "cli", T0)
        revoked = store.revoke_key("alice", T0 + 1)
        assert revoked.revoked_at == T0 + 1
        again = store.add_key("alice", "admin", sha("alice-2"), "cli", T0 + 2)
        assert store.find_key(sha("alice-2")) == again
        assert store.find_key(sha("alice-1")) is None
        assert again.role == "admin"

    def test_find_key_ignores_a_revoked_key(self, store: Store) -> None:
        store.add_key("alice", "agent", sha("alice"), "cli", T0)
        store.revoke_key("alice", T0 + 1)
        assert store.find_key(sha("alice")) is None

    def test_revoking_an_unknown_or_revoked_key_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            store.revoke_key("ghost", T0)
        store.add_key("alice", "agent", sha("alice"), "cli", T0)
        store.revoke_key("alice", T0 + 1)
        with pytest.raises(NotFound):
            store.revoke_key("alice", T0 + 2)

    def test_sync_config_keys_adds_the_keys(self, store: Store) -> None:
        store.sync_config_keys([("coord", "admin", sha("coord")), ("w", "agent", sha("w"))], T0)
        keys = {key.name: key for key in store.list_keys()}
        assert set(keys) == {"coord", "w"}
        assert {key.source for key in keys.values()} == {"config"}
        assert store.find_key(sha("coord")) == keys["coord"]
        assert keys["w"].role == "agent"

    def test_sync_config_keys_twice_changes_nothing(self, store: Store) -> None:
        config: list[tuple[str, Role, str]] = [("coord", "admin", sha("coord"))]
        store.sync_config_keys(config, T0)
        before, last = store.list_keys(), store.last_event_id()
        store.sync_config_keys(config, T0 + 1)
        assert store.list_keys() == before
        assert store.last_event_id() == last

    def test_sync_config_keys_updates_a_changed_hash_and_role(self, store: Store) -> None:
        store.sync_config_keys([("coord", "agent", sha("old"))], T0)
        store.sync_config_keys([("coord", "admin", sha("new"))], T0 + 1)
        assert store.find_key(sha("old")) is None
        key = store.find_key(sha("new"))
        assert key is not None and (key.name, key.role) == ("coord", "admin")

    def test_sync_config_keys_leaves_a_revoked_key_revoked(self, store: Store) -> None:
        store.sync_config_keys([("coord", "admin", sha("coord"))], T0)
        store.revoke_key("coord", T0 + 1)
        store.sync_config_keys([("coord", "admin", sha("coord"))], T0 + 2)
        assert store.find_key(sha("coord")) is None
        assert [key.revoked_at for key in store.list_keys()] == [T0 + 1]

    def test_sync_config_keys_rotates_a_revoked_key_to_a_new_hash(self, store: Store) -> None:
        """Revoked, then given a new hash in hub.toml: the new key works, the old one never."""
        store.sync_config_keys([("coord", "admin", sha("coord"))], T0)
        store.revoke_key("coord", T0 + 1)
        store.sync_config_keys([("coord", "admin", sha("coord-2"))], T0 + 2)
        key = store.find_key(sha("coord-2"))
        assert key is not None and (key.name, key.role, key.revoked_at) == ("coord", "admin", None)
        assert store.find_key(sha("coord")) is None

    def test_sync_config_keys_revokes_a_key_taken_out_of_the_config(self, store: Store) -> None:
        store.sync_config_keys([("coord", "admin", sha("coord")), ("w", "agent", sha("w"))], T0)
        store.add_key("cli", "agent", sha("cli"), "cli", T0)
        store.sync_config_keys([("coord", "admin", sha("coord"))], T0 + 1)
        assert store.find_key(sha("w")) is None
        assert store.find_key(sha("coord")) is not None
        assert store.find_key(sha("cli")) is not None, "keys added by command stay"
        assert store.events_after(0, 100)[-1].type == "key.revoked"

    def test_sync_config_keys_refuses_the_name_of_a_cli_key(self, store: Store) -> None:
        store.add_key("coord", "agent", sha("cli"), "cli", T0)
        with pytest.raises(Conflict, match="coord"):
            store.sync_config_keys([("fresh", "agent", sha("fresh")), ("coord", "admin", sha("cfg"))], T0 + 1)
        assert store.find_key(sha("fresh")) is None, "a refused sync must write nothing"
        key = store.find_key(sha("cli"))
        assert key is not None and (key.role, key.source) == ("agent", "cli")

    def test_sync_config_keys_refuses_a_hash_another_key_has(self, store: Store) -> None:
        store.add_key("cli-key", "agent", sha("shared"), "cli", T0)
        with pytest.raises(Conflict):
            store.sync_config_keys([("coord", "admin", sha("shared"))], T0 + 1)
        store.sync_config_keys([("coord", "admin", sha("coord"))], T0 + 2)
        with pytest.raises(Conflict):
            store.sync_config_keys([("coord", "admin", sha("shared"))], T0 + 3)
        assert store.find_key(sha("coord")) is not None
        key = store.find_key(sha("shared"))
        assert key is not None and key.name == "cli-key"

    def test_the_plan_starts_empty_and_keeps_the_last_update(self, store: Store) -> None:
        assert store.get_plan() == Plan("", "", None)
        assert store.set_plan("ship", "1. build", ACTOR, T0) == Plan("ship", "1. build", T0)
        store.set_plan("ship it", "1. build\n2. test", ACTOR, T0 + 5)
        assert store.get_plan() == Plan("ship it", "1. build\n2. test", T0 + 5)

    def test_create_tasks_fills_every_field(self, store: Store) -> None:
        tasks, fresh = store.create_tasks(
            [
                new("first", priority=5, required_capabilities=("python", "git", "python")),
                new("second", max_attempts=7),
            ],
            3,
            ACTOR,
            T0,
        )
        assert fresh
        first, second = tasks
        assert second.id > first.id
        assert (first.title, first.instructions, first.priority) == ("first", "do first", 5)
        assert first.state == "ready"
        assert first.depends_on == ()
        assert first.required_capabilities == ("git", "python")
        assert (first.attempts, first.max_attempts, second.max_attempts) == (0, 3, 7)
        assert (first.worker_id, first.lease_token, first.lease_expires_at) == (None, None, None)
        assert (first.result, first.error, first.claimed_at, first.finished_at) == (None, None, None, None)
        assert (first.created_at, first.updated_at) == (T0, T0)
        assert store.get_task(first.id) == first
        assert store.get_task(second.id) == second

    def test_ids_keep_increasing_across_batches(self, store: Store) -> None:
        (a,) = create(store, new("a"))
        (b, c) = create(store, new("b"), new("c"))
        assert a.id < b.id < c.id

    def test_dependencies_by_ref_and_by_id_block_a_task(self, store: Store) -> None:
        a, b = create(store, new("a", ref="a"), new("b", depends_on=("a",)))
        assert (a.state, b.state) == ("ready", "blocked")
        assert b.depends_on == (a.id,)
        (c,) = create(store, new("c", depends_on=(a.id, b.id)))
        assert c.state == "blocked"
        assert c.depends_on == tuple(sorted((a.id, b.id)))

    def test_a_later_task_of_a_batch_may_be_named_by_an_earlier_one(self, store: Store) -> None:
        first, second = create(store, new("first", depends_on=("second",)), new("second", ref="second"))
        assert (first.state, second.state) == ("blocked", "ready")
        assert first.depends_on == (second.id,)

    def test_depending_on_a_done_task_is_ready_at_once(self, store: Store) -> None:
        (a,) = create(store, new("a"))
        worker = register(store)
        complete(store, a.id, claimed(store, worker).lease_token or "", "ok", T0)
        (b,) = create(store, new("b", depends_on=(a.id,)))
        assert b.state == "ready"
        assert b.depends_on == (a.id,)

    def test_an_unknown_dependency_is_refused_and_nothing_is_written(self, store: Store) -> None:
        (a,) = create(store, new("a"))
        counts, last, listed = store.count_tasks(), store.last_event_id(), store.list_tasks(TaskFilter())
        with pytest.raises(InvalidRequest, match=str(a.id + 1000)):
            store.create_tasks(
                [new("x", ref="x"), new("y", depends_on=("x", a.id)), new("z", depends_on=(a.id + 1000,))],
                3,
                ACTOR,
                T0 + 1,
                ("key-1", "hash-1"),
            )
        assert store.count_tasks() == counts
        assert store.last_event_id() == last
        assert store.list_tasks(TaskFilter()) == listed
        # The refused request did not take the idempotency key either.
        tasks, fresh = store.create_tasks([new("x")], 3, ACTOR, T0 + 2, ("key-1", "hash-2"))
        assert fresh and tasks[0].title == "x"

    def test_depending_on_a_task_that_can_never_finish_is_refused(self, store: Store) -> None:
        (cancelled, dying) = create(store, new("cancelled"), new("dying"), max_attempts=1)
        cancel(store, cancelled.id, ACTOR, T0)
        worker = register(store)
        held = claimed(store, worker)
        assert held.id == dying.id
        assert fail(store, dying.id, held.lease_token or "", "boom", T0).state == "dead"
        counts = store.count_tasks()
        for hopeless in (cancelled, dying):
            with pytest.raises(InvalidRequest, match=str(hopeless.id)):
                store.create_tasks([new("after", depends_on=(hopeless.id,))], 3, ACTOR, T0)
        assert store.count_tasks() == counts

    def test_an_idempotency_key_returns_the_first_batch(self, store: Store) -> None:
        batch = [new("a", ref="a"), new("b", depends_on=("a",))]
        first, fresh = store.create_tasks(batch, 3, ACTOR, T0, ("key-1", "hash-1"))
        assert fresh
        last = store.last_event_id()
        again, fresh_again = store.create_tasks(batch, 3, ACTOR, T0 + 1, ("key-1", "hash-1"))
        assert not fresh_again
        assert again == first
        assert store.last_event_id() == last
        assert sum(store.count_tasks().values()) == 2

    def test_an_idempotency_key_reused_for_another_request_is_a_conflict(self, store: Store) -> None:
        store.create_tasks([new("a")], 3, ACTOR, T0, ("key-1", "hash-1"))
        with pytest.raises(Conflict, match="key-1"):
            store.create_tasks([new("b")], 3, ACTOR, T0 + 1, ("key-1", "hash-2"))
        assert [task.title for task in store.list_tasks(TaskFilter())] == ["a"]

    def test_get_task_of_an_unknown_id_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            store.get_task(12345)

    def test_list_tasks_filters_pages_and_orders_by_id(self, store: Store) -> None:
        tasks = create(store, *(new(f"t{i}") for i in range(5)))
        worker = register(store)
        held = claimed(store, worker)
        assert held.id == tasks[0].id
        everything = store.list_tasks(TaskFilter())
        assert [task.id for task in everything] == [task.id for task in tasks]
        page = store.list_tasks(TaskFilter(after_id=tasks[1].id, limit=2))
        assert [task.id for task in page] == [tasks[2].id, tasks[3].id]
        ready = store.list_tasks(TaskFilter(states=("ready",)))
        assert [task.id for task in ready] == [task.id for task in tasks[1:]]
        both = store.list_tasks(TaskFilter(states=("ready", "claimed"), limit=2))
        assert [task.id for task in both] == [tasks[0].id, tasks[1].id]
        mine = store.list_tasks(TaskFilter(worker_id=worker.id))
        assert [task.id for task in mine] == [held.id]

    def test_count_tasks_has_every_state(self, store: Store) -> None:
        assert store.count_tasks() == dict.fromkeys(TASK_STATES, 0)
        create(store, new("a", ref="a"), new("b", depends_on=("a",)), new("c"))
        register(store)
        counts = store.count_tasks()
        assert counts == {"blocked": 1, "ready": 2, "claimed": 0, "done": 0, "dead": 0, "cancelled": 0}

    def test_claim_takes_the_highest_priority_then_the_oldest(self, store: Store) -> None:
        low, high_old, high_new, mid = create(
            store,
            new("low", priority=0),
            new("high-old", priority=9),
            new("high-new", priority=9),
            new("mid", priority=4),
        )
        worker = register(store)
        order = [claimed(store, worker).id for _ in range(4)]
        assert order == [high_old.id, high_new.id, mid.id, low.id]
        assert claim(store, worker) is None

    def test_claim_needs_every_required_capability(self, store: Store) -> None:
        (task,) = create(store, new("both", required_capabilities=("a", "b")))
        only_a = register(store, "s-a", ("a",))
        only_b = register(store, "s-b", ("b",))
        neither = register(store, "s-none")
        assert claim(store, only_a) is None
        assert claim(store, only_b) is None
        assert claim(store, neither) is None
        assert store.get_task(task.id).state == "ready"
        both = register(store, "s-abc", ("c", "b", "a"))
        got = claim(store, both)
        assert got is not None and got.id == task.id

    def test_claim_passes_over_tasks_the_worker_cannot_do(self, store: Store) -> None:
        gpu, plain = create(store, new("gpu", priority=9, required_capabilities=("gpu",)), new("plain"))
        worker = register(store, caps=("python",))
        assert claimed(store, worker).id == plain.id
        assert claim(store, worker) is None
        assert store.get_task(gpu.id).state == "ready"

    def test_a_task_without_requirements_suits_any_worker(self, store: Store) -> None:
        (task,) = create(store, new("any"))
        worker = register(store, caps=("python", "git"))
        assert claimed(store, worker).id == task.id

    def test_claim_with_nothing_ready_returns_none(self, store: Store) -> None:
        worker = register(store)
        last = store.last_event_id()
        assert claim(store, worker) is None
        assert store.last_event_id() == last

    def test_blocked_tasks_are_never_claimed(self, store: Store) -> None:
        root, *blocked = create(
            store,
            new("root", ref="root", priority=-5),
            *(new(f"b{i}", priority=9, depends_on=("root",)) for i in range(3)),
        )
        worker = register(store)
        assert claimed(store, worker).id == root.id
        assert claim(store, worker) is None
        assert states(store, *blocked) == ["blocked"] * 3

    def test_stuck_tasks_are_blocked_behind_a_task_that_can_never_finish(self, store: Store) -> None:
        a, b, c, d, e = create(
            store,
            new("a", ref="a"),
            new("b", ref="b", depends_on=("a",)),
            new("c", ref="c", max_attempts=1),
            new("d", depends_on=("c",)),
            new("e", depends_on=("b",)),
        )
        assert store.stuck_tasks() == []
        cancel(store, a.id, ACTOR, T0)
        assert store.stuck_tasks() == [b.id]
        worker = register(store)
        held = claimed(store, worker)
        assert held.id == c.id
        fail(store, c.id, held.lease_token or "", "", T0)
        assert store.stuck_tasks() == [b.id, d.id]
        assert states(store, e) == ["blocked"]

    def test_ready_requirements_are_the_tags_of_ready_tasks_that_need_some(self, store: Store) -> None:
        _, ui, _, both = create(
            store,
            new("plain", ref="p"),
            new("ui", required_capabilities=("frontend",)),
            new("blocked", depends_on=("p",), required_capabilities=("frontend",)),
            new("both", required_capabilities=("backend", "db")),
        )
        assert store.ready_requirements() == [(ui.id, ("frontend",)), (both.id, ("backend", "db"))]
        cancel(store, ui.id, ACTOR, T0)
        assert [task_id for task_id, _ in store.ready_requirements()] == [both.id]

    def test_register_a_worker(self, store: Store) -> None:
        worker = store.register_worker("s-1", "backend", ["python", "git"], T0)
        assert (worker.session_id, worker.role, set(worker.capabilities)) == (
            "s-1",
            "backend",
            {"python", "git"},
        )
        assert (worker.registered_at, worker.last_seen, worker.idle_since) == (T0, T0, T0)
        assert (worker.stopped_at, worker.current_task) == (None, None)
        assert store.get_worker(worker.id) == worker
        assert store.find_worker_by_session("s-1") == worker
        assert store.find_worker_by_session("s-2") is None
        other = store.register_worker("s-2", "docs", [], T0)
        assert other.id != worker.id
        assert [w.id for w in store.list_workers()] == [worker.id, other.id]
        with pytest.raises(NotFound):
            store.get_worker(other.id + 100)

    def test_registering_the_same_session_again_keeps_the_id(self, store: Store) -> None:
        first = store.register_worker("s-1", "backend", ["python"], T0)
        stop_worker(store, first.id, T0 + 1)
        again = store.register_worker("s-1", "frontend", ["js"], T0 + 2)
        assert again.id == first.id
        assert (again.role, again.capabilities, again.stopped_at) == ("frontend", ("js",), None)
        assert again.last_seen == T0 + 2
        assert len(store.list_workers()) == 1

    def test_touch_worker_records_that_it_is_alive(self, store: Store) -> None:
        worker = register(store)
        assert store.touch_worker(worker.id, T0 + 9).last_seen == T0 + 9
        assert store.get_worker(worker.id).last_seen == T0 + 9
        with pytest.raises(NotFound):
            store.touch_worker(worker.id + 100, T0)

    def test_current_task_follows_the_claim(self, store: Store) -> None:
        create(store, new("a"), new("b"))
        worker = register(store)
        assert store.get_worker(worker.id).current_task is None
        held = claimed(store, worker)
        assert store.get_worker(worker.id).current_task == held.id
        assert store.find_worker_by_session(worker.session_id) == store.get_worker(worker.id)
        assert [w.current_task for w in store.list_workers()] == [held.id]
        complete(store, held.id, held.lease_token or "", "", T0 + 1)
        assert store.get_worker(worker.id).current_task is None
        assert store.get_worker(worker.id).idle_since == T0 + 1

    def test_messages_are_read_by_target_and_cursor(self, store: Store) -> None:
        to_all = store.add_message("coordinator", "all", "message", "hello", T0)
        to_role = store.add_message("coordinator", "role:backend", "discovery", "tests live in t/", T0 + 1)
        to_one = store.add_message("worker:2", "worker:1", "message", "ping", T0 + 2)
        store.add_message("worker:1", "coordinator", "message", "pong", T0 + 3)
        assert (to_all.sender, to_all.target, to_all.kind, to_all.body) == (
            "coordinator",
            "all",
            "message",
            "hello",
        )
        assert to_all.id < to_role.id < to_one.id
        mine = store.read_messages(["all", "role:backend", "worker:1"], 0, 100)
        assert mine == [to_all, to_role, to_one]
        assert store.read_messages(["all", "role:backend", "worker:1"], to_all.id, 100) == [to_role, to_one]
        assert store.read_messages(["all", "role:backend", "worker:1"], 0, 1) == [to_all]
        assert [m.body for m in store.read_messages(None, 0, 100)] == [
            "hello",
            "tests live in t/",
            "ping",
            "pong",
        ]
        assert store.read_messages(["role:docs"], 0, 100) == []

    def test_events_after_pages_through_the_log(self, store: Store) -> None:
        first = store.append_event("exec.run", T0, actor="alice", argv=["ls"], exit_code=0)
        assert (first.type, first.actor, first.data) == (
            "exec.run",
            "alice",
            {"argv": ["ls"], "exit_code": 0},
        )
        for i in range(4):
            store.append_event("exec.run", T0 + i, exit_code=i)
        assert store.last_event_id() > first.id
        everything = store.events_after(0, 100)
        assert everything[0] == first
        assert len(everything) == 5
        page = store.events_after(everything[1].id, 2)
        assert page == everything[2:4]
        assert store.events_after(store.last_event_id(), 100) == []
        assert [event.data["exit_code"] for event in everything[1:]] == [0, 1, 2, 3]

    def test_reserve_lists_and_expires(self, store: Store) -> None:
        worker = register(store)
        made = store.reserve(worker.id, ["src/**", "README.md"], True, None, T0 + 60, T0)
        assert [(r.pattern, r.exclusive, r.worker_id, r.role, r.task_id) for r in made] == [
            ("src/**", True, worker.id, "backend", None),
            ("README.md", True, worker.id, "backend", None),
        ]
        assert all((r.created_at, r.expires_at) == (T0, T0 + 60) for r in made)
        assert made[0].id < made[1].id
        assert store.list_reservations(T0 + 1) == made
        assert store.list_reservations(T0 + 1, worker.id) == made
        assert store.list_reservations(T0 + 1, worker.id + 1) == []
        assert store.list_reservations(T0 + 60) == [], "a reservation is over at its expiry"
        with pytest.raises(NotFound):
            store.renew_reservation(made[0].id, worker.id, T0 + 200, T0 + 61)
        with pytest.raises(NotFound):
            store.release_reservation(made[0].id, worker.id, T0 + 61)

    def test_an_exclusive_overlap_with_another_worker_is_reserved_and_writes_nothing(
        self, store: Store
    ) -> None:
        holder = register(store, "session-1")
        other = store.register_worker("session-2", "frontend", (), T0)
        (held,) = store.reserve(holder.id, ["src/**"], True, None, T0 + 60, T0)
        before = store.last_event_id()
        for patterns in (["src/**"], ["docs/**", "src/api/*.py"], ["**"], ["src/app.py"]):
            with pytest.raises(Reserved) as refused:
                store.reserve(other.id, patterns, True, None, T0 + 60, T0 + 1)
            assert f"worker {holder.id} (backend)" in refused.value.message
            assert "'src/**'" in refused.value.message
        assert store.last_event_id() == before
        assert store.list_reservations(T0 + 1) == [held]
        # No overlap, a shared reservation, the holder itself, or after the expiry: granted.
        assert store.reserve(other.id, ["docs/**", "src.txt"], True, None, T0 + 60, T0 + 1)
        assert store.reserve(other.id, ["src/app.py"], False, None, T0 + 60, T0 + 1)
        assert store.reserve(holder.id, ["src/app.py"], True, None, T0 + 60, T0 + 1)
        assert store.reserve(other.id, ["src/**"], True, None, T0 + 200, T0 + 60)

    def test_reserving_a_held_pattern_again_renews_it(self, store: Store) -> None:
        worker = register(store)
        (first,) = store.reserve(worker.id, ["src/**"], False, None, T0 + 60, T0)
        (again,) = store.reserve(worker.id, ["src/**"], True, None, T0 + 120, T0 + 10)
        assert again.id == first.id
        assert (again.exclusive, again.expires_at, again.created_at) == (True, T0 + 120, T0)
        assert store.list_reservations(T0 + 10) == [again]

    def test_renew_and_release_belong_to_the_holder(self, store: Store) -> None:
        holder = register(store, "session-1")
        other = register(store, "session-2")
        (held,) = store.reserve(holder.id, ["a/**"], True, None, T0 + 60, T0)
        with pytest.raises(Conflict):
            store.renew_reservation(held.id, other.id, T0 + 500, T0 + 1)
        with pytest.raises(Conflict):
            store.release_reservation(held.id, other.id, T0 + 1)
        renewed = store.renew_reservation(held.id, holder.id, T0 + 500, T0 + 1)
        assert renewed.expires_at == T0 + 500
        assert store.list_reservations(T0 + 400) == [renewed]
        released = store.release_reservation(held.id, holder.id, T0 + 2)
        assert released.id == held.id
        assert store.list_reservations(T0 + 2) == []
        with pytest.raises(NotFound):
            store.release_reservation(held.id, holder.id, T0 + 3)
        with pytest.raises(NotFound):
            store.renew_reservation(424242, holder.id, T0 + 500, T0 + 3)

    def test_reserve_checks_the_worker_and_the_task(self, store: Store) -> None:
        worker = register(store, "session-1")
        other = register(store, "session-2")
        (task,) = create(store, new("a"))
        with pytest.raises(NotFound):
            store.reserve(424242, ["a"], True, None, T0 + 60, T0)
        with pytest.raises(NotFound):
            store.reserve(worker.id, ["a"], True, 424242, T0 + 60, T0)
        with pytest.raises(Conflict):
            store.reserve(worker.id, ["a"], True, task.id, T0 + 60, T0)  # ready, not held
        claimed(store, worker)
        with pytest.raises(Conflict):
            store.reserve(other.id, ["a"], True, task.id, T0 + 60, T0)  # held by another
        stop_worker(store, other.id, T0)
        with pytest.raises(Conflict):
            store.reserve(other.id, ["b"], True, None, T0 + 60, T0)
        assert store.list_reservations(T0) == []
        (held,) = store.reserve(worker.id, ["a"], True, task.id, T0 + 60, T0)
        assert held.task_id == task.id

    def test_reap_deletes_expired_reservations_with_an_event(self, store: Store) -> None:
        worker = register(store)
        (short,) = store.reserve(worker.id, ["a"], True, None, T0 + 10, T0)
        (long,) = store.reserve(worker.id, ["b"], True, None, T0 + 100, T0)
        before = store.last_event_id()
        store.reap(T0 + 10)
        events = store.events_after(before, 10)
        assert [(e.type, e.data["id"]) for e in events] == [("reservation.expired", short.id)]
        assert store.list_reservations(T0 + 10) == [long]
        # A new reservation never gets the id of one that ended.
        (fresh,) = store.reserve(worker.id, ["c"], True, None, T0 + 100, T0 + 11)
        assert fresh.id > long.id

    def test_reservation_changes_are_events(self, store: Store) -> None:
        worker = register(store)
        before = store.last_event_id()
        (held,) = store.reserve(worker.id, ["a/**"], True, None, T0 + 60, T0)
        store.renew_reservation(held.id, worker.id, T0 + 120, T0 + 1)
        store.release_reservation(held.id, worker.id, T0 + 2)
        events = store.events_after(before, 10)
        assert [e.type for e in events] == [
            "reservation.created",
            "reservation.renewed",
            "reservation.released",
        ]
        assert all(e.worker_id == worker.id and e.data["id"] == held.id for e in events)
        assert events[0].data["pattern"] == "a/**"
        assert events[2].data["reason"] == "released"

    # -- applying a decided transition --------------------------------------------------------

    def test_transition_applies_the_decided_change_and_its_event(self, store: Store) -> None:
        (task,) = create(store, new("a"))
        last = store.last_event_id()
        seen: list[Task] = []

        def decide(current: Task) -> Transition:
            seen.append(current)
            return Transition(
                {"state": "cancelled", "error": "why", "finished_at": T0 + 1, "updated_at": T0 + 1},
                event=lifecycle.event("task.cancelled", None, ACTOR, note="n"),
            )

        after, changed = store.transition(task.id, decide, T0 + 1)
        assert changed and seen == [task]
        assert (after.state, after.error, after.finished_at, after.updated_at) == (
            "cancelled",
            "why",
            T0 + 1,
            T0 + 1,
        )
        assert store.get_task(task.id) == after
        (event,) = store.events_after(last, 10)
        assert (event.type, event.task_id, event.actor, event.data, event.at) == (
            "task.cancelled",
            task.id,
            ACTOR,
            {"note": "n"},
            T0 + 1,
        )

    def test_a_refused_or_empty_decision_writes_nothing(self, store: Store) -> None:
        (task,) = create(store, new("a"))
        last = store.last_event_id()

        def refuse(current: Task) -> Transition:
            raise Conflict("no")

        with pytest.raises(Conflict):
            store.transition(task.id, refuse, T0 + 1)
        assert store.transition(task.id, lambda current: None, T0 + 1) == (task, False)
        assert store.get_task(task.id) == task and store.last_event_id() == last
        with pytest.raises(NotFound):
            store.transition(999, lambda current: None, T0)

    def test_each_decision_sees_the_task_as_the_last_write_left_it(self, store: Store) -> None:
        """Fencing: the task is read inside the write that applies the decision."""
        (task,) = create(store, new("a"))
        store.transition(task.id, lambda current: Transition({"state": "claimed", "lease_token": "one"}), T0)
        seen: list[str | None] = []

        def record(current: Task) -> None:
            seen.append(current.lease_token)

        store.transition(task.id, record, T0)
        assert seen == ["one"]

    def test_dependents_with_nothing_left_to_wait_for_go_to_the_rule(self, store: Store) -> None:
        a, b, both, c = create(
            store,
            new("a", ref="a"),
            new("b", ref="b"),
            new("both", depends_on=("a", "b")),
            new("c", depends_on=("a",)),
        )
        handed: list[int] = []

        def finish(current: Task) -> Transition:
            return Transition({"state": "done", "updated_at": T0}, dependents=lambda d: handed.append(d.id))

        store.transition(a.id, finish, T0)
        assert handed == [c.id]
        store.transition(b.id, finish, T0)
        assert handed == [c.id, both.id]

    def test_take_applies_the_terms_to_the_best_ready_task(self, store: Store) -> None:
        _, best = create(store, new("low"), new("high", priority=2))
        worker = register(store)
        take = Transition(
            {
                "state": "claimed",
                "worker_id": worker.id,
                "lease_token": "tok",
                "lease_expires_at": T0 + 9,
                "claimed_at": T0,
                "updated_at": T0,
            },
            event=lifecycle.event("task.claimed", worker.id),
            worker=worker.id,
            seen=True,
        )
        last = store.last_event_id()
        got = store.take(ClaimTerms((), take), T0 + 2)
        assert got is not None and (got.id, got.lease_token, got.lease_expires_at) == (best.id, "tok", T0 + 9)
        assert event_types(store, last) == ["task.claimed"]
        assert store.get_worker(worker.id).last_seen == T0 + 2

    # -- usage --------------------------------------------------------------------------------

    def test_requests_are_stored_once_and_attributed_to_the_task_held_at_their_time(
        self, store: Store
    ) -> None:
        worker = register(store)
        first, second = store.create_tasks([new("a"), new("b")], 3, ACTOR, T0)[0]
        held = claimed(store, worker, T0 + 10)
        complete(store, held.id, held.lease_token or "", "ok", T0 + 20)
        held = claimed(store, worker, T0 + 30)
        fail(store, held.id, held.lease_token or "", "no", T0 + 40)
        at = [T0 + 5, T0 + 15, T0 + 25, T0 + 35, T0 + 45]
        charged = store.record_requests([request("session-1", n, when) for n, when in enumerate(at)])
        assert [(c.worker_id, c.task_id) for c in charged] == [
            (worker.id, None),
            (worker.id, first.id),
            (worker.id, None),
            (worker.id, second.id),
            (worker.id, None),
        ]
        assert store.record_requests([request("session-1", 1, T0 + 15)]) == []  # seen before
        assert store.task_usage([first.id, second.id, 999]) == {
            first.id: Spent(1, 1, 2, 3, 4, 10),
            second.id: Spent(1, 3, 2, 3, 4, 10),
        }
        assert store.usage_total(None, None).requests == 5
        assert store.usage_total(T0 + 10, T0 + 30).requests == 2
        assert store.usage_total(None, None, worker.id).requests == 5

    def test_a_sessions_requests_become_its_workers_when_it_registers(self, store: Store) -> None:
        (charge,) = store.record_requests([request("late", 1, T0)])
        assert (charge.worker_id, charge.task_id) == (None, None)
        assert [row.key for row in store.usage_by("worker", None, None)] == ["coordinator"]
        worker = register(store, "late", now=T0 + 1)
        (row,) = store.usage_by("worker", None, None)
        assert row.key == worker.id and row.outside_tasks == row.spent == Spent(1, 1, 2, 3, 4, 10)

    def test_metric_points_count_each_window_once_and_a_cumulative_series_at_its_latest(
        self, store: Store
    ) -> None:
        delta = [point("cost", 0.5, 0, 10), point("cost", 0.5, 0, 10), point("cost", 0.25, 10, 20)]
        cumulative = [
            point("tokens", 5, 0, 10, True),
            point("tokens", 9, 0, 20, True),
            point("tokens", 7, 0, 15, True),
        ]
        store.record_metric_points(delta + cumulative)
        assert store.metric_totals(None, None) == (0.75, 9.0)


def request(session: str, sequence: int, at: float) -> ApiRequest:
    return ApiRequest(session, sequence, at, "model", sequence, 2, 3, 4, 10)


def point(metric: str, value: float, start: int, end: int, cumulative: bool = False) -> MetricPoint:
    return MetricPoint(metric, "s", "model", "", f'{{"m":"{metric}"}}', cumulative, start, end, value)


class LifecycleContract:
    """Mixin: the queue's rules over any store, through its primitives; nothing store-specific."""

    def test_claim_sets_a_lease(self, store: Store) -> None:
        (task,) = create(store, new("a"))
        worker = register(store)
        got = store.claim(worker.id, (), "token-1", T0 + 10 + LEASE, T0 + 10)
        assert got is not None
        assert got.id == task.id
        assert (got.state, got.worker_id, got.lease_token) == ("claimed", worker.id, "token-1")
        assert (got.lease_expires_at, got.claimed_at, got.updated_at) == (T0 + 10 + LEASE, T0 + 10, T0 + 10)
        assert got.attempts == 0
        assert store.get_task(task.id) == got
        assert store.get_worker(worker.id).current_task == task.id

    def test_a_claim_batch_answers_each_request_in_order_and_never_twice(self, store: Store) -> None:
        high, low, gpu = create(
            store, new("high", priority=5), new("low"), new("gpu", required_capabilities=("gpu",))
        )
        first, second = register(store, "s-1", ("gpu", "python")), register(store, "s-2", ("python",))
        stopped = register(store, "s-3")
        stop_worker(store, stopped.id, T0)
        results = store.claim_batch(
            [
                ClaimRequest(first.id, ("python",), "t-1"),  # narrowed: may not take the gpu task
                ClaimRequest(second.id, None, "t-2"),
                ClaimRequest(stopped.id, None, "t-3"),
                ClaimRequest(first.id + 99, None, "t-4"),
                ClaimRequest(second.id, None, "t-5"),  # nothing left it can do
                ClaimRequest(first.id, None, "t-6"),
            ],
            partial(lifecycle.claim_for, lease_until=T0 + LEASE, now=T0),
            T0,
        )
        assert [getattr(r, "id", None) for r in results[:2]] == [high.id, low.id]
        assert isinstance(results[2], Conflict) and "stopped" in results[2].message
        assert isinstance(results[3], NotFound)
        assert results[4] is None
        assert isinstance(results[5], Task) and results[5].id == gpu.id
        assert results[5].lease_token == "t-6"
        assert store.count_tasks()["claimed"] == 3

    def test_heartbeat_extends_the_lease(self, store: Store) -> None:
        create(store, new("a"))
        worker = register(store)
        held = claimed(store, worker)
        beat = heartbeat(store, held.id, held.lease_token or "", T0 + 500, T0 + 30)
        assert (beat.state, beat.lease_token, beat.lease_expires_at) == (
            "claimed",
            held.lease_token,
            T0 + 500,
        )
        assert beat.updated_at == T0 + 30
        assert store.get_task(held.id) == beat
        assert store.get_worker(worker.id).last_seen == T0 + 30

    @pytest.mark.parametrize("operation", sorted(LEASE_CALLS))
    def test_a_wrong_token_is_a_lease_conflict_and_changes_nothing(
        self, store: Store, operation: str
    ) -> None:
        create(store, new("a"))
        worker = register(store)
        held = claimed(store, worker)
        before, last = store.get_task(held.id), store.last_event_id()
        with pytest.raises(LeaseConflict):
            LEASE_CALLS[operation](store, held.id, "not-the-token", T0 + 1)
        assert store.get_task(held.id) == before
        assert store.last_event_id() == last

    @pytest.mark.parametrize("operation", sorted(LEASE_CALLS))
    def test_a_stale_token_is_a_lease_conflict_and_changes_nothing(
        self, store: Store, operation: str
    ) -> None:
        create(store, new("a"))
        first, second = register(store, "s-1"), register(store, "s-2")
        stale = claimed(store, first)
        release(store, stale.id, stale.lease_token or "", T0 + 1)
        current = claimed(store, second, T0 + 2)
        assert current.id == stale.id and current.lease_token != stale.lease_token
        before, last = store.get_task(current.id), store.last_event_id()
        with pytest.raises(LeaseConflict):
            LEASE_CALLS[operation](store, stale.id, stale.lease_token or "", T0 + 3)
        assert store.get_task(current.id) == before
        assert store.last_event_id() == last

    @pytest.mark.parametrize("operation", sorted(LEASE_CALLS))
    def test_a_task_that_is_not_claimed_refuses_every_token(self, store: Store, operation: str) -> None:
        (task,) = create(store, new("a"))
        before = store.get_task(task.id)
        with pytest.raises(LeaseConflict):
            LEASE_CALLS[operation](store, task.id, "", T0 + 1)
        assert store.get_task(task.id) == before

    @pytest.mark.parametrize("operation", sorted(LEASE_CALLS))
    def test_a_lease_call_on_an_unknown_task_is_not_found(self, store: Store, operation: str) -> None:
        with pytest.raises(NotFound):
            LEASE_CALLS[operation](store, 999, "token", T0)

    def test_complete_records_the_result(self, store: Store) -> None:
        create(store, new("a"))
        worker = register(store)
        held = claimed(store, worker)
        done, changed = complete(store, held.id, held.lease_token or "", "it works", T0 + 5)
        assert changed
        assert (done.state, done.result, done.finished_at, done.updated_at) == (
            "done",
            "it works",
            T0 + 5,
            T0 + 5,
        )
        assert done.lease_expires_at is None
        assert store.get_task(held.id) == done
        assert store.get_worker(worker.id).current_task is None

    def test_complete_twice_with_the_same_token_is_idempotent(self, store: Store) -> None:
        create(store, new("a"))
        worker = register(store)
        held = claimed(store, worker)
        token = held.lease_token or ""
        done, changed = complete(store, held.id, token, "first", T0 + 5)
        assert changed
        last = store.last_event_id()
        again, changed_again = complete(store, held.id, token, "second", T0 + 6)
        assert not changed_again
        assert again == done
        assert again.result == "first"
        assert store.last_event_id() == last
        with pytest.raises(LeaseConflict):
            complete(store, held.id, "another-token", "third", T0 + 7)

    def test_completing_unblocks_a_dependent_only_when_all_its_dependencies_are_done(
        self, store: Store
    ) -> None:
        a, b, c, d = create(
            store,
            new("a", ref="a", priority=2),
            new("b", ref="b", priority=1),
            new("c", ref="c", depends_on=("a", "b")),
            new("d", depends_on=("a",)),
        )
        worker = register(store)
        first = claimed(store, worker)
        assert first.id == a.id
        last = store.last_event_id()
        complete(store, a.id, first.lease_token or "", "", T0 + 1)
        assert states(store, c, d) == ["blocked", "ready"]
        assert event_types(store, last) == ["task.completed", "task.ready"]
        assert store.events_after(last, 10)[1].task_id == d.id
        second = claimed(store, worker, T0 + 2)
        assert second.id == b.id
        complete(store, b.id, second.lease_token or "", "", T0 + 3)
        assert states(store, c) == ["ready"]
        assert store.get_task(c.id).updated_at == T0 + 3

    def test_fail_returns_the_task_to_ready_then_kills_it_at_max_attempts(self, store: Store) -> None:
        (task,) = create(store, new("a", max_attempts=2))
        worker = register(store)
        held = claimed(store, worker)
        failed = fail(store, task.id, held.lease_token or "", "flaky", T0 + 1)
        assert (failed.state, failed.attempts, failed.error) == ("ready", 1, "flaky")
        assert (failed.worker_id, failed.lease_token, failed.lease_expires_at) == (None, None, None)
        assert failed.finished_at is None
        held = claimed(store, worker, T0 + 2)
        dead = fail(store, task.id, held.lease_token or "", "broken", T0 + 3)
        assert (dead.state, dead.attempts, dead.error, dead.finished_at) == ("dead", 2, "broken", T0 + 3)
        assert claim(store, worker, T0 + 4) is None

    def test_release_gives_the_task_back_without_using_an_attempt(self, store: Store) -> None:
        (task,) = create(store, new("a", max_attempts=1))
        worker = register(store)
        for step in range(3):
            held = claimed(store, worker, T0 + step)
            released = release(store, task.id, held.lease_token or "", T0 + step)
            assert (released.state, released.attempts) == ("ready", 0)
            assert (released.worker_id, released.lease_token, released.lease_expires_at) == (None, None, None)
        assert store.get_worker(worker.id).current_task is None

    def test_cancel_a_task_that_is_not_finished(self, store: Store) -> None:
        ready, blocked = create(store, new("ready", ref="r"), new("blocked", depends_on=("r",)))
        cancelled = cancel(store, blocked.id, ACTOR, T0 + 1)
        assert (cancelled.state, cancelled.finished_at) == ("cancelled", T0 + 1)
        assert cancel(store, ready.id, ACTOR, T0 + 2).state == "cancelled"
        worker = register(store)
        assert claim(store, worker) is None

    def test_cancel_a_claimed_task_makes_its_token_stale(self, store: Store) -> None:
        create(store, new("a"))
        worker = register(store)
        held = claimed(store, worker)
        cancelled = cancel(store, held.id, ACTOR, T0 + 1)
        assert cancelled.state == "cancelled"
        assert store.get_worker(worker.id).current_task is None
        for operation in LEASE_CALLS.values():
            with pytest.raises(LeaseConflict):
                operation(store, held.id, held.lease_token or "", T0 + 2)
        assert store.get_task(held.id) == cancelled

    def test_cancel_a_finished_task_is_a_conflict(self, store: Store) -> None:
        done, dead, cancelled = create(store, new("done"), new("dead", max_attempts=1), new("cancelled"))
        worker = register(store)
        held = claimed(store, worker)
        complete(store, done.id, held.lease_token or "", "", T0)
        held = claimed(store, worker)
        fail(store, dead.id, held.lease_token or "", "", T0)
        cancel(store, cancelled.id, ACTOR, T0)
        for task in (done, dead, cancelled):
            before = store.get_task(task.id)
            with pytest.raises(Conflict, match=before.state):
                cancel(store, task.id, ACTOR, T0 + 1)
            assert store.get_task(task.id) == before
        with pytest.raises(NotFound):
            cancel(store, 999, ACTOR, T0)

    def test_reap_returns_expired_leases_to_ready_or_dead(self, store: Store) -> None:
        retry, last_try, fresh = create(
            store, new("retry", priority=3), new("last", priority=2, max_attempts=1), new("fresh", priority=1)
        )
        worker = register(store)
        expired = [store.claim(worker.id, (), f"t-{t.id}", T0 + 10, T0) for t in (retry, last_try)]
        assert [task.id for task in expired if task] == [retry.id, last_try.id]
        alive = store.claim(worker.id, (), "t-fresh", T0 + 100, T0)
        assert alive is not None and alive.id == fresh.id
        assert store.reap(T0 + 5) == []
        reaped = store.reap(T0 + 50)
        assert {task.id: (task.state, task.attempts) for task in reaped} == {
            retry.id: ("ready", 1),
            last_try.id: ("dead", 1),
        }
        assert store.get_task(fresh.id) == alive
        assert store.get_task(retry.id).lease_token is None
        with pytest.raises(LeaseConflict):
            complete(store, retry.id, f"t-{retry.id}", "late", T0 + 51)
        assert store.reap(T0 + 60) == []

    def test_stop_worker_releases_its_tasks_without_an_attempt(self, store: Store) -> None:
        create(store, new("a"), new("b"), new("c"))
        worker, other = register(store, "s-1"), register(store, "s-2")
        mine = [claimed(store, worker), claimed(store, worker)]
        theirs = claimed(store, other)
        stopped = stop_worker(store, worker.id, T0 + 1)
        assert (stopped.stopped_at, stopped.current_task) == (T0 + 1, None)
        for held in mine:
            task = store.get_task(held.id)
            assert (task.state, task.attempts, task.worker_id, task.lease_token) == ("ready", 0, None, None)
            with pytest.raises(LeaseConflict):
                complete(store, held.id, held.lease_token or "", "", T0 + 2)
        assert store.get_task(theirs.id) == theirs
        with pytest.raises(NotFound):
            stop_worker(store, 999, T0)

    def test_every_state_change_appends_its_event_in_order(self, store: Store) -> None:
        assert store.last_event_id() == 0
        store.add_key("alice", "agent", sha("alice"), "cli", T0)
        store.revoke_key("alice", T0)
        store.set_plan("goal", "plan", ACTOR, T0)
        worker = register(store)
        a, b = create(store, new("a", ref="a", max_attempts=5), new("b", depends_on=("a",), max_attempts=5))
        held = claimed(store, worker)
        complete(store, held.id, held.lease_token or "", "", T0)
        held = claimed(store, worker)
        fail(store, held.id, held.lease_token or "", "", T0)
        held = claimed(store, worker)
        release(store, held.id, held.lease_token or "", T0)
        claimed(store, worker)
        store.reap(T0 + LEASE + 1)
        claimed(store, worker, T0 + 100)
        cancel(store, b.id, ACTOR, T0 + 100)
        store.add_message("coordinator", "all", "message", "hi", T0 + 100)
        create(store, new("c"), now=T0 + 100)
        claimed(store, worker, T0 + 100)
        stop_worker(store, worker.id, T0 + 101)
        events = store.events_after(0, 1000)
        assert [event.type for event in events] == [
            "key.added",
            "key.revoked",
            "plan.updated",
            "worker.registered",
            "task.created",
            "task.created",
            "task.claimed",
            "task.completed",
            "task.ready",
            "task.claimed",
            "task.failed",
            "task.claimed",
            "task.released",
            "task.claimed",
            "task.expired",
            "task.claimed",
            "task.cancelled",
            "message.sent",
            "task.created",
            "task.claimed",
            "task.released",
            "worker.stopped",
        ]
        ids = [event.id for event in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert store.last_event_id() == ids[-1]
        by_type = {event.type: event for event in events}
        assert (by_type["task.completed"].task_id, by_type["task.completed"].worker_id) == (a.id, worker.id)
        assert by_type["task.ready"].task_id == b.id
        assert by_type["task.cancelled"].actor == ACTOR
        assert by_type["worker.stopped"].worker_id == worker.id
        assert by_type["worker.stopped"].at == T0 + 101

    @pytest.mark.parametrize("ending", ["complete", "fail", "release", "cancel", "reap"])
    def test_a_tasks_reservations_end_with_it(self, store: Store, ending: str) -> None:
        worker = register(store)
        create(store, new("a"), new("b"))
        task = claimed(store, worker)
        kept = claimed(store, worker)
        assert task.lease_token is not None
        store.reserve(worker.id, ["src/**", "docs/**"], True, task.id, T0 + 3600, T0)
        (other_task,) = store.reserve(worker.id, ["lib/**"], True, kept.id, T0 + 3600, T0)
        (own,) = store.reserve(worker.id, ["README.md"], False, None, T0 + 3600, T0)
        before = store.last_event_id()
        if ending == "complete":
            complete(store, task.id, task.lease_token, "ok", T0 + 1)
        elif ending == "fail":
            fail(store, task.id, task.lease_token, "no", T0 + 1)
        elif ending == "release":
            release(store, task.id, task.lease_token, T0 + 1)
        elif ending == "cancel":
            cancel(store, task.id, ACTOR, T0 + 1)
        else:
            heartbeat(store, kept.id, kept.lease_token or "", T0 + 2 * LEASE, T0 + LEASE)
            store.reap(T0 + LEASE + 1)
            assert store.get_task(task.id).state == "ready"
        assert store.list_reservations(T0 + 2) == [other_task, own]
        assert event_types(store, before).count("reservation.released") == 2

    def test_a_stopped_worker_holds_nothing(self, store: Store) -> None:
        worker = register(store, "session-1")
        other = register(store, "session-2")
        store.reserve(worker.id, ["src/**"], True, None, T0 + 60, T0)
        store.reserve(worker.id, ["docs/**"], False, None, T0 + 60, T0)
        (kept,) = store.reserve(other.id, ["lib/**"], True, None, T0 + 60, T0)
        stop_worker(store, worker.id, T0 + 1)
        assert store.list_reservations(T0 + 1) == [kept]


class StoreContract(StorageContract, LifecycleContract):
    """Both halves; a concrete store's test module subclasses this and provides `store`."""
