"""`POST /v1/exec`: run a command in the workspace, confined (the rules are in scaffold.hub.services.exec and
scaffold.hub.services.sandbox; the schemas in scaffold.hub.core.workspace_schemas)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from scaffold.hub.core import schemas as s
from scaffold.hub.core.workspace_schemas import EXEC_BODY, EXEC_RESULT
from scaffold.hub.faces.rest.http import Call, Endpoint


async def run_command(call: Call) -> Response:
    outcome = await call.services.run_command(call.body, call.actor)
    return JSONResponse(outcome.view())


# A table, one endpoint per entry with its summary and answers beside it: kept as written (fmt: skip).
ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/v1/exec", run_command,
             "Run a command in the workspace (argv or shell), sandboxed, with a timeout and an output cap",
             "agent", body=EXEC_BODY,
             responses={200: ("It ran: its exit code and output", EXEC_RESULT),
                        409: ("The lease token of task_id is stale", s.ref("Error")),
                        503: ("The sandbox does not work on this machine (`sandbox_unavailable`); the "
                              "message says how to enable it", s.ref("Error"))}),
]  # fmt: skip
