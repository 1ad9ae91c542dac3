"""The SQLite schema, as numbered migrations applied in order on start.

Never edit a released migration: add the next one. `PRAGMA user_version` records how far a
database has been migrated, so an upgrade keeps every row.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    """
    CREATE TABLE keys (
        name        TEXT PRIMARY KEY,
        role        TEXT NOT NULL CHECK (role IN ('viewer', 'agent', 'admin')),
        sha256      TEXT NOT NULL UNIQUE,
        source      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        revoked_at  REAL
    );

    CREATE TABLE plan (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        goal        TEXT NOT NULL,
        plan        TEXT NOT NULL,
        updated_at  REAL NOT NULL
    );

    CREATE TABLE tasks (
        id                      INTEGER PRIMARY KEY,
        title                   TEXT NOT NULL,
        instructions            TEXT NOT NULL,
        priority                INTEGER NOT NULL,
        state                   TEXT NOT NULL CHECK (state IN
                                    ('blocked', 'ready', 'claimed', 'done', 'dead', 'cancelled')),
        depends_on              TEXT NOT NULL,  -- JSON array of ids, fixed at creation
        required_capabilities   TEXT NOT NULL,  -- JSON array, sorted
        unmet                   INTEGER NOT NULL,  -- dependencies not done yet: readiness is stored
        attempts                INTEGER NOT NULL DEFAULT 0,
        max_attempts            INTEGER NOT NULL,
        worker_id               INTEGER,
        lease_token             TEXT,  -- kept after completion so a repeated complete is idempotent
        lease_expires_at        REAL,
        result                  TEXT,
        error                   TEXT,
        commit_sha              TEXT,
        created_at              REAL NOT NULL,
        updated_at              REAL NOT NULL,
        claimed_at              REAL,
        finished_at             REAL
    );
    -- The claim walks this index from the top: best priority, then oldest. Blocked tasks are
    -- not in it, so many of them cost a claim nothing.
    CREATE INDEX tasks_ready ON tasks (priority DESC, id) WHERE state = 'ready';
    CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'claimed';
    -- No (state, id) index: with one, the planner serves the claim's state = 'ready' from it
    -- and sorts every ready task (4 ms a claim at 20k tasks instead of 0.05 ms).
    -- A worker's current task (its latest claim) is one seek, however many it holds.
    CREATE INDEX tasks_by_worker ON tasks (worker_id, claimed_at DESC) WHERE state = 'claimed';

    CREATE TABLE task_deps (
        task_id     INTEGER NOT NULL REFERENCES tasks (id),
        depends_on  INTEGER NOT NULL REFERENCES tasks (id),
        PRIMARY KEY (depends_on, task_id)
    ) WITHOUT ROWID;

    CREATE TABLE idempotency (
        key           TEXT PRIMARY KEY,
        request_hash  TEXT NOT NULL,
        task_ids      TEXT NOT NULL,
        created_at    REAL NOT NULL
    );

    CREATE TABLE workers (
        id             INTEGER PRIMARY KEY,
        session_id     TEXT NOT NULL UNIQUE,
        role           TEXT NOT NULL,
        capabilities   TEXT NOT NULL,
        registered_at  REAL NOT NULL,
        last_seen      REAL NOT NULL,
        idle_since     REAL NOT NULL,
        stopped_at     REAL
    );

    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY,
        created_at  REAL NOT NULL,
        sender      TEXT NOT NULL,
        target      TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('message', 'discovery')),
        body        TEXT NOT NULL
    );
    CREATE INDEX messages_by_target ON messages (target, id);

    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        at          REAL NOT NULL,
        type        TEXT NOT NULL,
        task_id     INTEGER,
        worker_id   INTEGER,
        actor       TEXT,
        data        TEXT NOT NULL
    );
    """,
    # 2: path reservations. A row lives until the reservation ends: released, or ended with its
    # task or worker (deleted in that transaction), or expired (expires_at <= now; then the
    # reaper deletes it).
    """
    CREATE TABLE reservations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: an old id stays unknown
        worker_id   INTEGER NOT NULL REFERENCES workers (id),
        pattern     TEXT NOT NULL,
        exclusive   INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
        task_id     INTEGER REFERENCES tasks (id),
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL
    );
    CREATE INDEX reservations_by_expiry ON reservations (expires_at);
    CREATE INDEX reservations_by_worker ON reservations (worker_id);
    CREATE INDEX reservations_by_task ON reservations (task_id) WHERE task_id IS NOT NULL;
    """,
)
