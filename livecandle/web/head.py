"""HeadAsGet: ``HEAD`` on every GET route (the fast read path included) answers what
``GET`` would, headers and ``Content-Length`` alike, without the body (the framework
routes ``HEAD`` nowhere and would answer 405)."""

from __future__ import annotations

from typing import Any


class HeadAsGet:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # a copy: the server's own scope still says HEAD (uvicorn then writes no body)
        await self.app({**scope, "method": "GET"}, receive, without_body)
