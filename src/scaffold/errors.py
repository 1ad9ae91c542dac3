"""The one error tree. Every failure a user can cause is a `ScaffoldError` whose message is
written for them: the CLI prints it as one line and exits with `exit_code` (in one place,
`scaffold.cli.main`); the hub's errors (`HubError` and below) also carry the HTTP status and code
the API answers with, so services raise them and each face renders them in one place."""

from __future__ import annotations

from pathlib import Path


class ScaffoldError(Exception):
    """A failure the user can act on. `str(error)` is the whole message."""

    exit_code = 1


# -- the project: answers, rendering, upgrades, deploys --------------------------------------


class AnswerError(ScaffoldError):
    """An answer to a template question is invalid."""

    def __init__(self, question: str, message: str) -> None:
        super().__init__(f"{question}: {message}")
        self.question = question
        self.reason = message


class DestinationError(ScaffoldError):
    """The destination of `scaffold new` or `scaffold update` cannot be used."""


class TemplateError(ScaffoldError):
    """The template cannot be found, versioned or rendered."""


class UpdateConflictError(ScaffoldError):
    """`scaffold update` merged with conflicts that the user must resolve."""

    exit_code = 3

    def __init__(self, files: list[str]) -> None:
        listing = ", ".join(files)
        super().__init__(
            f"the update left conflicts in {len(files)} file(s): {listing}. "
            "Resolve the <<<<<<< markers (or apply the .rej files), then commit."
        )
        self.files = files


class DeployError(ScaffoldError):
    """A deploy step failed; the message says which and what to do."""


class TeamError(ScaffoldError):
    """`scaffold team` cannot start, find or stop a team; the message says what to do."""


# -- the hub as a process: its settings, its data directory, its backups ---------------------


class ConfigError(ScaffoldError):
    """hub.toml is missing, malformed, or holds a value of the wrong kind."""


class DataDirBusy(ScaffoldError):
    """Another process (a hub, a restore) holds the data directory's lock."""

    def __init__(self, data_dir: Path, pid: str) -> None:
        super().__init__(
            f"{data_dir} is in use by another hub or a restore (pid {pid}); stop it, or give this hub "
            "another --data-dir"
        )
        self.pid = pid


class BackupError(ScaffoldError):
    """A backup cannot be made, or a backup cannot be restored; the message says which and why."""


class GitError(ScaffoldError):
    """A git command in the workspace failed, timed out or could not start."""


# -- the hub's domain: each error is an HTTP status and code -----------------------------------


# A failure of the hub's domain: the REST API and the MCP tools answer it with `status` and
# `{"error": {"code", "message"}}`; the CLI prints the message like any other error. (No docstring:
# docs/api.md gives each class's docstring as the meaning of its code, and 400 is any bad request.)
class HubError(ScaffoldError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, object] = {}
        """More fields of the error object, beside code and message (e.g. the conflicting paths)."""


class InvalidRequest(HubError):
    status = 422
    code = "invalid_request"


class MalformedJSON(HubError):
    status = 400
    code = "malformed_json"


class Unauthorized(HubError):
    status = 401
    code = "unauthorized"


class Forbidden(HubError):
    status = 403
    code = "forbidden"


class NotFound(HubError):
    status = 404
    code = "not_found"


class LeaseConflict(HubError):
    """A stale or wrong lease token, or a task no longer in a state that accepts the call."""

    status = 409
    code = "lease_conflict"


class Conflict(HubError):
    status = 409
    code = "conflict"


class MergeConflict(HubError):
    """The task's changes cannot be applied to main: `paths` names the files both changed. Main is
    untouched, the work is kept on branch `task/<id>`, and the task went back to the queue."""

    status = 409
    code = "merge_conflict"

    def __init__(self, message: str, paths: list[str], branch: str) -> None:
        super().__init__(message)
        self.details = {"paths": paths, "branch": branch}


class GateFailed(HubError):
    """The hub's gate command ([queue] gate) failed on main plus the task's changes: main did not
    move, and the task went back to the queue; `output` is the end of what the command printed."""

    status = 409
    code = "gate_failed"

    def __init__(self, message: str, output: str, exit_code: int | None, branch: str) -> None:
        super().__init__(message)
        self.details = {"output": output, "exit_code": exit_code, "branch": branch}


class MergeFailed(HubError):
    """git failed while merging a completed task into main; main did not move and the task is
    still the worker's: complete it again (the hub's log says why)."""

    status = 503
    code = "merge_failed"


class TreeUnavailable(HubError):
    """The task's working tree cannot be made: the workspace is not a working git repository
    (the hub's log says why); nothing was done."""

    status = 503
    code = "tree_unavailable"


class BudgetExhausted(HubError):
    """A [budget] of the hub is spent (the fleet's or this worker's for the day): no new claims
    until the day ends or the budget is raised. Tasks already held go on."""

    status = 409
    code = "budget_exhausted"


class PayloadTooLarge(HubError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HubError):
    """The body's Content-Type or Content-Encoding is not one the route reads (OTLP: application/json,
    identity or gzip)."""

    status = 415
    code = "unsupported_media_type"


class TooManyRequests(HubError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreClosed(HubError):
    """The store was closed: the hub is stopping."""

    status = 503
    code = "shutting_down"


class PathRefused(HubError):
    """A workspace path that escapes the root, or names something that is not a plain file."""

    status = 403
    code = "path_refused"


class StaleFile(HubError):
    """If-Match / If-None-Match did not hold: the file changed (or exists) since it was read."""

    status = 412
    code = "stale_file"


class Reserved(HubError):
    """Another worker holds an exclusive reservation on the path."""

    status = 423
    code = "reserved"


class Disabled(HubError):
    """A feature switched off in hub.toml (command execution)."""

    status = 403
    code = "disabled"


class SandboxUnavailable(HubError):
    """Commands must run in a sandbox ([exec] sandbox in hub.toml) that does not work on this machine."""

    status = 503
    code = "sandbox_unavailable"
