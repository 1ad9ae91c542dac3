#!/usr/bin/env python3
"""Stop hook: keep a registered worker at work; let every other session stop.

- a session that is no worker (the coordinator, an ad-hoc session) or a stopped one: stop;
- a worker that holds a task: sent back to finish it (complete_task, fail_task or release_task);
- an idle worker: this hook long-polls the hub for a task (up to --wait seconds: the model is not
  called meanwhile) and hands it the task's instructions and lease token; idle for the hub's
  idle timeout (or VPS_WORKER_IDLE_MINUTES), the worker is deregistered (the hub marks it
  stopped) and may stop;
- the hub unreachable or the key refused: stop, with a systemMessage saying why;
- the hub refusing claims because a budget is spent (409 budget_exhausted: the fleet's or this
  worker's day budget, hub.toml [budget]): the worker is deregistered and may stop, with the hub's
  reason in a systemMessage. A held task over its own budget is named in the block reason, and the
  hub's "Budget: ..." messages to the worker are passed on once each (the cursor is in State).

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
    Client,
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
MAX_NEWS = 500  # of the budget messages in one answer: a handed task's text stays within 10,000 too
BUDGET_PREFIX = "Budget:"
PAGE, BUDGET_PAGES = 1000, 5  # messages read per run, at most (the cursor goes on from there next time)


class Budget:
    """The hub's "Budget: ..." messages to this worker that no answer of this hook has shown yet.

    They are read once per run (a hub that does not answer: none); `shown` is the cursor to save
    once an answer carries them."""

    def __init__(self, hub: Client, state: State, worker_id: int) -> None:
        self.text, self.shown = "", state.get("budget_cursor")
        found: list[str] = []
        try:
            for _ in range(BUDGET_PAGES):
                query = {"for": f"worker:{worker_id}", "cursor": str(int(self.shown)), "limit": PAGE}
                page = hub.call("messages.read", query=query).data
                mine = [message for message in page["messages"] if message["to"] == f"worker:{worker_id}"]
                found += [str(m["body"]).strip() for m in mine if str(m["body"]).startswith(BUDGET_PREFIX)]
                self.shown = float(page["next_cursor"] or self.shown)
                if len(page["messages"]) < PAGE:
                    break
        except (HubError, LookupError, TypeError, ValueError):
            self.shown = state.get("budget_cursor")
            return
        text = "\n".join(found)
        if text:
            text = text if len(text) <= MAX_NEWS else text[:MAX_NEWS] + " [...]"
            self.text = f"\n\nFrom the hub:\n{text}"


def speak(state: State, budget: Budget, *, reason: str = "", message: str = "") -> NoReturn:
    """Answer with a block `reason` or a `message` (systemMessage), the unshown budget messages added."""
    state.data["budget_cursor"] = budget.shown
    reason, message = (reason + budget.text, message) if reason else (reason, message + budget.text)
    if reason:
        state.save(blocks=state.get("blocks") + 1)
        answer({"decision": "block", "reason": reason})
    state.save()
    answer({"systemMessage": message})


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
    budget = Budget(hub, state, worker["id"])
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
            speak(state, budget, message=message)
        over = f" It is over its budget: {task['over_budget']}." if task.get("over_budget") else ""
        speak(
            state,
            budget,
            reason=f"You still hold task {task['id']} ({task['title']}), lease_token {task['lease_token']}."
            f"{over} Do not stop while you hold it: finish the work and complete_task with a result, or "
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
            try:
                task = hub.claim(worker["id"], wait=left)
            except HubError as error:
                if (error.status, error.code) != (409, "budget_exhausted"):
                    raise
                # No claim succeeds until the budget's day ends or it is raised: waiting would
                # only keep an idle session (and its model) alive for nothing.
                hub.call("workers.deregister", worker["id"])
                message = (
                    f"{name} is stopped: the hub takes no new claims ({error.reason}). "
                    f"`/worker {worker['role']}` starts it again once the budget allows."
                )
                speak(state, budget, message=message)
            if task is not None:
                speak(state, budget, reason=handed(task))
            if time.monotonic() >= deadline:
                break
        idle = worker["idle_seconds"] + time.monotonic() - began
        if idle >= limit:
            hub.call("workers.deregister", worker["id"])
            message = (
                f"{name} had no task for {idle / 60:.0f} min: it is stopped. "
                f"`/worker {worker['role']}` starts it again."
            )
            speak(state, budget, message=message)
    except HubError as error:
        speak(state, budget, message=f"{hub_trouble(error)}; {name} stops")
    if state.get("blocks") >= cap:
        message = (
            f"{name} stops while waiting for work: Claude Code allows {cap} Stop-hook blocks in a row. "
            "`/worker` starts it again."
        )
        speak(state, budget, message=message)
    speak(
        state,
        budget,
        reason=f"No task for you yet (waited {time.monotonic() - began:.0f} s). End your turn again, saying "
        "only 'Waiting for work.': this hook goes on waiting and hands you the next task.",
    )


if __name__ == "__main__":
    main()
