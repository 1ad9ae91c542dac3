"""JSON Schemas of the API: request bodies (validated) and responses (documented, tested)."""

from __future__ import annotations

from typing import Any

from scaffold.hub.core.limits import (
    MAX_BATCH,
    MAX_BATCH_DEPENDENCIES,
    MAX_DEPENDENCIES,
    MAX_RUNS,
    MAX_SCREEN_BYTES,
)
from scaffold.hub.core.types import TASK_STATES

ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
TAG = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"}
TEXT = {"type": "string", "maxLength": 1_000_000}
TOKEN = {"type": "string", "minLength": 1, "maxLength": 200}
NULLABLE_NUMBER = {"type": ["number", "null"]}


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    """A closed object: unknown fields are refused, so a typo is an error, not ignored."""
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


NEW_TASK = obj(
    ["title", "instructions"],
    title=described({"type": "string", "minLength": 1, "maxLength": 500}, "one line"),
    instructions=described(TEXT, "markdown: everything a worker with no context needs"),
    priority=described(
        {"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000},
        "higher is claimed first (default 0)",
    ),
    depends_on=described(
        {
            "type": "array",
            "maxItems": MAX_DEPENDENCIES,
            "items": {"anyOf": [ID, {"type": "string", "minLength": 1, "maxLength": 100}]},
        },
        f"ids of existing tasks, or refs of tasks in the same batch; ready when all are done. At most "
        f"{MAX_DEPENDENCIES} per task, and {MAX_BATCH_DEPENDENCIES:,} in all the tasks of one request "
        "(more is refused with 422)",
    ),
    ref=described(
        {"type": "string", "minLength": 1, "maxLength": 100}, "a name other tasks of the batch can depend on"
    ),
    required_capabilities=described(
        {"type": "array", "items": TAG, "maxItems": 64}, "tags a worker must all have to claim it"
    ),
    max_attempts=described(
        {"type": "integer", "minimum": 1, "maximum": 100}, "default from hub.toml [queue]"
    ),
)
IDEMPOTENCY_KEY = described(
    {"type": "string", "minLength": 1, "maxLength": 200},
    "the same key again returns the first result instead of creating duplicates",
)

CREATE_TASKS = {
    "oneOf": [
        obj(
            ["tasks"],
            tasks=described(
                {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": NEW_TASK},
                f"at most {MAX_BATCH} tasks, naming at most {MAX_BATCH_DEPENDENCIES:,} dependencies in all; "
                "created together in one transaction, or none of them",
            ),
            idempotency_key=IDEMPOTENCY_KEY,
        ),
        {**NEW_TASK, "properties": {**NEW_TASK["properties"], "idempotency_key": IDEMPOTENCY_KEY}},
    ]
}
CLAIM = obj(
    ["worker_id"],
    worker_id=ID,
    capabilities=described(
        {"type": "array", "items": TAG, "maxItems": 64},
        "narrow the worker's registered tags for this claim",
    ),
    wait=described(
        {"type": "number", "minimum": 0, "maximum": 3600},
        "seconds to wait for a task (long poll); capped at the hub's max_wait_seconds",
    ),
)
LEASE = obj(["lease_token"], lease_token=TOKEN)
COMPLETE = obj(["lease_token"], lease_token=TOKEN, result=TEXT)
FAIL = obj(["lease_token", "error"], lease_token=TOKEN, error={**TEXT, "minLength": 1})
PLAN = obj(["goal", "plan"], goal={"type": "string", "maxLength": 10_000}, plan=TEXT)
SESSION_ID = {"type": "string", "minLength": 1, "maxLength": 200}
REGISTER = obj(
    ["session_id", "role"],
    session_id=SESSION_ID,
    role=TAG,
    capabilities=described(
        {"type": "array", "items": TAG, "maxItems": 64}, "default: the role's tags from hub.toml [roles]"
    ),
)
SEND = obj(
    ["to", "body"],
    to=described(
        {"anyOf": [ID, {"type": "string", "minLength": 1, "maxLength": 100}]},
        "a worker id, role:<name>, coordinator or all",
    ),
    kind={"enum": ["message", "discovery"]},
    body={"type": "string", "minLength": 1, "maxLength": 65_536},
    sender={"type": "string", "minLength": 1, "maxLength": 100},
)
KEY_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
REVOKE_KEY = obj(["name"], name=KEY_NAME)
NEW_KEY = obj(
    ["name", "role"],
    name=KEY_NAME,
    role={"enum": ["viewer", "agent", "admin"]},
)

# -- the team: slots, screens and the runs of headless sessions ------------------------------

SLOT_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,31}$"}
SLOT_MODES = ("interactive", "headless")
SLOT_STATES = ("starting", "running", "idle", "restarting", "failed", "stopped")
COUNT = {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}
SLOT_FIELDS: dict[str, Any] = {
    "host": described(
        {"type": "string", "minLength": 1, "maxLength": 200}, '"local" or user@host (default "local")'
    ),
    "role": described(TAG, "the role its worker registers with"),
    "mode": described({"enum": list(SLOT_MODES)}, 'default "interactive"'),
    "state": described({"enum": list(SLOT_STATES)}, 'default "starting"'),
    "session_id": described(
        {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
        "the Claude Code session the slot runs now: its worker is the one registered with it",
    ),
    "pid": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**31 - 1},
    "restarts": described(COUNT, "sessions started again since the slot started (default 0)"),
    "failures": described(COUNT, "failed runs in a row (default 0)"),
    "last_run": described(
        {"type": ["object", "null"], "maxProperties": 32}, "the latest run's result, as the slot reports it"
    ),
    "note": described({"type": "string", "maxLength": 500}, "e.g. why the slot failed"),
}
TEAM_SLOT = obj(["role"], **SLOT_FIELDS)
SCREEN = obj(
    ["text"],
    text=described(
        {"type": "string", "maxLength": MAX_SCREEN_BYTES},
        f"the terminal's text, at most {MAX_SCREEN_BYTES // 1024} KiB as UTF-8 (413 beyond); secrets are "
        "redacted before it is kept",
    ),
)
NULLABLE_COUNT = {"type": ["integer", "null"], "minimum": 0, "maximum": 2**53}
RUN = obj(
    ["exit_code", "is_error"],
    exit_code=described({"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}, "of `claude -p`"),
    is_error={"type": "boolean"},
    num_turns=NULLABLE_COUNT,
    duration_ms=NULLABLE_COUNT,
    cost_usd={"type": ["number", "null"], "minimum": 0},
    subtype=described({"type": ["string", "null"], "maxLength": 100}, "the result's subtype, e.g. success"),
    error=described({"type": ["string", "null"], "maxLength": 2000}, "what went wrong, if it did"),
)

COMPONENTS: dict[str, Any] = {
    "Error": obj(
        ["error"], error=obj(["code", "message"], code={"type": "string"}, message={"type": "string"})
    ),
    "Task": obj(
        [
            "id",
            "title",
            "instructions",
            "priority",
            "state",
            "depends_on",
            "required_capabilities",
            "attempts",
            "max_attempts",
            "worker_id",
            "lease_expires_at",
            "result",
            "error",
            "created_at",
            "updated_at",
            "claimed_at",
            "finished_at",
            "commit",
        ],
        id=ID,
        title={"type": "string"},
        instructions={"type": "string"},
        priority={"type": "integer"},
        state={"enum": list(TASK_STATES)},
        depends_on={"type": "array", "items": ID},
        required_capabilities={"type": "array", "items": {"type": "string"}},
        attempts={"type": "integer"},
        max_attempts={"type": "integer"},
        worker_id={"type": ["integer", "null"]},
        lease_expires_at=NULLABLE_NUMBER,
        result={"type": ["string", "null"]},
        error={"type": ["string", "null"]},
        created_at={"type": "number"},
        updated_at={"type": "number"},
        claimed_at=NULLABLE_NUMBER,
        finished_at=NULLABLE_NUMBER,
        commit={"type": ["string", "null"]},
        lease_token={
            "type": "string",
            "description": "only in answers to a claim, a heartbeat or /v1/session",
        },
        usage={
            "$ref": "#/components/schemas/Spent",
            "description": "what the task spent (GET /v1/tasks only)",
        },
        over_budget={
            "type": ["string", "null"],
            "description": "why the task is over its budget, if it is (/v1/session only)",
        },
    ),
    "Spent": obj(
        [
            "requests",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_creation_tokens",
            "tokens",
            "cost_usd",
        ],
        requests=described({"type": "integer"}, "model requests"),
        input_tokens={"type": "integer"},
        output_tokens={"type": "integer"},
        cache_read_tokens={"type": "integer"},
        cache_creation_tokens={"type": "integer"},
        tokens=described({"type": "integer"}, "all four kinds: what a token budget counts"),
        cost_usd=described({"type": "number"}, "as Claude Code computed it"),
    ),
    "Worker": obj(
        [
            "id",
            "session_id",
            "role",
            "capabilities",
            "status",
            "current_task",
            "registered_at",
            "last_seen",
            "idle_seconds",
        ],
        id=ID,
        session_id={"type": "string"},
        role={"type": "string"},
        capabilities={"type": "array", "items": {"type": "string"}},
        status={"enum": ["active", "idle", "stopped", "lost"]},
        current_task={"type": ["integer", "null"]},
        registered_at={"type": "number"},
        last_seen={"type": "number"},
        idle_seconds={"type": "number"},
    ),
    "Message": obj(
        ["id", "created_at", "sender", "to", "kind", "body"],
        id=ID,
        created_at={"type": "number"},
        sender={"type": "string"},
        to={"type": "string"},
        kind={"enum": ["message", "discovery"]},
        body={"type": "string"},
    ),
    "Plan": obj(
        ["goal", "plan", "updated_at"],
        goal={"type": "string"},
        plan={"type": "string"},
        updated_at=NULLABLE_NUMBER,
    ),
    "Key": obj(
        ["name", "role", "source", "created_at", "revoked_at"],
        name={"type": "string"},
        role={"enum": ["viewer", "agent", "admin"]},
        source={"type": "string"},
        created_at={"type": "number"},
        revoked_at=NULLABLE_NUMBER,
    ),
    "Slot": obj(
        [*SLOT_FIELDS, "slot", "updated_at", "screen_at", "worker"],
        slot=SLOT_NAME,
        **SLOT_FIELDS,
        updated_at=described({"type": "number"}, "when the slot last reported"),
        screen_at=described(NULLABLE_NUMBER, "when its screen last changed (null: none yet)"),
        worker=described(
            {
                "oneOf": [
                    obj(
                        ["id", "status", "current_task", "idle_seconds"],
                        id=ID,
                        status={"enum": ["active", "idle", "stopped", "lost"]},
                        current_task={"type": ["integer", "null"]},
                        idle_seconds={"type": "number"},
                    ),
                    {"type": "null"},
                ]
            },
            "the worker registered with session_id (null: none yet)",
        ),
    ),
    "Reservation": obj(
        ["id", "worker_id", "role", "glob", "exclusive", "task_id", "created_at", "expires_at"],
        id=ID,
        worker_id=ID,
        role=described({"type": "string"}, "the holder's role"),
        glob=described({"type": "string"}, "normalized; a directory reads as its contents, `dir/**`"),
        exclusive=described({"type": "boolean"}, "others may not write what it matches (false: shared)"),
        task_id={"type": ["integer", "null"]},
        created_at={"type": "number"},
        expires_at={"type": "number"},
    ),
}

KEY_CREATED = obj(
    ["name", "role", "source", "created_at", "revoked_at", "key"],
    **COMPONENTS["Key"]["properties"],
    key={"type": "string", "description": "the key itself: shown this once, never stored"},
)
TASK = ref("Task")
TASKS_PAGE = obj(
    ["tasks", "next_cursor"], tasks={"type": "array", "items": TASK}, next_cursor={"type": ["string", "null"]}
)
BATCH = obj(["tasks"], tasks={"type": "array", "items": TASK})
WORKER = ref("Worker")
BUDGET_STATE = obj(
    ["claims", "reason"],
    claims=described({"enum": ["open", "stopped"]}, "stopped: a day budget is spent (claims answer 409)"),
    reason={"type": ["string", "null"]},
)
SESSION = obj(
    ["worker", "tasks", "idle_timeout_seconds", "heartbeat_seconds"],
    worker=WORKER,
    tasks={"type": "array", "items": TASK},
    idle_timeout_seconds=described(
        {"type": "number"},
        "[queue] idle_timeout_minutes in seconds: "
        "after this long without a task the Stop hook lets a worker go",
    ),
    heartbeat_seconds=described(
        {"type": "number"},
        "[queue] heartbeat_seconds: how often the PostToolUse hook renews the session's leases",
    ),
    budget=described(BUDGET_STATE, "whether this worker may claim (the fleet's and its own day budgets)"),
)
LIMIT = obj(["usd", "tokens"], usd={"type": ["number", "null"]}, tokens={"type": ["integer", "null"]})
USAGE_STATUS = obj(
    ["today", "burn_usd_per_hour", "budget"],
    today=obj(["requests", "tokens", "cost_usd"], requests={"type": "integer"}, tokens={"type": "integer"},
              cost_usd={"type": "number"}),
    burn_usd_per_hour=described({"type": "number"}, "what the last hour's requests cost"),
    budget=obj(
        ["claims", "reason", "fleet_day", "worker_day", "task", "task_action"],
        **BUDGET_STATE["properties"],
        fleet_day=LIMIT,
        worker_day=LIMIT,
        task=LIMIT,
        task_action={"enum": ["warn", "fail"]},
    ),
)  # fmt: skip
USAGE_ROW = {
    "type": "object",
    "required": ["key", "label", *COMPONENTS["Spent"]["required"]],
    "properties": {
        "key": {"type": ["integer", "string"]},
        "label": {"type": "string"},
        **COMPONENTS["Spent"]["properties"],
        "state": {"type": "string", "description": "by task: the task's state"},
        "worker_id": {"type": ["integer", "null"], "description": "by task: its holder, if any"},
        "role": {"type": ["string", "null"], "description": "by worker"},
        "tasks_cost_usd": {"type": "number", "description": "by worker: spent on tasks"},
        "between_tasks_cost_usd": {"type": "number", "description": "by worker: spent outside any task"},
        "runs": {"type": "object", "description": "by worker: its headless runs' own count and cost_usd"},
    },
    "additionalProperties": False,
}
USAGE = obj(
    ["by", "from", "to", "rows", "total", "metrics", "runs"],
    by={"enum": ["task", "worker", "role", "model", "day"]},
    **{"from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]}},
    rows=described({"type": "array", "items": USAGE_ROW}, "highest cost first; at most `limit`"),
    total=ref("Spent"),
    metrics=described(
        obj(["cost_usd", "tokens"], cost_usd={"type": "number"}, tokens={"type": "number"}),
        "what the metrics say for the same days: a cross-check of the requests",
    ),
    runs=described(
        obj(["count", "cost_usd"], count={"type": "integer"}, cost_usd={"type": "number"}),
        "the headless runs' own results (scaffold team), a cross-check",
    ),
)
OTLP_ACCEPTED = obj(["partialSuccess"], partialSuccess={"type": "object"})
MESSAGES_PAGE = obj(
    ["messages", "next_cursor"],
    messages={"type": "array", "items": ref("Message")},
    next_cursor={"type": "string"},
)
STATUS = obj(
    ["progress", "stuck", "unclaimable", "workers", "plan"],
    progress=obj(
        ["total", "done", "percent", "counts"],
        total={"type": "integer"},
        done={"type": "integer"},
        percent={"type": "number"},
        counts={"type": "object", "additionalProperties": {"type": "integer"}},
    ),
    stuck=described(
        {"type": "array", "items": ID},
        "blocked tasks with a dependency that is dead or cancelled: they never become ready",
    ),
    unclaimable=described(
        {
            "type": "array",
            "items": obj(
                ["id", "required_capabilities", "missing"],
                id=ID,
                required_capabilities={"type": "array", "items": TAG},
                missing={"type": "array", "items": TAG},
            ),
        },
        "ready tasks no live (active or idle) worker can claim: `missing` is the required tags that "
        "the closest live worker lacks (all of them when no worker is live)",
    ),
    workers={"type": "array", "items": WORKER},
    plan=ref("Plan"),
    trees=described(
        obj(
            ["active", "spare", "bytes", "path", "merged"],
            active=described({"type": "integer"}, "tasks with a working tree of their own"),
            spare={"type": "integer"},
            bytes=described({"type": "integer"}, "disk the trees take (not the shared paths), <= 10 s old"),
            path={"type": "string"},
            merged=described({"type": "integer"}, "tasks merged into main since the hub started"),
        ),
        'the tasks\' working trees (docs/queue.md, "Work reaches main")',
    ),
    usage=described(USAGE_STATUS, "spend today, the burn rate and the budgets (docs/usage.md)"),
)
TEAM = obj(
    ["slots", "work"],
    slots={"type": "array", "items": ref("Slot")},
    work=described(
        {
            "type": "object",
            "additionalProperties": obj(
                ["ready", "waiting"], ready={"type": "integer"}, waiting={"type": "integer"}
            ),
        },
        "per role of hub.toml [roles] and of every slot: `ready` tasks whose required_capabilities the "
        "role's tags cover, and `waiting` ones (blocked or claimed) it covers",
    ),
)
SCREEN_VIEW = obj(
    ["slot", "text", "at"],
    slot=SLOT_NAME,
    text={"type": "string"},
    at=described({"type": "number"}, "when it was sent"),
)
RUN_VIEW = obj(
    ["id", "at", "worker_id", *RUN["properties"]],
    id=described(ID, "the id of its `worker.run` event"),
    at={"type": "number"},
    worker_id=ID,
    **RUN["properties"],
)
RUNS = obj(
    ["runs"], runs=described({"type": "array", "items": RUN_VIEW, "maxItems": MAX_RUNS}, "newest first")
)
