"""Workspace files and path reservations over HTTP (the rules are in scaffold.hub.files and
scaffold.hub.reservations). File operations run in a worker thread: a large file or a long grep
never holds up the event loop."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from scaffold.hub import schemas as s
from scaffold.hub.files import Entry
from scaffold.hub.http import Call, Endpoint, LargeJSONResponse, Param
from scaffold.hub.reservations import DEFAULT_TTL, MAX_GLOBS, MAX_TTL, view

if TYPE_CHECKING:
    from scaffold.hub.app import Hub

PATH = s.described({"type": "string", "maxLength": 4096}, "relative to the workspace root")
GLOB = s.described(
    {"type": "string", "minLength": 1, "maxLength": 1024},
    "`*` `?` `[ab]` within a name, `**` for any number of directories",
)
ETAG = s.described({"type": "string", "minLength": 1, "maxLength": 200}, "the ETag the file was read with")
WORKER_ID = s.described(s.ID, "the worker writing: its own exclusive reservations do not stop it")
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
MOVED = s.obj(["from", "to", "type"], **{"from": {"type": "string"}}, to={"type": "string"},
              type={"enum": ["file", "dir"]})  # fmt: skip
FOUND = s.obj(
    ["matches", "truncated", "files_searched", "files_skipped", "bytes_searched"],
    matches={"type": "array", "items": s.obj(
        ["path", "line", "column", "text"], path={"type": "string"}, line={"type": "integer"},
        column={"type": "integer"},
        text=s.described({"type": "string"}, "the line, or 500 characters of it around the match"))},
    truncated=s.described({"type": "boolean"}, "it stopped at a limit before searching everything"),
    files_searched={"type": "integer"},
    files_skipped=s.described({"type": "integer"}, "binary files and files over max_file_bytes"),
    bytes_searched={"type": "integer"},
)  # fmt: skip
RESERVATIONS = s.obj(["reservations"], reservations={"type": "array", "items": s.ref("Reservation")})


def entry_view(entry: Entry) -> dict[str, Any]:
    return {"path": entry.path, "type": entry.type, "size": entry.size}


def written_view(path: str, size: int, etag: str) -> dict[str, Any]:
    return {"path": path, "size": size, "etag": etag}


# -- files ---------------------------------------------------------------------------------


async def list_files(call: Call) -> Response:
    query = call.query

    def answer() -> Response:  # in a thread, the answer too: 10,000 entries take a while to write
        listing = call.hub.workspace.list(query.get("path", ""), query.get("glob"), query.get("limit", 1000))
        views = [entry_view(entry) for entry in listing.entries]
        return LargeJSONResponse({"entries": views, "truncated": listing.truncated})

    return await asyncio.to_thread(answer)


async def read_file(call: Call) -> Response:
    content, etag = await asyncio.to_thread(call.hub.workspace.read, call.query["path"])
    return Response(content, media_type="application/octet-stream", headers={"ETag": f'"{etag}"'})


async def write_file(call: Call) -> Response:
    headers = call.request.headers
    written = await asyncio.to_thread(
        lambda: call.hub.workspace.write(
            call.query["path"],
            call.body,
            writer=call.query.get("worker_id"),
            if_match=headers.get("if-match"),
            if_none_match=headers.get("if-none-match"),
            actor=call.actor,
        )
    )
    return JSONResponse(
        written_view(written.path, written.size, written.etag),
        201 if written.created else 200,
        headers={"ETag": f'"{written.etag}"'},
    )


async def edited(hub: Hub, args: dict[str, Any], actor: str) -> dict[str, Any]:
    """Edit a file as REST and MCP both ask for it; the answer both return."""
    edit = await asyncio.to_thread(
        lambda: hub.workspace.edit(
            args["path"],
            args["old"],
            args["new"],
            writer=args.get("worker_id"),
            if_match=args.get("etag"),
            replace_all=args.get("replace_all", False),
            actor=actor,
        )
    )
    return {**written_view(edit.path, edit.size, edit.etag), "replacements": edit.replacements}


async def edit_file(call: Call) -> Response:
    return JSONResponse(await edited(call.hub, call.body, call.actor))


async def deleted(hub: Hub, args: dict[str, Any], actor: str) -> dict[str, Any]:
    gone = await asyncio.to_thread(
        lambda: hub.workspace.delete(
            args["path"], writer=args.get("worker_id"), if_match=args.get("etag"), actor=actor
        )
    )
    return {"path": gone.path, "type": gone.type}


async def delete_file(call: Call) -> Response:
    return JSONResponse(await deleted(call.hub, call.body, call.actor))


async def moved(hub: Hub, args: dict[str, Any], actor: str) -> dict[str, Any]:
    move = await asyncio.to_thread(
        lambda: hub.workspace.move(
            args["from"],
            args["to"],
            writer=args.get("worker_id"),
            overwrite=args.get("overwrite", False),
            actor=actor,
        )
    )
    return {"from": move.source, "to": move.destination, "type": move.type}


async def move_file(call: Call) -> Response:
    return JSONResponse(await moved(call.hub, call.body, call.actor))


async def grepped(hub: Hub, args: dict[str, Any]) -> dict[str, Any]:
    found = await asyncio.to_thread(
        lambda: hub.workspace.grep(
            args["pattern"],
            args.get("path", ""),
            args.get("glob"),
            max_matches=args.get("max_matches", 100),
            max_bytes=args.get("max_bytes"),
            ignore_case=args.get("ignore_case", False),
            fixed_string=args.get("fixed_string", False),
        )
    )
    return {
        "matches": [{"path": m.path, "line": m.line, "column": m.column, "text": m.text}
                    for m in found.matches],
        "truncated": found.truncated,
        "files_searched": found.files_searched,
        "files_skipped": found.files_skipped,
        "bytes_searched": found.bytes_searched,
    }  # fmt: skip


async def grep_files(call: Call) -> Response:
    return JSONResponse(await grepped(call.hub, call.body))


# -- reservations --------------------------------------------------------------------------


async def list_reservations(call: Call) -> Response:
    active = call.hub.reservations.active(call.query.get("worker_id"))
    return JSONResponse({"reservations": [view(reservation) for reservation in active]})


async def reserve(call: Call) -> Response:
    body = call.body
    made = call.hub.reservations.reserve(
        body["worker_id"],
        body["globs"],
        exclusive=body.get("exclusive", True),
        ttl_seconds=body.get("ttl_seconds", DEFAULT_TTL),
        task_id=body.get("task_id"),
    )
    return JSONResponse({"reservations": [view(reservation) for reservation in made]}, 201)


async def renew_reservation(call: Call) -> Response:
    body = call.body
    renewed = call.hub.reservations.renew(
        call.ids["reservation_id"], body["worker_id"], body.get("ttl_seconds", DEFAULT_TTL)
    )
    return JSONResponse(view(renewed))


async def release_reservation(call: Call) -> Response:
    released = call.hub.reservations.release(call.ids["reservation_id"], call.body["worker_id"])
    return JSONResponse(view(released))


R = s.ref
STALE = (412, ("The file is not what If-Match / If-None-Match / etag expected (or exists)", R("Error")))
RESERVED = (423, ("Another worker holds an exclusive reservation on the path", R("Error")))
CONFLICT = (409, ("Something is in the way (a directory, a file where a directory goes)", R("Error")))
RESERVATION_PATH = "/v1/reservations/{reservation_id}"

ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/files", list_files,
             "List a directory, or with `glob` every path below it that matches", "viewer",
             query={"path": Param(PATH, "a directory (default: the root) or a file"),
                    "glob": Param(GLOB, "match paths below `path`, recursively"),
                    "limit": Param({"type": "integer", "minimum": 1, "maximum": 10_000},
                                   "entries at most (default 1000)")},
             responses={200: ("The entries, in name order", LISTING)}),
    Endpoint("GET", "/v1/files/content", read_file,
             "Read a file: its bytes, with its ETag (SHA-256) in the ETag header", "viewer",
             query={"path": Param(PATH, "the file (required)", required=True)},
             responses={200: ("The file's bytes", {"type": "string", "format": "binary"})},
             content_type="application/octet-stream"),
    Endpoint("PUT", "/v1/files/content", write_file,
             'Write a file atomically: `If-Match: "<etag>"` to replace what was read, `If-None-Match: *` '
             "(or neither) to create only, `If-Match: *` to replace whatever is there", "agent",
             raw_body=True,
             query={"path": Param(PATH, "the file (required)", required=True),
                    "worker_id": Param(WORKER_ID, WORKER_ID["description"])},
             responses={201: ("Created", WRITTEN), 200: ("Replaced", WRITTEN),
                        **dict([CONFLICT, STALE, RESERVED])}),
    Endpoint("POST", "/v1/files/edit", edit_file,
             "Replace `old` by `new` in a text file; `old` must occur exactly once", "agent", body=EDIT,
             responses={200: ("Edited", EDITED), **dict([STALE, RESERVED])}),
    Endpoint("POST", "/v1/files/delete", delete_file,
             "Delete a file, a symbolic link or an empty directory", "agent", body=DELETE,
             responses={200: ("Deleted", DELETED), **dict([CONFLICT, STALE, RESERVED])}),
    Endpoint("POST", "/v1/files/move", move_file,
             "Move (rename) a file or directory; `overwrite` to replace a file", "agent", body=MOVE,
             responses={200: ("Moved", MOVED), **dict([CONFLICT, RESERVED])}),
    Endpoint("POST", "/v1/files/grep", grep_files,
             "Search text files for lines matching a regular expression, within limits", "viewer",
             body=GREP, responses={200: ("The matching lines, in path order", FOUND)}),
    Endpoint("GET", "/v1/reservations", list_reservations, "The active path reservations", "viewer",
             query={"worker_id": Param(s.ID, "only this worker's")},
             responses={200: ("The reservations", RESERVATIONS)}),
    Endpoint("POST", "/v1/reservations", reserve,
             "Reserve globs for a worker, exclusive or shared, with a time to live", "agent", body=RESERVE,
             responses={201: ("The reservations, one per glob", RESERVATIONS),
                        409: ("The worker is stopped, or does not hold task_id", R("Error")),
                        423: ("An exclusive glob overlaps another worker's exclusive reservation",
                              R("Error"))}),
    Endpoint("POST", RESERVATION_PATH + "/renew", renew_reservation,
             "Extend a reservation by ttl_seconds from now", "agent", body=RENEW,
             responses={200: ("The reservation", R("Reservation")),
                        409: ("Another worker holds it", R("Error"))}),
    Endpoint("POST", RESERVATION_PATH + "/release", release_reservation, "End a reservation", "agent",
             body=RELEASE, responses={200: ("The ended reservation", R("Reservation")),
                                      409: ("Another worker holds it", R("Error"))}),
]  # fmt: skip
