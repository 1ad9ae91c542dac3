#!/usr/bin/env python3
"""Stop hook: keep a registered worker at work; let every other session stop.

- a session that is no worker (the coordinator, an ad-hoc session) or a stopped one: stop;
- a worker that holds a task: sent back to finish it (complete_task, fail_task or release_task);
- an idle worker: this hook long-polls the hub for a task (up to --wait seconds: the model is not
  called meanwhile) and hands it the task's instructions and lease token; idle for the hub's
  idle timeout (or VPS_WORKER_IDLE_MINUTES), the worker is deregistered (the hub marks it
  stopped) and may stop;
- the hub unreachable or the key refused: stop, with a systemMessage saying why.

Claude Code overrides a Stop hook after CLAUDE_CODE_STOP_HOOK_BLOCK_CAP (8) blocks in a row with
no tool call between them, so the 9th would be ignored: this hook counts its blocks and lets the
session stop instead, saying why. The count starts again, as Claude Code's does, when a tool
runs (the PostToolUse hook resets it) and with each new prompt (`stop_hook_active` false: no
block yet in this run). `stop_hook_active` alone cannot say more: it stays true after the first
block however much work follows.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, NoReturn

from hooklib import (
    LIVENESS_SECONDS,
    ClaudeProcess,
    HubError,
    State,
    answer,
    client,
    hub_trouble,
    read_event,
    session_id,
    setting,
    task_text,
    watch,
)

DEFAULT_IDLE_SECONDS = 600.0
MAX_REASON = 9000  # Claude Code cuts hook output past 10,000 characters


def block(state: State, reason: str) -> NoReturn:
    state.save(blocks=state.get("blocks") + 1)
    answer({"decision": "block", "reason": reason})


def handed(task: dict[str, Any]) -> str:
    text = task_text(task)
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON] + f"\n[cut here: get_task {task['id']} has the full instructions]"
    return (
        f"The hub gave you task {task['id']}. Work it through as .claude/WORKER_CLAUDE.md says; then "
        f"complete_task (or fail_task, or release_task) with task_id {task['id']} and lease_token "
        f"{task['lease_token']}.\n\n{text}"
    )


def idle_seconds(hub_value: float) -> float:
    """The hub's idle timeout ([queue] idle_timeout_minutes), unless VPS_WORKER_IDLE_MINUTES (in the
    environment or .claude/settings.local.json) overrides it for this session."""
    try:
        minutes = float(setting("VPS_WORKER_IDLE_MINUTES") or 0)
    except ValueError:
        minutes = 0
    return minutes * 60 if minutes > 0 else hub_value


def main() -> None:
    parser = argparse.ArgumentParser(description="The Stop hook of a vps worker session.")
    parser.add_argument(
        "--wait", type=float, default=540.0, help="seconds to wait for a task (< the timeout)"
    )
    options = parser.parse_args()
    event = read_event()
    session = session_id(event)
    if not session:
        answer()
    try:
        hub = client(event, timeout=15)
        mine = hub.session(session)
    except HubError as error:
        answer({"systemMessage": f"{hub_trouble(error)}; stopping without asking it for work"})
    if mine is None or mine["worker"]["status"] == "stopped":
        answer()
    worker, state = mine["worker"], State(session)
    watch(event, session, worker["id"])
    if not event.get("stop_hook_active"):
        state.data["blocks"] = 0  # a new prompt: Claude Code's count starts again too
    cap = int(os.environ.get("CLAUDE_CODE_STOP_HOOK_BLOCK_CAP") or 8)
    name = f"vps worker {worker['id']} ({worker['role']})"
    if mine["tasks"]:
        task = mine["tasks"][0]
        if state.get("blocks") >= cap:
            message = (
                f"{name} stops while it holds task {task['id']}: sent back {cap} times without a tool call. "
                "The task returns to the queue when its lease runs out."
            )
            answer({"systemMessage": message})
        block(
            state,
            f"You still hold task {task['id']} ({task['title']}), lease_token {task['lease_token']}. "
            "Do not stop while you hold it: finish the work and complete_task with a result, or "
            "fail_task with why it cannot be done as written, or release_task to give it back.",
        )

    limit = idle_seconds(float(mine.get("idle_timeout_seconds") or DEFAULT_IDLE_SECONDS))
    began = time.monotonic()
    deadline = began + max(0.0, min(options.wait, limit - worker["idle_seconds"]))
    claude = ClaudeProcess.of_session()
    try:
        while True:
            # In rounds of LIVENESS_SECONDS: a hook whose session was killed must not go on
            # waiting (nor take a task), or the hub would take its open claim for a live worker.
            if claude is not None and not claude.alive():
                answer()
            left = max(0.0, min(deadline - time.monotonic(), LIVENESS_SECONDS))
            task = hub.claim(worker["id"], wait=left)
            if task is not None:
                block(state, handed(task))
            if time.monotonic() >= deadline:
                break
        idle = worker["idle_seconds"] + time.monotonic() - began
        if idle >= limit:
            hub.call("workers.deregister", worker["id"])
            message = (
                f"{name} had no task for {idle / 60:.0f} min: it is stopped. "
                f"`/worker {worker['role']}` starts it again."
            )
            answer({"systemMessage": message})
    except HubError as error:
        answer({"systemMessage": f"{hub_trouble(error)}; {name} stops"})
    if state.get("blocks") >= cap:
        message = (
            f"{name} stops while waiting for work: Claude Code allows {cap} Stop-hook blocks in a row. "
            "`/worker` starts it again."
        )
        answer({"systemMessage": message})
    block(
        state,
        f"No task for you yet (waited {time.monotonic() - began:.0f} s). End your turn again, saying "
        "only 'Waiting for work.': this hook goes on waiting and hands you the next task.",
    )


if __name__ == "__main__":
    main()
