"""Errors of the hub's domain. Each carries the HTTP status and code the API answers with,
so services raise them and the app renders `{"error": {"code", "message"}}` in one place."""

from __future__ import annotations


class HubError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class PayloadTooLarge(HubError):
    status = 413
    code = "payload_too_large"


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
