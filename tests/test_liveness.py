"""Liveness: a worker is `lost` when it has not been heard from, never while its claim waits; and
the queue's timeouts are refused at start when the hooks' rhythm cannot keep them.

The hooks that keep the rhythm are tested in test_hooks.py (the watcher) and end to end with the
real CLI in test_e2e_claude.py (a SIGKILLed worker is lost within the bound).
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from scaffold.errors import ConfigError
from scaffold.hub.core.settings import LIVENESS_BEAT_SECONDS, HubSettings, load_settings
from scaffold.hub.services.queue import Queue, QueueSettings
from scaffold.hub.services.workers import Workers
from scaffold.hub.store.sqlite import SQLiteStore
from tests.conftest import REPO, FakeClock
from tests.hubproc import free_port, scaffold, write_config
from tests.test_hub_cli import one_error_line

LOST = 40.0


def hook_constant(name: str, file: str) -> object:
    tree = ast.parse((REPO / "template/.claude/hooks" / file).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{file} has no {name}")


def test_the_hooks_keep_the_rhythm_the_hub_assumes() -> None:
    assert hook_constant("LIVENESS_SECONDS", "hooklib.py") == LIVENESS_BEAT_SECONDS
    assert hook_constant("DEFAULT_SECONDS", "heartbeat.py") == HubSettings().heartbeat_seconds
    defaults = HubSettings()
    assert defaults.worker_lost_seconds + LIVENESS_BEAT_SECONDS <= 60  # "dead within a minute"
    defaults.check()


def test_a_worker_is_lost_after_the_bound_but_never_while_its_claim_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    queue = Queue(store, clock, QueueSettings(lease_seconds=300))
    workers = Workers(store, clock, {}, LOST, queue.waiting)
    worker = workers.register("s-1", "backend", None)
    other = workers.register("s-2", "backend", None)

    async def scenario() -> list[str]:
        seen = []
        waiting = asyncio.create_task(queue.claim(worker.id, None, wait=600))
        await asyncio.sleep(0.05)
        clock.advance(LOST + 1)
        seen.append(workers.status(store.get_worker(worker.id)))  # its claim waits: heard from
        seen.append(workers.status(store.get_worker(other.id)))  # silent for longer than the bound
        queue.shutdown()  # ends the waiting claim, which touches its worker
        assert await waiting is None
        seen.append(workers.status(store.get_worker(worker.id)))
        clock.advance(LOST + 1)
        seen.append(workers.status(store.get_worker(worker.id)))
        return seen

    try:
        assert asyncio.run(scenario()) == ["idle", "lost", "idle", "lost"]
        assert queue.waiting == {}
        workers.heartbeat(worker.id)
        assert workers.status(store.get_worker(worker.id)) == "idle"
    finally:
        store.close()


RULES = {
    "lease": (
        "[queue]\nlease_seconds = 25\n",
        "queue.lease_seconds = 25 is shorter than the hooks can renew",
    ),
    "lease vs heartbeat": (
        "[queue]\nlease_seconds = 100\nheartbeat_seconds = 60\n",
        "a lease needs at least 120 s",
    ),
    "reaper": (
        "[queue]\nlease_seconds = 60\nreap_interval_seconds = 60\n",
        "queue.reap_interval_seconds = 60 must be shorter than queue.lease_seconds = 60",
    ),
    "lost": (
        "[queue]\nworker_lost_seconds = 20\n",
        "queue.worker_lost_seconds = 20 would call live workers lost",
    ),
    "file vs body": (
        "[server]\nmax_body_bytes = 1000\n[workspace]\nmax_file_bytes = 2000\n",
        "workspace.max_file_bytes = 2000 is above server.max_body_bytes = 1000",
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_settings_that_cannot_work_together_are_refused_naming_them(tmp_path: Path, rule: str) -> None:
    text, says = RULES[rule]
    config = tmp_path / "hub.toml"
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config)  # each value alone is fine
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(".", r"\.")):
        settings.check()


def test_serve_refuses_them_at_start_in_one_line_before_listening(tmp_path: Path) -> None:
    config = write_config(tmp_path, queue={"lease_seconds": 25})
    port = free_port()
    refused = scaffold("hub", "serve", "--config", str(config), "--port", str(port), timeout=60)
    assert refused.returncode != 0
    assert "queue.lease_seconds = 25" in one_error_line(refused)
    assert not (tmp_path / "hub-data").exists()  # nothing was started or created
