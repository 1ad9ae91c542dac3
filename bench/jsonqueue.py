"""The seeds' task queue, as a baseline: one JSON file, a lock, read it all, rewrite it all.

Seed 004 (option A) keeps `.coordination/tasks.json` as `{"tasks": [...]}` with `id`, `status`
(available / claimed / done), `claimed_by`, `priority` and `dependencies`; a worker claims by
locking, reading the file, picking a task and writing the file back (seed 002's
`task-queue.json` is the same idea). The file is pretty-printed (`indent=2`) as the seeds show
it, since agents and people read it; `indent=None` gives the compact variant (which lets
`json.dumps` use its C encoder, about twice as fast).

This is deliberately the naive approach, done carefully: an exclusive `fcntl.flock` on a side
lock file around the whole read-modify-write, so two claimers never take the same task.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class JsonQueue:
    def __init__(self, path: Path, indent: int | None = 2) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.indent = indent

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"tasks": []}
        with self.path.open(encoding="utf-8") as handle:
            data: dict[str, Any] = json.load(handle)
        return data

    def _save(self, data: dict[str, Any]) -> None:
        # dumps, not dump: json.dump always takes the pure-Python encoder, dumps uses the C one
        # when indent is None (with indent=2 both are pure Python).
        text = json.dumps(data, indent=self.indent)
        with self.path.open("w", encoding="utf-8") as handle:
            handle.write(text)

    def create(self, tasks: Sequence[tuple[str, str]], priority: int = 0) -> list[int]:
        """Append (title, instructions) tasks; returns their ids."""
        with self._locked():
            data = self._load()
            next_id = max((task["id"] for task in data["tasks"]), default=0) + 1
            ids = list(range(next_id, next_id + len(tasks)))
            data["tasks"].extend(
                {
                    "id": task_id,
                    "title": title,
                    "description": instructions,
                    "status": "available",
                    "claimed_by": None,
                    "claimed_at": None,
                    "priority": priority,
                    "dependencies": [],
                    "result": None,
                }
                for task_id, (title, instructions) in zip(ids, tasks, strict=True)
            )
            self._save(data)
        return ids

    def claim(self, worker: str) -> dict[str, Any] | None:
        """The best available task whose dependencies are done (priority, then oldest)."""
        with self._locked():
            data = self._load()
            tasks: list[dict[str, Any]] = data["tasks"]
            done = {task["id"] for task in tasks if task["status"] == "done"}
            best: dict[str, Any] | None = None
            for task in tasks:
                if task["status"] != "available" or not done.issuperset(task["dependencies"]):
                    continue
                if best is None or (task["priority"], -task["id"]) > (best["priority"], -best["id"]):
                    best = task
            if best is None:
                return None
            best["status"] = "claimed"
            best["claimed_by"] = worker
            best["claimed_at"] = time.time()
            self._save(data)
            return best
