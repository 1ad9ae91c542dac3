"""Running the hub: one uvicorn process, one store, a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import ipaddress
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from scaffold.errors import DataDirBusy, ScaffoldError
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.services.auth import new_key
from scaffold.hub.store.sqlite import SQLiteStore

INITIAL_KEY_FILE = "initial-admin-key"
GC_YOUNG_THRESHOLD = 50_000
LOCK_FILE = "hub.lock"


class DataDirLock:
    """An exclusive flock on `DATA_DIR/hub.lock`, held while a hub serves (or a restore works).

    The kernel drops it when the process ends, however it ends, so a stale lock cannot outlive a
    crash; the file only says who took it last. Not inherited by the commands the hub runs."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def hold_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data directory's lock, or raise DataDirBusy naming the pid that holds it."""
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise ScaffoldError(f"cannot use {data_dir} as the hub's data directory: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirBusy(data_dir, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(path, fd)


def open_store(settings: HubSettings) -> SQLiteStore:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return SQLiteStore.in_dir(settings.data_dir)
    except (OSError, sqlite3.Error) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ScaffoldError(f"cannot use {settings.data_dir} as the hub's data directory: {reason}") from None


def ensure_admin_key(store: SQLiteStore, settings: HubSettings, out: TextIO) -> None:
    """With no usable key at all, create an admin key and show it exactly once.

    On a terminal it is printed. Otherwise (systemd, a pipe) it would end up in a log, so it
    goes to a file only its owner can read, and the log says where. Call it after the
    app is created, which syncs the keys of hub.toml into the store.
    """
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

    settings.check()
    lock = hold_data_dir(settings.data_dir)  # one hub per database, and no restore under it
    listener = _listen(settings.host, settings.port)
    store = open_store(settings)
    try:
        app = create_app(store, settings)
        ensure_admin_key(store, settings, out)
        services = app.state.services

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                # Long polls and event streams would hold the stop for minutes: end them now.
                services.shutdown()

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # uvicorn's own version raises the caught SIGTERM again once it has stopped, so
                # the process would die of it (exit 143) before the store below is closed.
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                stops = (signal.SIGINT, signal.SIGTERM)
                previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            access_log=access_log,
            log_level="info",
            timeout_graceful_shutdown=10,
            server_header=False,
            **proxy_settings(settings.trusted_proxies),
        )
        print(
            f"Hub on http://{_display_host(settings.host)}:{settings.port} (data in {settings.data_dir})",
            file=out,
            flush=True,
        )
        # Everything imported and built so far lives as long as the process. Frozen, the cyclic
        # GC stops rescanning it, which otherwise pauses the event loop for tens of ms at a time.
        gc.collect()
        gc.freeze()
        # What is not frozen still gets rescanned: each open event stream or long poll holds ~160
        # objects (uvicorn, Starlette, the stream), and with 500 streams one full collection
        # paused the loop for 25-65 ms; claim p99 with 500 idle streams was 2-4x that without
        # (bench/bench_hub.py). Young collections every 700 net allocations promote whatever
        # requests are in flight, which soon triggers a full one; every 50,000 (a young collection
        # of that many takes under 1 ms) the p99s matched, as they did with the GC off.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)
        Server(config).run(sockets=[listener])
    finally:
        store.close()
        listener.close()
        lock.release()


def proxy_settings(trusted_proxies: tuple[str, ...]) -> dict[str, Any]:
    """uvicorn's X-Forwarded-For handling, limited to `trusted_proxies` (addresses or networks).

    uvicorn believes the header from 127.0.0.1 by default, so any local process could pose as
    any address (and dodge the failed-key limit, which counts per address). With no trusted
    proxy the headers are not read at all; otherwise only from those peers, and the client is
    the last address in the chain that is not one of them.
    """
    if not trusted_proxies:
        return {"proxy_headers": False}
    # uvicorn parses networks strictly and would take "10.0.0.1/8" for a literal name
    networks = [str(ipaddress.ip_network(entry, strict=False)) for entry in trusted_proxies]
    return {"proxy_headers": True, "forwarded_allow_ips": networks}


def _listen(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, so a taken port is one clear error before anything starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ScaffoldError(f"cannot listen on {_display_host(host)}:{port}: {reason}") from None
    return listener


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
