"""Binance's websocket market-stream protocol as a server speaks it (pure, no I/O).

What a stream name may be (``valid_stream``: Binance spot's grammar, lower-case symbols,
``reference/binance-api.md`` section 3 and ``binance-proxy-endpoints.md`` section 3),
the live-subscription requests (``parse_request``: SUBSCRIBE, UNSUBSCRIBE,
LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY) and the frames answering them:
``{"result":...,"id":...}`` or, on the wire, ``{"error":{"code":..,"msg":..},"id":..}``
(the documented ``{"code","msg"}`` inside ``error``, as the real server sends it; the id
is left out when the request had none that could be read), and where a combined
stream's ``{"stream":..,"data":..}`` frame holds its payload (``split_combined``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from livecandle.domain.intervals import INTERVALS

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
MAX_ID_CHARS = 36  # a string id: alphanumeric, at most this long
_I64 = 1 << 63

_SYMBOL = r"[a-z0-9]{1,32}"
_WINDOWS = r"(?:1h|4h|1d)"
_INTERVALS = "|".join(sorted((re.escape(n) for n in INTERVALS), key=len, reverse=True))
_KIND = (
    r"(?:aggTrade|trade|miniTicker|ticker|bookTicker|avgPrice"
    rf"|ticker_{_WINDOWS}"
    rf"|kline_(?:{_INTERVALS})(?:@\+08:00)?"
    r"|depth(?:5|10|20)?(?:@(?:100|1000)ms)?)"
)
_STREAM = re.compile(
    rf"{_SYMBOL}@{_KIND}"
    r"|!miniTicker@arr(?:@1000ms)?"
    rf"|!ticker@arr|!ticker_{_WINDOWS}@arr"
)
_ID = re.compile(rf"[A-Za-z0-9]{{1,{MAX_ID_CHARS}}}")

_json = msgspec.json.Encoder()


def valid_stream(name: str) -> bool:
    """A stream name Binance spot serves: ``<symbol>@<kind>`` with a lower-case symbol,
    or one of the all-market arrays (``!miniTicker@arr``)."""
    return _STREAM.fullmatch(name) is not None


def result_frame(result: Any, rid: int | str | None) -> str:
    return _json.encode({"result": result, "id": rid}).decode()


def error_frame(code: int, msg: str, rid: int | str | None = None, with_id: bool = True) -> str:
    body: dict[str, Any] = {"error": {"code": code, "msg": msg}}
    if with_id:
        body["id"] = rid
    return _json.encode(body).decode()


class RequestError(Exception):
    """A request answered with an error frame (``frame``); the connection stays."""

    def __init__(self, frame: str) -> None:
        super().__init__(frame)
        self.frame = frame


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: list[Any]
    rid: int | str | None


def parse_request(text: str | bytes) -> Request:
    """The request in ``text``, checked as Binance checks it (raises ``RequestError``
    with Binance's error frame). Stream names are checked here for SUBSCRIBE and
    UNSUBSCRIBE: one invalid name refuses the whole request."""
    try:
        req = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(
            error_frame(
                3,
                f"Invalid JSON: expected value at line {e.lineno} column {e.colno}",
                with_id=False,
            )
        ) from None
    except (UnicodeDecodeError, RecursionError):
        raise RequestError(
            error_frame(3, "Invalid JSON: expected value at line 1 column 1", with_id=False)
        ) from None
    if not isinstance(req, dict):
        raise RequestError(error_frame(2, "Invalid request: expected a JSON object", with_id=False))
    rid = req.get("id")
    if not _valid_id(rid):
        raise RequestError(
            error_frame(2, "Invalid request: request ID must be an unsigned integer", with_id=False)
        )
    if "method" not in req:
        raise RequestError(error_frame(2, "Invalid request: missing field `method`", rid))
    method = req["method"]
    if method not in METHODS:
        expected = ", ".join(f"`{m}`" for m in METHODS)
        shown = method if isinstance(method, str) else json.dumps(method)
        raise RequestError(
            error_frame(
                2, f"Invalid request: unknown variant `{shown}`, expected one of {expected}", rid
            )
        )
    params = req.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        raise RequestError(error_frame(2, "Invalid request: params must be an array", rid))
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not all(isinstance(p, str) and valid_stream(p) for p in params):
            raise RequestError(error_frame(2, "Invalid request: invalid stream", rid))
    elif method == "LIST_SUBSCRIPTIONS":
        if params:
            raise RequestError(error_frame(2, "Invalid request: too many parameters", rid))
    else:
        limit = 2 if method == "SET_PROPERTY" else 1
        if len(params) > limit:
            raise RequestError(error_frame(2, "Invalid request: too many parameters", rid))
        if not params or not isinstance(params[0], str):
            raise RequestError(
                error_frame(2, "Invalid request: property name must be a string", rid)
            )
        if params[0] != "combined":
            raise RequestError(error_frame(0, "Unknown property", rid))
        if method == "SET_PROPERTY" and (len(params) < 2 or not isinstance(params[1], bool)):
            raise RequestError(error_frame(1, "Invalid value type: expected Boolean", rid))
    return Request(method, params, rid)


def _valid_id(rid: object) -> bool:
    if rid is None:
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return -_I64 <= rid < _I64
    return isinstance(rid, str) and _ID.fullmatch(rid) is not None


_HEAD = '{"stream":"'
_DATA = '","data":'


def split_combined(frame: str) -> tuple[str, str] | None:
    """``(stream, payload)`` of a combined-stream frame, the payload exactly as it is
    in the frame (a slice, not re-encoded); None for anything else (a control reply)."""
    if frame.startswith(_HEAD) and frame.endswith("}"):
        end = frame.find(_DATA, len(_HEAD))
        if end > 0:
            return frame[len(_HEAD) : end], frame[end + len(_DATA) : -1]
    if '"stream"' not in frame:
        return None
    try:  # another layout (spaces, key order): the payload's own bytes, still unchanged
        wrapped = _combined.decode(frame)
    except msgspec.DecodeError:
        return None
    if not wrapped.stream or not wrapped.data:
        return None
    return wrapped.stream, bytes(wrapped.data).decode()


class _Combined(msgspec.Struct):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw()


_combined = msgspec.json.Decoder(_Combined)
