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
    # 3: usage. One row per model request (Claude Code's `claude_code.api_request` log event),
    # attributed when it arrives: worker by session, task by the worker's claims at the request's
    # time. (session_id, seq) is the request's own key, so a re-sent export inserts nothing.
    # Costs are integer micro-dollars: sums are exact.
    """
    CREATE TABLE usage (
        session_id             TEXT NOT NULL,
        seq                    INTEGER NOT NULL,
        at                     REAL NOT NULL,
        day                    TEXT NOT NULL,  -- UTC day of `at`, YYYY-MM-DD
        worker_id              INTEGER,  -- NULL: a session that is no worker (the coordinator)
        task_id                INTEGER,  -- NULL: outside any task
        model                  TEXT NOT NULL,
        input_tokens           INTEGER NOT NULL,
        output_tokens          INTEGER NOT NULL,
        cache_read_tokens      INTEGER NOT NULL,
        cache_creation_tokens  INTEGER NOT NULL,
        cost_micros            INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX usage_by_at ON usage (at);
    CREATE INDEX usage_by_task ON usage (task_id) WHERE task_id IS NOT NULL;
    CREATE INDEX usage_by_worker ON usage (worker_id, at) WHERE worker_id IS NOT NULL;

    -- The requests summed per day, worker, task and model, kept with each insert: what the
    -- reports group (over the requests themselves, a report took ~150 ms at 120k of them).
    -- 0 stands for no worker (the coordinator's line) and for no task (between tasks).
    CREATE TABLE usage_daily (
        day                    TEXT NOT NULL,
        worker_id              INTEGER NOT NULL,
        task_id                INTEGER NOT NULL,
        model                  TEXT NOT NULL,
        requests               INTEGER NOT NULL,
        input_tokens           INTEGER NOT NULL,
        output_tokens          INTEGER NOT NULL,
        cache_read_tokens      INTEGER NOT NULL,
        cache_creation_tokens  INTEGER NOT NULL,
        cost_micros            INTEGER NOT NULL,
        PRIMARY KEY (day, worker_id, task_id, model)
    ) WITHOUT ROWID;

    -- The metrics, a cross-check of the requests. A delta point is one window of its series,
    -- stored once (part = its end time). A cumulative point is the series' running total since
    -- its start (part = 0), kept at its latest value.
    CREATE TABLE metric_points (
        series      TEXT NOT NULL,
        start_ns    INTEGER NOT NULL,
        part        INTEGER NOT NULL,
        end_ns      INTEGER NOT NULL,
        metric      TEXT NOT NULL CHECK (metric IN ('cost', 'tokens')),
        session_id  TEXT NOT NULL,
        model       TEXT NOT NULL,
        kind        TEXT NOT NULL,
        value       REAL NOT NULL,
        PRIMARY KEY (metric, series, start_ns, part)
    ) WITHOUT ROWID;
    CREATE INDEX metric_points_by_end ON metric_points (end_ns);

    -- A worker's claims and their ends, newest first: what a request is attributed by.
    CREATE INDEX events_by_worker ON events (worker_id, id) WHERE worker_id IS NOT NULL;
    -- The headless runs' own results (cost_usd), a cross-check per worker.
    CREATE INDEX events_runs ON events (worker_id) WHERE type = 'worker.run';
    """,
)
