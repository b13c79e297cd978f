"""``livecandle`` command line: serve, demo, emulator, backfill, verify, aggregate.

Bad input ends the command with one readable line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from livecandle.config import (
    ConfigError,
    Settings,
    parse_intervals,
    parse_symbol_spec,
    parse_symbols,
)
from livecandle.domain.clock import SystemClock
from livecandle.domain.intervals import Interval, parse_interval
from livecandle.domain.model import SeriesKey, validate_symbol

log = logging.getLogger("livecandle")


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def parse_date(text: str, name: str) -> int:
    """``2024-01-31``, ``2024-01-31T12:00[:00][Z|+00:00]`` (UTC) or epoch ms -> ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{name} {text!r} is not a date (use 2024-01-31, 2024-01-31T12:00Z or epoch ms)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def _fmt_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise


def _run(coro_fn: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> Any:
    """Run until done or SIGINT/SIGTERM (which sets the stop event)."""

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await coro_fn(stop)

    # libuv's io_uring (file operations only, none of ours) keeps a kernel thread polling
    # its queue: measured as half the CPU of an otherwise idle web process
    os.environ.setdefault("UV_USE_IO_URING", "0")
    try:  # libuv's loop: the same asyncio API at a fraction of the CPU per socket event
        import uvloop
    except ImportError:  # (not on Windows)
        return asyncio.run(main())
    return uvloop.run(main())


# -- commands ---------------------------------------------------------------------------


def cmd_emulator(args: argparse.Namespace, settings: Settings) -> int:
    from livecandle.emulator import Emulator, EmulatorConfig, Faults, uvicorn_config

    outages = []
    for spec in args.outage or []:
        start, sep, end = spec.partition("/")
        if not sep:
            raise UsageError(f"--outage {spec!r} is not START/END")
        outages.append((parse_date(start, "--outage start"), parse_date(end, "--outage end")))
    offset = args.clock_offset_ms
    if args.start_time is not None:
        offset = parse_date(args.start_time, "--start-time") - SystemClock().now_ms()
    from livecandle.emulator.universe import synthetic_symbols

    if args.synthetic is not None and args.synthetic < 0:
        raise UsageError("--synthetic must be >= 0")
    if args.total_rate is not None and args.total_rate < 0:
        raise UsageError("--total-rate must be >= 0")
    if args.symbols:
        symbols = parse_symbols(args.symbols, "--symbols")
    elif args.synthetic:  # the synthetic universe alone
        symbols = ()
    else:
        symbols = settings.symbols
    if args.synthetic:
        symbols = (*symbols, *synthetic_symbols(args.synthetic, args.seed, exclude=symbols))
    config = EmulatorConfig(
        symbols=symbols,
        seed=args.seed,
        rate_per_s=args.rate,
        total_rate=args.total_rate,
        history_days=args.history_days,
        clock_offset_ms=offset,
        weight_limit=args.weight_limit,
        weight_window_ms=int(args.weight_window * 1000),
        enforce_weights=not args.no_weight_limits,
        outages_ms=tuple(outages),
    )
    faults = Faults(
        fail_rate=args.fail_rate,
        skip_rate=args.skip_rate,
        max_connection_age_s=args.max_connection_age,
        ping_interval_s=args.ping_interval,
    )
    emulator = Emulator(config, faults)

    async def run(stop: asyncio.Event) -> None:
        from livecandle.runtime import http_server

        config = uvicorn_config(
            emulator, args.host, args.port, ws_per_message_deflate=not args.no_ws_compression
        )
        server, task, port = await http_server.start(config)
        print(
            f"emulator listening on http://{args.host}:{port} (ws://{args.host}:{port}/stream)"
            f" symbols={','.join(symbols) if len(symbols) <= 20 else f'{len(symbols)} symbols'}"
            f" seed={args.seed}",
            flush=True,
        )
        await stop.wait()
        await http_server.stop(server, task)

    _run(run)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from livecandle.runtime.serve import serve, settle_gc

    known = {"fetcher", "stream", "web"}
    roles = known if args.role == "all" else {r.strip() for r in args.role.split(",")}
    if not roles or not roles <= known:
        raise UsageError(f"--role {args.role!r}: use all, or a comma list of fetcher, stream, web")
    # the fetcher alone is background work: the live path on this machine comes first
    nice = settings.fetcher_nice if roles == {"fetcher"} else 0
    _run(lambda stop: serve(settings, roles, stop, nice=nice, started=lambda _: settle_gc()))
    return 0


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, label: str, stream: Any = sys.stderr) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream
        self.started_s = time.monotonic()
        self.tty = stream.isatty()
        self._last_s = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now_s = time.monotonic()
        if not final and now_s - self._last_s < (0.1 if self.tty else 2.0):
            return
        self._last_s = now_s
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        rate = done / max(1e-9, now_s - self.started_s)
        line = f"{self.label} [{bar:<30}] {frac:6.1%} {done}/{self.total} candles {rate:,.0f}/s"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from livecandle.exchange.binance.rest import BinanceRest
    from livecandle.official.background_fetcher import BackgroundFetcher
    from livecandle.runtime.serve import redis_for, store_for

    try:
        series = SeriesKey(validate_symbol(args.symbol.upper()), parse_interval(args.interval))
    except ValueError as e:
        raise UsageError(str(e)) from None
    since = parse_date(args.since, "--since")
    until = parse_date(args.until, "--until") if args.until else None
    if until is not None and until < since:
        raise UsageError(f"--until {args.until} is before --since {args.since}")

    async def run(stop: asyncio.Event) -> int:
        async with redis_for(settings) as client:
            store = store_for(client, settings)
            async with BinanceRest(settings.binance_rest_url) as rest:
                fetcher = BackgroundFetcher(store, rest, [series])
                await rest.server_time()
                now_ms = rest.clock.now_ms()
                end = min(until, now_ms) if until is not None else now_ms
                interval: Interval = series.interval
                first = interval.open_of(since)
                if first < since:
                    first = interval.next_open(first)
                total = interval.count_between(first, interval.next_open(interval.open_of(end)))
                bar = Progress(total, f"{series}")

                def progress(result: Any, last_open: int) -> None:
                    bar.update(interval.count_between(first, interval.next_open(last_open)))

                result = await fetcher.sync(series, since, until, progress)
                bar.update(total, final=True)
                gaps = f", {len(result.gaps)} exchange gap(s) recorded" if result.gaps else ""
                print(
                    f"{series}: {result.fetched} candles fetched in {result.requests} "
                    f"request(s), {result.stored} new, {result.replaced} replaced{gaps}; "
                    f"range {_fmt_ms(since)} .. {_fmt_ms(end)} UTC"
                )
                return 0

    return int(_run(run))


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from livecandle.official.integrity import verify
    from livecandle.runtime.serve import redis_for, store_for

    symbol = None
    if args.symbol:
        try:
            symbol = validate_symbol(args.symbol.upper())
        except ValueError as e:
            raise UsageError(str(e)) from None
    interval = None
    if args.interval:
        try:
            interval = parse_interval(args.interval)
        except ValueError as e:
            raise UsageError(str(e)) from None

    async def run(stop: asyncio.Event) -> int:
        async with redis_for(settings) as client:
            store = store_for(client, settings)
            stored = await store.stored_series()
            chosen = [
                s
                for s in stored
                if (symbol is None or s.symbol == symbol)
                and (interval is None or s.interval == interval)
            ]
            if not chosen and symbol and interval:
                chosen = [SeriesKey(symbol, interval)]
            now_ms = args.now_ms if args.now_ms is not None else SystemClock().now_ms()
            report = await verify(store, chosen, now_ms, repair=args.repair)
            if args.json:
                sys.stdout.write(msgspec.json.encode(report.as_json()).decode() + "\n")
            else:
                print(report.text() if chosen else "no stored series match")
            return 0 if report.ok else 1

    return int(_run(run))


def cmd_aggregate(args: argparse.Namespace, settings: Settings) -> int:
    from livecandle.archive.aggregate_csv import CsvError, aggregate_file, aggregate_to_path

    try:
        interval = parse_interval(args.interval)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not os.path.isfile(args.file):
        raise UsageError(f"file {args.file!r} does not exist")
    try:
        if args.output:
            rows = aggregate_to_path(args.file, interval, args.output)
        else:
            rows = aggregate_file(args.file, interval, sys.stdout)
            sys.stdout.flush()
    except CsvError as e:
        raise UsageError(f"{args.file}: {e}; no complete output was written") from None
    print(f"{rows} {interval.name} candles written", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from livecandle.runtime.demo import demo

    _run(lambda stop: demo(settings, args, stop))
    return 0


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livecandle", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--symbols", help="comma list (default LIVECANDLE_SYMBOLS or BTCUSDT,ETHUSDT)")
    p.add_argument("--intervals", help="comma list (default LIVECANDLE_INTERVALS)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the service (fetcher, stream, web)")
    s.add_argument("--role", default="all", help="all, or a comma list of fetcher, stream, web")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(fn=cmd_serve)

    d = sub.add_parser("demo", help="emulator + service together, fully offline")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.add_argument("--rate", type=float, default=20.0, help="emulated trades/s per symbol")
    d.add_argument("--seed", type=int, default=1)
    d.set_defaults(fn=cmd_demo)

    e = sub.add_parser("emulator", help="a local server speaking Binance's market-data API")
    e.add_argument("--host", default="127.0.0.1")
    e.add_argument("--port", type=int, default=9400)
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--rate", type=float, default=5.0, help="live aggTrades/s per symbol")
    e.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="N more symbols with realistic names (seeded), after any --symbols",
    )
    e.add_argument(
        "--total-rate",
        type=float,
        metavar="T",
        help="aggTrades/s of the whole market, skewed across symbols (replaces --rate)",
    )
    e.add_argument("--history-days", type=int, default=1100)
    e.add_argument("--clock-offset-ms", type=int, default=0)
    e.add_argument("--start-time", help="emulated clock at start (UTC date/time)")
    e.add_argument("--weight-limit", type=int, default=6000)
    e.add_argument("--weight-window", type=float, default=60.0, help="seconds (Binance: 60)")
    e.add_argument("--no-weight-limits", action="store_true")
    e.add_argument("--fail-rate", type=float, default=0.0, help="share of REST calls -> 5xx")
    e.add_argument("--skip-rate", type=float, default=0.0, help="share of aggTrades not sent")
    e.add_argument("--max-connection-age", type=float, default=86_400.0, help="seconds")
    e.add_argument("--ping-interval", type=float, default=20.0, help="seconds")
    e.add_argument("--outage", action="append", help="START/END without trades or klines")
    e.add_argument(
        "--no-ws-compression",
        action="store_true",
        help="refuse permessage-deflate on websockets (default: accept it when offered)",
    )
    e.set_defaults(fn=cmd_emulator)

    b = sub.add_parser("backfill", help="fetch official history into Redis")
    b.add_argument("symbol")
    b.add_argument("interval")
    b.add_argument("--since", required=True)
    b.add_argument("--until")
    b.set_defaults(fn=cmd_backfill)

    v = sub.add_parser("verify", help="check the stored data's invariants")
    v.add_argument("--symbol")
    v.add_argument("--interval")
    v.add_argument("--json", action="store_true")
    v.add_argument("--repair", action="store_true", help="fix same-score duplicates and meta")
    v.add_argument(
        "--now-ms",
        type=int,
        help="judge what has closed at this exchange time (an emulator's clock), not now",
    )
    v.set_defaults(fn=cmd_verify)

    a = sub.add_parser("aggregate", help="aggTrades CSV -> klines CSV (data.binance.vision)")
    a.add_argument("--interval", required=True)
    a.add_argument("--output", "-o", help="write here instead of stdout")
    a.add_argument("file")
    a.set_defaults(fn=cmd_aggregate)
    return p


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        settings = Settings.from_env(os.environ if environ is None else environ)
        overrides: dict[str, Any] = {}
        if args.symbols:  # names and patterns (``*``, ``*USDT``) as LIVECANDLE_SYMBOLS
            overrides["symbols"], overrides["symbol_patterns"] = parse_symbol_spec(
                args.symbols, "--symbols"
            )
        if args.intervals:
            overrides["intervals"] = parse_intervals(args.intervals, "--intervals")
        if getattr(args, "host", None) and args.command != "emulator":
            overrides["host"] = args.host
        if getattr(args, "port", None) and args.command != "emulator":
            overrides["port"] = args.port
        settings = settings.with_(**overrides)
        return int(args.fn(args, settings))
    except (UsageError, ConfigError) as e:
        print(f"livecandle {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one readable line, not a traceback, for expected failures
        from redis.exceptions import RedisError

        from livecandle.exchange.binance.rest import BinanceError, BinanceUnavailable
        from livecandle.runtime.redis_server import RedisServerError

        if isinstance(
            e, BinanceError | BinanceUnavailable | RedisServerError | RedisError | OSError
        ):
            print(f"livecandle {args.command}: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
