#!/usr/bin/env python3
"""SessionStart hook (resume, compact, clear): remind a registered worker who it is and what it holds.

After a resume or a compaction the model may have lost its role, its task and the lease token;
the hub still has them (GET /v1/session). A session that is no worker gets nothing; nor does any
session when the hub cannot be asked (the Stop hook reports that).
"""

from __future__ import annotations

from hooklib import HubError, answer, client, read_event, session_id, task_text, watch


def main() -> None:
    event = read_event()
    session = session_id(event)
    if not session:
        answer()
    try:
        mine = client(event, timeout=5).session(session)
    except HubError:
        answer()
    if mine is None or mine["worker"]["status"] == "stopped":
        answer()
    worker = mine["worker"]
    watch(event, session, worker["id"])
    lines = [
        f"This session is vps worker {worker['id']}, role {worker['role']} (capabilities: "
        f"{', '.join(worker['capabilities']) or '-'}). Read .claude/WORKER_CLAUDE.md again, your role's "
        "section above all: it is your playbook.",
    ]
    for task in mine["tasks"]:
        lines += [
            f"You hold task {task['id']}. Check what is already done in the workspace, carry on, then "
            f"complete_task (or fail_task, or release_task) with task_id {task['id']} and lease_token "
            f"{task['lease_token']}.",
            task_text(task),
        ]
    if not mine["tasks"]:
        lines.append(
            f"You hold no task: claim_task with worker_id {worker['id']}, or end your turn and the "
            "Stop hook waits for one."
        )
    context = "\n\n".join(lines)
    answer({"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context[:9500]}})


if __name__ == "__main__":
    main()
