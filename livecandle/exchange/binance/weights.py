"""Request-weight budget shared by every REST call to one exchange host: one plan, with
priorities.

Binance counts weight per IP in fixed one-minute windows and reports the running total
in ``X-MBX-USED-WEIGHT-1M``. The budget reserves weight before each request, syncs with
the header after it, and makes every caller wait (not fail) when the window is full, after
a 429 (``Retry-After``) or during a 418 ban.

Order: waiting requests are served strictly by ``Priority`` (lowest value first), first
come first served within one priority, whenever weight or an in-flight slot frees up: only
the head of the queue may take weight, so a gap fill queued behind history goes first and
history never holds back a just-closed candle. Each priority may fill a window up to its
ceiling only, so that urgent work arriving later in the window finds room at once:

* ``GAP_FILL`` and ``CLOSED`` may use the whole budget;
* ``HISTORY`` leaves the last ``urgent_share`` (default 10 %) of every window to them,
  until the window's last twelfth (5 s of Binance's minute): the urgent work it is kept
  for comes mostly just after candles close, at a window's start (Binance's windows turn
  on the minute, as candles close), and one arriving in those last seconds waits for the
  turn at most that long, while history gains a tenth more of every window;
* ``RECONCILE`` and ``PROXY`` use spare weight only: they go when nothing more urgent
  waits, and never past ``spare_share`` (default 50 %) of a window's budget.

A request heavier than its ceiling still goes, alone, in a fresh window. The plan never
causes a 429 itself: every ceiling is a share of ``limit * safety``, and a request's
weight counts in every window the exchange may count it in: the next one too when it is
sent in a window's last ``_STRADDLE_MS`` (an eighth of a short window; not in a shared
window) or answered in its last ``_ANSWERED_MS`` (the skew margin either way), every one
that begins while it is still on its way (a loaded host), and, when the window's length
changes (exchangeInfo's 2-second window replacing the default minute), the weight used so
far in the renumbered next one too if the change comes within ``_ANSWERED_MS`` of its turn.

A 429 means the limit is lower than the budget believed (it changed, or another client of
the IP spends weight). Requests that land during the ``Retry-After`` period count against
the IP and end in a 418 ban, so after a 429 every sender waits, the limit shrinks to the
weight the exchange accepted in that window, the budget resumes at a fraction and grows
back window by window, and only one request is in flight until it has. At all times the
requests in flight are capped (``max_in_flight``, default 2; fewer when the observed
latency needs fewer to spend the budget; never more than ``connections``, the HTTP pool
of the client): a surprise 429 is then followed by at most one request already on its way,
where the emulator (modelling Binance's "failing to back off") bans on the third. The
price: at most 2 / latency requests a second, enough for the whole budget up to about
40 ms of round trip (``LIVECANDLE_REST_MAX_IN_FLIGHT`` raises it, and with it the risk of
a ban after a surprise 429).

``stats()`` gives the queue and what was sent per priority; ``eta_ms(weight, priority)``
the time until that much more weight of a priority could be spent, given the limit and
what waits ahead of it (the fetcher's "time until history is complete").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from livecandle.domain.clock import Clock

log = logging.getLogger(__name__)

_SKEW_MARGIN_MS = 50
# a request sent this close to the end of a window may reach the exchange in the next
# one (in flight, queued on a busy host, or sent within the skew margin after the
# exchange's turn): its weight counts in both (at most an eighth of a window)
_STRADDLE_MS = 500
# a request answered this close to the end of a window (the skew margin either way) may
# have reached the exchange after its turn: its weight counts in the next window too, as
# does that of every request still on its way when the window turns
_ANSWERED_MS = 2 * _SKEW_MARGIN_MS
# the last part of a window in which HISTORY may use the urgent share too (module docstring)
_RELEASE_PART = 12
# Little's law with room to spare: in flight = rate x latency, doubled
_IN_FLIGHT_HEADROOM = 2.0
# a weight limit learned from a 429 is trusted over exchangeInfo's this long after the last
LEARNED_LIMIT_TTL_MS = 3_600_000
_LATENCY_WEIGHT = 0.2  # of each new sample in the moving average


class Priority(IntEnum):
    """Who goes first when the weight budget is scarce (lower first): a live gap fill,
    then just-closed official candles, then history, then reconciliation, then proxied
    requests of clients (DESIGN.md section 7)."""

    GAP_FILL = 0
    CLOSED = 1
    HISTORY = 2
    RECONCILE = 3
    PROXY = 4


class SharedWindow(Protocol):
    """The weight every process of one IP took in a window, kept apart (Redis:
    ``store.budget.RedisWeightWindow``), so that N processes together stay within the
    IP's limit. Priorities stay each process's own."""

    takers: int  # the processes that asked in the window of the last take

    async def take(
        self,
        window: int,
        window_ms: int,
        weight: int,
        ceiling: int,
        known: int,
        carried: int = 0,
        pause_until_ms: int = 0,
        now_ms: int = 0,
    ) -> tuple[bool, int, int]:
        """Add ``weight`` to the count of ``window`` if it stays within ``ceiling`` (an
        empty window takes any weight) and the IP is not paused; ``known``: what this
        process knows was used (the exchange's header), raising the count; ``carried``:
        weight of this process's requests of the window before that the exchange may
        count in this one, added to the count (once: the caller passes it until a call
        has gone through); ``pause_until_ms``: a pause (429, 418) this process was told
        of, for every process of the IP, at ``now_ms``. Returns (taken, the count now,
        the IP's pause end or 0)."""
        ...


@dataclass(eq=False)
class _Ticket:
    """One request waiting for its weight."""

    priority: Priority
    weight: int
    since_ms: int
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # set: it may be the head
    counted_to: int = -1  # once sent: the last window whose count holds its weight


class WeightBudget:
    def __init__(
        self,
        clock: Clock,
        limit: int = 6000,
        window_ms: int = 60_000,
        safety: float = 0.97,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        resume_share: float = 0.5,
        recovery_windows: int = 4,
        latency_s: float = 0.1,
        max_in_flight: int = 2,
        urgent_share: float = 0.1,
        spare_share: float = 0.5,
        connections: int | None = None,
        shared: SharedWindow | None = None,
    ) -> None:
        self.clock = clock
        # several processes of one IP: the window's weight is counted there too
        self.shared = shared
        self.shared_errors = 0
        self.window_ms = window_ms
        self.safety = safety
        self.limit = limit
        self.resume_share = resume_share  # of the budget in the first window after a 429
        self.recovery_windows = recovery_windows  # clean windows back to the whole budget
        self.latency_s = latency_s  # moving average of request round trips (a first guess)
        self.max_in_flight = max_in_flight
        # of every window only GAP_FILL and CLOSED may use
        self.urgent_share = urgent_share
        # of every window RECONCILE and PROXY may use at most
        self.spare_share = spare_share
        # the HTTP pool the requests go through (None: not known, no cap from it)
        self.connections = connections
        self._sleep = sleep
        self._window = -1
        self.used = 0
        self.blocked_until_ms = 0
        self.block_reason = ""
        self.requests = 0
        self.weight_sent = 0
        self.waits = 0
        self.limited = 0  # 429s received
        self.in_flight = 0  # requests sent and not yet answered
        self.in_flight_peak = 0
        self._accepted = 0  # highest used weight the exchange answered 200 with, this window
        # the window in which sending resumed after the last 429 or 418 (None: never)
        self._resume_window: int | None = None
        self.advertised: tuple[int, int] | None = None  # (limit, window) exchangeInfo states
        self._limited_ms = 0  # exchange time of the last 429
        self._freed = asyncio.Event()
        self._queues: dict[Priority, deque[_Ticket]] = {p: deque() for p in Priority}
        self._queued_weight = dict.fromkeys(Priority, 0)
        self._sent_requests = dict.fromkeys(Priority, 0)
        self._sent_weight = dict.fromkeys(Priority, 0)
        self._sent_last_window = 0  # weight this budget sent in the previous window
        self._sent_this_window = 0
        self._straddling = 0  # weight sent or answered near this window's end: the next one's too
        self._flying: set[_Ticket] = set()  # requests sent through ``sending``, unanswered
        self._unshared = 0  # weight carried into this window, not yet in the shared count
        self._pause_to_share = 0  # a pause's end not yet written to the shared budget
        self._peers_window = -1  # the window of ``_peers_now``
        self._peers_now = 0  # processes seen asking the shared window in it
        self._peers_last = 0  # ... and in the window before

    @property
    def header(self) -> str:
        """The response header carrying the used weight of this window, lower case
        (``x-mbx-used-weight-1m`` for Binance's one-minute window)."""
        for unit_ms, letter in ((86_400_000, "d"), (3_600_000, "h"), (60_000, "m")):
            if self.window_ms % unit_ms == 0:
                return f"x-mbx-used-weight-{self.window_ms // unit_ms}{letter}"
        return f"x-mbx-used-weight-{max(1, self.window_ms // 1000)}s"

    @property
    def recovering(self) -> bool:
        """A 429 was recent: the budget is still growing back, one request at a time."""
        return self._calm() <= self.recovery_windows

    def _calm(self) -> int:
        """Whole windows sent in since the last 429 or 418 pause ended."""
        if self._resume_window is None:
            return self.recovery_windows + 1
        return max(0, self._window - self._resume_window)

    def _window_of(self, ms: int) -> int:
        return (ms - _SKEW_MARGIN_MS) // self.window_ms

    def _end_ms(self) -> int:
        """When the current window ends, by this budget's numbering (the skew margin after
        the exchange's turn)."""
        return (self._window + 1) * self.window_ms + _SKEW_MARGIN_MS

    def _straddle_ms(self) -> int:
        return min(_STRADDLE_MS, self.window_ms // 8)

    def _answered_late(self, now_ms: int) -> bool:
        """An answer now may come from the exchange's next window (``_ANSWERED_MS``)."""
        return self._end_ms() - now_ms <= min(_ANSWERED_MS, self._straddle_ms())

    def _renumber(self, now_ms: int) -> None:
        """The window's length changed: the windows are numbered anew from now. What was
        used still counts in the window of now, and in the next one too when now is so
        near its end that a request answered by now may have reached the exchange after
        the turn (exchangeInfo's weight, taken under the default minute, answered just
        after a turn of a 2-second window); requests on their way are carried at the turn."""
        self._window = self._window_of(now_ms)
        late = self._answered_late(now_ms)
        self._straddling = self.used if late else min(self._straddling, self.used)
        for t in self._flying:
            t.counted_to = self._window + 1 if late else self._window

    @property
    def budget(self) -> int:
        share = 1.0
        if self.recovering:
            step = (1.0 - self.resume_share) / self.recovery_windows
            share = min(1.0, self.resume_share + step * self._calm())
        return max(1, int(self.limit * self.safety * share))

    def ceiling(self, priority: Priority) -> int:
        """The weight of a window up to which ``priority`` may fill it (module docstring)."""
        if priority <= Priority.CLOSED:
            share = 1.0
        elif priority == Priority.HISTORY:
            share = 1.0 - self.urgent_share
        else:
            share = min(self.spare_share, 1.0 - self.urgent_share)
        return max(1, int(self.budget * share))

    def _release_ms(self) -> int:
        """When the current window's last twelfth begins (HISTORY may fill it then)."""
        end_ms = (self._window + 1) * self.window_ms + _SKEW_MARGIN_MS
        return end_ms - self.window_ms // _RELEASE_PART

    def _ceiling_now(self, priority: Priority, now_ms: int) -> int:
        """``ceiling``, with HISTORY's raised to the whole budget in a window's last
        twelfth."""
        if priority == Priority.HISTORY and now_ms >= self._release_ms():
            return self.ceiling(Priority.CLOSED)
        return self.ceiling(priority)

    @property
    def in_flight_cap(self) -> int:
        """Requests that may be in flight at once: one while recovering from a 429,
        else what the latency needs to spend the budget, up to ``max_in_flight`` and
        never more than the HTTP pool's ``connections``."""
        if self.recovering:
            return 1
        mean_weight = self.weight_sent / self.requests if self.requests else 1.0
        per_s = self.budget / mean_weight * 1000 / self.window_ms
        need = math.ceil(_IN_FLIGHT_HEADROOM * per_s * self.latency_s)
        cap = min(self.max_in_flight, need)
        if self.connections is not None:
            cap = min(cap, self.connections)
        return max(1, cap)

    def set_limit(self, limit: int, window_ms: int) -> None:
        """The limit exchangeInfo states. A lower limit learned from a 429 stands while
        the stated one is unchanged (another client of the IP may be spending weight)
        and no 429 came for ``LEARNED_LIMIT_TTL_MS``; then the stated one is trusted again."""
        now_ms = self.clock.now_ms()
        stated = (limit, window_ms)
        learned = self.advertised is not None and (self.limit, self.window_ms) != self.advertised
        if stated == self.advertised and (
            not learned or now_ms - self._limited_ms < LEARNED_LIMIT_TTL_MS
        ):
            return  # nothing new: keep what a 429 taught (a limit, a window), any regrowth
        if stated != (self.limit, self.window_ms):
            log.info("weight limit %d per %d ms (from exchangeInfo)", limit, window_ms)
        recovering = self.recovering
        self.advertised = stated
        self.limit, self.window_ms = stated
        # same window, new numbering: what was used in it still counts
        self._renumber(now_ms)
        if recovering:  # regrowing starts over in the new numbering
            self._resume_window = self._window
        self._wake_head()

    def _roll(self, now_ms: int) -> None:
        window = self._window_of(now_ms)
        if window > self._window:
            self._sent_last_window = self._sent_this_window if window == self._window + 1 else 0
            self._sent_this_window = 0
            carried = self._straddling if window == self._window + 1 else 0
            for t in self._flying:  # still on its way: it may reach the exchange in this one
                if t.counted_to < window:
                    carried += t.weight
                    t.counted_to = window
            self.used = self._unshared = carried
            self._straddling = 0
            self._window = window
            self._accepted = 0

    # -- the queue ----------------------------------------------------------------------

    def _head(self) -> _Ticket | None:
        for queue in self._queues.values():  # in priority order
            if queue:
                return queue[0]
        return None

    def _wake_head(self) -> None:
        head = self._head()
        if head is not None:
            head.turn.set()

    def _dequeue(self, ticket: _Ticket) -> None:
        queue = self._queues[ticket.priority]
        was_head = self._head() is ticket
        queue.remove(ticket)
        self._queued_weight[ticket.priority] -= ticket.weight
        if was_head:
            self._wake_head()

    async def acquire(self, weight: int, priority: Priority = Priority.HISTORY) -> None:
        """Reserve ``weight`` in the current window once every request of a more urgent
        priority, and every earlier one of the same, has gone; waiting while blocked,
        while the window is full up to this priority's ceiling, or while the requests in
        flight are at their cap."""
        await self._acquire(weight, priority)

    async def _acquire(self, weight: int, priority: Priority) -> _Ticket:
        """``acquire``: the request's ticket, with the windows its weight counts in."""
        priority = Priority(priority)
        ticket = _Ticket(priority, weight, self.clock.now_ms())
        self._queues[priority].append(ticket)
        self._queued_weight[priority] += weight
        queued = True
        try:
            while True:
                ticket.turn.clear()
                if self._head() is not ticket:
                    await ticket.turn.wait()
                    continue
                now_ms = self.clock.now_ms()
                if now_ms < self.blocked_until_ms:
                    self.waits += 1
                    await self._sleep((self.blocked_until_ms - now_ms) / 1000)
                    continue
                self._roll(now_ms)
                if self.in_flight and self.in_flight >= self.in_flight_cap:
                    await self._freed.wait()
                    continue
                fits = await self._fits(ticket)
                if fits is None:  # things changed while the shared count was asked
                    continue
                if fits:
                    self.requests += 1
                    self.weight_sent += weight
                    self._sent_this_window += weight
                    self._sent_requests[priority] += 1
                    self._sent_weight[priority] += weight
                    queued = False
                    self._dequeue(ticket)
                    return ticket
                self.waits += 1
                wake_ms = (self._window + 1) * self.window_ms + _SKEW_MARGIN_MS
                if (
                    priority == Priority.HISTORY
                    and now_ms < self._release_ms()
                    and self.used + weight <= self.ceiling(Priority.CLOSED)
                ):
                    wake_ms = self._release_ms()  # the urgent share is history's then
                await self._sleep(max(1, wake_ms - now_ms) / 1000)
        finally:
            if queued:  # cancelled while waiting: the next in line goes on
                self._dequeue(ticket)

    def room(self, priority: Priority) -> int:
        """Weight ``priority`` may still take in this window without waiting (0 while
        every request is paused): a proxy answers 429 itself rather than queue."""
        now_ms = self.clock.now_ms()
        if now_ms < self.blocked_until_ms:
            return 0
        self._roll(now_ms)
        return max(0, self._ceiling_now(priority, now_ms) - self.used)

    def retry_after_ms(self) -> int:
        """Until the pause ends, or else the current window does."""
        now_ms = self.clock.now_ms()
        if now_ms < self.blocked_until_ms:
            return self.blocked_until_ms - now_ms
        return (self._window_of(now_ms) + 1) * self.window_ms + _SKEW_MARGIN_MS - now_ms

    async def _fits(self, ticket: _Ticket) -> bool | None:
        """Take the ticket's weight from the window if it fits its priority's ceiling (or
        the window is empty): here, and in the shared window when there is one. None:
        while the shared window answered, the window turned, a 429 paused every request,
        another ticket went ahead or the requests in flight reached their cap: what was
        taken is not used (the exchange never sees it: a safe loss), ask again."""
        weight, priority = ticket.weight, ticket.priority
        ceiling = self._ceiling_now(priority, self.clock.now_ms())
        if self.shared is not None:
            window, carried, pause_ms = self._window, self._unshared, self._pause_to_share
            try:
                taken, used, paused_ms = await self.shared.take(
                    window,
                    self.window_ms,
                    weight,
                    ceiling,
                    self.used,
                    carried,
                    pause_ms,
                    self.clock.now_ms(),
                )
            except Exception as e:  # the shared count is out of reach: this process's own,
                # within its part of the window (the processes of the IP last seen)
                self.shared_errors += 1
                if self.shared_errors == 1 or self.shared_errors % 100 == 0:
                    log.warning(
                        "the shared weight budget cannot be read (%s): this process takes "
                        "1/%d of the window",
                        e,
                        self.peers,
                    )
                ceiling //= self.peers
            else:
                self._saw_peers(window, self.shared.takers)
                if self._window == window:  # the carry is in the shared count now
                    self._unshared -= carried
                if self._pause_to_share == pause_ms:  # it is the IP's now
                    self._pause_to_share = 0
                now_ms = self.clock.now_ms()
                if paused_ms > now_ms:  # another process of the IP was answered 429/418
                    self._pause(paused_ms, "another process of this IP was answered 429 or 418")
                self._roll(now_ms)
                if (
                    self._window != window  # ``used`` is the old window's count
                    or now_ms < self.blocked_until_ms
                    or self._head() is not ticket
                    or (self.in_flight and self.in_flight >= self.in_flight_cap)
                ):
                    return None
                self.used = max(self.used, used)
                # (no margin at sending here, as before: ``sending`` carries the weight
                # of a request answered late or still on its way at the turn)
                ticket.counted_to = self._window
                return taken
        if self.used + weight <= ceiling or self.used == 0:
            self.used += weight
            self._count(ticket)
            return True
        return False

    @property
    def peers(self) -> int:
        """The processes of the IP sharing its budget, as last seen (this window's askers
        or the last one's, the more: early in a window not all have asked yet)."""
        return max(1, self._peers_now, self._peers_last)

    def _saw_peers(self, window: int, takers: int) -> None:
        if window != self._peers_window:
            self._peers_last = self._peers_now if window == self._peers_window + 1 else 0
            self._peers_now, self._peers_window = 0, window
        self._peers_now = max(self._peers_now, takers)

    def _count(self, ticket: _Ticket) -> None:
        """The ticket's weight, just taken in this window, counts in the next one too
        when sent near this one's end."""
        ticket.counted_to = self._window
        if self._end_ms() - self.clock.now_ms() <= self._straddle_ms():
            self._straddling += ticket.weight
            ticket.counted_to += 1

    @contextlib.asynccontextmanager
    async def sending(
        self, weight: int, priority: Priority = Priority.HISTORY
    ) -> AsyncIterator[None]:
        """Reserve ``weight`` and count it in flight until the answer is in (handle the
        answer inside, so a 429 blocks everyone before the next sender is let go). Until
        then the weight counts in every window that begins (the exchange may not have had
        the request yet), and in the next one when the answer comes near a window's end."""
        ticket = await self._acquire(weight, priority)
        self._flying.add(ticket)
        self.in_flight += 1
        self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
        started_s = time.perf_counter()
        try:
            yield
        finally:
            latency_s = time.perf_counter() - started_s
            self.latency_s += (latency_s - self.latency_s) * _LATENCY_WEIGHT
            now_ms = self.clock.now_ms()
            self._roll(now_ms)
            self._flying.discard(ticket)
            if ticket.counted_to == self._window and self._answered_late(now_ms):
                self._straddling += ticket.weight
                ticket.counted_to += 1
            self.in_flight -= 1
            freed, self._freed = self._freed, asyncio.Event()
            freed.set()

    # -- what the exchange says ---------------------------------------------------------

    def observe(
        self, used_in_window: int, accepted: bool = True, sent_ms: int | None = None
    ) -> None:
        """The exchange's count for the current window (from the response header);
        ``accepted``: it came with a 200, so the limit is at least that much. An answer to
        a request sent (``sent_ms``) in a window that has ended since is not heeded: the
        exchange may have counted it in the old window, whose total it then carries, and
        taking that as the new window's use would idle every sender for the rest of it
        (with several requests in flight, one of them usually straddles the turn)."""
        now_ms = self.clock.now_ms()
        self._roll(now_ms)
        if sent_ms is not None and self._window_of(sent_ms) < self._window:
            return
        if used_in_window > self.used:
            self.used = used_in_window
        if accepted and used_in_window > self._accepted:
            self._accepted = used_in_window

    def block(self, wait_s: float, reason: str) -> None:
        """Pause every request for ``wait_s`` (a 429's or 418's ``Retry-After``); with a
        shared budget every process of the IP is told (``share_pause``)."""
        until_ms = self.clock.now_ms() + int(wait_s * 1000)
        self._pause(until_ms, reason)
        if self.shared is not None and until_ms > self._pause_to_share:
            self._pause_to_share = until_ms

    def _pause(self, until_ms: int, reason: str) -> None:
        if until_ms > self.blocked_until_ms:
            self.blocked_until_ms = until_ms
            self.block_reason = reason
            wait_s = (until_ms - self.clock.now_ms()) / 1000
            log.warning("all REST requests paused for %.0f s: %s", wait_s, reason)

    async def share_pause(self) -> None:
        """Tell every process of the IP of this process's pause now (not with its next
        request, which waits for the pause's end): call after ``block``, ``banned`` or
        ``limit_reached``. Their next request then waits too: each would otherwise need a
        429 of its own, and the exchange bans an IP that goes on after a 429."""
        if self.shared is None or not self._pause_to_share:
            return
        pause_ms = self._pause_to_share
        try:
            await self.shared.take(
                self._window, self.window_ms, 0, 0, self.used, 0, pause_ms, self.clock.now_ms()
            )
        except Exception as e:  # out of reach: each process learns by a 429 of its own
            self.shared_errors += 1
            log.warning("the pause could not be shared (%s)", e)
            return
        if self._pause_to_share == pause_ms:
            self._pause_to_share = 0

    def banned(self, retry_after_s: float, reason: str) -> None:
        """A 418: pause everyone for the ban, then resume gradually as after a 429."""
        self.block(retry_after_s, reason)
        self._resume_window = self._window_of(self.blocked_until_ms + _SKEW_MARGIN_MS)

    def limit_reached(
        self,
        retry_after_s: float,
        reason: str,
        stated_limit: int | None = None,
        used: int | None = None,
        stated_window_ms: int | None = None,
    ) -> None:
        """A 429: pause everyone for ``Retry-After`` and resume gradually. The limit
        shrinks to the one the answer states (Binance's -1003 says "current limit is N")
        when lower; when the answer states none, to the weight the exchange accepted in
        this window (half the limit if it accepted none). A 429 that states a limit the
        IP has not reached (``used``, its weight header, below it) is not about weight (an
        overloaded exchange): it pauses but teaches no lower limit. A stated window
        ("per 2 SECOND") other than the plan's is taken with its limit when it allows
        less weight a second: the limit alone, read against the wrong window, would
        starve the plan (6 per 2 s taken as 6 a minute)."""
        now_ms = self.clock.now_ms()
        self._roll(now_ms)
        if (
            stated_limit is not None
            and stated_window_ms is not None
            and stated_window_ms != self.window_ms
            and (used is None or used >= stated_limit)
            and stated_limit * self.window_ms < self.limit * stated_window_ms
        ):
            log.warning(
                "weight limit %d per %d ms stated by a 429 (was %d per %d ms)",
                stated_limit,
                stated_window_ms,
                self.limit,
                self.window_ms,
            )
            self.limit, self.window_ms = stated_limit, stated_window_ms
            self._renumber(now_ms)  # as set_limit: the numbering changes
        first = now_ms >= self.blocked_until_ms  # not one of a volley already answered
        self.limited += 1
        self._limited_ms = now_ms
        about_weight = not (stated_limit is not None and used is not None and used < stated_limit)
        if about_weight:  # this window is full, whatever our own count says (others'
            # requests from the IP): after Retry-After, wait for the next one
            self.used = max(self.used, used if used is not None else self.limit)
        if stated_limit is not None and stated_limit < self.limit:
            shrunk = stated_limit
        elif not about_weight:
            shrunk = self.limit  # not a weight limit: keep it
        else:
            shrunk = (
                self._accepted if self._accepted else (self.limit // 2 if first else self.limit)
            )
        if 0 < shrunk < self.limit:
            log.warning(
                "weight limit lowered from %d to %d per %d ms after a 429",
                self.limit,
                shrunk,
                self.window_ms,
            )
            self.limit = shrunk
        self.block(retry_after_s, reason)
        self._resume_window = self._window_of(self.blocked_until_ms + _SKEW_MARGIN_MS)

    # -- the plan, for health, metrics and the fetcher ----------------------------------

    def queued_ahead(self, priority: Priority) -> int:
        """Weight waiting at ``priority`` or more urgent ones."""
        return sum(w for p, w in self._queued_weight.items() if p <= priority)

    def eta_ms(self, weight: int, priority: Priority = Priority.HISTORY) -> int:
        """Milliseconds until ``weight`` more weight of ``priority`` could be spent: after
        what is queued at that priority or a more urgent one, within the ceiling of each
        window, from the end of any pause; also bounded by the requests in flight at the
        observed latency. An estimate: urgent work arriving later comes first."""
        now_ms = self.clock.now_ms()
        self._roll(now_ms)
        start_ms = max(now_ms, self.blocked_until_ms)
        total = self.queued_ahead(priority) + max(0, weight)
        if total <= 0:
            return max(0, start_ms - now_ms)
        per_window = self.ceiling(priority)
        window = self._window_of(start_ms)
        room = max(0, per_window - self.used) if window == self._window else per_window
        if total <= room:
            by_weight_ms = start_ms
        else:
            windows = math.ceil((total - room) / per_window)
            window_start_ms = (window + windows) * self.window_ms + _SKEW_MARGIN_MS
            by_weight_ms = max(start_ms, window_start_ms)
        mean_weight = self.weight_sent / self.requests if self.requests else 2.0
        requests = total / mean_weight
        by_latency_ms = start_ms + requests * self.latency_s * 1000 / self.in_flight_cap
        return max(0, int(max(by_weight_ms, by_latency_ms)) - now_ms)

    def weight_per_s(self) -> float:
        """The rate the plan spends weight at when busy: the budget over the window."""
        return self.budget * 1000 / self.window_ms

    def stats(self) -> dict[str, Any]:
        """The queue and what was sent, per priority, and the state of the window."""
        now_ms = self.clock.now_ms()
        priorities: dict[str, dict[str, int | None]] = {}
        for p in Priority:
            queue = self._queues[p]
            priorities[p.name.lower()] = {
                "queued": len(queue),
                "queued_weight": self._queued_weight[p],
                "oldest_wait_ms": max(0, now_ms - queue[0].since_ms) if queue else None,
                "sent": self._sent_requests[p],
                "weight_sent": self._sent_weight[p],
                "ceiling": self.ceiling(p),
            }
        return {
            "limit": self.limit,
            "window_ms": self.window_ms,
            "budget": self.budget,
            "used": self.used,
            "in_flight": self.in_flight,
            "in_flight_cap": self.in_flight_cap,
            "in_flight_peak": self.in_flight_peak,
            "recovering": self.recovering,
            "weight_per_s": round(self.weight_per_s(), 3),
            "sent_last_window": self._sent_last_window,
            "shared": None
            if self.shared is None
            else {"processes": self.peers, "errors": self.shared_errors},
            "priorities": priorities,
        }
