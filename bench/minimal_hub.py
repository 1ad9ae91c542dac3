"""The framework's ceiling: the smallest Starlette + uvicorn claim endpoint, for comparison.

`POST /v1/tasks/claim` checks the bearer key against one in-memory digest, runs the bare claim
(rawclaim.BARE_CLAIM in BEGIN IMMEDIATE ... COMMIT, WAL, synchronous=NORMAL) and answers the
claimed row as JSON (204 when none is left). No validation, no event log, no worker record:
whatever the hub spends beyond this is the hub's own cost, measured in the same run.

    python bench/minimal_hub.py --db FILE --port P --key-sha256 HEX
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sqlite3
import sys
import time

import uvicorn
from rawclaim import BARE_CLAIM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def make_app(path: str, key_sha256: str) -> Starlette:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")

    async def claim(request: Request) -> Response:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(hashlib.sha256(presented.encode()).hexdigest(), key_sha256):
            return JSONResponse({"error": {"code": "unauthorized", "message": "bad key"}}, 401)
        body = json.loads(await request.body())
        now = time.time()
        params = {
            "worker": body["worker_id"],
            "token": secrets.token_urlsafe(24),
            "until": now + 300.0,
            "now": now,
        }
        db.execute("BEGIN IMMEDIATE")
        row = db.execute(BARE_CLAIM, params).fetchone()
        db.execute("COMMIT")
        return Response(status_code=204) if row is None else JSONResponse(dict(row))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/tasks/claim", claim, methods=["POST"]), Route("/healthz", healthz)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a database made by rawclaim.raw_database")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-sha256", required=True)
    args = parser.parse_args()
    app = make_app(args.db, args.key_sha256)
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
