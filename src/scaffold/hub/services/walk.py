"""Walking a workspace directory for list and grep: name order, no links followed, no `.git`,
bounded, and polite to the event loop."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["file", "dir", "symlink", "other"]
MAX_SCAN = 200_000  # directory entries one list or grep looks at, at most
SHARE_GIL_EVERY = 64  # entries a walk reads between two hand-overs of the GIL (see Walk)
_KIND_NAMES = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symbolic link",
}


@dataclass(frozen=True)
class Entry:
    path: str
    type: Kind
    size: int | None


class Walk:
    """Entries below a directory in name order, without following links or entering .git:
    (entry, its path relative to the walked directory, its real path). `truncated` once more
    than MAX_SCAN were seen."""

    def __init__(self, real: Path, path: str, recursive: bool) -> None:
        self.truncated = False
        self._stack = [(real, path, "")]
        self._recursive = recursive
        self._seen = 0

    def __iter__(self) -> Iterator[tuple[Entry, str, Path]]:
        while self._stack:
            real, path, below = self._stack.pop()
            try:
                with os.scandir(real) as listing:
                    children = sorted(listing, key=lambda child: child.name)
            except OSError:  # vanished, or unreadable: nothing to list there
                continue
            subdirectories = []
            for child in children:
                if child.name.casefold() == ".git":
                    continue
                self._seen += 1
                if self._seen > MAX_SCAN:
                    self.truncated = True
                    return
                if self._seen % SHARE_GIL_EVERY == 0:
                    # Walks run in worker threads, yet CPython's own switching let a 20k-entry glob
                    # hold the GIL for ~100 ms at a time (an event loop timer came that late); a
                    # sleep(0) hands it over (p99 lateness 10 ms).
                    time.sleep(0)
                kind, size = entry_kind(child)
                child_path = f"{path}/{child.name}" if path else child.name
                child_below = f"{below}/{child.name}" if below else child.name
                yield Entry(child_path, kind, size), child_below, real / child.name
                if kind == "dir" and self._recursive:
                    subdirectories.append((real / child.name, child_path, child_below))
            self._stack.extend(reversed(subdirectories))


def walk(real: Path, path: str, *, recursive: bool) -> Walk:
    return Walk(real, path, recursive)


def entry_kind(child: os.DirEntry[str]) -> tuple[Kind, int | None]:
    try:
        info = child.stat(follow_symlinks=False)
    except OSError:
        return "other", None
    kind = kind_of(info.st_mode)
    return kind, info.st_size if kind == "file" else None


def kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def kind_name(mode: int) -> str:
    return _KIND_NAMES.get(stat.S_IFMT(mode), "special file")
