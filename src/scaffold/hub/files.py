"""The workspace's files: list, read, write, edit, delete, move and grep, confined to the root.

**Confinement.** Every path is relative to the workspace root and passes `globs.parts_of` first
(no absolute path, `..`, NUL, control character, backslash, percent-encoded separator, name of
only dots, or `.git` segment). Then it is resolved one name at a time: a symbolic link is
followed only if what it resolves to is inside the root and outside `.git`; anything else is
refused (403 `path_refused`) before anything on disk changes. Only regular files and directories
are read or written: a FIFO, socket or device is refused too, and opened never. Walks (list,
grep) do not follow symbolic links and skip every `.git`. Every change runs under one lock, so
no change of the file API can swap a directory for a link while another one is checking it.
This confines the file API; it is no sandbox against a command run with `POST /v1/exec`.

**Concurrency.** A file's ETag is the SHA-256 of its bytes. A write must say what it expects:
`If-Match: "<etag>"` (the file is still what was read), `If-Match: *` (overwrite whatever is
there) or `If-None-Match: *` (create only); a write with neither creates the file and refuses
(412) to replace an existing one, so nothing is ever overwritten silently. An edit is guarded by
its `old` text (and by an ETag if given). A write replaces the file atomically: a temporary
file in the same directory, fsync, rename, fsync of the directory; a reader sees the old bytes
or the new ones, never a mix. Reservations (`scaffold.hub.reservations`) are checked under the
same lock, before anything changes.

**Limits.** A file larger than `max_file_bytes` is neither read nor written (413). Grep skips
binary files (a NUL in the first 8 KiB) and files over `max_file_bytes`, reads at most
`max_bytes` in all, stops after `max_matches` or `GREP_SECONDS`, and says when it stopped early.
Its pattern runs on RE2 (`scaffold.hub.patterns`), in time linear in the text, so no pattern
makes a search slow. Listing, grep and every other file operation run in a worker thread (see
`scaffold.hub.api_files`), never on the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scaffold.hub.errors import (
    Conflict,
    HubError,
    InvalidRequest,
    NotFound,
    PathRefused,
    PayloadTooLarge,
    StaleFile,
)
from scaffold.hub.globs import glob_of, matches, parts_of
from scaffold.hub.patterns import LinePattern
from scaffold.hub.reservations import Reservations
from scaffold.hub.settings import HubSettings
from scaffold.hub.store.base import Store
from scaffold.hub.types import Clock

Kind = Literal["file", "dir", "symlink", "other"]
Audit = Callable[[str, str | None, dict[str, object]], object]
"""Records a change: (event type, actor, data)."""

BINARY_PROBE = 8192  # bytes looked at for a NUL
GREP_SECONDS = 10.0
MAX_LINE_TEXT = 500  # characters of a matching line given back
MAX_SCAN = 200_000  # directory entries one list or grep looks at, at most
SHARE_GIL_EVERY = 64  # entries a walk reads between two hand-overs of the GIL (see _Walk)
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR)
_KIND_NAMES = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symbolic link",
}


@dataclass(frozen=True)
class Target:
    """A path checked to lie inside the workspace."""

    path: str  # normalized as asked; "" is the root
    real: Path  # absolute, every symbolic link resolved
    rel: str  # `real` relative to the root: reservations are checked on both names
    entry: Path  # the directory entry itself: `real`, or the link when the last name is one


@dataclass(frozen=True)
class Entry:
    path: str
    type: Kind
    size: int | None


@dataclass(frozen=True)
class Listing:
    entries: list[Entry]
    truncated: bool


@dataclass(frozen=True)
class Written:
    path: str
    size: int
    etag: str
    created: bool


@dataclass(frozen=True)
class Edited:
    path: str
    size: int
    etag: str
    replacements: int


@dataclass(frozen=True)
class Deleted:
    path: str
    type: Kind


@dataclass(frozen=True)
class Moved:
    source: str
    destination: str
    type: Kind


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


def etag_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class Workspace:
    def __init__(
        self,
        root: Path,
        *,
        max_file_bytes: int,
        grep_max_bytes: int,
        reservations: Reservations | None = None,
        audit: Audit | None = None,
    ) -> None:
        self.given_root = root
        self.max_file_bytes = max_file_bytes
        self.grep_max_bytes = grep_max_bytes
        self.reservations = reservations
        self.audit = audit
        self._lock = threading.RLock()
        self._root: Path | None = None

    @classmethod
    def build(
        cls, store: Store, settings: HubSettings, clock: Clock, reservations: Reservations
    ) -> Workspace:
        """The hub's workspace: each change is recorded as an event of the store."""

        def audit(event_type: str, actor: str | None, data: dict[str, object]) -> object:
            return store.append_event(event_type, clock(), actor, **data)

        return cls(
            settings.workspace,
            max_file_bytes=settings.max_file_bytes,
            grep_max_bytes=settings.grep_max_bytes,
            reservations=reservations,
            audit=audit,
        )

    @property
    def root(self) -> Path:
        """The root, resolved (created on first use if missing)."""
        if self._root is None:
            self.given_root.mkdir(parents=True, exist_ok=True)
            self._root = self.given_root.resolve()
        return self._root

    # -- confinement ----------------------------------------------------------------------

    def resolve(self, path: str, *, root_ok: bool = False) -> Target:
        """Where `path` leads, or PathRefused; one name at a time, so no step leaves the root."""
        parts = parts_of(path)
        shown = repr(path[:200])
        if not parts and not root_ok:
            raise PathRefused("the path is empty; name a file relative to the workspace root")
        root = self.root
        current, entry = root, root
        for index, name in enumerate(parts):
            candidate = current / name
            try:
                mode = candidate.lstat().st_mode
            except OSError as error:
                if error.errno not in _NOT_THERE:
                    raise _os_error(error, path) from None
                current = entry = candidate.joinpath(*parts[index + 1 :])  # nothing there: no links
                break
            entry = candidate
            if stat.S_ISLNK(mode):
                current = Path(os.path.realpath(candidate))
                if not current.is_relative_to(root):
                    raise PathRefused(
                        f"{shown} leads outside the workspace through the symbolic link {name!r}"
                    )
                if current.is_symlink():  # realpath gives up on a loop and returns a link
                    raise PathRefused(f"{shown} goes through a loop of symbolic links at {name!r}")
            else:
                current = candidate
        rel = current.relative_to(root).as_posix() if current != root else ""
        if any(part.casefold() == ".git" for part in rel.split("/")):
            raise PathRefused(
                f"{shown} leads into .git through a symbolic link; the file API never touches it"
            )
        return Target("/".join(parts), current, rel, entry)

    def _guard(self, target: Target, writer: int | None, *, within: bool = False) -> None:
        if self.reservations is not None:
            self.reservations.check(list(dict.fromkeys((target.path, target.rel))), writer, within=within)

    def _event(self, event_type: str, actor: str | None, **data: object) -> None:
        if self.audit is not None:
            self.audit(event_type, actor, data)

    # -- reading --------------------------------------------------------------------------

    def read(self, path: str) -> tuple[bytes, str]:
        """The file's bytes and ETag."""
        target = self.resolve(path)
        with self._open_file(target, path) as fd:
            content = _read_all(fd, self.max_file_bytes)
        if len(content) > self.max_file_bytes:
            raise PayloadTooLarge(
                f"{target.path} is over {self.max_file_bytes} bytes, the most the hub reads "
                "([workspace] max_file_bytes)"
            )
        return content, etag_of(content)

    @contextlib.contextmanager
    def _open_file(self, target: Target, asked: str) -> Iterator[int]:
        """An open descriptor of the regular file; never opens anything else (a FIFO would block)."""
        try:
            mode = target.real.lstat().st_mode
            if stat.S_ISDIR(mode):
                raise InvalidRequest(f"{target.path} is a directory, not a file")
            if not stat.S_ISREG(mode):
                raise PathRefused(f"{target.path} is a {_kind_name(mode)}, not a regular file")
            fd = os.open(target.real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise _os_error(error, asked) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # it changed since the lstat
                raise PathRefused(f"{target.path} is not a regular file")
            yield fd
        finally:
            os.close(fd)

    def _current_etag(self, target: Target, asked: str) -> str | None:
        """The ETag of the file there now; None if there is nothing (refused if not a file)."""
        try:
            target.real.lstat()
        except OSError as error:
            if error.errno in _NOT_THERE:
                return None
            raise _os_error(error, asked) from None
        with self._open_file(target, asked) as fd:
            digest = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
            return digest.hexdigest()

    def list(self, path: str = "", glob: str | None = None, limit: int = 1000) -> Listing:
        """A directory's entries, or with `glob` every path below it that the glob matches
        (relative to `path`), in name order; a file lists itself."""
        target = self.resolve(path, root_ok=True)
        pattern = glob_of(glob) if glob else None
        try:
            mode = target.real.lstat().st_mode
        except OSError as error:
            raise _os_error(error, path) from None
        if stat.S_ISREG(mode):
            return Listing([Entry(target.path, "file", target.real.lstat().st_size)], False)
        if not stat.S_ISDIR(mode):
            raise PathRefused(f"{target.path} is a {_kind_name(mode)}, not a file or directory")
        entries: list[Entry] = []
        walk = _walk(target.real, target.path, recursive=pattern is not None)
        for entry, below, _ in walk:
            if pattern is not None and not matches(pattern, below):
                continue
            if len(entries) == limit:
                return Listing(entries, True)
            entries.append(entry)
        return Listing(entries, walk.truncated)

    def grep(
        self,
        pattern: str,
        path: str = "",
        glob: str | None = None,
        *,
        max_matches: int = 100,
        max_bytes: int | None = None,
        ignore_case: bool = False,
        fixed_string: bool = False,
    ) -> Found:
        """Lines matching a regular expression (RE2 syntax) in the text files under `path`."""
        regex = LinePattern(pattern, ignore_case=ignore_case, fixed_string=fixed_string)
        target = self.resolve(path, root_ok=True)
        only = glob_of(glob) if glob else None
        budget = min(max_bytes or self.grep_max_bytes, self.grep_max_bytes)
        deadline = time.monotonic() + GREP_SECONDS
        found: list[Match] = []
        searched = skipped = read = 0
        try:
            mode = target.real.lstat().st_mode
        except OSError as error:
            raise _os_error(error, path) from None
        if stat.S_ISREG(mode):
            files: Iterator[tuple[Entry, str, Path]] | _Walk = iter(
                [(Entry(target.path, "file", None), "", target.real)]
            )
        elif stat.S_ISDIR(mode):
            files = _walk(target.real, target.path, recursive=True)
        else:
            raise PathRefused(f"{target.path} is a {_kind_name(mode)}, not a file or directory")
        for entry, below, real in files:
            if entry.type != "file" or (only is not None and not matches(only, below)):
                continue
            if time.monotonic() > deadline:
                return Found(found, True, searched, skipped, read)
            content = self._probe(real)
            if content is None:
                skipped += 1
                continue
            if read + len(content) > budget:
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
        return Found(found, isinstance(files, _Walk) and files.truncated, searched, skipped, read)

    def _probe(self, real: Path) -> bytes | None:
        """A text file's bytes for grep; None for a binary, huge or vanished one."""
        try:
            mode = real.lstat()
            if not stat.S_ISREG(mode.st_mode) or mode.st_size > self.max_file_bytes:
                return None
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            content = _read_all(fd, self.max_file_bytes)
        finally:
            os.close(fd)
        huge_or_binary = len(content) > self.max_file_bytes or b"\x00" in content[:BINARY_PROBE]
        return None if huge_or_binary else content

    # -- changing -------------------------------------------------------------------------

    def write(
        self,
        path: str,
        content: bytes,
        *,
        writer: int | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        actor: str | None = None,
    ) -> Written:
        """Create or replace a file atomically, if its preconditions hold (see the module)."""
        self._check_size(path, len(content))
        with self._lock:
            target = self.resolve(path)
            self._guard(target, writer)
            current = self._current_etag(target, path)
            _preconditions(target.path, current, if_match, if_none_match)
            self._replace(target, content, path)
        written = Written(target.path, len(content), etag_of(content), current is None)
        self._event("file.written", actor, path=written.path, worker_id=writer, size=written.size,
                    etag=written.etag, created=written.created)  # fmt: skip
        return written

    def edit(
        self,
        path: str,
        old: str,
        new: str,
        *,
        writer: int | None = None,
        if_match: str | None = None,
        replace_all: bool = False,
        actor: str | None = None,
    ) -> Edited:
        """Replace `old` by `new` in a UTF-8 text file: `old` must occur exactly once (or at
        least once, with `replace_all`)."""
        if not old:
            raise InvalidRequest("old is empty; to write a whole file, use PUT /v1/files/content")
        if old == new:
            raise InvalidRequest("old and new are the same; nothing would change")
        with self._lock:
            target = self.resolve(path)
            self._guard(target, writer)
            with self._open_file(target, path) as fd:
                before = _read_all(fd, self.max_file_bytes)
            self._check_size(path, len(before))
            if if_match is not None:
                _preconditions(target.path, etag_of(before), if_match, None)
            try:
                text = before.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    f"{target.path} is not UTF-8 text; replace it whole with a write"
                ) from None
            count = text.count(old)
            if count == 0:
                raise InvalidRequest(
                    f"old was not found in {target.path}; read the file again and copy it exactly"
                )
            first = text.find(old)
            if not replace_all and (count > 1 or text.find(old, first + 1) >= 0):
                raise InvalidRequest(
                    f"old occurs {max(count, 2)} times in {target.path}; include more of the surrounding "
                    "text to make it unique, or set replace_all"
                )
            after = (text.replace(old, new) if replace_all else text.replace(old, new, 1)).encode("utf-8")
            self._check_size(path, len(after))
            self._replace(target, after, path)
        edited = Edited(target.path, len(after), etag_of(after), count if replace_all else 1)
        self._event("file.edited", actor, path=edited.path, worker_id=writer, size=edited.size,
                    etag=edited.etag, replacements=edited.replacements)  # fmt: skip
        return edited

    def delete(
        self, path: str, *, writer: int | None = None, if_match: str | None = None, actor: str | None = None
    ) -> Deleted:
        """Delete a file, a symbolic link (not what it points to) or an empty directory."""
        with self._lock:
            target = self.resolve(path)
            try:
                mode = target.entry.lstat().st_mode
            except OSError as error:
                raise _os_error(error, path) from None
            kind = _kind(mode)
            if kind == "other":
                raise PathRefused(f"{target.path} is a {_kind_name(mode)}, not a regular file or directory")
            self._guard(target, writer, within=kind == "dir")
            if if_match is not None:
                if kind != "file":
                    raise InvalidRequest(f"{target.path} is a {kind}; only a file has an ETag")
                _preconditions(target.path, self._current_etag(target, path), if_match, None)
            try:
                if kind == "dir":
                    target.entry.rmdir()
                else:
                    target.entry.unlink()
            except OSError as error:
                raise _os_error(error, path) from None
            _sync_directory(target.entry.parent)
        self._event("file.deleted", actor, path=target.path, worker_id=writer, type=kind)
        return Deleted(target.path, kind)

    def move(
        self,
        source: str,
        destination: str,
        *,
        writer: int | None = None,
        overwrite: bool = False,
        actor: str | None = None,
    ) -> Moved:
        """Rename a file or directory; parents of the destination are created. An existing
        destination file is replaced only with `overwrite`; a directory never."""
        with self._lock:
            src, dst = self.resolve(source), self.resolve(destination)
            try:
                mode = src.entry.lstat().st_mode
            except OSError as error:
                raise _os_error(error, source) from None
            if stat.S_ISLNK(mode):
                raise PathRefused(f"{src.path} is a symbolic link; the file API does not move links")
            kind = _kind(mode)
            if kind == "other":
                raise PathRefused(f"{src.path} is a {_kind_name(mode)}, not a regular file or directory")
            if src.real == dst.real:
                raise InvalidRequest(f"{src.path} and {dst.path} are the same path")
            if kind == "dir" and dst.real.is_relative_to(src.real):
                raise InvalidRequest(f"cannot move the directory {src.path} into itself ({dst.path})")
            self._guard(src, writer, within=kind == "dir")
            self._guard(dst, writer, within=kind == "dir")
            try:
                there = dst.entry.lstat().st_mode
            except OSError as error:
                if error.errno not in _NOT_THERE:
                    raise _os_error(error, destination) from None
            else:
                if stat.S_ISLNK(there):
                    raise PathRefused(f"{dst.path} is a symbolic link; move to another name")
                if _kind(there) == "other":
                    raise PathRefused(f"{dst.path} is a {_kind_name(there)}, not a regular file or directory")
                if not overwrite:
                    raise Conflict(f"{dst.path} exists; set overwrite to replace it")
                if kind == "dir" or not stat.S_ISREG(there):
                    raise Conflict(f"{dst.path} exists and only a file may replace a file")
            _make_parents(dst.real.parent, destination)
            try:
                src.real.replace(dst.real)
            except OSError as error:
                raise _os_error(error, destination) from None
            _sync_directory(src.real.parent)
            _sync_directory(dst.real.parent)
        self._event("file.moved", actor, path=src.path, to=dst.path, worker_id=writer, type=kind)
        return Moved(src.path, dst.path, kind)

    def _check_size(self, path: str, size: int) -> None:
        if size > self.max_file_bytes:
            raise PayloadTooLarge(
                f"{path[:200]} would be {size} bytes; the hub keeps files up to {self.max_file_bytes} bytes "
                "([workspace] max_file_bytes)"
            )

    def _replace(self, target: Target, content: bytes, asked: str) -> None:
        """Write `content` to the target atomically, keeping an existing file's permissions."""
        directory = target.real.parent
        try:
            existing = target.real.lstat()
        except OSError as error:
            if error.errno not in _NOT_THERE:
                raise _os_error(error, asked) from None
            mode = None
        else:
            if stat.S_ISDIR(existing.st_mode):
                raise Conflict(f"{target.path} is a directory")
            mode = stat.S_IMODE(existing.st_mode)
        temporary = directory / f".vps-write-{secrets.token_hex(8)}.tmp"
        _make_parents(directory, asked)
        try:
            fd = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666
            )
        except OSError as error:
            raise _os_error(error, asked) from None
        try:
            try:
                if mode is not None:
                    os.fchmod(fd, mode)
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            temporary.replace(target.real)
        except BaseException as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if isinstance(error, OSError):
                raise _os_error(error, asked) from None
            raise
        _sync_directory(directory)


class _Walk:
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
                kind, size = _entry_kind(child)
                child_path = f"{path}/{child.name}" if path else child.name
                child_below = f"{below}/{child.name}" if below else child.name
                yield Entry(child_path, kind, size), child_below, real / child.name
                if kind == "dir" and self._recursive:
                    subdirectories.append((real / child.name, child_path, child_below))
            self._stack.extend(reversed(subdirectories))


def _walk(real: Path, path: str, *, recursive: bool) -> _Walk:
    return _Walk(real, path, recursive)


def _entry_kind(child: os.DirEntry[str]) -> tuple[Kind, int | None]:
    try:
        info = child.stat(follow_symlinks=False)
    except OSError:
        return "other", None
    kind = _kind(info.st_mode)
    return kind, info.st_size if kind == "file" else None


def _kind(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _kind_name(mode: int) -> str:
    return _KIND_NAMES.get(stat.S_IFMT(mode), "special file")


def _make_parents(directory: Path, asked: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTDIR):
            raise Conflict(f"{asked[:200]!r}: a file is in the way of a directory it needs") from None
        raise _os_error(error, asked) from None


def _read_all(fd: int, limit: int) -> bytes:
    """The file's bytes, but no more than `limit` + 1 of them (it may grow while it is read)."""
    chunks, size = [], 0
    while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _sync_directory(directory: Path) -> None:
    """fsync a directory, so a rename or unlink in it survives a power cut."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tags(header: str) -> list[tuple[str, bool]] | None:
    """An If-Match / If-None-Match value as (etag, weak) pairs; None for `*`."""
    if header.strip() == "*":
        return None
    tags = []
    for item in header.split(","):
        item = item.strip()
        weak = item.startswith("W/")
        tags.append((item.removeprefix("W/").strip('"'), weak))
    return tags


def _preconditions(path: str, current: str | None, if_match: str | None, if_none_match: str | None) -> None:
    """StaleFile (412) unless the headers hold for the file as it is (`current`: its ETag)."""
    if if_match is not None:
        tags = _tags(if_match)
        if current is None:
            raise StaleFile(f"{path} does not exist (If-Match expected it); create it with If-None-Match: *")
        if tags is not None and not any(tag == current and not weak for tag, weak in tags):
            raise StaleFile(
                f'{path} changed since it was read (its ETag is now "{current}"); read it again and '
                "redo the change on what it holds now"
            )
    if if_none_match is not None:
        tags = _tags(if_none_match)
        if current is not None and (tags is None or any(tag == current for tag, _ in tags)):
            raise StaleFile(f"{path} already exists (If-None-Match: {if_none_match[:80]}); read it first")
    if if_match is None and if_none_match is None and current is not None:
        raise StaleFile(
            f"{path} exists; send If-Match with the ETag you read it with (If-Match: * replaces "
            "whatever it holds)"
        )


def _os_error(error: OSError, path: str) -> HubError:
    """An OSError as the hub error that says what was wrong with the path."""
    shown = repr(path[:200])
    code = error.errno
    if code in _NOT_THERE:
        return NotFound(f"{shown} does not exist in the workspace")
    if code in (errno.ELOOP, errno.ENAMETOOLONG):
        return PathRefused(f"{shown} cannot be resolved: {error.strerror}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PathRefused(f"the hub may not change {shown}: {error.strerror}")
    if code in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.EXDEV, errno.EBUSY):
        reason = {errno.ENOTEMPTY: "the directory is not empty; delete what it holds first",
                  errno.EEXIST: "a file is in the way of a directory it needs",
                  errno.EISDIR: "it is a directory"}.get(code or 0, error.strerror)  # fmt: skip
        return Conflict(f"{shown}: {reason}")
    if code == errno.EINVAL:
        return InvalidRequest(f"{shown}: {error.strerror}")
    raise error
