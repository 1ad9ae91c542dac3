"""Grep over the workspace: RE2 lines in the text files below a confined target, bounded in
matches, bytes read and time, and saying when it stopped early."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scaffold.errors import PathRefused
from scaffold.hub.core.globs import matches
from scaffold.hub.core.paths import Target, path_error
from scaffold.hub.core.patterns import LinePattern
from scaffold.hub.services.walk import Entry, Walk, kind_name, walk

BINARY_PROBE = 8192  # bytes looked at for a NUL
GREP_SECONDS = 10.0
MAX_LINE_TEXT = 500  # characters of a matching line given back


@dataclass(frozen=True)
class Match:
    path: str
    line: int
    column: int
    text: str


@dataclass(frozen=True)
class Found:
    matches: list[Match]
    truncated: bool
    files_searched: int
    files_skipped: int
    bytes_searched: int


def search(
    target: Target,
    regex: LinePattern,
    only: str | None,
    *,
    max_matches: int,
    max_bytes: int,
    max_file_bytes: int,
) -> Found:
    """Lines `regex` matches in the text files at or below `target` (matching glob `only`)."""
    deadline = time.monotonic() + GREP_SECONDS
    found: list[Match] = []
    searched = skipped = read = 0
    try:
        mode = target.real.lstat().st_mode
    except OSError as error:
        raise path_error(error, target.path) from None
    if stat.S_ISREG(mode):
        files: Iterator[tuple[Entry, str, Path]] | Walk = iter(
            [(Entry(target.path, "file", None), "", target.real)]
        )
    elif stat.S_ISDIR(mode):
        files = walk(target.real, target.path, recursive=True)
    else:
        raise PathRefused(f"{target.path} is a {kind_name(mode)}, not a file or directory")
    for entry, below, real in files:
        if entry.type != "file" or (only is not None and not matches(only, below)):
            continue
        if time.monotonic() > deadline:
            return Found(found, True, searched, skipped, read)
        content = _probe(real, max_file_bytes)
        if content is None:
            skipped += 1
            continue
        if read + len(content) > max_bytes:
            return Found(found, True, searched, skipped, read)
        read += len(content)
        searched += 1
        for hit in regex.search(content):
            if len(found) == max_matches:
                return Found(found, True, searched, skipped, read)
            line = hit.line
            start = max(0, hit.column - 101) if len(line) > MAX_LINE_TEXT else 0
            text = line[start : start + MAX_LINE_TEXT].removesuffix("\r")
            found.append(Match(entry.path, hit.number, hit.column, text))
    return Found(found, isinstance(files, Walk) and files.truncated, searched, skipped, read)


def _probe(real: Path, max_file_bytes: int) -> bytes | None:
    """A text file's bytes for grep; None for a binary, huge or vanished one."""
    try:
        mode = real.lstat()
        if not stat.S_ISREG(mode.st_mode) or mode.st_size > max_file_bytes:
            return None
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        content = read_all(fd, max_file_bytes)
    finally:
        os.close(fd)
    huge_or_binary = len(content) > max_file_bytes or b"\x00" in content[:BINARY_PROBE]
    return None if huge_or_binary else content


def read_all(fd: int, limit: int) -> bytes:
    """The file's bytes, but no more than `limit` + 1 of them (it may grow while it is read)."""
    chunks, size = [], 0
    while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
