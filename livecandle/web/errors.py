"""Errors of the HTTP API: a bad request names its field and value (a bounded rendering
of it: a hostile value is never echoed whole); Redis out of reach is a 503, never a 500."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis.exceptions
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

_enc = msgspec.json.Encoder()
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
SHOWN_CHARS = 100  # of a bad value, in an error's message and its ``value`` field


def short(text: str) -> str:
    """``text`` itself, or its first ``SHOWN_CHARS`` characters and its size: an error
    answer stays small whatever was sent."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}…({len(text.encode(errors='replace'))} bytes)"


MAX_MESSAGE = 2000


def short_message(message: str) -> str:
    return f"{message[:MAX_MESSAGE]}…({len(message)} characters)"


def shown(value: Any) -> Any:
    """A bad value as an error carries it: long strings, huge integers and large
    containers as a shortened text; everything else as it is."""
    if isinstance(value, str):
        return short(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return value
        try:
            return short(str(value))
        except ValueError:  # past Python's int-to-text limit (4300 digits)
            return f"<an integer of {value.bit_length()} bits>"
    try:
        text = _enc.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return f"<{type(value).__name__}>"
    return value if len(text) <= SHOWN_CHARS else short(text)


def shown_repr(value: Any) -> str:
    """``repr`` of a bad value for a message, bounded like ``shown``."""
    return short(repr(value))


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        field: str | None,
        value: Any,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.status, self.field, self.value = status, field, shown(value)
        # the messages name values through ``shown_repr``; this only keeps a future
        # message that forgets to from echoing a megabyte
        self.message = message if len(message) <= MAX_MESSAGE else short_message(message)

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.message, "field": self.field, "value": self.value},
            self.status,
            headers=self.headers,
        )


def redis_unavailable(path: str, e: Exception) -> tuple[int, bytes]:
    """503 when Redis cannot be reached: a server problem, not a bad request."""
    log.warning("Redis unreachable while serving %s: %s", path, e)
    if path.startswith("/api/v3/"):
        msg = "Internal error; unable to process your request. Please try again."
        return 503, _enc.encode({"code": -1001, "msg": msg})
    error = f"Redis is unreachable ({type(e).__name__}: {e}); try again shortly"
    return 503, _enc.encode({"error": error, "field": None, "value": None})
