"""Status: what the web layer may ask of the process it runs in.

The web app reports on the other parts of the process (fetcher, stream, exchange
client, background tasks) without knowing them: the runtime hands it an object with
this shape. A web process running alone answers from the heartbeats in Redis for the
parts it does not run.
"""

from __future__ import annotations

from typing import Any, Protocol

from livecandle.domain.model import SeriesKey


class Status(Protocol):
    def now_ms(self) -> int:
        """Server time: the exchange's clock as this process estimates it."""
        ...

    @property
    def exchange_problem(self) -> str | None:
        """Why the exchange cannot be used right now, if it cannot."""
        ...

    @property
    def healthy(self) -> bool:
        """Every background task runs (none failing and waiting to restart)."""
        ...

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` parts this process knows: ``exchange``, ``tasks`` and
        ``problems`` (readable lines; any makes the status degraded) always, ``stream``
        and ``fetcher`` when it runs them."""
        ...

    def metrics(self) -> list[str]:
        """Prometheus text lines of the parts outside the web app."""
        ...

    async def fetch_older(self, series: SeriesKey, end_ms: int, limit: int) -> int | None:
        """Fetch from the exchange and store the ``limit`` candles of ``series`` opening
        up to ``end_ms`` (history paging); the number the exchange returned, or None when
        this process cannot ask the exchange (no fetcher)."""
        ...
