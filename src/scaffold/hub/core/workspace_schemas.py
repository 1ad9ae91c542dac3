"""JSON Schemas of the workspace's requests and answers: files, path reservations and commands.

The REST endpoints and the MCP tools take the same arguments, so both read them from here.
"""

from __future__ import annotations

from typing import Any

from scaffold.hub.core import schemas as s
from scaffold.hub.core.limits import DEFAULT_TTL, MAX_GLOBS, MAX_TTL

# -- files and reservations ----------------------------------------------------------------

PATH = s.described({"type": "string", "maxLength": 4096}, "relative to the workspace root")
GLOB = s.described(
    {"type": "string", "minLength": 1, "maxLength": 1024},
    "`*` `?` `[ab]` within a name, `**` for any number of directories",
)
ETAG = s.described({"type": "string", "minLength": 1, "maxLength": 200}, "the ETag the file was read with")
READER_ID = s.described(
    s.ID, "the calling worker: the call acts in the tree of the task it holds (without: on main)"
)
WORKER_ID = s.described(
    s.ID,
    "the calling worker: the change is made in the tree of the task it holds (without, or with no "
    "task: on main, committed at once); its own exclusive reservations do not stop it",
)
CONTENT = {"type": "string", "maxLength": 10 * 1024 * 1024}
TTL = s.described(
    {"type": "number", "exclusiveMinimum": 0, "maximum": int(MAX_TTL)}, f"seconds (default {DEFAULT_TTL:g})"
)

EDIT = s.obj(
    ["path", "old", "new"],
    path=PATH,
    old=s.described({**CONTENT, "minLength": 1}, "text to replace, exactly once (copy it from the file)"),
    new=CONTENT,
    worker_id=WORKER_ID,
    etag=ETAG,
    replace_all=s.described({"type": "boolean"}, "replace every occurrence of old (default false)"),
)
DELETE = s.obj(["path"], path=PATH, worker_id=WORKER_ID, etag=ETAG)
MOVE = s.obj(
    ["from", "to"],
    **{"from": PATH},
    to=PATH,
    worker_id=WORKER_ID,
    overwrite=s.described({"type": "boolean"}, "replace an existing file at `to` (default false)"),
)
GREP = s.obj(
    ["pattern"],
    pattern=s.described(
        {"type": "string", "minLength": 1, "maxLength": 1000},
        "a regular expression matched against each line, in RE2 syntax (linear time): Python's without "
        "backreferences, lookaround, conditionals, atomic groups or possessive quantifiers (refused with "
        "422 naming them); `\\d \\w \\s \\b` are ASCII, `\\z` ends the line",
    ),
    path=s.described(PATH, "a file, or a directory to search below (default: the root)"),
    glob=s.described(GLOB, "only files whose path below `path` matches"),
    max_matches=s.described({"type": "integer", "minimum": 1, "maximum": 1000}, "default 100"),
    max_bytes=s.described(
        {"type": "integer", "minimum": 1, "maximum": 2**40},
        "file bytes to read at most (default and cap: `[workspace] grep_max_bytes`)",
    ),
    ignore_case={"type": "boolean"},
    fixed_string=s.described({"type": "boolean"}, "the pattern is plain text, not a regular expression"),
    worker_id=READER_ID,
)
RESERVE = s.obj(
    ["worker_id", "globs"],
    worker_id=s.ID,
    globs=s.described(
        {"type": "array", "minItems": 1, "maxItems": MAX_GLOBS, "items": GLOB},
        "paths or globs; `dir/` or an existing directory means what it holds (`dir/**`)",
    ),
    exclusive=s.described({"type": "boolean"}, "others may not change what it matches (default true)"),
    ttl_seconds=TTL,
    task_id=s.described(s.ID, "a task the worker holds: the reservation ends with it"),
)
RENEW = s.obj(["worker_id"], worker_id=s.described(s.ID, "the holder"), ttl_seconds=TTL)
RELEASE = s.obj(["worker_id"], worker_id=s.described(s.ID, "the holder"))

ENTRY = s.obj(
    ["path", "type", "size"],
    path={"type": "string"},
    type={"enum": ["file", "dir", "symlink", "other"]},
    size=s.described({"type": ["integer", "null"]}, "bytes, for a file"),
)
LISTING = s.obj(
    ["entries", "truncated"],
    entries={"type": "array", "items": ENTRY},
    truncated=s.described({"type": "boolean"}, "there are more than `limit`"),
)
WRITTEN = s.obj(
    ["path", "size", "etag"],
    path={"type": "string"},
    size={"type": "integer"},
    etag=s.described({"type": "string"}, "SHA-256 hex of the content; the ETag header has it quoted"),
)
EDITED = s.obj(
    ["path", "size", "etag", "replacements"],
    **WRITTEN["properties"],
    replacements={"type": "integer"},
)
DELETED = s.obj(["path", "type"], path={"type": "string"}, type={"enum": ["file", "dir", "symlink"]})
MOVED = s.obj(
    ["from", "to", "type"],
    **{"from": {"type": "string"}},
    to={"type": "string"},
    type={"enum": ["file", "dir"]},
)
FOUND = s.obj(
    ["matches", "truncated", "files_searched", "files_skipped", "bytes_searched"],
    matches={
        "type": "array",
        "items": s.obj(
            ["path", "line", "column", "text"],
            path={"type": "string"},
            line={"type": "integer"},
            column={"type": "integer"},
            text=s.described({"type": "string"}, "the line, or 500 characters of it around the match"),
        ),
    },
    truncated=s.described({"type": "boolean"}, "it stopped at a limit before searching everything"),
    files_searched={"type": "integer"},
    files_skipped=s.described({"type": "integer"}, "binary files and files over max_file_bytes"),
    bytes_searched={"type": "integer"},
)
RESERVATIONS = s.obj(["reservations"], reservations={"type": "array", "items": s.ref("Reservation")})


# -- commands --------------------------------------------------------------------------------

_COMMON: dict[str, Any] = {
    "cwd": s.described(
        {"type": "string", "minLength": 1, "maxLength": 4096},
        "directory relative to the workspace root (default `.`); no absolute path, no `..`",
    ),
    "timeout_seconds": s.described(
        {"type": "number", "exclusiveMinimum": 0, "maximum": 86_400},
        "at most `[exec] timeout_seconds` of hub.toml, which is also the default",
    ),
    "env": s.described(
        {
            "type": "object",
            "maxProperties": 256,
            "propertyNames": {"pattern": "^[A-Z_][A-Z0-9_]*$", "maxLength": 256},
            "additionalProperties": {"type": "string", "maxLength": 65_536},
        },
        "extra environment variables; the command gets only PATH, HOME (the sandbox's "
        "private /tmp), LANG and these",
    ),
    "worker_id": s.described(
        s.ID, "the calling worker: the command runs in the tree of the task it holds (without: on main)"
    ),
    "task_id": s.described(s.ID, "the caller's task: its lease is kept alive while the command runs"),
    "lease_token": s.described(s.TOKEN, "that task's lease token (with task_id); stale: 409 before running"),
}
ARGV = s.described(
    {"type": "array", "minItems": 1, "maxItems": 10_000, "items": {"type": "string", "maxLength": 100_000}},
    "the program and its arguments, run without a shell",
)
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
