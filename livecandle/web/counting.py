"""Request counting for ``/metrics``: every HTTP request, every 4xx answer, and the
refusals of the per-address and per-client limits by reason (``limits.Refusals``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestCounts:
    requests: int = 0
    errors_4xx: int = 0
    refused: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


class Counting:
    """ASGI middleware that counts into ``counts`` (plain ASGI: Starlette's
    BaseHTTPMiddleware costs a task and a stream per request)."""

    def __init__(self, app: Any, counts: RequestCounts) -> None:
        self.app, self.counts = app, counts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counts = self.counts
        counts.requests += 1

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                counts.errors_4xx += 1
            await send(message)

        await self.app(scope, receive, counted)
