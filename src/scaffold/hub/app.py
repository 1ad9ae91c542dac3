"""`create_app(store, settings)`: the hub as an ASGI application.

The app builds the services (scaffold.hub.services.container) on one store, serves its faces over them
(the REST routes, the MCP endpoint, the dashboard), runs the lease reaper, and renders every
error, including unknown routes, as `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scaffold.errors import GitError
from scaffold.hub.core.settings import HubSettings
from scaffold.hub.core.types import Clock
from scaffold.hub.faces import dashboard
from scaffold.hub.faces.mcp.endpoint import McpEndpoint
from scaffold.hub.faces.mcp.jsonrpc import http_error
from scaffold.hub.faces.rest.http import BodyLimit, route
from scaffold.hub.faces.rest.routes import ENDPOINTS
from scaffold.hub.services.container import Services
from scaffold.hub.store.base import Store

log = logging.getLogger("scaffold.hub")


def create_app(store: Store, settings: HubSettings, clock: Clock = time.time) -> Starlette:
    services = Services.build(store, settings, clock)
    listeners = getattr(store, "on_events", None)  # commits that append no event wake no stream
    if isinstance(listeners, list):
        listeners.append(services.bus.publish)
    store.sync_config_keys(settings.keys, clock())
    mcp = McpEndpoint(services)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _ensure_workspace(services)
        await services.executor.start()
        if services.git.ready:
            await services.merges.recover()  # before the reaper: the merge's lease still holds
            await services.trees.start()
        reaper = asyncio.create_task(_reap_forever(services))
        try:
            async with mcp.running():
                yield
        finally:
            services.shutdown()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await services.trees.stop()

    app = Starlette(
        routes=[
            *(route(services, endpoint) for endpoint in ENDPOINTS),
            Route("/mcp", mcp),
            *dashboard.ROUTES,
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.services = services
    app.router.redirect_slashes = False  # /v1/tasks/ is a 404 in the JSON shape, not a redirect
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, render=http_error)
    return app


async def _ensure_workspace(services: Services) -> None:
    """Create the workspace and make it a git repository; the hub still serves if git fails."""
    try:
        await services.git.ensure()
    except OSError as error:  # no workspace: files and exec cannot work, so do not start
        raise RuntimeError(f"cannot create the workspace {services.git.root}: {error}") from error
    except GitError as error:
        log.error(
            "the workspace %s is not under version control; tasks get no trees of their own and "
            "cannot be merged until it is: %s",
            services.git.root,
            error,
        )


async def _reap_forever(services: Services) -> None:
    while True:
        await asyncio.sleep(services.settings.reap_interval_seconds)
        try:
            # in a thread: a task batch may hold the store's lock for a tenth of a second
            for task in await asyncio.to_thread(services.queue.reap):
                log.info("task %s: lease expired, now %s", task.id, task.state)
            await services.trees.sweep()
        except Exception:  # a bad moment must not end the reaper
            log.exception("the lease reaper failed; retrying")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    messages = {
        404: f"no route {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    code = codes.get(error.status_code, "http_error")
    message = messages.get(error.status_code, str(error.detail))
    return JSONResponse(
        {"error": {"code": code, "message": message}}, error.status_code, headers=error.headers
    )


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": {"code": "internal", "message": "the hub failed unexpectedly; see its log"}}, 500
    )
