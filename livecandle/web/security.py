"""Security basics (issue 13): headers on every answer, and the write endpoint's rules.

- Every HTTP answer says ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer``, ``X-Frame-Options: DENY`` and a Content-Security-Policy. The page's
  policy allows only what the page loads: scripts (ES modules), styles, images and
  fonts from this origin (``data:`` images for the empty favicon; the chart library's
  one ``<style>`` element by its hash), socket.io to this
  origin (``ws:``/``wss:`` to this host named as well, for browsers whose ``'self'``
  does not cover websockets), no inline script, no plugin, no framing. ``/docs`` and
  ``/redoc`` (FastAPI's pages, which load their code from a CDN with an inline start-up
  script) get a policy of their own that allows just that.
- ``POST /save-live-candle`` (the one write): nothing in the query string, the token
  least of all (URLs end up in logs, proxies and browser history): a query string is a
  400 naming the parameters, never their values. A request from another origin (its
  ``Origin`` header) is a 403 unless that origin is listed in
  ``LIVECANDLE_CORS_ORIGINS`` (a ``*`` there opens socket.io to any page, never
  writes); a CORS preflight (``OPTIONS``) is answered for exactly those origins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from livecandle.web.errors import short
from livecandle.web.origins import Origins

WRITE_PATH = "/save-live-candle"
DOCS_PATHS = ("/docs", "/redoc")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

# the one inline style the page runs: the chart library's attribution logo (a <style>
# element it adds), allowed by its hash, no other (tests check it against the library)
CHART_LOGO_STYLE = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; "
    f"style-src 'self' {CHART_LOGO_STYLE}; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'{ws}; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'"
)
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _header(scope: Any, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def page_policy(host: str | None) -> bytes:
    ws = f" ws://{host} wss://{host}" if host and _HOST.match(host) else ""
    return PAGE_POLICY.replace("{ws}", ws).encode()


class Security:
    """ASGI middleware: the headers, and the write endpoint's query and origin rules."""

    def __init__(self, app: Any, write_origins: Iterable[str] = ()) -> None:
        self.app = app
        # "*" opens socket.io (reads) to any page; writes need a named origin
        self.write_origins = Origins(o for o in write_origins if o.strip() != "*")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra: list[tuple[bytes, bytes]] = []
        if path == WRITE_PATH:
            origin = _header(scope, b"origin")
            refusal = self._write_refusal(scope, origin)
            if refusal is not None:
                await _answer(send, *refusal, self._headers(scope, path))
                return
            if origin is not None:
                extra = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS":
                preflight = [
                    (b"access-control-allow-methods", b"POST"),
                    (b"access-control-allow-headers", b"authorization, content-type"),
                    (b"access-control-max-age", b"600"),
                ]
                await _answer(send, 204, None, self._headers(scope, path) + extra + preflight)
                return
        headers = self._headers(scope, path) + extra

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        await self.app(scope, receive, with_headers)

    def _headers(self, scope: Any, path: str) -> list[tuple[bytes, bytes]]:
        if path.startswith(DOCS_PATHS):
            policy = DOCS_POLICY.encode()
        else:
            policy = page_policy(_header(scope, b"host"))
        return [*COMMON, (b"content-security-policy", policy)]

    def _write_refusal(self, scope: Any, origin: str | None) -> tuple[int, dict[str, Any]] | None:
        if scope["query_string"]:
            names = sorted({k for k, _ in parse_qsl(scope["query_string"].decode("latin-1"), True)})
            shown = ", ".join(short(n) for n in names[:5]) or "?"
            return 400, {
                "error": f"{WRITE_PATH} takes nothing in its URL (got: {shown}): the token "
                "goes in the Authorization header (Bearer), the candle in the JSON body",
                "field": "query",
                "value": None,  # never echoed: it may be the token
            }
        if origin is not None and not self._allowed(scope, origin):
            return 403, {
                "error": f"writes from the origin {short(origin)!r} are refused (this "
                "origin only, or one listed in LIVECANDLE_CORS_ORIGINS)",
                "field": "Origin",
                "value": short(origin),
            }
        return None

    def _allowed(self, scope: Any, origin: str) -> bool:
        environ = {
            "HTTP_HOST": _header(scope, b"host"),
            "HTTP_X_FORWARDED_HOST": _header(scope, b"x-forwarded-host"),
        }
        return self.write_origins(origin, environ)


async def _answer(
    send: Any, status: int, body: dict[str, Any] | None, headers: list[tuple[bytes, bytes]]
) -> None:
    data = b"" if body is None else msgspec.json.encode(body)
    start = [*headers, (b"content-length", str(len(data)).encode())]
    if body is not None:
        start.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": data})
