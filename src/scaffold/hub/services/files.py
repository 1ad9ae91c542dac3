"""The workspace's files: list, read, write, edit, delete, move and grep, confined to the root.

**Confinement.** Every path goes through `scaffold.hub.core.paths.confine` (the rules are written
there once, for files and commands alike); anything it refuses is a 403 `path_refused` before
anything on disk changes. Only regular files and directories
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
or the new ones, never a mix. Reservations (`scaffold.hub.services.reservations`) are checked under the
same lock, before anything changes.

**Limits.** A file larger than `max_file_bytes` is neither read nor written (413). Grep skips
binary files (a NUL in the first 8 KiB) and files over `max_file_bytes`, reads at most
`max_bytes` in all, stops after `max_matches` or `GREP_SECONDS`, and says when it stopped early.
Its pattern runs on RE2 (`scaffold.hub.core.patterns`), in time linear in the text, so no pattern
makes a search slow. Listing, grep and every other file operation run in a worker thread (see
`scaffold.hub.faces.rest.files`), never on the event loop.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scaffold.errors import (
    Conflict,
    InvalidRequest,
    PathRefused,
    PayloadTooLarge,
    StaleFile,
)
from scaffold.hub.core.globs import glob_of, matches
from scaffold.hub.core.paths import NOT_THERE, Target, confine, path_error
from scaffold.hub.core.patterns import LinePattern
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Clock
from scaffold.hub.services.reservations import Reservations
from scaffold.hub.services.search import Found, read_all, search
from scaffold.hub.services.walk import Entry, Kind, kind_name, kind_of, walk
from scaffold.hub.store.base import Store

Audit = Callable[[str, str | None, int | None, int | None, dict[str, object]], object]
"""Records a change: (event type, actor, task id, worker id, data)."""


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


def etag_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class Files:
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
        self.task_id: int | None = None
        """The task whose tree this is; None: main (scaffold.hub.services.trees)."""
        self._lock = threading.RLock()
        self._root: Path | None = None

    @classmethod
    def build(cls, store: Store, settings: HubSettings, clock: Clock, reservations: Reservations) -> Files:
        """The hub's workspace: each change is recorded as an event of the store."""

        def audit(
            kind: str, actor: str | None, task_id: int | None, worker_id: int | None, data: dict[str, object]
        ) -> object:
            return store.append_event(kind, clock(), actor, task_id=task_id, worker_id=worker_id, **data)

        return cls(
            settings.workspace,
            max_file_bytes=settings.max_file_bytes,
            grep_max_bytes=settings.grep_max_bytes,
            reservations=reservations,
            audit=audit,
        )

    def at(self, root: Path, task_id: int | None) -> Files:
        """These files as seen in another working tree (a task's): the same lock, limits,
        reservations and audit; each change recorded against `task_id`."""
        bound = copy.copy(self)
        bound.given_root, bound._root, bound.task_id = root, None, task_id
        return bound

    @property
    def root(self) -> Path:
        """The root, resolved (created on first use if missing)."""
        if self._root is None:
            self.given_root.mkdir(parents=True, exist_ok=True)
            self._root = self.given_root.resolve()
        return self._root

    # -- confinement ----------------------------------------------------------------------

    def resolve(self, path: str, *, root_ok: bool = False) -> Target:
        return confine(self.root, path, root_ok=root_ok)

    def _guard(self, target: Target, writer: int | None, *, within: bool = False) -> None:
        if self.reservations is not None:
            self.reservations.check(list(dict.fromkeys((target.path, target.rel))), writer, within=within)

    def _event(self, event_type: str, actor: str | None, writer: int | None, **data: object) -> None:
        if self.audit is not None:
            self.audit(event_type, actor, self.task_id, writer, data)

    # -- reading --------------------------------------------------------------------------

    def read(self, path: str) -> tuple[bytes, str]:
        """The file's bytes and ETag."""
        target = self.resolve(path)
        with self._open_file(target, path) as fd:
            content = read_all(fd, self.max_file_bytes)
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
                raise PathRefused(f"{target.path} is a {kind_name(mode)}, not a regular file")
            fd = os.open(target.real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise path_error(error, asked) from None
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
            if error.errno in NOT_THERE:
                return None
            raise path_error(error, asked) from None
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
            raise path_error(error, path) from None
        if stat.S_ISREG(mode):
            return Listing([Entry(target.path, "file", target.real.lstat().st_size)], False)
        if not stat.S_ISDIR(mode):
            raise PathRefused(f"{target.path} is a {kind_name(mode)}, not a file or directory")
        entries: list[Entry] = []
        entries_below = walk(target.real, target.path, recursive=pattern is not None)
        for entry, below, _ in entries_below:
            if pattern is not None and not matches(pattern, below):
                continue
            if len(entries) == limit:
                return Listing(entries, True)
            entries.append(entry)
        return Listing(entries, entries_below.truncated)

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
        return search(
            target, regex, only, max_matches=max_matches, max_bytes=budget, max_file_bytes=self.max_file_bytes
        )

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
        self._event(
            "file.written",
            actor,
            writer,
            path=written.path,
            size=written.size,
            etag=written.etag,
            created=written.created,
        )
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
                before = read_all(fd, self.max_file_bytes)
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
        self._event(
            "file.edited",
            actor,
            writer,
            path=edited.path,
            size=edited.size,
            etag=edited.etag,
            replacements=edited.replacements,
        )
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
                raise path_error(error, path) from None
            kind = kind_of(mode)
            if kind == "other":
                raise PathRefused(f"{target.path} is a {kind_name(mode)}, not a regular file or directory")
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
                raise path_error(error, path) from None
            _sync_directory(target.entry.parent)
        self._event("file.deleted", actor, writer, path=target.path, type=kind)
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
                raise path_error(error, source) from None
            if stat.S_ISLNK(mode):
                raise PathRefused(f"{src.path} is a symbolic link; the file API does not move links")
            kind = kind_of(mode)
            if kind == "other":
                raise PathRefused(f"{src.path} is a {kind_name(mode)}, not a regular file or directory")
            if src.real == dst.real:
                raise InvalidRequest(f"{src.path} and {dst.path} are the same path")
            if kind == "dir" and dst.real.is_relative_to(src.real):
                raise InvalidRequest(f"cannot move the directory {src.path} into itself ({dst.path})")
            self._guard(src, writer, within=kind == "dir")
            self._guard(dst, writer, within=kind == "dir")
            try:
                there = dst.entry.lstat().st_mode
            except OSError as error:
                if error.errno not in NOT_THERE:
                    raise path_error(error, destination) from None
            else:
                if stat.S_ISLNK(there):
                    raise PathRefused(f"{dst.path} is a symbolic link; move to another name")
                if kind_of(there) == "other":
                    raise PathRefused(f"{dst.path} is a {kind_name(there)}, not a regular file or directory")
                if not overwrite:
                    raise Conflict(f"{dst.path} exists; set overwrite to replace it")
                if kind == "dir" or not stat.S_ISREG(there):
                    raise Conflict(f"{dst.path} exists and only a file may replace a file")
            _make_parents(dst.real.parent, destination)
            try:
                src.real.replace(dst.real)
            except OSError as error:
                raise path_error(error, destination) from None
            _sync_directory(src.real.parent)
            _sync_directory(dst.real.parent)
        self._event("file.moved", actor, writer, path=src.path, to=dst.path, type=kind)
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
            if error.errno not in NOT_THERE:
                raise path_error(error, asked) from None
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
            raise path_error(error, asked) from None
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
                raise path_error(error, asked) from None
            raise
        _sync_directory(directory)


def _make_parents(directory: Path, asked: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTDIR):
            raise Conflict(f"{asked[:200]!r}: a file is in the way of a directory it needs") from None
        raise path_error(error, asked) from None


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
