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
from starlette.routing import Route

from scaffold import __version__
from scaffold.hub import dashboard
from scaffold.hub.api import ENDPOINTS
from scaffold.hub.auth import Authenticator
from scaffold.hub.events import EventBus
from scaffold.hub.exec import Executor
from scaffold.hub.files import Workspace
from scaffold.hub.gitwork import GitError, GitWorkspace
from scaffold.hub.http import BodyLimit, openapi, route
from scaffold.hub.jsonrpc import http_error
from scaffold.hub.mcp import McpEndpoint
from scaffold.hub.messages import Messages
from scaffold.hub.reservations import Reservations
from scaffold.hub.schemas import COMPONENTS
from scaffold.hub.settings import HubSettings
from scaffold.hub.signals import Signal
from scaffold.hub.store.base import Store
from scaffold.hub.tasks import Queue, QueueSettings
from scaffold.hub.types import Clock, Task
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
    git: GitWorkspace
    executor: Executor
    reservations: Reservations
    workspace: Workspace
    openapi: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, store: Store, settings: HubSettings, clock: Clock = time.time) -> Hub:
        queue_settings = QueueSettings(
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            max_wait_seconds=settings.max_wait_seconds,
        )
        reservations = Reservations(store, clock, settings.workspace)
        queue = Queue(store, clock, queue_settings, Signal())
        return cls(
            store=store,
            settings=settings,
            clock=clock,
            queue=queue,
            workers=Workers(store, clock, settings.roles, settings.worker_lost_seconds, queue.waiting),
            messages=Messages(store, clock),
            auth=Authenticator(store),
            bus=EventBus(store.last_event_id()),
            git=GitWorkspace(settings.workspace),
            executor=Executor.configured(settings),
            reservations=reservations,
            workspace=Workspace.build(store, settings, clock, reservations),
            openapi=openapi(ENDPOINTS, __version__, COMPONENTS),
        )

    async def complete_task(self, task_id: int, token: str, result: str) -> Task:
        """Complete the task, then commit what changed in the workspace during it (gitwork).

        Only a new completion commits (the same token again returns the task as it is). A git
        failure is logged and leaves `commit` null: the completion itself is never lost.
        """
        task, new = self.queue.complete(task_id, token, result)
        if not new:
            return task
        # shielded: a client that hangs up must not cut the commit off half-way
        return await asyncio.shield(self._commit(task))

    async def _commit(self, task: Task) -> Task:
        try:
            worker = self.store.get_worker(task.worker_id) if task.worker_id is not None else None
            sha = await self.git.commit_task(task, worker)
            if sha is None:
                return task
            self.store.set_commit(task.id, sha)
            return self.store.get_task(task.id)
        except Exception:  # the task is done, whatever happens to its commit
            log.exception("task %s: recording its commit failed", task.id)
            return task

    def shutdown(self) -> None:
        """Wake every long poll and stream so they end and the server can stop."""
        self.queue.shutdown()
        self.bus.close()
        self.executor.shutdown()


def create_app(store: Store, settings: HubSettings, clock: Clock = time.time) -> Starlette:
    hub = Hub.build(store, settings, clock)
    listeners = getattr(store, "on_events", None)  # commits that append no event wake no stream
    if isinstance(listeners, list):
        listeners.append(hub.bus.publish)
    store.sync_config_keys(settings.keys, clock())
    mcp = McpEndpoint(hub)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _ensure_workspace(hub)
        await hub.executor.start()
        reaper = asyncio.create_task(_reap_forever(hub))
        try:
            async with mcp.running():
                yield
        finally:
            hub.shutdown()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper

    app = Starlette(
        routes=[*(route(hub, endpoint) for endpoint in ENDPOINTS), Route("/mcp", mcp), *dashboard.ROUTES],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
    app.state.hub = hub
    app.router.redirect_slashes = False  # /v1/tasks/ is a 404 in the JSON shape, not a redirect
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, render=http_error)
    return app


async def _ensure_workspace(hub: Hub) -> None:
    """Create the workspace and make it a git repository; the hub still serves if git fails."""
    try:
        await hub.git.ensure()
    except OSError as error:  # no workspace: files and exec cannot work, so do not start
        raise RuntimeError(f"cannot create the workspace {hub.git.root}: {error}") from error
    except GitError as error:
        log.error("the workspace %s is not under version control; tasks will not be committed: %s",
                  hub.git.root, error)  # fmt: skip


async def _reap_forever(hub: Hub) -> None:
    while True:
        await asyncio.sleep(hub.settings.reap_interval_seconds)
        try:
            # in a thread: a task batch may hold the store's lock for a tenth of a second
            for task in await asyncio.to_thread(hub.queue.reap):
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
