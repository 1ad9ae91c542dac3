"""The hub's fixed limits: what one request may ask for. The schemas, the services and the docs
read them from here, so a limit is stated once."""

MAX_ID = 2**63 - 1
"""SQLite's INTEGER: an id or cursor above it is one the hub never gave out."""

MAX_BATCH = 1000
"""Tasks in one request."""
MAX_DEPENDENCIES = 1000
"""Entries of one task's depends_on."""
MAX_BATCH_DEPENDENCIES = 10_000
"""Entries of depends_on in all the tasks of one request together. A batch is one transaction
that holds the store's write lock: at these limits it takes about 0.15 s (1,000 tasks with 10
dependencies each), where 1,000 x 1,000 took 10 s."""

DEFAULT_TTL = 900.0
"""Seconds a reservation lasts when the request gives no ttl_seconds."""
MAX_TTL = 86_400.0
"""The longest reservation, in seconds."""
MAX_GLOBS = 64
"""Patterns in one reservation request."""

MAX_SLOTS = 256
"""Team slots the hub keeps (they live in memory): far more than any team runs."""
MAX_SCREEN_BYTES = 64 * 1024
"""A slot's screen, UTF-8: a full terminal of 200 lines is about 30 KiB."""
MAX_RUNS = 50
"""Runs of a worker one GET answers, newest first."""
