"""Access control: token, CSRF and DNS-rebinding checks, and safe run-file paths.

* Bound to loopback (the default) no token is needed, but the Host header must name a
  loopback host (a DNS-rebinding page can't reach the API under its own name).
* Bound to anything else a token is required on every request: ``?token=`` (which also
  sets a cookie, as Jupyter does), the ``X-Flowillower-Token`` header or the cookie.
* Mutating requests (PATCH / POST / DELETE) always need the ``X-Flowillower-Token`` header
  (the token, or anything on loopback) and a same-origin ``Origin`` when one is sent: a
  cross-site form or `fetch` can't set that header without a CORS preflight, which this
  server never grants. The front end reads the token from a ``<meta>`` tag.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ..gitops.paths import safe_rel
from .routing import ApiError

TOKEN_HEADER = "x-flowillower-token"
TOKEN_COOKIE = "fw_token"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Files of a run the API may serve: never run.json internals, checkpoints or notes.
SERVABLE_DIRS = ("media", "artifacts")


def is_loopback(host: str) -> bool:
    """Whether an interface name / address only accepts connections from this machine."""
    host = host.strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8686
        return host_header[1:].split("]")[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class GuardMiddleware:
    """Pure ASGI middleware (no per-request task overhead) applying the rules above."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    async def _refuse(self, send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _given_token(self, scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
        """(token sent, whether it came in the query string)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return query["token"][-1], True
        if TOKEN_HEADER in headers:
            return headers[TOKEN_HEADER], False
        auth = headers.get("authorization", "")
        if auth.lower().startswith("token "):
            return auth[6:].strip(), False
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                return value, False
        return None, False

    def _token_ok(self, given: str | None) -> bool:
        return (self.token is None or given is not None
                and hmac.compare_digest(given.encode(), self.token.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback_only and host and not is_loopback(_host_name(host)):
            await self._refuse(send, 403, f"host {host!r} refused: this server only answers "
                               "to localhost (DNS rebinding protection)")
            return
        given, from_query = self._given_token(scope, headers)
        if not self._token_ok(given):
            await self._refuse(send, 401, "token required: open the URL printed by "
                               "`flowillower ui` (it ends in ?token=...)")
            return
        method = scope.get("method", "GET")
        if method in _MUTATING:
            origin = headers.get("origin")
            if origin and urlsplit(origin).netloc != host:
                await self._refuse(send, 403, f"cross-origin request from {origin} refused")
                return
            header = headers.get(TOKEN_HEADER)
            if header is None or not self._token_ok(header):
                await self._refuse(send, 403, "changes need the X-Flowillower-Token header "
                                   "(CSRF protection); the UI sends it for you")
                return
        if from_query and self.token is not None:
            # Remember the token in a cookie so links inside the UI need no ?token=.
            cookie = (f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                      ).encode()

            async def send_with_cookie(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"set-cookie", cookie)]}
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)


def safe_run_file(run_dir: Path, rel: str) -> Path:
    """The file `rel` inside a run's media/ or artifacts/, or ApiError.

    Refuses absolute paths, `..`, NUL bytes, backslashes and anything that resolves
    (through symlinks) outside the run's media/ or artifacts/ folder.
    """
    if len(rel) > 1000 or os.path.isabs(rel) or not safe_rel(rel):
        raise ApiError(400, "bad file path: absolute paths, '..', '.', empty segments, "
                       "backslashes and .git are not allowed")
    parts = rel.split("/")
    if parts[0] not in SERVABLE_DIRS:
        raise ApiError(403, f"only files under {' or '.join(SERVABLE_DIRS)}/ are served")
    base = (run_dir / parts[0]).resolve()
    target = (run_dir / rel).resolve()
    if target != base and base not in target.parents:
        raise ApiError(403, "that path leads outside the run's files")
    if not target.is_file():
        raise ApiError(404, f"no file {rel!r} in this run")
    return target
