"""Log floods: the same error repeated by whoever can make the server fail on purpose.

A client can send thousands of malformed socket.io packets a second; each one makes
engine.io log ``message async handler error`` with a traceback (and engine.io and
socket.io add a stderr handler of their own when their logger has no level, so the root
handler printed each one a second time). ``install`` puts a ``Repeats`` filter on the
loggers such floods come through and takes those private handlers away: the first
occurrence of a message goes through with its traceback, then at most ``burst`` per
``period_s`` without one; the last of a burst says the next are counted, and the first of
the next window says how many were left out ("repeated K times").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable

# where a remote peer can make errors happen at will: engine.io/socket.io (bad packets,
# sessions), uvicorn (bad requests, failing ASGI calls), and our web layer
FLOODABLE = (
    "engineio.server",
    "socketio.server",
    "uvicorn.error",
    "uvicorn.asgi",
    "livecandle.web.realtime",
    "livecandle.web.client_queue",
    "livecandle.web.stream_proxy",
    "livecandle.web.stream_hub",
)
_OWN_HANDLER_LOGGERS = ("engineio.server", "socketio.server")


class _Seen:
    __slots__ = ("left_out", "passed", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s  # start of the current window
        self.passed = 0  # let through in this window
        self.left_out = 0  # not logged since the last one let through


class Repeats(logging.Filter):
    """Per message key (logger, level, message template, exception type): the first
    record whole, then at most ``burst`` per ``period_s`` with no traceback, the next
    one let through carrying "(repeated K times ...)"."""

    def __init__(
        self,
        burst: int = 3,
        period_s: float = 60.0,
        max_keys: int = 1000,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.period_s = period_s
        self.max_keys = max_keys
        self._clock_s = clock_s
        self._seen: dict[Hashable, _Seen] = {}
        self.left_out = 0  # in all, since start

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        key = (record.name, record.levelno, str(record.msg), exc_type)
        now_s = self._clock_s()
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self.max_keys:  # messages made of peer data: forget the oldest
                del self._seen[next(iter(self._seen))]
            self._seen[key] = seen = _Seen(now_s)
            seen.passed = 1
            return True  # the first one whole, traceback and all
        if now_s - seen.window_s >= self.period_s:
            seen.window_s, seen.passed = now_s, 0
        if seen.passed >= self.burst:
            seen.left_out += 1
            self.left_out += 1
            return False
        seen.passed += 1
        _shorten(record, seen.left_out, self.period_s if seen.passed == self.burst else None)
        seen.left_out = 0
        return True


def _shorten(record: logging.LogRecord, left_out: int, quiet_s: float | None) -> None:
    """The record as one line: its exception as ``Type: text`` instead of a traceback,
    how many like it were left out before it, and whether the next are left out."""
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text += f" ({type(exc).__name__}: {str(exc)[:200]}; traceback as logged before)"
    if left_out:
        text += f" (repeated {left_out} times, not logged)"
    if quiet_s is not None:
        text += f" (more like it in the next {quiet_s:g} s are counted, not logged)"
    record.msg, record.args = text, None
    record.exc_info = record.exc_text = record.stack_info = None


def install(names: Iterable[str] = FLOODABLE, repeats: Repeats | None = None) -> Repeats:
    """Put one ``Repeats`` on each named logger (once: a second call changes nothing) and
    let engine.io's and socket.io's records reach the root handlers only."""
    for name in _OWN_HANDLER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)  # what they choose themselves, minus the handler
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # the one they add to themselves
                logger.removeHandler(handler)
    names = tuple(names)
    for f in logging.getLogger(names[0]).filters if names else ():
        if isinstance(f, Repeats):
            return f
    repeats = repeats or Repeats()
    for name in names:
        logging.getLogger(name).addFilter(repeats)
    return repeats
