"""Render and upgrade projects with copier.

copier can only upgrade a project (a 3-way merge) when the template it came from is a git
repository with the old version still in it. An installed package has no such repository, so:

- every released template version ships inside the package as a git bundle
  (`template-history.bundle`, one commit per version, tagged `VERSION+DIGEST` where DIGEST hashes
  the template's files: a tag names one content, on every machine);
- the bundled template is kept as a small git repository in the user's cache, filled from that
  bundle and with the running version's snapshot on top;
- projects record that repository as `~/.cache/vps-agent-scaffold/template` (copier expands the
  `~`), the same text on every machine, so a teammate's clone or an emptied cache still works:
  `scaffold update` rebuilds the repository from the newer package's bundle, old versions
  included, and copier merges from the old tag to the new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scaffold import __version__
from scaffold.errors import DestinationError, ScaffoldError, TemplateError, UpdateConflictError

ANSWERS_FILE = ".copier-answers.yml"
LOCAL_SETTINGS = Path(".claude") / "settings.local.json"
_GIT_IDENTITY = [
    "-c",
    "user.name=vps-agent-scaffold",
    "-c",
    "user.email=scaffold@localhost",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
]


@dataclass(frozen=True)
class TemplateRef:
    """Where copier reads the template from, and at which git ref (None: copier decides)."""

    src: str
    ref: str | None = None


def template_root() -> Path:
    """The directory holding `copier.yml` and `template/`: inside the wheel, or the checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_template", here.parent.parent):
        if (candidate / "copier.yml").is_file() and (candidate / "template").is_dir():
            return candidate
    raise TemplateError(f"the bundled template is missing (looked beside {here})")


def cache_dir() -> Path:
    if explicit := os.environ.get("VPS_SCAFFOLD_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vps-agent-scaffold"


HISTORY_BUNDLE = "template-history.bundle"
"""Beside `copier.yml`: the released template versions, as a git bundle of tags."""

# A bundled template version: the package version, "+", 12 hex digits of the files' digest.
_BUNDLED_TAG = re.compile(r"[0-9][0-9A-Za-z.!_-]*\+[0-9a-f]{12}")


def template_tag(root: Path) -> str:
    """The tag of the template in `root`: this package's version plus a digest of its files.

    The digest makes the tag name one content everywhere; copier orders versions without the
    `+` part, so two snapshots of one package version never count as a downgrade.
    """
    digest = hashlib.sha256()
    for rel in _template_files(root):
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


def bundled_template() -> TemplateRef:
    """The cache repository, holding the shipped history and this version; this version's tag."""
    root = template_root()
    tag = template_tag(root)
    repo = cache_dir() / "template"
    repo.parent.mkdir(parents=True, exist_ok=True)
    with _locked(repo.parent / "template.lock"):
        if not (repo / ".git").is_dir():
            repo.mkdir(exist_ok=True)
            _git(repo, "init", "-q")
        history = root / HISTORY_BUNDLE
        if history.is_file():
            _git(repo, "fetch", "-q", "--no-write-fetch-head", str(history), "refs/tags/*:refs/tags/*")
        if _git(repo, "tag", "--list", tag).strip() != tag:
            _write_snapshot(root, _template_files(root), repo)
            _git(repo, "add", "-A")
            _git(repo, "commit", "-q", "--allow-empty", "-m", f"vps-agent-scaffold template {tag}")
            _git(repo, "tag", tag)
        # A tag fetched from the shipped history is not checked out: do it, so the repository's
        # HEAD and files are this version for plain copier (and pytest-copie) too.
        wanted = _git(repo, "rev-parse", f"{tag}^{{commit}}").strip()
        try:
            head = _git(repo, "rev-parse", "-q", "--verify", "HEAD^{commit}").strip()
        except ScaffoldError:  # a new repository: no commit checked out yet
            head = ""
        if head != wanted:
            _git(repo, "checkout", "-q", "--force", "--detach", tag)
    return TemplateRef(_portable(repo), tag)


def record_release(root: Path) -> str:
    """Add the template in `root` to its `template-history.bundle`; return its tag.

    Run once per release (tools/record-template-version.sh), before building the wheel, and
    commit the bundle: every later package can then rebuild this version for copier's merge.
    """
    tag = template_tag(root)
    history = root / HISTORY_BUNDLE
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        _git(repo, "init", "-q")
        if history.is_file():
            _git(repo, "fetch", "-q", "--no-write-fetch-head", str(history), "refs/tags/*:refs/tags/*")
            if _git(repo, "tag", "--list", tag).strip() == tag:
                return tag
            newest = _git(
                repo,
                "for-each-ref",
                "--sort=-creatordate",
                "--count=1",
                "--format=%(objectname)",
                "refs/tags",
            )
            _git(repo, "update-ref", "HEAD", newest.strip())  # the new version's parent
        _write_snapshot(root, _template_files(root), repo)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"vps-agent-scaffold template {tag}")
        _git(repo, "tag", tag)
        _git(repo, "bundle", "create", "-q", str(repo / HISTORY_BUNDLE), "--tags")
        shutil.copyfile(repo / HISTORY_BUNDLE, history)
    return tag


def is_url(src: str) -> bool:
    """A template source copier fetches with git, as opposed to a local path."""
    return "://" in src or src.startswith(("gh:", "gl:", "git@", "git+"))


def resolve_template(src: str | None, ref: str | None) -> TemplateRef:
    """The template to render, at the revision both the wizard and copier will read.

    `src` as given (a local path made absolute, or a git URL), or the bundled one. Without
    `ref`, a git template is pinned as copier would pick it: its newest version tag, else its
    HEAD (for a local checkout: the working tree, which copier renders dirty changes and all).
    """
    if src is None:
        bundled = bundled_template()
        return TemplateRef(bundled.src, ref or bundled.ref)
    if is_url(src):
        if ref is None:
            listed = _git(Path.cwd(), "ls-remote", "--tags", "--refs", "--", src)
            ref = _newest_version([line.partition("refs/tags/")[2] for line in listed.splitlines()])
        if ref is None:
            ref = _git(Path.cwd(), "ls-remote", "--", src, "HEAD").split("\t")[0] or None
        return TemplateRef(src, ref)
    local = Path(src).expanduser()
    if local.exists():
        if not (local / "copier.yml").is_file():
            raise TemplateError(f"{src} is not a copier template (no copier.yml)")
        if ref is None and (local / ".git").exists():
            ref = _newest_version(_git(local, "tag", "--list").split())
        return TemplateRef(str(local.resolve()), ref)
    raise TemplateError(f"template {src} does not exist")


def template_file(template: TemplateRef, name: str) -> str:
    """The text of `name` in `template` at its ref: what copier will render from."""
    if is_url(template.src):
        with tempfile.TemporaryDirectory() as tmp:
            _git(Path(tmp), "clone", "-q", "--bare", "--", template.src, "repo")
            return _git(Path(tmp) / "repo", "show", f"{template.ref or 'HEAD'}:{name}")
    root = Path(template.src).expanduser()
    if template.ref and (root / ".git").exists():
        return _git(root, "show", f"{template.ref}:{name}")
    try:
        return (root / name).read_text(encoding="utf-8")
    except OSError as error:
        raise TemplateError(f"cannot read {name} of the template {template.src}: {error}") from error


def check_new_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DestinationError(f"{dest} already exists and is not empty; choose a new directory")


def copy_project(
    dest: Path,
    answers: Mapping[str, Any],
    template: TemplateRef,
    *,
    quiet: bool,
    local_key: str | None = None,
    on_created: Callable[[], None] | None = None,
) -> None:
    """Render a new project into `dest` (absent or empty): all of it, or nothing.

    copier writes into a hidden directory beside `dest` (the same filesystem), `local_key`
    goes into its git-ignored local settings, and one rename(2) puts the finished project in
    place: an error or a Ctrl-C before that leaves `dest` as it was. `on_created` (announcing
    the project and its key) runs right after the rename with Ctrl-C held off, so the two are
    never separated; an interrupt that late is too late to cancel and is dropped.
    """
    from copier import run_copy  # imported late: `scaffold --help` stays fast

    check_new_destination(dest)
    dest = dest.absolute()
    created = [parent for parent in reversed(dest.parents) if not parent.exists()]
    staging: Path | None = None
    try:
        for parent in created:
            parent.mkdir()
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".scaffold-tmp", dir=dest.parent))
        with _copier_errors():
            run_copy(
                template.src,
                str(staging),
                # Not a question, never recorded: tells copier.yml's after-copy message that
                # `scaffold new` prints its own (copier would name the staging directory).
                data={**answers, "_scaffold_new": True},
                defaults=True,
                vcs_ref=template.ref,
                unsafe=False,
                quiet=quiet,
            )
        if local_key:
            save_local_key(staging, local_key)
        # mkdtemp made it 0700; give it the mode `dest` has, or a new directory would get.
        staging.chmod(dest.stat().st_mode & 0o7777 if dest.exists() else 0o777 & ~_umask())
        with _interrupts_dropped():
            try:
                staging.rename(dest)  # replaces an empty `dest` too
            except OSError as error:
                raise DestinationError(f"cannot move the project into {dest}: {error.strerror}") from None
            staging = None
            if on_created:
                on_created()
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):
            with suppress(OSError):
                parent.rmdir()
        raise


def update_project(
    project: Path,
    *,
    template_ref: str | None,
    quiet: bool,
    interactive: bool,
    data: Mapping[str, Any] | None = None,
    template_src: str | None = None,
) -> str:
    """Upgrade `project` to a newer template version; return the new `_commit`.

    Recorded answers (the key's hash among them) are never asked again unless `data` changes
    them; questions the new version adds are asked when interactive, else take their
    defaults. Conflicts raise UpdateConflictError listing the files. `template_src` (a path
    or git URL) replaces the recorded `_src_path`: it must hold the project's version too.
    """
    from copier import run_update

    if not project.is_dir():
        raise DestinationError(f"{project}: no such directory")
    answers = read_answers(project)
    if not (project / ".git").exists():
        raise DestinationError(f"{project} is not a git repository; copier updates need one")
    if _git(project, "status", "--porcelain", "--untracked-files=no").strip():
        raise DestinationError(f"{project} has uncommitted changes; commit or stash them first")
    # copier calls visible .rej files a dirty repository without naming them, and its inline merge
    # consumes ignored ones, the hunks they hold lost
    if leftovers := [name for name in find_conflicts(project) if name.endswith(".rej")]:
        raise DestinationError(
            f"{project} still has the rejected changes of an earlier update in {', '.join(leftovers)}: "
            "apply them by hand (or decide to drop them), delete the .rej files, commit, then update"
        )
    recorded = str(answers.get("_src_path", ""))
    old = str(answers.get("_commit", ""))
    if template_src is not None:
        source = resolve_template(template_src, template_ref)
    elif _BUNDLED_TAG.fullmatch(old):
        # Made by `scaffold new` from an installed package, here or on another machine: this
        # package's history has its version (unless the project is newer than the package).
        bundled = bundled_template()
        if _git(Path(bundled.src).expanduser(), "tag", "--list", old).strip() != old:
            raise TemplateError(
                f"{project} was made from template {old}, which vps-agent-scaffold {__version__} "
                "does not know; upgrade it (pip install -U vps-agent-scaffold), or pass "
                "--template PATH|URL with a template that has that version"
            )
        source = TemplateRef(bundled.src, template_ref or bundled.ref)
    else:
        if not is_url(recorded) and not Path(recorded).expanduser().is_dir():
            raise TemplateError(
                f"the template {recorded or '(none)'} recorded in {ANSWERS_FILE} is not on this "
                "machine; pass --template PATH|URL (and --vcs-ref REF) to update from another copy"
            )
        source = TemplateRef(recorded, template_ref)
    with _copier_errors(), _source_recorded(project, source.src):
        run_update(
            str(project),  # the template: `_src_path`, which _source_recorded set to `source.src`
            data=dict(data or {}),
            vcs_ref=source.ref,
            defaults=not interactive,
            skip_answered=True,
            overwrite=True,
            unsafe=False,
            quiet=quiet,
            conflict="inline",
        )
    conflicts = find_conflicts(project)
    if conflicts:
        raise UpdateConflictError(conflicts)
    return str(read_answers(project).get("_commit", ""))


@contextmanager
def _source_recorded(project: Path, src: str) -> Iterator[None]:
    """Make `src` the template copier reads the project's old version from.

    copier renders the old version from the answers file's `_src_path`, which may name a
    path of another machine. The answers file gets `src` instead, hidden from copier's
    "repository is dirty" check (skip-worktree) while it runs; the update then writes the
    file anew with `src`. On failure the original text is put back.
    """
    path = project / ANSWERS_FILE
    original = path.read_text(encoding="utf-8")
    line = re.compile(r"^_src_path:.*$", re.MULTILINE)
    repointed = line.sub(lambda _: f"_src_path: {json.dumps(src)}", original, count=1)
    if not line.search(original) or read_answers(project).get("_src_path") == src:
        yield
        return
    path.write_text(repointed, encoding="utf-8")
    _git(project, "update-index", "--skip-worktree", "--", ANSWERS_FILE)
    try:
        yield
    except BaseException:
        if path.read_text(encoding="utf-8") == repointed:
            path.write_text(original, encoding="utf-8")
        raise
    finally:
        _git(project, "update-index", "--no-skip-worktree", "--", ANSWERS_FILE)


def find_conflicts(project: Path) -> list[str]:
    """Files left unmerged by an update: git's unmerged states, and `.rej` files (`copier update
    --conflict rej`), found even where an ignore rule (an old project's, a global one) hides them."""
    found: list[str] = []
    status = _git(project, "status", "--porcelain", "--untracked-files=all", "--ignored=matching")
    for line in status.splitlines():
        state, name = line[:2], line[3:]
        if state in {"UU", "AA", "DU", "UD", "AU", "UA", "DD"} or name.endswith(".rej"):
            found.append(name)
    return sorted(found)


def read_answers(project: Path) -> dict[str, Any]:
    path = project / ANSWERS_FILE
    try:
        answers = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DestinationError(
            f"{project} has no {ANSWERS_FILE}; it was not made from this template"
        ) from None
    except yaml.YAMLError as error:
        raise DestinationError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(answers, dict):
        raise DestinationError(f"{path} is not a mapping of answers")
    return answers


def save_local_key(project: Path, key: str) -> Path:
    """Put the key into the git-ignored `.claude/settings.local.json` as `env.VPS_API_KEY`.

    Existing settings are kept; the file is replaced atomically and readable only by its owner.
    """
    path = project / LOCAL_SETTINGS
    settings: dict[str, Any] = {}
    if path.exists():
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DestinationError(f"{path} is not valid JSON ({error}); fix it first") from error
        if not isinstance(settings, dict):
            raise DestinationError(f"{path} must hold a JSON object")
    env = settings.setdefault("env", {})
    if not isinstance(env, dict):
        raise DestinationError(f"{path}: 'env' must be a JSON object")
    env["VPS_API_KEY"] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings.local.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- internals ---------------------------------------------------------------------------


def _template_files(root: Path) -> list[str]:
    files = ["copier.yml"]
    for path in sorted((root / "template").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path.relative_to(root).as_posix())
    return files


def _portable(path: Path) -> str:
    """`path` as `~/...` when it is under the home directory: the same text for every user."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)


def _newest_version(tags: list[str]) -> str | None:
    """The tag copier would pick: the highest PEP 440 version, pre-releases left out."""
    from packaging.version import InvalidVersion, Version

    versions: list[tuple[Version, str]] = []
    for tag in tags:
        try:
            version = Version(tag)
        except InvalidVersion:
            continue
        if not version.is_prerelease:
            versions.append((version, tag))
    return max(versions)[1] if versions else None


def _write_snapshot(root: Path, files: list[str], repo: Path) -> None:
    for child in repo.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for rel in files:
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def _git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *_GIT_IDENTITY, *args], cwd=repo, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise ScaffoldError("git is not installed; install it and try again") from None
    if result.returncode != 0:
        raise ScaffoldError(f"git {args[0]} failed in {repo}: {result.stderr.strip()}")
    return result.stdout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _interrupts_dropped() -> Iterator[None]:
    """Ignore Ctrl-C for a moment (only the main thread can: elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextmanager
def _copier_errors() -> Iterator[None]:
    """Turn copier's exceptions into one-line ScaffoldErrors."""
    from copier.errors import CopierError

    try:
        yield
    except CopierError as error:
        raise TemplateError(f"copier: {_one_line(error)}") from error
    except ValueError as error:  # copier raises these for invalid answers
        raise TemplateError(_one_line(error)) from error
    except subprocess.CalledProcessError as error:
        detail = (
            (error.stderr or b"").decode(errors="replace")
            if isinstance(error.stderr, bytes)
            else (error.stderr or "")
        )
        raise TemplateError(f"git failed while rendering: {_one_line(detail) or error}") from error


def _one_line(error: object) -> str:
    return " ".join(str(error).split())
