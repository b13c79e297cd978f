"""Errors of the HTTP API: a bad request names its field and value; Redis out of reach
is a 503, never a 500."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis.exceptions
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

_enc = msgspec.json.Encoder()
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class ApiError(Exception):
    def __init__(self, status: int, field: str | None, value: Any, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.value, self.message = status, field, value, message

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.message, "field": self.field, "value": self.value}, self.status
        )


def redis_unavailable(path: str, e: Exception) -> tuple[int, bytes]:
    """503 when Redis cannot be reached: a server problem, not a bad request."""
    log.warning("Redis unreachable while serving %s: %s", path, e)
    if path.startswith("/api/v3/"):
        msg = "Internal error; unable to process your request. Please try again."
        return 503, _enc.encode({"code": -1001, "msg": msg})
    error = f"Redis is unreachable ({type(e).__name__}: {e}); try again shortly"
    return 503, _enc.encode({"error": error, "field": None, "value": None})
