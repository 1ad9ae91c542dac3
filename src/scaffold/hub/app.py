"""`create_app(store, settings)`: the hub as an ASGI application.

The app owns the services (queue, workers, messages, auth, event bus) built on one store, runs
the lease reaper, and renders every error, including unknown routes, as
`{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from scaffold import __version__
from scaffold.hub.api import ENDPOINTS
from scaffold.hub.auth import Authenticator
from scaffold.hub.events import EventBus
from scaffold.hub.http import BodyLimit, openapi, route
from scaffold.hub.messages import Messages
from scaffold.hub.schemas import COMPONENTS
from scaffold.hub.settings import HubSettings
from scaffold.hub.store.base import Store
from scaffold.hub.tasks import Queue, QueueSettings, ReadySignal
from scaffold.hub.types import Clock
from scaffold.hub.workers import Workers

log = logging.getLogger("scaffold.hub")


@dataclass
class Hub:
    """The services of one hub, shared by the REST routes and (later) the MCP tools."""

    store: Store
    settings: HubSettings
    clock: Clock
    queue: Queue
    workers: Workers
    messages: Messages
    auth: Authenticator
    bus: EventBus
    openapi: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, store: Store, settings: HubSettings, clock: Clock = time.time) -> Hub:
        queue_settings = QueueSettings(
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            max_wait_seconds=settings.max_wait_seconds,
        )
        return cls(
            store=store,
            settings=settings,
            clock=clock,
            queue=Queue(store, clock, queue_settings, ReadySignal()),
            workers=Workers(store, clock, settings.roles, settings.worker_lost_seconds),
            messages=Messages(store, clock),
            auth=Authenticator(store),
            bus=EventBus(),
            openapi=openapi(ENDPOINTS, __version__, COMPONENTS),
        )

    def shutdown(self) -> None:
        """Wake every long poll and stream so they end and the server can stop."""
        self.queue.shutdown()
        self.bus.close()


def create_app(store: Store, settings: HubSettings, clock: Clock = time.time) -> Starlette:
    hub = Hub.build(store, settings, clock)
    listeners = getattr(store, "on_commit", None)
    if isinstance(listeners, list):
        listeners.append(hub.bus.notify)
    store.sync_config_keys(settings.keys, clock())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap_forever(hub))
        try:
            yield
        finally:
            hub.shutdown()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper

    app = Starlette(
        routes=[route(hub, endpoint) for endpoint in ENDPOINTS],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.hub = hub
    app.router.redirect_slashes = False  # /v1/tasks/ is a 404 in the JSON shape, not a redirect
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


async def _reap_forever(hub: Hub) -> None:
    while True:
        await asyncio.sleep(hub.settings.reap_interval_seconds)
        try:
            for task in hub.queue.reap():
                log.info("task %s: lease expired, now %s", task.id, task.state)
        except Exception:  # a bad moment must not end the reaper
            log.exception("the lease reaper failed; retrying")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no route {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}  # fmt: skip
    return JSONResponse(
        {"error": {"code": codes.get(error.status_code, "http_error"),
                   "message": message.get(error.status_code, str(error.detail))}},
        error.status_code,
        headers=error.headers,
    )  # fmt: skip


async def _unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": {"code": "internal", "message": "the hub failed unexpectedly; see its log"}}, 500
    )
