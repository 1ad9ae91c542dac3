"""The dashboard: three static files served at the hub's root, open to anyone because they hold no
data. The page asks for an API key and reads everything through the REST API with it."""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
HEADERS = {
    # Only this origin's own script and styles; no inline code, no frames, no forms posting away.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


async def index(request: Request) -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in FILES:  # only the listed files: a path never reaches the file system
        return Response(status_code=404)
    return Response(_read(name), media_type=f"{FILES[name]}; charset=utf-8", headers=HEADERS)


ROUTES = [Route("/", index, methods=["GET"]), Route("/dashboard/{name}", asset, methods=["GET"])]
