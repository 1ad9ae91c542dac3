"""Running the hub: one uvicorn process, one store, a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from scaffold.hub.auth import new_key
from scaffold.hub.settings import HubSettings
from scaffold.hub.store.sqlite import SQLiteStore

INITIAL_KEY_FILE = "initial-admin-key"


def open_store(settings: HubSettings) -> SQLiteStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SQLiteStore.in_dir(settings.data_dir)


def ensure_admin_key(store: SQLiteStore, settings: HubSettings, out: TextIO) -> None:
    """With no usable key at all, create an admin key and show it exactly once.

    On a terminal it is printed. Otherwise (systemd, a pipe) it would end up in a log, so it
    goes to a file only its owner can read, and the log says where.
    """
    store.sync_config_keys(settings.keys, time.time())
    if any(key.revoked_at is None for key in store.list_keys()):
        return
    key, digest = new_key()
    store.add_key("admin", "admin", digest, "generated", time.time())
    if out.isatty():
        print(f"Created the admin key (shown once; only its SHA-256 is stored): {key}", file=out)
        return
    path = settings.data_dir / INITIAL_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    print(f"Created the admin key; read it from {path}, then delete that file.", file=out)


def serve(settings: HubSettings, *, access_log: bool = False, out: TextIO = sys.stdout) -> None:
    """Serve until interrupted; in-flight requests finish and the database is closed."""
    import uvicorn

    from scaffold.hub.app import create_app

    store = open_store(settings)
    try:
        ensure_admin_key(store, settings, out)
        app = create_app(store, settings)
        hub = app.state.hub

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                # Long polls and event streams would hold the stop for minutes: end them now.
                hub.shutdown()

        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            access_log=access_log,
            log_level="info",
            timeout_graceful_shutdown=10,
            server_header=False,
        )
        print(
            f"Hub on http://{_display_host(settings.host)}:{settings.port} (data in {settings.data_dir})",
            file=out,
            flush=True,
        )
        Server(config).run()
    finally:
        store.close()


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
