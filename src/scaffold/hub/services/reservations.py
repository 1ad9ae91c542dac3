"""Path reservations: a worker announces what it is editing, as globs with a time to live.

- **Exclusive**: nobody else may write, edit, move or delete a path the glob matches (423,
  naming the holder); and nobody else may take an exclusive reservation that overlaps it.
- **Shared**: blocks nobody; it is listed, so others can see who works where.

Globs follow `scaffold.hub.core.globs`: `src/api/**` is everything under `src/api`. A glob written
as a directory (`src/api/`), or a plain path naming an existing directory of the workspace
(`src/api`), is read as its contents (`src/api/**`): reserving a directory reserves what it holds.

Two exclusive reservations conflict when some path could match both (`globs.overlap`): equal
globs; a literal path and a glob that matches it; `src/**` and `src/api/*.py`; but not
`docs/**` and `src/**`, nor `src/*.py` and `src/*.js`. Wildcards within one segment are
compared by their fixed beginnings and endings, so the rule errs towards a conflict, never
towards two workers holding the same file.

A reservation ends at its expiry, on release, when the task it was taken for is completed,
failed, released, expired or cancelled, and when its worker stops (the store does these in the
same transaction as the change that ends them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from scaffold.errors import InvalidRequest, Reserved
from scaffold.hub.core.globs import glob_of, is_literal, matches, matches_within
from scaffold.hub.core.limits import DEFAULT_TTL, MAX_GLOBS, MAX_TTL
from scaffold.hub.core.types import Clock, Reservation
from scaffold.hub.store.base import Store


class Reservations:
    def __init__(self, store: Store, clock: Clock, root: Path | None = None) -> None:
        self.store = store
        self.clock = clock
        self.root = root  # to read a plain path naming a directory as its contents

    def pattern(self, text: str) -> str:
        """The glob to store for what a worker asked for."""
        pattern = glob_of(text)
        if not pattern:
            raise InvalidRequest("an empty glob would reserve the whole workspace; write ** for that")
        if pattern.endswith("/**") or pattern == "**":
            return pattern
        directory = text.endswith("/") or (is_literal(pattern) and self._is_directory(pattern))
        return f"{pattern}/**" if directory else pattern

    def _is_directory(self, path: str) -> bool:
        try:
            return self.root is not None and (self.root / path).is_dir()
        except OSError:  # a name too long for the filesystem, say: not a directory there
            return False

    def reserve(
        self,
        worker_id: int,
        globs: Sequence[str],
        exclusive: bool = True,
        ttl_seconds: float = DEFAULT_TTL,
        task_id: int | None = None,
    ) -> list[Reservation]:
        if not globs:
            raise InvalidRequest("give at least one glob")
        if len(globs) > MAX_GLOBS:
            raise InvalidRequest(f"at most {MAX_GLOBS} globs in one reservation")
        patterns = list(dict.fromkeys(self.pattern(text) for text in globs))
        now = self.clock()
        return self.store.reserve(worker_id, patterns, exclusive, task_id, now + _ttl(ttl_seconds), now)

    def active(self, worker_id: int | None = None) -> list[Reservation]:
        return self.store.list_reservations(self.clock(), worker_id)

    def renew(self, reservation_id: int, worker_id: int, ttl_seconds: float = DEFAULT_TTL) -> Reservation:
        now = self.clock()
        return self.store.renew_reservation(reservation_id, worker_id, now + _ttl(ttl_seconds), now)

    def release(self, reservation_id: int, worker_id: int) -> Reservation:
        return self.store.release_reservation(reservation_id, worker_id, self.clock())

    def check(self, paths: Sequence[str], writer: int | None, *, within: bool = False) -> None:
        """Reserved (423) if another worker's active exclusive reservation matches one of the
        paths (with `within`: the path or anything below it, for a directory). A writer that
        names no worker is "another" to every holder. An unknown writer is NotFound."""
        if writer is not None:
            self.store.get_worker(writer)
        now = self.clock()
        for held in self.store.list_reservations(now):
            if not held.exclusive or held.worker_id == writer:
                continue
            for path in paths:
                if (matches_within if within else matches)(held.pattern, path):
                    raise Reserved(f"{path or 'the workspace root'} is reserved: {held.holder(now)}")


def _ttl(seconds: float) -> float:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TTL):
        raise InvalidRequest(f"ttl_seconds must be more than 0 and at most {MAX_TTL:g}, got {seconds!r}")
    return seconds
