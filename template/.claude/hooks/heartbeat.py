#!/usr/bin/env python3
"""PostToolUse hook (asynchronous): a worker that uses tools is alive.

At most once per the hub's [queue] heartbeat_seconds (30 by default; VPS_HEARTBEAT_SECONDS
overrides it for a session) it tells the hub, which touches the session's worker and extends the
leases of the tasks it holds (POST /v1/session/heartbeat), so a lease lasts as long as the work on
it goes on; and it starts the session's watcher (session-watch.py) if none runs. Any tool call also
resets the Stop hook's count of blocks in a row, as Claude Code does. Never in the way: every
failure is ignored.
"""

from __future__ import annotations

import os
import time

from hooklib import HubError, State, answer, client, read_event, session_id, watch

DEFAULT_SECONDS = 30.0


def main() -> None:
    event = read_event()
    session = session_id(event)
    if not session:
        answer()
    state = State(session)
    changes = {"blocks": 0.0} if state.get("blocks") else {}
    try:
        interval = float(
            os.environ.get("VPS_HEARTBEAT_SECONDS") or state.get("hub_interval", DEFAULT_SECONDS)
        )
    except ValueError:
        interval = DEFAULT_SECONDS
    now = time.time()
    if now - state.get("heartbeat_at") < interval:
        if changes:
            state.save(**changes)
        answer()
    state.save(**changes, heartbeat_at=now)  # first: a hub that fails is asked once per interval too
    try:
        mine = client(event, timeout=5).session(session, heartbeat=True)
    except HubError:
        answer()
    if mine is None:
        answer()
    if isinstance(mine.get("heartbeat_seconds"), int | float):
        state.save(hub_interval=mine["heartbeat_seconds"])  # the hub's rhythm, for the next calls
    if mine["worker"]["status"] != "stopped":
        watch(event, session, mine["worker"]["id"])
    answer()


if __name__ == "__main__":
    main()
