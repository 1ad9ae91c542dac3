"""Crash safety with a real hub process: SIGKILL mid-load loses nothing and completes nothing twice;
SIGTERM during a long poll stops cleanly with the database closed."""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from tests.hubproc import HubProcess, free_port, open_db_readonly, start_hub, write_config

TASKS = 300
CLAIMERS = 8
KILL_AFTER = 100  # completions acknowledged before the SIGKILL
DOWN = 2.5  # seconds the hub stays down: longer than a lease, so the held ones expire
OVERALL = 90.0  # seconds for the whole drain, restart included


@dataclass
class Load:
    """What the claimers saw, shared between their threads."""

    url: str
    key: str
    deadline: float
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    completions: int = 0
    stale: int = 0
    errors: list[str] = field(default_factory=list)

    def over(self) -> bool:
        return self.stop.is_set() or time.monotonic() > self.deadline

    def send(self, client: httpx2.Client, path: str, body: dict[str, Any]) -> httpx2.Response | None:
        """POST until the hub answers; None when the load is over. Connection errors (the hub is
        down or restarting) are retried with a short bounded backoff and the same body."""
        pause = 0.02
        while not self.over():
            try:
                return client.post(path, json=body)
            except httpx2.TransportError:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        return None

    def claimer(self, worker_id: int) -> None:
        try:
            self._claim_and_complete(worker_id)
        except (AssertionError, httpx2.HTTPError, KeyError, ValueError) as error:  # for the test to report
            with self.lock:
                self.errors.append(f"worker {worker_id}: {error!r}")

    def _claim_and_complete(self, worker_id: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx2.Client(base_url=self.url, headers=headers, timeout=10.0) as client:
            while not self.over():
                claim = self.send(client, "/v1/tasks/claim", {"worker_id": worker_id, "wait": 1})
                if claim is None or claim.status_code == 204:
                    continue
                if claim.status_code != 200:
                    raise AssertionError(f"claim answered {claim.status_code}: {claim.text}")
                task = claim.json()
                token = task["lease_token"]
                done = self.send(client, f"/v1/tasks/{task['id']}/complete", {"lease_token": token})
                if done is None:
                    continue
                with self.lock:
                    if done.status_code == 200:
                        assert done.json()["state"] == "done"
                        self.acknowledged[task["id"]].add(token)
                        self.completions += 1
                    elif done.status_code == 409:  # the lease expired while the hub was down
                        self.stale += 1
                    else:
                        raise AssertionError(f"complete answered {done.status_code}: {done.text}")


def _status(hub: HubProcess, key: str) -> dict[str, Any]:
    with hub.client(key) as client:
        response = client.get("/v1/status")
    assert response.status_code == 200, response.text
    progress: dict[str, Any] = response.json()["progress"]
    return progress


def _wait_for(condition: Any, deadline: float, what: str) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigkill_mid_load_loses_no_task_and_completes_none_twice(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    # Short leases (renewed every second, as the hub then tells the hooks) and a fast reaper so
    # the claims the crash orphans come back quickly; attempts to spare, since a lease that
    # expires across the crash costs one.
    queue = {"lease_seconds": 2, "heartbeat_seconds": 1, "reap_interval_seconds": 0.2, "max_attempts": 10}
    config = write_config(tmp_path, keys=[("load", "admin", key)], queue=queue)
    data_dir = tmp_path / "hub-data"
    port = free_port()
    load = Load(f"http://127.0.0.1:{port}", key, time.monotonic() + OVERALL)
    threads: list[threading.Thread] = []
    hub = start_hub(config, port=port, log_dir=tmp_path / "run-1")
    try:
        with hub.client(key) as client:
            batch = [{"title": f"task {n}", "instructions": "do it"} for n in range(TASKS)]
            created = client.post("/v1/tasks", json={"tasks": batch})
            assert created.status_code == 201, created.text
            task_ids = {task["id"] for task in created.json()["tasks"]}
            workers = []
            for n in range(CLAIMERS + 1):
                answer = client.post("/v1/workers", json={"session_id": f"s{n}", "role": "backend"})
                assert answer.status_code == 201, answer.text
                workers.append(answer.json()["id"])
        assert len(task_ids) == TASKS

        threads = [threading.Thread(target=load.claimer, args=(w,), daemon=True) for w in workers[1:]]
        for thread in threads:
            thread.start()
        _wait_for(
            lambda: load.completions >= KILL_AFTER or load.errors, load.deadline, "the first completions"
        )

        # A lease the crash is sure to orphan: claimed, then never completed by its holder.
        with hub.client(key) as client:
            held = client.post("/v1/tasks/claim", json={"worker_id": workers[0]})
        assert held.status_code == 200, held.text
        assert hub.kill() == -signal.SIGKILL
        with load.lock:
            acknowledged_before_crash = len(load.acknowledged)
        assert acknowledged_before_crash < TASKS, "the hub was killed after the load, not during it"

        time.sleep(DOWN)
        hub = start_hub(config, port=port, log_dir=tmp_path / "run-2")
        _wait_for(
            lambda: _status(hub, key)["done"] == TASKS or bool(load.errors),
            load.deadline,
            "the queue to drain",
        )
        load.stop.set()
        for thread in threads:
            thread.join(15)
            assert not thread.is_alive(), "a claimer did not stop"
        assert load.errors == []

        progress = _status(hub, key)
        assert progress["counts"]["done"] == TASKS
        assert progress["counts"]["claimed"] == progress["counts"]["ready"] == 0
        # The orphaned lease came back, went to another claim, and its old token is fenced off.
        held_task = held.json()
        with hub.client(key) as client:
            stale = client.post(
                f"/v1/tasks/{held_task['id']}/complete", json={"lease_token": held_task["lease_token"]}
            )
        assert stale.status_code == 409, stale.text
        assert hub.stop() == 0, hub.stderr
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(15)
        hub.stop()

    # Every task acknowledged to exactly one claim, and none lost.
    assert set(load.acknowledged) == task_ids
    twice = {task_id: tokens for task_id, tokens in load.acknowledged.items() if len(tokens) != 1}
    assert twice == {}

    with closing(open_db_readonly(data_dir)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        states = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
        assert states == {"done": TASKS}
        completed = Counter(
            row[0] for row in db.execute("SELECT task_id FROM events WHERE type = 'task.completed'")
        )
        expired = {row[0] for row in db.execute("SELECT task_id FROM events WHERE type = 'task.expired'")}
        stored_tokens = dict(db.execute("SELECT id, lease_token FROM tasks").fetchall())
    assert set(completed) == task_ids
    assert [task_id for task_id, count in completed.items() if count != 1] == []
    # The one done row's token is the one its acknowledged claim held.
    assert all(stored_tokens[task_id] in load.acknowledged[task_id] for task_id in task_ids)
    assert held_task["id"] in expired


def test_sigterm_during_a_long_poll_stops_cleanly(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    config = write_config(tmp_path, keys=[("owner", "admin", key)])
    data_dir = tmp_path / "hub-data"
    answers: list[int] = []
    failures: list[str] = []
    hub = start_hub(config, log_dir=tmp_path / "run")
    try:
        with hub.client(key) as client:
            # Tasks this worker cannot do: they stay ready, and its claim waits.
            batch = [
                {"title": f"gpu {n}", "instructions": "x", "required_capabilities": ["gpu"]} for n in range(3)
            ]
            assert client.post("/v1/tasks", json={"tasks": batch}).status_code == 201
            worker = client.post("/v1/workers", json={"session_id": "s", "role": "docs"}).json()["id"]

        def long_poll() -> None:
            try:
                with hub.client(key, timeout=40) as client:
                    answers.append(
                        client.post("/v1/tasks/claim", json={"worker_id": worker, "wait": 30}).status_code
                    )
            except httpx2.HTTPError as error:  # for the test to report
                failures.append(repr(error))

        poller = threading.Thread(target=long_poll, daemon=True)
        poller.start()
        time.sleep(1.0)  # the claim is now waiting in the hub
        assert poller.is_alive() and answers == []
        started = time.monotonic()
        hub.proc.send_signal(signal.SIGTERM)
        code = hub.proc.wait(10)
        stopped_in = time.monotonic() - started
        poller.join(10)
    finally:
        hub.stop()

    assert code == 0, hub.stderr
    assert stopped_in < 5
    assert failures == []
    assert answers == [204]
    # Closed, not abandoned: the last connection's close checkpoints and removes the WAL.
    assert not (data_dir / "hub.sqlite3-wal").exists()
    with closing(open_db_readonly(data_dir)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT title, state FROM tasks ORDER BY id").fetchall()
    assert [tuple(row) for row in rows] == [(f"gpu {n}", "ready") for n in range(3)]
