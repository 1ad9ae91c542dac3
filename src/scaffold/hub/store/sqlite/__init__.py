"""The embedded store: SQLite, one module per domain, composed here.

`Connection` (connection.py) holds the file, the transactions and the event log; each domain is
a mixin over it. None of them holds a rule of the queue: see `scaffold.hub.core.lifecycle`.
"""

from __future__ import annotations

from pathlib import Path

from scaffold.hub.store.sqlite.connection import DB_FILE, TASK_COLUMNS
from scaffold.hub.store.sqlite.keys import KeyStore
from scaffold.hub.store.sqlite.records import RecordStore
from scaffold.hub.store.sqlite.reservations import ReservationStore
from scaffold.hub.store.sqlite.tasks import _CLAIM, TaskStore
from scaffold.hub.store.sqlite.usage import UsageStore
from scaffold.hub.store.sqlite.workers import WorkerStore

__all__ = ["DB_FILE", "TASK_COLUMNS", "_CLAIM", "SQLiteStore"]


class SQLiteStore(KeyStore, RecordStore, TaskStore, WorkerStore, ReservationStore, UsageStore):
    @classmethod
    def in_dir(cls, data_dir: Path) -> SQLiteStore:
        return cls(data_dir / DB_FILE)
