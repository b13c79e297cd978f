"""Origins: which browser pages may open a socket.io connection (with the user's
cookies): the page's own origin, plus the configured ones (``LIVECANDLE_CORS_ORIGINS``;
``*`` for any). Engine.IO asks it for every request that carries an ``Origin``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Origins:
    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(o.rstrip("/") for o in allowed)
        self.any = "*" in self.allowed

    def __call__(self, origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or self.any or origin in self.allowed:
            return True
        # same origin: the page was served by this host and port (behind a proxy, the
        # host it was asked for); either scheme, as TLS may end before this server
        scheme, sep, netloc = origin.partition("://")
        if not sep or scheme not in ("http", "https"):
            return False
        hosts = {environ.get("HTTP_HOST"), environ.get("HTTP_X_FORWARDED_HOST")}
        return netloc in hosts
