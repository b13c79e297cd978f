"""Health: the bodies of ``/healthz`` and ``/metrics``.

The web app's own parts (Redis, socket.io, HTTP counts, the Binance proxy: its
forwarding, order books and websocket streams) are measured here; the rest of the
process comes through ``Status``. Parts this process does not run (a ``serve --role
web`` alone) are read from the heartbeats the other processes keep in Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livecandle.store import Store
from livecandle.store.leases import lease_workers
from livecandle.web.counting import RequestCounts
from livecandle.web.depth import Depth
from livecandle.web.proxy.proxy import Proxy
from livecandle.web.realtime import Realtime
from livecandle.web.status import Status
from livecandle.web.stream_proxy import StreamProxy


class Health:
    def __init__(
        self, status: Status, store: Store, realtime: Realtime, counts: RequestCounts
    ) -> None:
        self.status = status
        self.store = store
        self.realtime = realtime
        self.counts = counts
        self._beating: set[str] = set()  # roles running apart whose heartbeat was seen
        self.on_demand: Callable[[], dict[str, Any]] | None = None  # the proxy's counts
        # the Binance proxy's parts, set by the app that has them
        self.proxy: Proxy | None = None
        self.depth: Depth | None = None
        self.streams: StreamProxy | None = None

    async def body(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of ``/healthz``: 503 when Redis is down, ``degraded``
        when the exchange is out of reach, a task is failing, Redis refuses writes
        (``storage``) or any other problem is reported (``problems``: one readable line
        each, from this process's ``Status`` and the heartbeats of the parts running
        apart)."""
        redis_ok, redis_ms, redis_error = True, None, None
        try:  # Redis's own answer time: a busy event loop does not make it "down"
            redis_ms = round(await self.store.ping_ms(), 3)
        except Exception as e:  # any failure here is the answer, not a crash
            redis_ok, redis_error = False, f"{type(e).__name__}: {e}"
        parts = self.status.health()
        realtime = self.realtime
        body: dict[str, Any] = {
            "status": "ok",
            "redis": {"ok": redis_ok, "latency_ms": redis_ms, "error": redis_error},
            "exchange": parts["exchange"],
            "tasks": parts["tasks"],
            "realtime": {
                "clients": realtime.clients,
                "received": realtime.received,
                "emitted": realtime.emitted,
                "slow_clients_dropped": realtime.slow_clients_dropped,
                "longest_queue": realtime.queues.longest(),
            },
        }
        if self.on_demand is not None:  # symbols followed on demand, and the cap
            body["on_demand"] = self.on_demand()
        proxy = self.proxy_stats()
        if proxy:
            body["proxy"] = proxy
        problems: list[str] = list(parts.get("problems", []))
        for role in ("stream", "fetcher"):
            if role in parts:
                body[role] = parts[role]
            elif redis_ok:
                beat = await self.store.heartbeat(role)
                body[role] = beat
                problems += (beat or {}).get("problems", [])  # a process running apart
                problems += self._missing(role, beat)
        if redis_ok and (leases := await lease_workers(self.store)):
            body["leases"] = leases  # the workers sharing the symbols, and their shares
        storage = parts.get("storage")  # writes refused while PING works (full)
        if storage is not None:
            body["storage"] = storage
        body["problems"] = list(dict.fromkeys(problems))
        degraded = self.status.exchange_problem is not None or not self.status.healthy or problems
        if not redis_ok:
            body["status"] = "down"
            return 503, body
        if degraded:
            body["status"] = "degraded"
        return 200, body

    def proxy_stats(self) -> dict[str, Any]:
        """The Binance proxy's figures: REST answers (local, forwarded, kept, refused
        with its own 429), the order books, the websocket streams and their hub."""
        out: dict[str, Any] = {}
        if self.proxy is not None:
            up = self.proxy.upstream
            out["rest"] = {
                "served_locally": self.proxy.served_locally,
                "forwarded": up.forwarded,
                "cache_hits": up.cache_hits,
                "refused_429": up.refused,
            }
        if self.depth is not None:
            out["books"] = {
                **self.depth.books.stats(),
                "depth_local": self.depth.served_local,
                "depth_forwarded": self.depth.forwarded,
            }
        if self.streams is not None:
            stats = self.streams.stats()
            hub = stats.pop("hub")
            hub["upstream_connections"] = len(hub.pop("connections"))
            stats["readers_dropped"] = _dropped(stats["violations"])
            out["streams"] = {**stats, "hub": hub}
        return out

    def proxy_metrics(self) -> list[str]:
        """Prometheus lines of the proxy (``proxy_stats``; the books' are ``Depth``'s)."""
        lines: list[str] = []
        if self.proxy is not None:
            up = self.proxy.upstream
            lines += [
                "# TYPE livecandle_proxy_requests_total counter",
                f'livecandle_proxy_requests_total{{answer="local"}} {self.proxy.served_locally}',
                f'livecandle_proxy_requests_total{{answer="forwarded"}} {up.forwarded}',
                f'livecandle_proxy_requests_total{{answer="cached"}} {up.cache_hits}',
                f'livecandle_proxy_requests_total{{answer="refused_429"}} {up.refused}',
            ]
        if self.depth is not None:
            books = self.depth.books.stats()
            lines += [
                "# TYPE livecandle_order_book_snapshots gauge",
                f"livecandle_order_book_snapshots {books['snapshots']}",
                "# TYPE livecandle_order_book_gaps gauge",
                f"livecandle_order_book_gaps {books['gaps']}",
            ]
        if self.streams is not None:
            s = self.streams.stats()
            hub = s["hub"]
            gauges = {
                "connections": s["connections"],
                "queued_frames": s["queued"],
                "streams": hub["streams"],
                "consumers": hub["consumers"],
                "upstream_streams": hub["upstream_streams"],
                "upstream_lingering": hub["lingering"],
                "upstream_connections": len(hub["connections"]),
            }
            counters = {
                "requests": s["requests"],
                "readers_dropped": _dropped(s["violations"]),
                "frames": hub["frames"],
                "delivered": hub["delivered"],
                "unclaimed": hub["unclaimed"],
                "upstream_subscribes": hub["subscribes"],
                "upstream_unsubscribes": hub["unsubscribes"],
                "upstream_errors": hub["upstream_errors"],
            }
            for name, value in gauges.items():
                lines += [
                    f"# TYPE livecandle_stream_proxy_{name} gauge",
                    f"livecandle_stream_proxy_{name} {value}",
                ]
            for name, value in counters.items():
                lines += [
                    f"# TYPE livecandle_stream_proxy_{name}_total counter",
                    f"livecandle_stream_proxy_{name}_total {value}",
                ]
            lines.append("# TYPE livecandle_stream_proxy_violations_total counter")
            # readers dropped are the *_dropped reasons (slow, stalled)
            lines += [
                f'livecandle_stream_proxy_violations_total{{reason="{r}"}} {n}'
                for r, n in sorted(s["violations"].items())
            ]
        return lines

    def _missing(self, role: str, beat: dict[str, Any] | None) -> list[str]:
        """A process running apart stopped beating: it died, or cannot write to Redis."""
        if beat is not None:
            self._beating.add(role)
            return []
        if role in self._beating:
            return [f"no heartbeat from the {role} process (stopped, or cannot write to Redis)"]
        return []  # none ever seen: no such process is run with this web node

    def metrics(self) -> str:
        """``/metrics`` in Prometheus's text format."""
        refused = self.counts.refused  # by the per-address and per-client limits
        lines = [
            "# TYPE livecandle_http_requests_total counter",
            f"livecandle_http_requests_total {self.counts.requests}",
            "# TYPE livecandle_http_client_errors_total counter",
            f"livecandle_http_client_errors_total {self.counts.errors_4xx}",
            "# TYPE livecandle_socketio_clients gauge",
            f"livecandle_socketio_clients {self.realtime.clients}",
            "# TYPE livecandle_socketio_emitted_total counter",
            f"livecandle_socketio_emitted_total {self.realtime.emitted}",
            "# TYPE livecandle_socketio_slow_clients_dropped_total counter",
            f"livecandle_socketio_slow_clients_dropped_total {self.realtime.slow_clients_dropped}",
            "# TYPE livecandle_refused_total counter",
            *(f'livecandle_refused_total{{reason="{r}"}} {n}' for r, n in refused.items()),
            *self.status.metrics(),
            *self.proxy_metrics(),
        ]
        return "\n".join(lines) + "\n"


def _dropped(violations: dict[str, int]) -> int:
    """Readers the stream proxy dropped (a full queue, a stall): the ``*_dropped``."""
    return sum(n for reason, n in violations.items() if reason.endswith("_dropped"))
