"""The command line over real processes: backfill, verify (+ repair), embedded Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import redis as syncredis

from tests.helpers import EmulatorProcess

MIN = 60_000


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livecandle", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def env_for(redis_url: str | None, emulator: EmulatorProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECANDLE_")}
    env["LIVECANDLE_BINANCE_REST_URL"] = emulator.rest_url
    if redis_url:
        env["LIVECANDLE_REDIS_URL"] = redis_url
    return env


def test_backfill_then_verify(redis_url: str, emulator: EmulatorProcess) -> None:
    syncredis.Redis.from_url(redis_url).flushall()
    env = env_for(redis_url, emulator)
    since = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() - 3 * 3600))
    r = run(["backfill", "BTCUSDT", "1m", "--since", since], env)
    assert r.returncode == 0, r.stderr
    assert "100.0%" in r.stderr  # the progress bar reached the end
    assert "new" in r.stdout
    r2 = run(["backfill", "BTCUSDT", "1m", "--since", since], env)
    assert " 0 new, 0 replaced" in r2.stdout  # a re-fetch changes nothing
    v = run(["verify"], env)
    assert v.returncode == 0, v.stdout
    assert "BTCUSDT:1m" in v.stdout and "all invariants hold" in v.stdout


def test_a_30_day_backfill_of_1m_candles_is_complete_and_verify_clean(
    redis_url: str, emulator: EmulatorProcess
) -> None:
    r = syncredis.Redis.from_url(redis_url)
    r.flushall()
    env = env_for(redis_url, emulator)
    since_ms = (int(time.time() * 1000) // MIN + 1) * MIN - 30 * 1440 * MIN
    since = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(since_ms / 1000))
    before_ms = int(time.time() * 1000)
    done = run(["backfill", "BTCUSDT", "1m", "--since", since], env)
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stderr
    key, meta = "klines_z:BTCUSDT:1m", r.hgetall("klines_meta:BTCUSDT:1m")
    latest = int(meta[b"latest"])
    assert latest >= (before_ms // MIN - 1) * MIN  # up to the last closed minute
    count = r.zcard(key)
    assert count >= 30 * 1440 - 1
    assert count == (latest - since_ms) // MIN + 1 == int(meta[b"count"])  # no hole
    assert r.zcard("klines_gaps:BTCUSDT:1m") == 0
    v = run(["verify", "--symbol", "BTCUSDT", "--interval", "1m"], env)
    assert v.returncode == 0 and "all invariants hold" in v.stdout, v.stdout


def test_verify_reports_each_breach_and_repair_fixes_duplicates(
    redis_url: str, emulator: EmulatorProcess
) -> None:
    r = syncredis.Redis.from_url(redis_url)
    r.flushall()
    env = env_for(redis_url, emulator)
    since = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() - 3600))
    assert run(["backfill", "ETHUSDT", "5m", "--since", since], env).returncode == 0
    key = "klines_z:ETHUSDT:5m"
    member, score = r.zrange(key, 0, 0, withscores=True)[0]
    row = json.loads(member)
    live_like = json.dumps({"time": row[0], "open": row[1], "source": "live"})
    older = list(row)
    older[8] -= 1  # a partial copy, as the seed's NX writes could leave behind
    r.zadd(key, {json.dumps(older, separators=(",", ":")): score})
    r.zadd(key, {live_like: score})
    v = run(["verify", "--symbol", "ETHUSDT", "--interval", "5m", "--json"], env)
    assert v.returncode == 1
    report = json.loads(v.stdout)
    invariants = {b["invariant"] for s in report["series"] for b in s["breaches"]}
    assert {2, 3, 4} <= invariants
    text = run(["verify"], env)
    assert text.returncode == 1 and "3 members share open time" in text.stdout
    fix = run(["verify", "--repair"], env)
    assert fix.returncode == 0, fix.stdout
    assert "repaired" in fix.stdout
    assert r.zrangebyscore(key, score, score) == [member]  # the complete official row
    assert run(["verify"], env).returncode == 0


def test_verify_judges_closed_candles_at_the_exchange_time_it_is_given(
    redis_url: str, emulator: EmulatorProcess
) -> None:
    """Against an emulator whose clock runs ahead of the machine's, its closed candles
    lie in the machine's future: ``--now-ms`` judges them at the exchange's time."""
    r = syncredis.Redis.from_url(redis_url)
    r.flushall()
    env = env_for(redis_url, emulator)
    since = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() - 3600))
    assert run(["backfill", "BTCUSDT", "5m", "--since", since], env).returncode == 0
    newest = int(r.zrange("klines_z:BTCUSDT:5m", -1, -1, withscores=True)[0][1])
    before_close = newest + 5 * MIN - 2  # its close time not yet passed
    early = run(["verify", "--symbol", "BTCUSDT", "--now-ms", str(before_close)], env)
    assert early.returncode == 1 and "closed" in early.stdout
    late = run(["verify", "--symbol", "BTCUSDT", "--now-ms", str(newest + 5 * MIN)], env)
    assert late.returncode == 0, late.stdout


def test_bad_input_is_one_readable_line_and_a_non_zero_exit(
    redis_url: str, emulator: EmulatorProcess
) -> None:
    env = env_for(redis_url, emulator)
    cases = [
        (["backfill", "BTCUSDT", "2m", "--since", "2024-01-01"], "interval '2m'"),
        (["backfill", "BTCUSDT", "1m", "--since", "soon"], "--since 'soon'"),
        (["backfill", "NOPEUSDT", "1m", "--since", "2024-01-01"], "'NOPEUSDT'"),
        (
            ["backfill", "BTCUSDT", "1m", "--since", "2024-02-01", "--until", "2024-01-01"],
            "before --since",
        ),
        (["verify", "--interval", "1x"], "interval '1x'"),
    ]
    for args, needle in cases:
        r = run(args, env)
        assert r.returncode != 0, args
        last = r.stderr.strip().splitlines()[-1]
        assert needle in last, (args, r.stderr)
        assert "Traceback" not in r.stderr
    env["LIVECANDLE_SYMBOLS"] = "BTC-USDT"
    r = run(["verify"], env)
    assert r.returncode == 2 and "LIVECANDLE_SYMBOLS" in r.stderr


def test_serve_runs_a_private_redis_server_and_stops_it(
    tmp_path: Path, emulator: EmulatorProcess
) -> None:
    env = env_for(None, emulator)
    env.update(
        LIVECANDLE_SYMBOLS="BTCUSDT", LIVECANDLE_INTERVALS="1m", LIVECANDLE_BACKFILL_CANDLES="20"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "livecandle", "serve", "--role", "fetcher"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url_file = tmp_path / "data" / "redis.url"
        count = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and count < 19:
            if url_file.exists():
                client = syncredis.Redis.from_url(url_file.read_text().strip())
                count = int(client.hget("klines_meta:BTCUSDT:1m", "count") or 0)
            time.sleep(0.1)
        assert count >= 19
        # the fetcher alone is background work: it runs at a lower CPU priority, while
        # the private redis-server it started (the live path's too) keeps the normal one
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, own + 10)
        redis_pid = int(client.info("server")["process_id"])
        assert os.getpriority(os.PRIO_PROCESS, redis_pid) == own
        # on uvloop without libuv's io_uring, whose kernel thread polls (costs CPU idle)
        tasks = Path(f"/proc/{proc.pid}/task")
        threads = [(t / "comm").read_text().strip() for t in tasks.iterdir()]
        assert threads and not any(t.startswith("iou-sqp") for t in threads), threads
        url = url_file.read_text().strip()
        assert url.startswith("unix://") and str(tmp_path) in url
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not url_file.exists()
    assert (tmp_path / "data" / "appendonlydir").is_dir()
    try:
        syncredis.Redis.from_url(url).ping()
        raise AssertionError("the private redis-server is still running")
    except syncredis.ConnectionError:
        pass
    # the data survives a restart (append-only file)
    from livecandle.runtime.redis_server import RedisServer

    with RedisServer(tmp_path / "data") as again:
        client = syncredis.Redis.from_url(again.url)
        assert client.zcard("klines_z:BTCUSDT:1m") >= 19
        assert msgspec.json.decode(client.zrange("klines_z:BTCUSDT:1m", -1, -1)[0])[6] < (
            time.time() * 1000
        )
