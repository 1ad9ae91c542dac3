"""API keys in SQLite: added by the CLI or synced from hub.toml, found by their SHA-256."""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from scaffold.errors import Conflict, NotFound
from scaffold.hub.core.types import ApiKey, Role
from scaffold.hub.store.sqlite.connection import Connection


class KeyStore(Connection):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        # Every request looks its key up: the active keys found are kept, and forgotten when a key
        # changes here or when another process (`scaffold hub keys`) commits to the database,
        # which SQLite's data_version tells at a fraction of the lookup's cost.
        self._known_keys: dict[str, ApiKey] = {}
        self._keys_version = -1

    def add_key(self, name: str, role: Role, sha256: str, source: str, now: float) -> ApiKey:
        with self._write() as db:
            self._known_keys.clear()
            existing = db.execute("SELECT revoked_at FROM keys WHERE name = ?", (name,)).fetchone()
            if existing is not None and existing["revoked_at"] is None:
                raise Conflict(f"a key named {name!r} exists; revoke it first or choose another name")
            if db.execute("SELECT 1 FROM keys WHERE sha256 = ?", (sha256,)).fetchone():
                raise Conflict("that key is already registered under another name")
            db.execute("DELETE FROM keys WHERE name = ?", (name,))
            db.execute(
                "INSERT INTO keys (name, role, sha256, source, created_at) VALUES (?, ?, ?, ?, ?)",
                (name, role, sha256, source, now),
            )
            self._event(db, "key.added", now, name=name, role=role, source=source)
        return ApiKey(name, role, sha256, source, now)

    def sync_config_keys(self, keys: Sequence[tuple[str, Role, str]], now: float) -> None:
        with self._write() as db:
            self._known_keys.clear()
            for name, role, sha256 in keys:
                row = db.execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
                if row is not None and row["source"] != "config":
                    raise Conflict(
                        f"hub.toml names key {name!r}, which was added with `scaffold hub keys add`; "
                        "rename one of them"
                    )
                if row is not None and row["sha256"] == sha256:
                    if row["role"] != role and row["revoked_at"] is None:
                        db.execute("UPDATE keys SET role = ? WHERE name = ?", (role, name))
                        self._event(db, "key.changed", now, name=name, role=role)
                    continue  # unchanged, or revoked: a revoked hash never comes back
                clash = db.execute(
                    "SELECT name FROM keys WHERE sha256 = ? AND name != ?", (sha256, name)
                ).fetchone()
                if clash is not None:
                    raise Conflict(f"hub.toml key {name!r} has the same hash as key {clash[0]!r}")
                # A new key, or a new hash for the name (a rotation, even of a revoked key).
                db.execute("DELETE FROM keys WHERE name = ?", (name,))
                db.execute(
                    "INSERT INTO keys (name, role, sha256, source, created_at) VALUES (?, ?, ?, 'config', ?)",
                    (name, role, sha256, now),
                )
                self._event(db, "key.added", now, name=name, role=role, source="config")
            # A key taken out of hub.toml stops working.
            names = [name for name, _, _ in keys]
            removed = db.execute(
                f"UPDATE keys SET revoked_at = ? WHERE source = 'config' AND revoked_at IS NULL "
                f"AND name NOT IN ({','.join('?' * len(names))}) RETURNING name",
                (now, *names),
            ).fetchall()
            for (name,) in removed:
                self._event(db, "key.revoked", now, name=name)

    def find_key(self, sha256: str) -> ApiKey | None:
        with self._read() as db:
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._keys_version:
                self._known_keys.clear()
                self._keys_version = version
            key = self._known_keys.get(sha256)
            if key is None:
                row = db.execute(
                    "SELECT * FROM keys WHERE sha256 = ? AND revoked_at IS NULL", (sha256,)
                ).fetchone()
                if row is None:
                    return None
                key = self._known_keys[sha256] = _key(row)
        # The lookup is by digest; comparing it again in constant time costs nothing.
        return key if hmac.compare_digest(key.sha256.encode(), sha256.encode()) else None

    def list_keys(self) -> list[ApiKey]:
        with self._read() as db:
            return [_key(row) for row in db.execute("SELECT * FROM keys ORDER BY created_at, name")]

    def revoke_key(self, name: str, now: float) -> ApiKey:
        with self._write() as db:
            self._known_keys.clear()
            row = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING *",
                (now, name),
            ).fetchone()
            if row is None:
                raise NotFound(f"no active key named {name!r}")
            self._event(db, "key.revoked", now, name=name)
        return _key(row)


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        row["name"], row["role"], row["sha256"], row["source"], row["created_at"], row["revoked_at"]
    )
