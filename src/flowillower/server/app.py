"""`create_app(store_root, token=None)`: the Starlette application behind `flowillower ui`.

Request path (datasette's shape): route table (`Api.endpoints`) -> view (`Api` method,
off the event loop) -> store wrapper (`StoreView`, `SeriesCache`). The front end is
static files; `/` serves its shell with the CSRF token in a meta tag.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import mimetypes
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from .api import Api
from .lineage_api import lineage_endpoints
from .media_fetch import media_fetch_endpoints
from .routing import ApiError, json_response, make_route, openapi_schema
from .security import GuardMiddleware
from .store_view import StoreView
from .views_api import saved_view_endpoints

STATIC_DIR = Path(__file__).parent / "static"


def _inline_script_hashes() -> str:
    """CSP hashes of index.html's own inline scripts (the start-up watchdog): those run,
    no other inline script does."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in re.findall(r"<script>(.*?)</script>", text, re.S))


# The UI runs only our own scripts; inline styles are allowed for uPlot's positioning.
CSP = (f"default-src 'self'; script-src 'self' {_inline_script_hashes()}; "
       "style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'none'")


def render_index(mode: str = "live", token: str = "") -> str:
    """The HTML shell with the data mode (live API / static files) and token filled in."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return (text.replace("{{mode}}", html.escape(mode, quote=True))
            .replace("{{token}}", html.escape(token, quote=True))
            .replace("{{version}}", html.escape(__version__, quote=True)))


class StaticAssets:
    """The front end's files, read once into memory and served without a thread hop.

    ~200 KB in all: a first visit fetches a dozen files at once, and a file read per
    request through a worker thread is what made that slow on a busy machine. Paths are
    looked up in a dict, so nothing outside the folder can be named. ETags let a
    browser revalidate cheaply (`no-cache` keeps an upgraded UI from looking stale).
    """

    def __init__(self, directory: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.name != "index.html":
                data = path.read_bytes()
                rel = path.relative_to(directory).as_posix()
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype.endswith("javascript"):
                    ctype += "; charset=utf-8"
                etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
                self.files[rel] = (data, ctype, etag)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rel = scope["path"][len(scope.get("root_path", "")):].lstrip("/")
        hit = self.files.get(rel)
        if hit is None or scope.get("method") not in ("GET", "HEAD"):
            body = b"not found"
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            return
        data, ctype, etag = hit
        headers = [(b"etag", etag.encode()), (b"cache-control", b"no-cache"),
                   (b"content-type", ctype.encode())]
        inm = dict(scope.get("headers", [])).get(b"if-none-match")
        if inm is not None and inm.decode("latin-1") == etag:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else data})


class _Headers:
    """Adds security headers to every response (pure ASGI: no task per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapped)


def create_app(store_root: str | os.PathLike[str], token: str | None = None, *,
               loopback_only: bool = True, sync_interval: float = 0.5) -> Starlette:
    """The UI application over the store at `store_root`.

    `token`: required on every request when set (give one whenever the server listens on
    a non-loopback interface). `loopback_only`: refuse Host headers that are not
    localhost (DNS-rebinding defence); turn off when serving other interfaces.
    """
    view = StoreView(store_root, interval=sync_interval)
    api = Api(view, token)
    endpoints = api.endpoints() + saved_view_endpoints(view.root) + lineage_endpoints(view.root)
    endpoints += media_fetch_endpoints(view.root)
    schema = openapi_schema(endpoints, __version__)

    async def index(request: Request) -> Response:
        return HTMLResponse(render_index("live", token or ""))

    async def openapi(request: Request) -> Response:
        return json_response(schema)

    async def not_found(request: Request) -> Response:
        return ApiError(404, f"no endpoint {request.url.path}; see /api/openapi.json"
                        ).response()

    routes = [Route("/", index), Route("/index.html", index),
              Route("/api/openapi.json", openapi),
              *[make_route(ep) for ep in endpoints],
              Route("/api/{rest:path}", not_found),
              Mount("/static", app=StaticAssets(STATIC_DIR), name="static")]

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "error")
        return json_response({"error": str(detail), "status": status}, status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        view.prime()  # index the store while the browser is still loading the page
        yield

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={405: method_not_allowed, 404: method_not_allowed})
    app.state.view = view
    app.state.api = api
    app.add_middleware(GuardMiddleware, token=token, loopback_only=loopback_only)
    app.add_middleware(_Headers)
    return app
