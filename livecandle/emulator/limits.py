"""Binance's per-IP request-weight limit, as the emulator enforces it.

Fixed one-minute windows of server time; over the limit a request gets HTTP 429 with
``Retry-After`` (seconds to the window end); an IP that keeps sending while told to wait
is banned with HTTP 418, two minutes for the first ban and doubling for each repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Ip:
    window: int = -1
    used: int = 0
    retry_until_ms: int = 0
    ignored: int = 0
    banned_until_ms: int = 0
    bans: int = 0


@dataclass
class Verdict:
    status: int  # 200, 429 or 418
    used: int
    retry_after_s: int = 0


@dataclass
class WeightLimiter:
    limit: int = 6000
    window_ms: int = 60_000
    enforce: bool = True
    ban_after: int = 3
    first_ban_ms: int = 120_000
    max_ban_ms: int = 3 * 86_400_000
    ips: dict[str, _Ip] = field(default_factory=dict)
    rejected_429: int = 0
    rejected_418: int = 0
    accepted_weight: int = 0
    # fault switches (issue 13): every request is a 429 until ``storm_until_ms`` whatever
    # its weight (an overloaded exchange); every IP is banned until ``ban_until_ms``
    storm_until_ms: int = 0
    ban_until_ms: int = 0

    def charge(self, ip: str, weight: int, now_ms: int) -> Verdict:
        s = self.ips.setdefault(ip, _Ip())
        window = now_ms // self.window_ms
        if window != s.window:
            s.window, s.used = window, 0
        s.used += weight
        if not self.enforce:
            self.accepted_weight += weight
            return Verdict(200, s.used)
        banned_until_ms = max(s.banned_until_ms, self.ban_until_ms)
        if now_ms < banned_until_ms:
            self.rejected_418 += 1
            return Verdict(418, s.used, _ceil_s(banned_until_ms - now_ms))
        if now_ms < s.retry_until_ms:
            s.ignored += 1
            if s.ignored >= self.ban_after:
                ban = min(self.max_ban_ms, self.first_ban_ms * 2**s.bans)
                s.bans += 1
                s.banned_until_ms = now_ms + ban
                s.ignored = 0
                self.rejected_418 += 1
                return Verdict(418, s.used, _ceil_s(ban))
        if now_ms < self.storm_until_ms:
            s.retry_until_ms = max(s.retry_until_ms, self.storm_until_ms)
            self.rejected_429 += 1
            return Verdict(429, s.used, _ceil_s(self.storm_until_ms - now_ms))
        if s.used > self.limit:
            s.retry_until_ms = (window + 1) * self.window_ms
            self.rejected_429 += 1
            return Verdict(429, s.used, _ceil_s(s.retry_until_ms - now_ms))
        self.accepted_weight += weight
        return Verdict(200, s.used)

    def reset(self) -> None:
        self.ips.clear()
        self.storm_until_ms = self.ban_until_ms = 0
        self.rejected_429 = self.rejected_418 = self.accepted_weight = 0


def _ceil_s(ms: int) -> int:
    return max(1, -(-ms // 1000))
