"""Workspace files and path reservations over HTTP (the rules are in scaffold.hub.services.files and
scaffold.hub.services.reservations). File operations run in a worker thread: a large file or a long grep
never holds up the event loop."""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse, Response

from scaffold.hub.core import schemas as s
from scaffold.hub.core.limits import DEFAULT_TTL
from scaffold.hub.core.workspace_schemas import (
    DELETE,
    DELETED,
    EDIT,
    EDITED,
    FOUND,
    GLOB,
    GREP,
    LISTING,
    MOVE,
    MOVED,
    PATH,
    READER_ID,
    RELEASE,
    RENEW,
    RESERVATIONS,
    RESERVE,
    WORKER_ID,
    WRITTEN,
)
from scaffold.hub.faces.rest.http import Call, Endpoint, LargeJSONResponse, Param
from scaffold.hub.faces.views import (
    deleted,
    edited,
    entry_view,
    grepped,
    moved,
    reservation_view,
    reserve,
    written_view,
)

# -- files ---------------------------------------------------------------------------------


async def list_files(call: Call) -> Response:
    query = call.query

    files = await call.services.files_for(query.get("worker_id"))

    def answer() -> Response:  # in a thread, the answer too: 10,000 entries take a while to write
        listing = files.list(query.get("path", ""), query.get("glob"), query.get("limit", 1000))
        views = [entry_view(entry) for entry in listing.entries]
        return LargeJSONResponse({"entries": views, "truncated": listing.truncated})

    return await asyncio.to_thread(answer)


async def read_file(call: Call) -> Response:
    files = await call.services.files_for(call.query.get("worker_id"))
    content, etag = await asyncio.to_thread(files.read, call.query["path"])
    return Response(content, media_type="application/octet-stream", headers={"ETag": f'"{etag}"'})


async def write_file(call: Call) -> Response:
    headers = call.request.headers
    files = await call.services.files_for(call.query.get("worker_id"))
    written = await asyncio.to_thread(
        lambda: files.write(
            call.query["path"],
            call.body,
            writer=call.query.get("worker_id"),
            if_match=headers.get("if-match"),
            if_none_match=headers.get("if-none-match"),
            actor=call.actor,
        )
    )
    await call.services.changed(files, [written.path], f"write {written.path}", call.actor)
    return JSONResponse(
        written_view(written.path, written.size, written.etag),
        201 if written.created else 200,
        headers={"ETag": f'"{written.etag}"'},
    )


async def edit_file(call: Call) -> Response:
    return JSONResponse(await edited(call.services, call.body, call.actor))


async def delete_file(call: Call) -> Response:
    return JSONResponse(await deleted(call.services, call.body, call.actor))


async def move_file(call: Call) -> Response:
    return JSONResponse(await moved(call.services, call.body, call.actor))


async def grep_files(call: Call) -> Response:
    return JSONResponse(await grepped(call.services, call.body))


# -- reservations --------------------------------------------------------------------------


async def list_reservations(call: Call) -> Response:
    active = call.services.reservations.active(call.query.get("worker_id"))
    return JSONResponse({"reservations": [reservation_view(reservation) for reservation in active]})


async def reserve_paths(call: Call) -> Response:
    made = reserve(call.services.reservations, call.body)
    return JSONResponse({"reservations": [reservation_view(reservation) for reservation in made]}, 201)


async def renew_reservation(call: Call) -> Response:
    body = call.body
    renewed = call.services.reservations.renew(
        call.ids["reservation_id"], body["worker_id"], body.get("ttl_seconds", DEFAULT_TTL)
    )
    return JSONResponse(reservation_view(renewed))


async def release_reservation(call: Call) -> Response:
    released = call.services.reservations.release(call.ids["reservation_id"], call.body["worker_id"])
    return JSONResponse(reservation_view(released))


R = s.ref
STALE = (412, ("The file is not what If-Match / If-None-Match / etag expected (or exists)", R("Error")))
RESERVED = (423, ("Another worker holds an exclusive reservation on the path", R("Error")))
CONFLICT = (409, ("Something is in the way (a directory, a file where a directory goes)", R("Error")))
RESERVATION_PATH = "/v1/reservations/{reservation_id}"

# A table, one endpoint per entry with its summary and answers beside it: kept as written (fmt: skip).
ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/files", list_files,
             "List a directory, or with `glob` every path below it that matches", "viewer",
             query={"path": Param(PATH, "a directory (default: the root) or a file"),
                    "glob": Param(GLOB, "match paths below `path`, recursively"),
                    "limit": Param({"type": "integer", "minimum": 1, "maximum": 10_000},
                                   "entries at most (default 1000)"),
                    "worker_id": Param(READER_ID, READER_ID["description"])},
             responses={200: ("The entries, in name order", LISTING)}),
    Endpoint("GET", "/v1/files/content", read_file,
             "Read a file: its bytes, with its ETag (SHA-256) in the ETag header", "viewer",
             query={"path": Param(PATH, "the file (required)", required=True),
                    "worker_id": Param(READER_ID, READER_ID["description"])},
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
    Endpoint("POST", "/v1/reservations", reserve_paths,
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
