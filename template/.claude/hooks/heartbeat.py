#!/usr/bin/env python3
"""PostToolUse hook (asynchronous): a worker that uses tools is alive.

At most once per VPS_HEARTBEAT_SECONDS (30) per session it tells the hub, which touches the
session's worker and extends the leases of the tasks it holds (POST /v1/session/heartbeat), so a
lease lasts as long as the work on it goes on. Any tool call also resets the Stop hook's count of
blocks in a row, as Claude Code does. Never in the way: every failure is ignored.
"""

from __future__ import annotations

import os
import time

from hooklib import HubError, State, answer, client, read_event, session_id

DEFAULT_SECONDS = 30.0


def main() -> None:
    event = read_event()
    session = session_id(event)
    if not session:
        answer()
    state = State(session)
    changes = {"blocks": 0.0} if state.get("blocks") else {}
    try:
        interval = float(os.environ.get("VPS_HEARTBEAT_SECONDS") or DEFAULT_SECONDS)
    except ValueError:
        interval = DEFAULT_SECONDS
    now = time.time()
    if now - state.get("heartbeat_at") < interval:
        if changes:
            state.save(**changes)
        answer()
    state.save(**changes, heartbeat_at=now)  # first: a hub that fails is asked once per interval too
    try:
        client(event, timeout=5).session(session, heartbeat=True)
    except HubError:
        pass
    answer()


if __name__ == "__main__":
    main()
