"""The hub's configuration: `hub.toml` (rendered into the project's vps/ bundle) plus flags."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scaffold.errors import ConfigError
from scaffold.hub.core.schemas import KEY_NAME as KEY_NAME_SCHEMA
from scaffold.hub.core.types import ROLES, Role

DEFAULT_PORT = 5555
MAX_PORT = 65535
KEY_NAME = re.compile(KEY_NAME_SCHEMA["pattern"])
KEY_NAME_RULE = "use letters, digits, . _ - (at most 64, starting with a letter or digit)"
SANDBOXES = ("bubblewrap", "none")

LIVENESS_BEAT_SECONDS = 15.0
"""A worker session's watcher tells the hub it is alive this often (the template's hooks hold the
same number; tests/test_liveness.py checks they agree)."""


@dataclass(frozen=True)
class HubSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = 10 * 1024 * 1024
    data_dir: Path = Path("hub-data")
    workspace: Path = Path("workspace")
    max_file_bytes: int = 10 * 1024 * 1024
    grep_max_bytes: int = 64 * 1024 * 1024
    trees_path: Path | None = None
    """Where the tasks' working trees live; None: beside the workspace, `<workspace>.trees`."""
    shared_paths: tuple[str, ...] = ()
    """Workspace paths (prepared environments: node_modules, .venv) linked into every task's tree."""
    spare_trees: int = 1
    """Trees kept made in advance at main's head, so a task's first call does not wait for a checkout."""
    gate: str = ""
    """A shell command run on main plus a task's changes before main moves; empty: no gate."""
    gate_timeout_seconds: float = 600.0
    lease_seconds: float = 300.0
    heartbeat_seconds: float = 30.0
    """How often the PostToolUse hook renews a working session's leases (the hooks read it from
    GET /v1/session), so a lease must outlast two of these."""
    max_attempts: int = 3
    idle_timeout_minutes: float = 10.0
    worker_lost_seconds: float = 40.0
    """Two missed beats and some slack: a dead session shows as lost within this + one beat (55 s)."""
    max_wait_seconds: float = 600.0
    reap_interval_seconds: float = 1.0
    exec_enabled: bool = True
    exec_timeout_seconds: float = 600.0
    exec_max_output_bytes: int = 1024 * 1024
    exec_sandbox: str = "bubblewrap"
    """How commands are confined: "bubblewrap", or "none" to accept running them as the hub's user."""
    exec_network: bool = False
    exec_max_processes: int = 256
    exec_max_memory_mb: int = 4096
    exec_cpu_seconds: int = 3600
    exec_max_concurrent: int = 8
    trusted_proxies: tuple[str, ...] = ()
    """Peers whose X-Forwarded-For is believed (addresses or networks); nobody's by default."""
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keys: tuple[tuple[str, Role, str], ...] = ()
    """Keys from hub.toml as (name, role, sha256)."""
    screen_role: Role = "admin"
    """The role that may read the team's screens: they show whatever the sessions' terminals do
    (docs/security.md, "Screens")."""
    budget_task_usd: float = 0.0
    """[budget]: what one task may spend (all its attempts); 0: no budget. docs/usage.md."""
    budget_task_tokens: int = 0
    budget_worker_day_usd: float = 0.0
    budget_worker_day_tokens: int = 0
    budget_fleet_day_usd: float = 0.0
    budget_fleet_day_tokens: int = 0
    budget_task_action: str = "warn"
    """What a task over its budget gets: "warn" (its worker and the coordinator are told) or
    "fail" (also: the task goes dead, not retried)."""

    @property
    def trees(self) -> Path:
        return self.trees_path or self.workspace.with_name(self.workspace.name + ".trees")

    def with_overrides(self, **changes: Any) -> HubSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> None:
        """Refuse settings that cannot work together, one line naming them and the rule.

        Each value alone was checked when it was read; this is about pairs (run at start, so a
        test may still build a hub with a one-second lease).
        """
        rules = [
            (
                self.lease_seconds >= 2 * self.heartbeat_seconds,
                f"queue.lease_seconds = {self.lease_seconds:g} is shorter than the hooks can renew: they "
                f"renew a worker's leases at most every queue.heartbeat_seconds = "
                f"{self.heartbeat_seconds:g} s, so a lease needs at least {2 * self.heartbeat_seconds:g} s "
                "(two renewals)",
            ),
            (
                self.reap_interval_seconds < self.lease_seconds,
                f"queue.reap_interval_seconds = {self.reap_interval_seconds:g} must be shorter than "
                f"queue.lease_seconds = {self.lease_seconds:g}, or expired leases wait a whole lease to "
                "return",
            ),
            (
                self.worker_lost_seconds >= 2 * LIVENESS_BEAT_SECONDS,
                f"queue.worker_lost_seconds = {self.worker_lost_seconds:g} would call live workers lost: "
                f"their sessions report every {LIVENESS_BEAT_SECONDS:g} s, so it needs at least "
                f"{2 * LIVENESS_BEAT_SECONDS:g} s",
            ),
            (
                self.gate_timeout_seconds <= self.exec_timeout_seconds,
                f"queue.gate_timeout_seconds = {self.gate_timeout_seconds:g} is above exec.timeout_seconds = "
                f"{self.exec_timeout_seconds:g}: the gate runs as a command, bounded by exec's limits",
            ),
            (
                self.max_file_bytes <= self.max_body_bytes,
                f"workspace.max_file_bytes = {self.max_file_bytes} is above server.max_body_bytes = "
                f"{self.max_body_bytes}: a file that large could never be sent",
            ),
        ]
        for holds, message in rules:
            if not holds:
                raise ConfigError(message)


# (section, key) -> (field, type); types are checked so a typo is an error, not a default.
_FIELDS: dict[tuple[str, str], tuple[str, type | tuple[type, ...]]] = {
    ("server", "host"): ("host", str),
    ("server", "port"): ("port", int),
    ("server", "max_body_bytes"): ("max_body_bytes", int),
    ("server", "trusted_proxies"): ("trusted_proxies", list),
    ("storage", "data_dir"): ("data_dir", str),
    ("workspace", "path"): ("workspace", str),
    ("workspace", "max_file_bytes"): ("max_file_bytes", int),
    ("workspace", "grep_max_bytes"): ("grep_max_bytes", int),
    ("workspace", "trees_path"): ("trees_path", str),
    ("workspace", "shared_paths"): ("shared_paths", list),
    ("workspace", "spare_trees"): ("spare_trees", int),
    ("queue", "gate"): ("gate", str),
    ("queue", "gate_timeout_seconds"): ("gate_timeout_seconds", (int, float)),
    ("queue", "lease_seconds"): ("lease_seconds", (int, float)),
    ("queue", "heartbeat_seconds"): ("heartbeat_seconds", (int, float)),
    ("queue", "max_attempts"): ("max_attempts", int),
    ("queue", "idle_timeout_minutes"): ("idle_timeout_minutes", (int, float)),
    ("queue", "worker_lost_seconds"): ("worker_lost_seconds", (int, float)),
    ("queue", "max_wait_seconds"): ("max_wait_seconds", (int, float)),
    ("queue", "reap_interval_seconds"): ("reap_interval_seconds", (int, float)),
    ("exec", "enabled"): ("exec_enabled", bool),
    ("exec", "timeout_seconds"): ("exec_timeout_seconds", (int, float)),
    ("exec", "max_output_bytes"): ("exec_max_output_bytes", int),
    ("exec", "sandbox"): ("exec_sandbox", str),
    ("exec", "network"): ("exec_network", bool),
    ("exec", "max_processes"): ("exec_max_processes", int),
    ("exec", "max_memory_mb"): ("exec_max_memory_mb", int),
    ("exec", "cpu_seconds"): ("exec_cpu_seconds", int),
    ("exec", "max_concurrent"): ("exec_max_concurrent", int),
    ("team", "screen_role"): ("screen_role", str),
    ("budget", "task_usd"): ("budget_task_usd", (int, float)),
    ("budget", "task_tokens"): ("budget_task_tokens", int),
    ("budget", "worker_day_usd"): ("budget_worker_day_usd", (int, float)),
    ("budget", "worker_day_tokens"): ("budget_worker_day_tokens", int),
    ("budget", "fleet_day_usd"): ("budget_fleet_day_usd", (int, float)),
    ("budget", "fleet_day_tokens"): ("budget_fleet_day_tokens", int),
    ("budget", "task_action"): ("budget_task_action", str),
}
BUDGET_ACTIONS = ("warn", "fail")
# How a type error names the expected kind, in TOML's words (a user writes TOML, not Python).
_KIND_NAMES: dict[type | tuple[type, ...], str] = {
    str: "a string",
    int: "an integer",
    (int, float): "a number",
    bool: "true or false",
    list: "an array",
}
_POSITIVE = {
    "port",
    "max_body_bytes",
    "lease_seconds",
    "heartbeat_seconds",
    "max_attempts",
    "worker_lost_seconds",
    "reap_interval_seconds",
    "exec_timeout_seconds",
    "exec_max_output_bytes",
    "max_file_bytes",
    "grep_max_bytes",
    "exec_max_processes",
    "exec_max_memory_mb",
    "exec_cpu_seconds",
    "exec_max_concurrent",
    "gate_timeout_seconds",
}


def load_settings(config: Path | None) -> HubSettings:
    """Settings from a hub.toml (relative paths in it are relative to the file), or defaults."""
    if config is None:
        return HubSettings()
    try:
        raw = tomllib.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no hub configuration at {config}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{config} is not valid TOML: {error}") from error
    values: dict[str, Any] = {}
    for section, body in raw.items():
        if section in ("keys", "roles"):
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{config}: [{section}] must be a table")
        for key, value in body.items():
            if (section, key) not in _FIELDS:
                raise ConfigError(f"{config}: unknown setting {section}.{key}")
            name, kind = _FIELDS[(section, key)]
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
                # a boolean as TOML writes it (true), anything else as Python quotes it ('high')
                shown = str(value).lower() if isinstance(value, bool) else repr(value)
                raise ConfigError(f"{config}: {section}.{key} must be {_KIND_NAMES[kind]}, got {shown}")
            if name in _POSITIVE and isinstance(value, int | float) and value <= 0:
                raise ConfigError(f"{config}: {section}.{key} must be positive")
            if name.startswith("budget_") and isinstance(value, int | float) and not value >= 0:
                raise ConfigError(f"{config}: {section}.{key} must be 0 (no budget) or more, got {value}")
            if name == "port" and isinstance(value, int) and value > MAX_PORT:
                raise ConfigError(f"{config}: server.port must be between 1 and {MAX_PORT}, got {value}")
            values[name] = value
    for name in ("data_dir", "workspace", "trees_path"):
        if name in values:
            path = Path(values[name]).expanduser()
            values[name] = path if path.is_absolute() else (config.parent / path).resolve()
    if values.get("exec_sandbox", SANDBOXES[0]) not in SANDBOXES:
        raise ConfigError(f"{config}: exec.sandbox must be one of {', '.join(map(repr, SANDBOXES))}")
    if values.get("screen_role", "admin") not in ROLES:
        raise ConfigError(
            f"{config}: team.screen_role must be one of {', '.join(map(repr, ROLES))}, "
            f"got {values['screen_role']!r}"
        )
    if values.get("budget_task_action", "warn") not in BUDGET_ACTIONS:
        raise ConfigError(
            f"{config}: budget.task_action must be one of {', '.join(map(repr, BUDGET_ACTIONS))}, "
            f"got {values['budget_task_action']!r}"
        )
    if values.get("spare_trees", 0) < 0:
        raise ConfigError(f"{config}: workspace.spare_trees must be 0 or more")
    if "shared_paths" in values:
        values["shared_paths"] = _shared_paths(config, values["shared_paths"])
    if "trusted_proxies" in values:
        values["trusted_proxies"] = _networks(config, values["trusted_proxies"])
    values["roles"] = _roles(config, raw.get("roles", {}))
    values["keys"] = _keys(config, raw.get("keys", []))
    return HubSettings(**values)


def _shared_paths(config: Path, raw: list[Any]) -> tuple[str, ...]:
    """Plain relative paths inside the workspace, none of them `.git` or inside it."""
    paths: list[str] = []
    for entry in raw:
        parts = Path(entry).parts if isinstance(entry, str) else ()
        if not parts or Path(entry).is_absolute() or ".." in parts or ".git" in parts or "\x00" in entry:
            raise ConfigError(
                f"{config}: workspace.shared_paths holds {entry!r}; give paths relative to the workspace "
                '(e.g. "node_modules" or ".venv"), without "..", and not .git'
            )
        paths.append(Path(entry).as_posix())
    return tuple(paths)


def _networks(config: Path, raw: list[Any]) -> tuple[str, ...]:
    for entry in raw:
        try:
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{config}: server.trusted_proxies holds {entry!r}; give IP addresses or networks "
                '(e.g. "127.0.0.1" or "10.0.0.0/8")'
            ) from None
    return tuple(raw)


def _roles(config: Path, raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or not all(
        isinstance(tags, list) and all(isinstance(t, str) for t in tags) for tags in raw.values()
    ):
        raise ConfigError(f"{config}: [roles] maps each role to a list of capability tags")
    return {role: tuple(tags) for role, tags in raw.items()}


def _keys(config: Path, raw: Any) -> tuple[tuple[str, Role, str], ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{config}: keys must be an array of [[keys]] tables")
    keys: list[tuple[str, Role, str]] = []
    for number, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "sha256"}:
            raise ConfigError(f"{config}: [[keys]] entry {number} needs exactly name, role, sha256")
        name, role, digest = entry["name"], entry["role"], entry["sha256"]
        if not (isinstance(name, str) and KEY_NAME.fullmatch(name)):
            raise ConfigError(f"{config}: [[keys]] entry {number} has name {name!r}; {KEY_NAME_RULE}")
        if role not in ROLES:
            raise ConfigError(f"{config}: key {name!r} has role {role!r}; use viewer, agent or admin")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")):
            raise ConfigError(f"{config}: key {name!r} needs sha256 as 64 lowercase hex characters")
        keys.append((name, role, digest))
    return tuple(keys)
