"""Workspace paths: the one place that decides whether a path stays inside a root.

A path is relative to the root, `/`-separated. Before anything touches the disk it must pass
`parts_of`: no absolute path, no `..`, no NUL or control character, no backslash, no
percent-encoded `.` `/` `\\` or NUL (a sign of a path decoded once too few), no name made only
of dots, and no `.git` segment at any depth (git itself refuses to track such paths; agents must
not rewrite the history, or a nested repository's hooks, through the hub). Empty and `.` segments
are dropped, so `./a//b` is `a/b`.

`confine` then resolves it one name at a time: a symbolic link is followed only if what it
resolves to is inside the root and outside `.git`. The file API (`files`) and the working
directory of a command (`exec`) both go through it, so both keep the same rules.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from scaffold.errors import Conflict, HubError, InvalidRequest, NotFound, PathRefused

MAX_PATH = 4096
MAX_NAME_BYTES = 255
NOT_THERE = (errno.ENOENT, errno.ENOTDIR)
_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Target:
    """A path checked to lie inside the workspace."""

    path: str  # normalized as asked; "" is the root
    real: Path  # absolute, every symbolic link resolved
    rel: str  # `real` relative to the root: reservations are checked on both names
    entry: Path  # the directory entry itself: `real`, or the link when the last name is one


def parts_of(text: str, what: str = "path") -> list[str]:
    """The segments of a workspace path (or glob), or PathRefused saying what is wrong with it."""
    shown = repr(text[:200])
    if len(text) > MAX_PATH:
        raise PathRefused(f"the {what} is longer than {MAX_PATH} characters")
    if "\x00" in text:
        raise PathRefused(f"the {what} {shown} holds a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PathRefused(f"the {what} {shown} is not valid Unicode text (a lone surrogate)") from None
    if _CONTROL.search(text):
        raise PathRefused(f"the {what} {shown} holds a control character")
    if "\\" in text:
        raise PathRefused(f"the {what} {shown} holds a backslash; separate directories with /")
    if text.startswith("/"):
        raise PathRefused(f"the {what} {shown} is absolute; give it relative to the workspace root")
    if _ENCODED.search(text):
        raise PathRefused(
            f"the {what} {shown} holds a percent-encoded '.', '/', '\\' or NUL; send it decoded once"
        )
    parts = [part for part in text.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise PathRefused(f"the {what} {shown} climbs out with '..'; paths stay inside the workspace")
        if set(part) == {"."}:
            raise PathRefused(f"the {what} {shown} has the name {part!r}, made only of dots")
        if part.casefold() == ".git":
            raise PathRefused(
                f"the {what} {shown} is inside a .git directory; the file API never touches git's history"
            )
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise PathRefused(f"the {what} {shown} has a name longer than {MAX_NAME_BYTES} bytes")
    return parts


def normalize(text: str, what: str = "path") -> str:
    """The canonical form of a path or glob: `./a//b` is `a/b`; the root is ``""``."""
    return "/".join(parts_of(text, what))


def confine(root: Path, path: str, *, root_ok: bool = False, what: str = "path") -> Target:
    """Where `path` leads below `root` (resolved), or PathRefused; one name at a time, so no
    step leaves the root."""
    parts = parts_of(path, what)
    shown = repr(path[:200])
    if not parts and not root_ok:
        raise PathRefused("the path is empty; name a file relative to the workspace root")
    current, entry = root, root
    for index, name in enumerate(parts):
        candidate = current / name
        try:
            mode = candidate.lstat().st_mode
        except OSError as error:
            if error.errno not in NOT_THERE:
                raise path_error(error, path) from None
            current = entry = candidate.joinpath(*parts[index + 1 :])  # nothing there: no links
            break
        entry = candidate
        if stat.S_ISLNK(mode):
            current = Path(os.path.realpath(candidate))
            if not current.is_relative_to(root):
                raise PathRefused(f"{shown} leads outside the workspace through the symbolic link {name!r}")
            if current.is_symlink():  # realpath gives up on a loop and returns a link
                raise PathRefused(f"{shown} goes through a loop of symbolic links at {name!r}")
        else:
            current = candidate
    rel = current.relative_to(root).as_posix() if current != root else ""
    if any(part.casefold() == ".git" for part in rel.split("/")):
        raise PathRefused(f"{shown} leads into .git through a symbolic link; the file API never touches it")
    return Target("/".join(parts), current, rel, entry)


def path_error(error: OSError, path: str) -> HubError:
    """An OSError as the hub error that says what was wrong with the path."""
    shown = repr(path[:200])
    code = error.errno
    if code in NOT_THERE:
        return NotFound(f"{shown} does not exist in the workspace")
    if code in (errno.ELOOP, errno.ENAMETOOLONG):
        return PathRefused(f"{shown} cannot be resolved: {error.strerror}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PathRefused(f"the hub may not change {shown}: {error.strerror}")
    if code in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.EXDEV, errno.EBUSY):
        reason = {
            errno.ENOTEMPTY: "the directory is not empty; delete what it holds first",
            errno.EEXIST: "a file is in the way of a directory it needs",
            errno.EISDIR: "it is a directory",
        }.get(code or 0, error.strerror)
        return Conflict(f"{shown}: {reason}")
    if code == errno.EINVAL:
        return InvalidRequest(f"{shown}: {error.strerror}")
    raise error
