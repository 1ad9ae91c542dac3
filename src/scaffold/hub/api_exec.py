"""`POST /v1/exec`: run a command in the workspace, confined (the rules are in scaffold.hub.exec and
scaffold.hub.sandbox)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from scaffold.hub import schemas as s
from scaffold.hub.exec import execute
from scaffold.hub.http import Call, Endpoint

_COMMON: dict[str, Any] = {
    "cwd": s.described({"type": "string", "minLength": 1, "maxLength": 4096},
                       "directory relative to the workspace root (default `.`); no absolute path, no `..`"),
    "timeout_seconds": s.described({"type": "number", "exclusiveMinimum": 0, "maximum": 86_400},
                                   "at most `[exec] timeout_seconds` of hub.toml, which is also the default"),
    "env": s.described({"type": "object", "maxProperties": 256,
                        "propertyNames": {"pattern": "^[A-Z_][A-Z0-9_]*$", "maxLength": 256},
                        "additionalProperties": {"type": "string", "maxLength": 65_536}},
                       "extra environment variables; the command gets only PATH, HOME (the sandbox's "
                       "private /tmp), LANG and these"),
    "task_id": s.described(s.ID, "the caller's task: its lease is kept alive while the command runs"),
    "lease_token": s.described(s.TOKEN, "that task's lease token (with task_id); stale: 409 before running"),
}  # fmt: skip
ARGV = s.described({"type": "array", "minItems": 1, "maxItems": 10_000,
                    "items": {"type": "string", "maxLength": 100_000}},
                   "the program and its arguments, run without a shell")  # fmt: skip
SHELL = s.described({"type": "string", "minLength": 1, "maxLength": 100_000}, "a command line for /bin/sh -c")
EXEC_FIELDS: dict[str, Any] = {"argv": ARGV, "shell": SHELL, **_COMMON}
"""Every field of a request, for a schema that is one object (an MCP tool's); execute() then
refuses anything but exactly one of argv and shell."""
EXEC_BODY = {"oneOf": [s.obj(["argv"], argv=ARGV, **_COMMON), s.obj(["shell"], shell=SHELL, **_COMMON)]}
EXEC_RESULT = s.obj(
    ["exit_code", "stdout", "stderr", "duration_seconds", "truncated", "timed_out"],
    exit_code=s.described({"type": "integer"}, "-N when signal N ended it; 127 not found, 126 cannot run"),
    stdout=s.described({"type": "string"}, "UTF-8, invalid bytes replaced"),
    stderr={"type": "string"},
    duration_seconds={"type": "number"},
    truncated=s.described({"type": "boolean"}, "stdout or stderr was longer than `[exec] max_output_bytes`"),
    timed_out=s.described({"type": "boolean"}, "the timeout ended it (its process group was killed)"),
)


async def run_command(call: Call) -> Response:
    outcome = await execute(call.hub, call.body, call.actor)
    return JSONResponse(outcome.view())


ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/v1/exec", run_command,
             "Run a command in the workspace (argv or shell), sandboxed, with a timeout and an output cap",
             "agent", body=EXEC_BODY,
             responses={200: ("It ran: its exit code and output", EXEC_RESULT),
                        409: ("The lease token of task_id is stale", s.ref("Error")),
                        503: ("The sandbox does not work on this machine (`sandbox_unavailable`); the "
                              "message says how to enable it", s.ref("Error"))}),
]  # fmt: skip
