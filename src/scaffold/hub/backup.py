"""Backups of a hub, taken while it runs, and the way back.

A backup is a directory that only its owner can read (0700, files 0600):

    hub.sqlite3       the database, copied with SQLite's online backup API
    workspace.bundle  the workspace's git history: `git bundle create --all`
    manifest.json     hub and schema version, when, the tasks by state, each file's sha256

The database is copied in one backup step. In WAL mode that step is one read transaction: a
consistent snapshot that never blocks the hub's writers (readers and the writer do not wait for
each other in WAL). A copy in many small steps would not help them and could not finish under
load: SQLite restarts a stepwise backup whenever another connection writes to the source, which
a busy hub does every few milliseconds (measured on 100 MB under one steady writer: 2,000
restarts in 60 s, and no end). The copy is switched out of WAL mode so it is one self-contained
file, and must pass `PRAGMA integrity_check`.

The database is copied before the git history, so every commit a task names is in the bundle
(the hub commits after it completes a task, never before). A bundle rather than a bare clone:
one file, so one checksum covers the whole history; git reads and verifies it directly, and a
clone with --local would hard-link objects instead of copying them. Uncommitted changes in the
workspace are not history and are not in the backup: it says how many there were.

The database holds only SHA-256 hashes of keys; `initial-admin-key`, the one file of the data
directory with a key in the clear, is never copied. Everything is written into a temporary
directory beside the destination and renamed into place at the end, so a backup that exists is
whole.

A restore refuses a running hub's data: a hub holds an exclusive lock on its data directory's
`hub.lock` while it serves (`scaffold.hub.server`), and the restore takes the same lock, so
neither can start while the other works. It moves data it replaces aside, never deletes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaffold import __version__
from scaffold.errors import BackupError, DataDirBusy
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import TASK_STATES
from scaffold.hub.server import hold_data_dir
from scaffold.hub.store.migrations import MIGRATIONS
from scaffold.hub.store.sqlite import DB_FILE

BUNDLE_FILE = "workspace.bundle"
MANIFEST_FILE = "manifest.json"
FORMAT = "scaffold-hub-backup"
FORMAT_VERSION = 1
BACKUP_NAME = re.compile(r"hub-\d{8}T\d{6}Z")
GIT_TIMEOUT = 600.0  # seconds for one git command: a large history takes a while to pack
# The database and what SQLite keeps beside it; moved aside together, so a WAL stays with its file.
DB_FILES = (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-journal", "initial-admin-key")
# Workers can write into the workspace's .git/: no hooks or fsmonitor of theirs may run here.
SAFE_GIT = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "init.defaultBranch=main")


@dataclass(frozen=True)
class Backup:
    """A backup directory and what its manifest says."""

    path: Path
    manifest: dict[str, Any]

    @property
    def tasks(self) -> dict[str, int]:
        return dict(self.manifest["tasks"])

    def summary(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.tasks.items() if n) or "none"
        work = self.manifest["workspace"]
        return (
            f"schema {self.manifest['schema_version']}, tasks: {counts}; "
            f"workspace {_short_ref(work['head'])} at {work['commit'][:12]} (commits: {work['commits']})"
        )


@dataclass(frozen=True)
class Restored:
    backup: Backup
    database: Path
    workspace: Path
    moved_aside: tuple[Path, ...]


# -- backup ---------------------------------------------------------------------------------


def backup(settings: HubSettings, dest: Path) -> Backup:
    """Copy the hub's database and the workspace's history into `dest`, a new directory."""
    dest = dest.expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists and is not empty; give a new directory")
    database = settings.data_dir / DB_FILE
    if not database.is_file():
        raise BackupError(f"no hub database at {database}: give the hub's --config or --data-dir")
    workspace = settings.workspace.expanduser().absolute()
    if not workspace.is_dir():
        raise BackupError(f"no workspace at {workspace}: give the hub's --config or --workspace")
    if _git(workspace, "rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode != 0:
        raise BackupError(
            f"the workspace {workspace} is not a git repository with a commit: nothing to back up"
        )
    if dest.resolve().is_relative_to(workspace.resolve()):
        raise BackupError(
            f"{dest} is inside the workspace, which agents read and the hub commits; choose another"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))  # 0700
    except OSError as error:
        raise BackupError(f"cannot write a backup beside {dest}: {error.strerror or error}") from None
    try:
        _copy_database(database, partial / DB_FILE)
        schema, tasks = _describe(partial / DB_FILE)
        work = _bundle(workspace, partial / BUNDLE_FILE)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hub_version": __version__,
            "schema_version": schema,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"data_dir": str(settings.data_dir), "workspace": str(workspace)},
            "tasks": tasks,
            "workspace": work,
            "files": {name: _file_entry(partial / name) for name in (DB_FILE, BUNDLE_FILE)},
        }
        _write_private(partial / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        for name in (DB_FILE, BUNDLE_FILE, MANIFEST_FILE):
            (partial / name).chmod(0o600)
            _fsync(partial / name)
        partial.rename(dest)  # onto an empty directory too; never onto one that filled meanwhile
        _fsync(dest.parent)
    except OSError as error:
        raise BackupError(f"cannot write the backup {dest}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Backup(dest, manifest)


def backup_into(settings: HubSettings, directory: Path, keep: int | None = None) -> tuple[Backup, list[Path]]:
    """A backup in `directory/hub-<UTC time>`; then, with `keep`, the oldest backups there beyond
    the newest `keep` are deleted. Only directories named like a backup and holding a manifest
    are ever deleted."""
    made = backup(settings, directory / time.strftime("hub-%Y%m%dT%H%M%SZ", time.gmtime()))
    pruned: list[Path] = []
    if keep is not None:
        ours = sorted(
            path
            for path in directory.iterdir()
            if BACKUP_NAME.fullmatch(path.name) and (path / MANIFEST_FILE).is_file()
        )
        for old in ours[: max(len(ours) - keep, 0)]:
            shutil.rmtree(old)
            pruned.append(old)
    return made, pruned


def _copy_database(source: Path, copy: Path) -> None:
    # mode=rw: a wrong path must be an error, not a new empty database.
    with (
        closing(sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30)) as src,
        closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)  # one step: one consistent snapshot (see the module's docstring)
        dst.execute("PRAGMA journal_mode = DELETE")
        checked = dst.execute("PRAGMA integrity_check").fetchall()
    if checked != [("ok",)]:
        raise BackupError(f"the copy of {source} fails its integrity check: {checked[:3]}")


def _describe(database: Path) -> tuple[int, dict[str, int]]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        schema = int(db.execute("PRAGMA user_version").fetchone()[0])
        counts = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
    return schema, {state: int(counts.get(state, 0)) for state in TASK_STATES}


def _bundle(workspace: Path, bundle: Path) -> dict[str, Any]:
    head = _git(workspace, "symbolic-ref", "--quiet", "HEAD", check=False).stdout.strip() or "HEAD"
    _git(workspace, "bundle", "create", "--quiet", str(bundle), "--all")
    # The commit HEAD's branch has in the bundle, not in the workspace: the hub may have committed
    # again since the bundle was written, and a restore checks out what the bundle holds.
    heads = {}
    for line in _git(workspace, "bundle", "list-heads", str(bundle)).stdout.splitlines():
        sha, _, ref = line.partition(" ")
        heads[ref] = sha
    commit = heads.get(head) or _git(workspace, "rev-parse", "--verify", "HEAD").stdout.strip()
    commits = int(_git(workspace, "rev-list", "--count", commit).stdout.strip())
    # --no-optional-locks: no index.lock taken (nor the index refreshed) under the running hub.
    status = _git(workspace, "--no-optional-locks", "status", "--porcelain", "-z", "--untracked-files=all")
    uncommitted = len([entry for entry in status.stdout.split("\0") if entry[:2].strip()])
    return {"head": head, "commit": commit, "commits": commits, "uncommitted": uncommitted}


# -- restore --------------------------------------------------------------------------------


def read_backup(src: Path) -> Backup:
    """The backup at `src`, its files checked against the manifest's checksums."""
    src = src.expanduser().absolute()
    try:
        manifest = json.loads((src / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{src} is not a hub backup: it has no {MANIFEST_FILE}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BackupError(f"{src} is not a hub backup: its {MANIFEST_FILE} is unreadable ({error})") from None
    if not (isinstance(manifest, dict) and manifest.get("format") == FORMAT):
        raise BackupError(f"{src} is not a hub backup: {MANIFEST_FILE} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{src} is a backup of format {manifest.get('format_version')!r}; this hub reads "
            f"{FORMAT_VERSION}: upgrade vps-agent-scaffold"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {DB_FILE, BUNDLE_FILE}:
        raise BackupError(f"{src} is not a hub backup: its manifest lists {sorted(files or [])!r}")
    for name, entry in sorted(files.items()):
        path = src / name
        if not path.is_file():
            raise BackupError(f"{src} is incomplete: {name} is missing")
        if not isinstance(entry, dict) or _sha256(path) != entry.get("sha256"):
            raise BackupError(
                f"checksum mismatch: {path} is not the file the backup made (damaged or changed)"
            )
    work = manifest.get("workspace")
    if not (
        isinstance(manifest.get("tasks"), dict)
        and isinstance(work, dict)
        and {"head", "commit", "commits"} <= set(work)
    ):
        raise BackupError(f"{src} is not a hub backup: its manifest lacks the tasks or the workspace")
    schema = manifest.get("schema_version")
    if not isinstance(schema, int) or schema > len(MIGRATIONS):
        raise BackupError(
            f"{src} holds a database of schema {schema!r}; this hub knows up to "
            f"{len(MIGRATIONS)}: upgrade vps-agent-scaffold"
        )
    return Backup(src, manifest)


def restore(settings: HubSettings, src: Path, *, force: bool = False) -> Restored:
    """Put the backup at `src` back as the hub's database and workspace; the hub must be stopped.

    Existing data is refused unless `force`; then it is moved aside (next to where it was), never
    deleted. Nothing is replaced until both the database and the workspace are ready beside
    their places.
    """
    found = read_backup(src)
    data_dir = settings.data_dir.expanduser().absolute()
    workspace = settings.workspace.expanduser().absolute()
    try:
        lock = hold_data_dir(data_dir)
    except DataDirBusy as busy:
        raise BackupError(
            f"a hub (pid {busy.pid}) is running on {data_dir}; stop it before restoring"
        ) from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    staged: list[Path] = []
    try:
        existing = [data_dir / name for name in DB_FILES if (data_dir / name).exists()]
        occupied = workspace.exists() and (not workspace.is_dir() or any(workspace.iterdir()))
        if (existing or occupied) and not force:
            what = f"{data_dir} holds a hub's data" if existing else f"the workspace {workspace} is not empty"
            raise BackupError(f"{what}; pass --force to move it aside and restore over it")
        owner = data_dir.stat()
        new_db = data_dir / f".{DB_FILE}.restoring"
        staged.append(new_db)
        shutil.copyfile(found.path / DB_FILE, new_db)
        new_db.chmod(0o600)
        _check_copy(new_db, found.manifest["files"][DB_FILE]["sha256"])
        new_tree = workspace.with_name(f".{workspace.name}.restoring-{stamp}")
        staged.append(new_tree)
        _clone(found, new_tree)
        moved = _move_aside(existing, data_dir / f"before-restore-{stamp}")
        if workspace.exists():
            if workspace.is_dir():
                new_tree.chmod(workspace.stat().st_mode & 0o7777)
            if occupied:
                aside = workspace.with_name(f"{workspace.name}.before-restore-{stamp}")
                workspace.rename(aside)
                moved.append(aside)
            else:
                workspace.rmdir()
        new_tree.rename(workspace)
        new_db.rename(data_dir / DB_FILE)
        _fsync(data_dir)
        for path in (data_dir / DB_FILE, lock.path, workspace):
            _give_to(path, owner)
    except OSError as error:
        raise BackupError(
            f"cannot restore {found.path}: {error.strerror or error} ({error.filename})"
        ) from None
    finally:
        for path in staged:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        lock.release()
    return Restored(found, data_dir / DB_FILE, workspace, tuple(moved))


def _check_copy(database: Path, sha256: str) -> None:
    if _sha256(database) != sha256:
        raise BackupError(f"checksum mismatch: the copy {database} differs from the backup's database")
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        checked = db.execute("PRAGMA integrity_check").fetchall()
    if checked != [("ok",)]:
        raise BackupError(f"the backup's database fails its integrity check: {checked[:3]}")


def _clone(found: Backup, tree: Path) -> None:
    """The workspace from the bundle: every ref as it was, HEAD as it was, the tree checked out."""
    work = found.manifest["workspace"]
    bundle = found.path / BUNDLE_FILE
    tree.parent.mkdir(parents=True, exist_ok=True)
    tree.mkdir(mode=0o750)
    _git(tree, "init", "--quiet")
    fetched = _git(tree, "fetch", "--quiet", "--update-head-ok", str(bundle), "refs/*:refs/*", check=False)
    if fetched.returncode != 0:
        raise BackupError(f"the bundle {bundle} cannot be read by git: {fetched.stderr.strip()[:500]}")
    if work["head"].startswith("refs/"):
        _git(tree, "symbolic-ref", "HEAD", work["head"])
    else:
        _git(tree, "update-ref", "--no-deref", "HEAD", work["commit"])
    _git(tree, "reset", "--quiet", "--hard")
    if _git(tree, "rev-parse", "HEAD").stdout.strip() != work["commit"]:
        raise BackupError(f"the bundle {bundle} does not hold the commit its manifest names")


def _move_aside(paths: Sequence[Path], aside: Path) -> list[Path]:
    if not paths:
        return []
    aside.mkdir(mode=0o700)
    for path in paths:
        path.rename(aside / path.name)
    return [aside]


def _give_to(path: Path, owner: os.stat_result) -> None:
    """Run as root (sudo), the restored files would be root's, and the hub's user could not open
    them: they go to the owner of the data directory."""
    if os.geteuid() != 0 or (path.stat().st_uid, path.stat().st_gid) == (owner.st_uid, owner.st_gid):
        return
    for each in _walk(path):
        os.lchown(each, owner.st_uid, owner.st_gid)


def _walk(path: Path) -> Iterator[Path]:
    yield path
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                yield Path(root, name)


# -- plumbing -------------------------------------------------------------------------------


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH") or "/usr/bin:/bin",
        "HOME": os.environ.get("HOME") or "/",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CEILING_DIRECTORIES": str(cwd.parent),
        # Neither the system's nor the user's git configuration: a restore is the same everywhere.
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    # safe.directory: run as root (sudo) on the hub user's workspace, git would refuse it.
    command = ["git", *SAFE_GIT, "-c", f"safe.directory={cwd}", *args]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BackupError(f"git {args[0]} in {cwd} failed: {error}") from None
    if check and done.returncode != 0:
        raise BackupError(f"git {args[0]} in {cwd} failed: {done.stderr.strip()[:500]}")
    return done


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _short_ref(ref: str) -> str:
    return ref.removeprefix("refs/heads/")
