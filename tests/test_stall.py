"""No single request stalls the hub: /healthz stays fast while hostile requests run.

A real hub (uvicorn on 127.0.0.1, in its own process); a thread probes /healthz every 20 ms while
a hostile request is sent again and again for a while, and the probes' p99 must stay under
50 ms, or under three times the p99 measured just before with nothing else running when the
shared machine is that slow (both are printed). Before this, `^(a+)+$` on a 31-character line held the event
loop 25 s and a batch of 1,000 tasks x 1,000 dependencies 10 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from scaffold.hub.core.limits import MAX_BATCH_DEPENDENCIES
from tests.hubproc import HubProcess, running_hub, write_config

ADMIN = "stall-admin-key-0123456789abcdef"
VIEWER = "stall-viewer-key-0123456789abcdef"
PROBE_EVERY = 0.02
ABSOLUTE_P99 = 0.050
HOSTILE_SECONDS = 2.0  # each hostile request is repeated for about this long...
HOSTILE_RUNS = 400  # ...but never more often than this
LINE_LENGTHS = (30, 31, 32, 100, 1000, 5000)
MANY_FILES = 20_000
BASELINE_SECONDS = 1.0


@dataclass
class Hub:
    proc: HubProcess
    workspace: Path


class Probe:
    """GET /healthz every PROBE_EVERY seconds from its own thread and client, until stopped."""

    def __init__(self, url: str, limit_seconds: float = 120.0) -> None:
        self.latencies: list[float] = []
        self._url = url
        self._limit = limit_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit
        with httpx2.Client(base_url=self._url, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(PROBE_EVERY)

    def __enter__(self) -> Probe:
        self._thread.start()
        time.sleep(5 * PROBE_EVERY)  # a few probes before the hostile request starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]


def p99_while(hub: Hub, name: str, hostile: Callable[[], Any]) -> tuple[list[Any], float]:
    """Run `hostile` repeatedly (bounded) while probing; the answers and the slowest run's seconds.

    A stall the hub causes comes back every time; a pause of the shared machine (one 360 ms
    hiccup was seen in CI, with /healthz p99 13-28 ms in every run here) does not. So a p99 over
    the bound is measured once more, and only a second one fails."""
    for attempt in (1, 2):
        with Probe(hub.proc.url) as quiet:  # the machine is shared: measure its load right before
            time.sleep(BASELINE_SECONDS)
        bound = max(ABSOLUTE_P99, 3 * quiet.p99)
        answers, slowest = [], 0.0
        with Probe(hub.proc.url) as probe:
            until = time.monotonic() + HOSTILE_SECONDS
            for _ in range(HOSTILE_RUNS):
                started = time.perf_counter()
                answers.append(hostile())
                slowest = max(slowest, time.perf_counter() - started)
                if time.monotonic() > until:
                    break
        print(
            f"{name} (attempt {attempt}): {len(answers)} runs, slowest {slowest * 1000:.0f} ms; /healthz "
            f"p99 {probe.p99 * 1000:.1f} ms over {len(probe.latencies)} probes (just before, with "
            f"nothing else: p99 {quiet.p99 * 1000:.1f} ms; bound {bound * 1000:.0f} ms)"
        )
        assert len(probe.latencies) >= 10
        if probe.p99 <= bound:
            break
    assert probe.p99 <= bound, f"{name}: /healthz p99 {probe.p99 * 1000:.1f} ms, twice in a row"
    return answers, slowest


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("stall")
    workspace = root / "workspace"
    evil = workspace / "evil"
    evil.mkdir(parents=True)
    for length in LINE_LENGTHS:  # every all-`a` line matches ^(a+)+$; the `a...ab` lines must not
        lines = ["a" * length + "b", "a" * length, "x", "a" * length + "b"]
        (evil / f"a{length}.txt").write_text("\n".join(lines) + "\n")
    many = workspace / "many"
    many.mkdir()
    for number in range(MANY_FILES):
        (many / f"f{number:05}.txt").touch()
    config = write_config(root, keys=[("owner", "admin", ADMIN), ("watcher", "viewer", VIEWER)])
    with running_hub(config) as proc:
        yield Hub(proc, workspace)


def test_a_catastrophic_pattern_runs_in_linear_time(hub: Hub) -> None:
    with hub.proc.client(VIEWER, timeout=60) as client:

        def grep() -> dict[str, Any]:
            response = client.post("/v1/files/grep", json={"pattern": "^(a+)+$", "path": "evil"})
            assert response.status_code == 200, response.text
            return dict(response.json())

        answers, slowest = p99_while(hub, "grep ^(a+)+$", grep)
    expected = [(f"evil/a{length}.txt", 2, "a" * length) for length in sorted(LINE_LENGTHS, key=str)]
    for found in answers:
        assert [(m["path"], m["line"], m["text"]) for m in found["matches"]] == [
            (path, line, text[:500]) for path, line, text in expected
        ]
        assert not found["truncated"]
    assert slowest < 2.0  # Python's re needed 25 s for the 31-character line alone


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"(a+)\1", "backreference \\1"),
        (r"(?P<x>a)(?P=x)", "named backreference"),
        (r"(?=a)a", "lookahead"),
        (r"(?<!b)a", "negative lookbehind"),
        (r"a*+", "possessive quantifier"),
        (r"(?>a+)", "atomic group"),
        (r"a\Z", "\\z"),
    ],
)
def test_constructs_that_need_backtracking_are_refused_by_name(hub: Hub, pattern: str, named: str) -> None:
    with hub.proc.client(VIEWER) as client:
        refused = client.post("/v1/files/grep", json={"pattern": pattern, "path": "evil"})
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "invalid_request"
        assert named in refused.json()["error"]["message"]
        # the control: the same search without the construct is fine
        plain = client.post("/v1/files/grep", json={"pattern": "(a+)b$", "path": "evil"})
        assert plain.status_code == 200 and len(plain.json()["matches"]) == 2 * len(LINE_LENGTHS)


def test_the_largest_dependency_batch_does_not_stall(hub: Hub) -> None:
    with hub.proc.client(ADMIN, timeout=120) as client:
        first = [{"title": f"base {n}", "instructions": "x"} for n in range(1000)]
        created = client.post("/v1/tasks", json={"tasks": first})
        assert created.status_code == 201
        ids = [task["id"] for task in created.json()["tasks"]]
        per_task = MAX_BATCH_DEPENDENCIES // 1000
        tasks = [
            {"title": f"t{n}", "instructions": "x", "depends_on": ids[n % 100 : n % 100 + per_task]}
            for n in range(1000)
        ]
        body = json.dumps({"tasks": tasks})

        def batch() -> list[dict[str, Any]]:
            response = client.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 201, response.text
            return list(response.json()["tasks"])

        answers, slowest = p99_while(hub, f"batch 1000 x {per_task}", batch)
    assert all(
        len(task["depends_on"]) == per_task and task["state"] == "blocked"
        for tasks in answers
        for task in tasks
    )
    assert slowest < 5.0


def test_a_batch_over_the_dependency_limit_is_refused_without_a_stall(hub: Hub) -> None:
    with hub.proc.client(ADMIN, timeout=120) as client:
        before = client.get("/v1/status").json()["progress"]["total"]
        ids = list(range(1, 1001))
        tasks = [{"title": f"t{n}", "instructions": "x", "depends_on": ids} for n in range(1000)]
        body = json.dumps({"tasks": tasks})
        assert len(body) > 4_000_000

        def refused() -> str:
            response = client.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
            return str(response.json()["error"]["message"])

        answers, slowest = p99_while(hub, "batch 1000 x 1000 (refused)", refused)
        assert client.get("/v1/status").json()["progress"]["total"] == before
    assert f"at most {MAX_BATCH_DEPENDENCIES}" in answers[0] and "1000000 dependencies" in answers[0]
    assert slowest < 10.0  # was 10.2 s on the loop, and accepted


def test_a_large_json_body_is_parsed_off_the_event_loop(hub: Hub) -> None:
    with hub.proc.client(ADMIN, timeout=120) as client:
        text = "lorem ipsum, dolor sit amet " * 35_000  # about 1 MB per task
        body = json.dumps({"tasks": [{"title": f"big {n}", "instructions": text} for n in range(8)]})
        assert len(body) > 7_000_000

        def create() -> int:
            response = client.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 201, response.text
            return len(response.json()["tasks"])

        answers, _ = p99_while(hub, f"a {len(body) / 1e6:.1f} MB JSON body", create)
    assert set(answers) == {8}


def test_a_big_directory_is_listed_and_globbed_off_the_event_loop(hub: Hub) -> None:
    with hub.proc.client(VIEWER, timeout=60) as client:

        def listing(**params: str | int) -> Callable[[], int]:
            def run() -> int:
                response = client.get("/v1/files", params=params)
                assert response.status_code == 200, response.text
                return len(response.json()["entries"])

            return run

        listed, _ = p99_while(hub, "list 20k", listing(path="many", limit=10_000))
        globbed, _ = p99_while(hub, "glob 20k", listing(glob="many/**/*7.txt", limit=10_000))
    assert set(listed) == {10_000}
    assert set(globbed) == {MANY_FILES // 10}
