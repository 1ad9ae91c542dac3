"""The hub's configuration: `hub.toml` (rendered into the project's vps/ bundle) plus flags."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scaffold.errors import ScaffoldError
from scaffold.hub.schemas import KEY_NAME as KEY_NAME_SCHEMA
from scaffold.hub.types import ROLES, Role

DEFAULT_PORT = 5555
MAX_PORT = 65535
KEY_NAME = re.compile(KEY_NAME_SCHEMA["pattern"])
KEY_NAME_RULE = "use letters, digits, . _ - (at most 64, starting with a letter or digit)"


class ConfigError(ScaffoldError):
    """hub.toml is missing, malformed, or holds a value of the wrong kind."""


@dataclass(frozen=True)
class HubSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = 10 * 1024 * 1024
    data_dir: Path = Path("hub-data")
    workspace: Path = Path("workspace")
    max_file_bytes: int = 10 * 1024 * 1024
    grep_max_bytes: int = 64 * 1024 * 1024
    lease_seconds: float = 300.0
    max_attempts: int = 3
    idle_timeout_minutes: float = 10.0
    worker_lost_seconds: float = 900.0
    max_wait_seconds: float = 600.0
    reap_interval_seconds: float = 1.0
    exec_enabled: bool = True
    exec_timeout_seconds: float = 600.0
    exec_max_output_bytes: int = 1024 * 1024
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keys: tuple[tuple[str, Role, str], ...] = ()
    """Keys from hub.toml as (name, role, sha256)."""

    def with_overrides(self, **changes: Any) -> HubSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# (section, key) -> (field, type); types are checked so a typo is an error, not a default.
_FIELDS: dict[tuple[str, str], tuple[str, type | tuple[type, ...]]] = {
    ("server", "host"): ("host", str),
    ("server", "port"): ("port", int),
    ("server", "max_body_bytes"): ("max_body_bytes", int),
    ("storage", "data_dir"): ("data_dir", str),
    ("workspace", "path"): ("workspace", str),
    ("workspace", "max_file_bytes"): ("max_file_bytes", int),
    ("workspace", "grep_max_bytes"): ("grep_max_bytes", int),
    ("queue", "lease_seconds"): ("lease_seconds", (int, float)),
    ("queue", "max_attempts"): ("max_attempts", int),
    ("queue", "idle_timeout_minutes"): ("idle_timeout_minutes", (int, float)),
    ("queue", "worker_lost_seconds"): ("worker_lost_seconds", (int, float)),
    ("queue", "max_wait_seconds"): ("max_wait_seconds", (int, float)),
    ("queue", "reap_interval_seconds"): ("reap_interval_seconds", (int, float)),
    ("exec", "enabled"): ("exec_enabled", bool),
    ("exec", "timeout_seconds"): ("exec_timeout_seconds", (int, float)),
    ("exec", "max_output_bytes"): ("exec_max_output_bytes", int),
}
_POSITIVE = {"port", "max_body_bytes", "lease_seconds", "max_attempts", "worker_lost_seconds",
             "reap_interval_seconds", "exec_timeout_seconds", "exec_max_output_bytes", "max_file_bytes",
             "grep_max_bytes"}  # fmt: skip


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
                raise ConfigError(f"{config}: {section}.{key} has the wrong type ({value!r})")
            if name in _POSITIVE and isinstance(value, int | float) and value <= 0:
                raise ConfigError(f"{config}: {section}.{key} must be positive")
            if name == "port" and isinstance(value, int) and value > MAX_PORT:
                raise ConfigError(f"{config}: server.port must be between 1 and {MAX_PORT}, got {value}")
            values[name] = value
    for name in ("data_dir", "workspace"):
        if name in values:
            path = Path(values[name]).expanduser()
            values[name] = path if path.is_absolute() else (config.parent / path).resolve()
    values["roles"] = _roles(config, raw.get("roles", {}))
    values["keys"] = _keys(config, raw.get("keys", []))
    return HubSettings(**values)


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
