"""Render and upgrade projects with copier.

copier can only upgrade a project (a 3-way merge) when the template it came from is a git
repository with the old version still in it. An installed package has no such repository,
so the bundled template is snapshotted into a small git repository in the user's cache, one
tagged commit per template version; projects record that repository as their `_src_path`
(an absolute path: a relative one breaks `copier update`). After `pip install -U`, the next
`scaffold update` adds the new version on top and merges up to it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scaffold import __version__
from scaffold.errors import DestinationError, ScaffoldError, TemplateError, UpdateConflictError

ANSWERS_FILE = ".copier-answers.yml"
LOCAL_SETTINGS = Path(".claude") / "settings.local.json"
_GIT_IDENTITY = [
    "-c", "user.name=vps-agent-scaffold",
    "-c", "user.email=scaffold@localhost",
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", "core.hooksPath=/dev/null",
]  # fmt: skip


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


def bundled_template() -> TemplateRef:
    """Snapshot the bundled template into the cache repository; return it at this version."""
    root = template_root()
    files = _template_files(root)
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    tag = f"{__version__}+{digest.hexdigest()[:12]}"  # a PEP 440 version copier can sort
    repo = cache_dir() / "template"
    repo.parent.mkdir(parents=True, exist_ok=True)
    with _locked(repo.parent / "template.lock"):
        if not (repo / ".git").is_dir():
            repo.mkdir(exist_ok=True)
            _git(repo, "init", "-q")
        if _git(repo, "tag", "--list", tag).strip() != tag:
            _write_snapshot(root, files, repo)
            _git(repo, "add", "-A")
            _git(repo, "commit", "-q", "--allow-empty", "-m", f"vps-agent-scaffold template {tag}")
            _git(repo, "tag", tag)
    return TemplateRef(str(repo), tag)


def resolve_template(src: str | None, ref: str | None) -> TemplateRef:
    """The template to render: `src` as given (a local path made absolute), or the bundled one."""
    if src is None:
        bundled = bundled_template()
        return TemplateRef(bundled.src, ref or bundled.ref)
    local = Path(src).expanduser()
    if local.exists():
        if not (local / "copier.yml").is_file():
            raise TemplateError(f"{src} is not a copier template (no copier.yml)")
        return TemplateRef(str(local.resolve()), ref)
    if "://" in src or src.startswith(("gh:", "gl:", "git@")):
        return TemplateRef(src, ref)
    raise TemplateError(f"template {src} does not exist")


def check_new_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DestinationError(f"{dest} already exists and is not empty; choose a new directory")


def copy_project(dest: Path, answers: Mapping[str, Any], template: TemplateRef, *, quiet: bool) -> None:
    """Render a new project into `dest` (which must not exist or be empty)."""
    from copier import run_copy  # imported late: `scaffold --help` stays fast

    check_new_destination(dest)
    with _copier_errors():
        run_copy(
            template.src,
            str(dest),
            data=dict(answers),
            defaults=True,
            vcs_ref=template.ref,
            unsafe=False,
            quiet=quiet,
        )


def update_project(
    project: Path,
    *,
    template_ref: str | None,
    quiet: bool,
    interactive: bool,
    data: Mapping[str, Any] | None = None,
) -> str:
    """Upgrade `project` to a newer template version; return the new `_commit`.

    Recorded answers (the key's hash among them) are never asked again unless `data` changes
    them; questions the new version adds are asked when interactive, else take their
    defaults. Conflicts raise UpdateConflictError listing the files.
    """
    from copier import run_update

    answers = read_answers(project)
    if not (project / ".git").exists():
        raise DestinationError(f"{project} is not a git repository; copier updates need one")
    if _git(project, "status", "--porcelain", "--untracked-files=no").strip():
        raise DestinationError(f"{project} has uncommitted changes; commit or stash them first")
    ref = template_ref
    src = str(answers.get("_src_path", ""))
    bundled_repo = cache_dir() / "template"
    if src and Path(src) == bundled_repo and ref is None:
        # The project came from the bundled template: move it to this package's version.
        ref = bundled_template().ref
        old = str(answers.get("_commit", ""))
        if old and _git(bundled_repo, "tag", "--list", old).strip() != old:
            raise TemplateError(
                f"template version {old} that {project} was made from is not in {bundled_repo} "
                "(the cache was cleared or this is another machine); run the update where the "
                "project was created, or pass --template with a git URL of the template"
            )
    with _copier_errors():
        run_update(
            str(project),
            data=dict(data or {}),
            vcs_ref=ref,
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


def find_conflicts(project: Path) -> list[str]:
    """Files left unmerged by an update: git's unmerged states, and `.rej` files."""
    found: list[str] = []
    for line in _git(project, "status", "--porcelain", "--untracked-files=all").splitlines():
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
