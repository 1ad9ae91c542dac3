"""Workspace globs as text: matching, and when two globs overlap.

Globs follow the path rules of `scaffold.hub.core.paths` (`parts_of`), plus `*` (any characters but
`/`), `?` (one character but `/`), `[abc]`, `[a-z]`, `[!abc]` within a segment, and `**` as a
whole segment (any number of segments, none included). A glob matches paths, not what lies below
them: `src/api/**` is the contents of `src/api`.
"""

from __future__ import annotations

import fnmatch

from scaffold.errors import PathRefused
from scaffold.hub.core.paths import normalize

MAX_GLOB_SEGMENTS = 64
_WILD = frozenset("*?[")


def glob_of(text: str) -> str:
    """A normalized glob, refused like a path when it is one no path could match safely."""
    pattern = normalize(text, "glob")
    if pattern.count("/") >= MAX_GLOB_SEGMENTS:
        raise PathRefused(f"the glob {text[:200]!r} has more than {MAX_GLOB_SEGMENTS} segments")
    return pattern


def is_literal(segment: str) -> bool:
    return not _WILD.intersection(segment)


def literal_prefix(pattern: str) -> str:
    """The text before the first wildcard: every path the glob matches starts with it."""
    for index, char in enumerate(pattern):
        if char in _WILD:
            return pattern[:index]
    return pattern


# -- matching ------------------------------------------------------------------------------
# Segment by segment: fnmatch within a segment (its translation does not backtrack
# catastrophically), and `**` by dynamic programming, so no glob can make a match take long.


Segments = tuple[str | None, ...]
"""A glob or a path split at `/`; None stands for a `**` segment."""


def _glob(pattern: str) -> Segments:
    return tuple(None if part == "**" else part for part in pattern.split("/")) if pattern else ()


def _names(path: str) -> Segments:
    return tuple(path.split("/")) if path else ()


def segment_matches(pattern: str, name: str) -> bool:
    return pattern == name if is_literal(pattern) else fnmatch.fnmatchcase(name, pattern)


def matches(pattern: str, path: str) -> bool:
    """The glob matches the path (both normalized; the path's `*` or `[` are plain characters)."""
    return _sequences_meet(_glob(pattern), _names(path), literal=True)


def matches_within(pattern: str, path: str) -> bool:
    """The glob matches the path or something below it (for a directory: what it holds)."""
    return _sequences_meet(_glob(pattern), (*_names(path), None), literal=True)


# -- overlap -------------------------------------------------------------------------------


def overlap(first: str, second: str) -> bool:
    """Whether some path could be matched by both globs.

    Segment by segment, `**` against anything is decided exactly. Two segments overlap when they
    are equal, or one is literal and the other matches it; two segments that both hold
    wildcards are taken to overlap unless their fixed beginnings or fixed endings differ
    (`*.py` and `*.js` do not overlap, `a*` and `*b` do). So the answer errs, rarely, towards
    "overlap", never the other way.
    """
    return _sequences_meet(_glob(first), _glob(second), literal=False)


def _sequences_meet(first: Segments, second: Segments, *, literal: bool) -> bool:
    """Whether one path can be matched by both segment sequences; `literal`: the names of
    `second` are plain text, not wildcards (its None is still `**`).

    A `**` matches no segment (drop it), or takes the other side's first segment and stays
    (drop that); two `**` both taking segments reduce to one of these. `below[j]` holds the
    answer for first[i + 1:] against second[j:], `here[j]` for first[i:] against second[j:].
    """
    below = [all(segment is None for segment in second[j:]) for j in range(len(second) + 1)]
    for i in range(len(first) - 1, -1, -1):
        here = [False] * len(second) + [all(segment is None for segment in first[i:])]
        for j in range(len(second) - 1, -1, -1):
            mine, theirs = first[i], second[j]
            if mine is None or theirs is None:
                here[j] = below[j] or here[j + 1]
            elif literal:
                here[j] = below[j + 1] and segment_matches(mine, theirs)
            else:
                here[j] = below[j + 1] and _segments_meet(mine, theirs)
        below = here
    return below[0]


def _segments_meet(first: str, second: str) -> bool:
    if first == second:
        return True
    if is_literal(first):
        return segment_matches(second, first)
    if is_literal(second):
        return segment_matches(first, second)
    head_a, head_b = literal_prefix(first), literal_prefix(second)
    tail_a, tail_b = _literal_suffix(first), _literal_suffix(second)
    return (head_a.startswith(head_b) or head_b.startswith(head_a)) and (
        tail_a.endswith(tail_b) or tail_b.endswith(tail_a)
    )


def _class_end(segment: str, start: int) -> int:
    """Where the `[...]` opened at `start` closes (a `]` right after `[` or `[!` is a member)."""
    index = start + 1
    if index < len(segment) and segment[index] == "!":
        index += 1
    if index < len(segment) and segment[index] == "]":
        index += 1
    end = segment.find("]", index)
    return end if end > 0 else -1


def _literal_suffix(segment: str) -> str:
    """The text after the last wildcard (or class) of a segment."""
    end = len(segment)
    index = 0
    last = 0
    while index < end:
        char = segment[index]
        if char in "*?":
            last = index + 1
        elif char == "[" and (close := _class_end(segment, index)) > 0:
            index = close
            last = close + 1
        index += 1
    return segment[last:]
