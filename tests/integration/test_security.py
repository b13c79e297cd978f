"""Security basics (issue 13, item 5) against a real ``livecandle serve`` process: the
write token only in its header, writes from other origins refused (preflight and the
request itself), no file outside the static folders, the page's security headers, and
no secret (the write token, the Redis password) in the log or on any answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from livecandle.runtime.redis_server import find_redis_server, free_port
from livecandle.web.security import CHART_LOGO_STYLE
from livecandle.web.vendor import STATIC, VENDOR, node_modules
from tests.integration.web_process import WebProcess, web_process

TOKEN = "Wr1te-T0ken-7f3a9c"
PASSWORD = "Redis-Passw0rd-b41d"
ALLOWED = "http://allowed.example"
MIN = 60_000
T0 = 1_700_000_040_000
CANDLE = {
    "symbol": "BTCUSDT",
    "interval": "1m",
    "time": T0 + 20 * MIN,
    "open": "100.5",
    "high": "101",
    "low": "100",
    "close": "100.75",
}


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis-pw")),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def web(redis_with_password: str, tmp_path: Path) -> Iterator[WebProcess]:
    with web_process(
        redis_with_password,
        tmp_path,
        ("--verbose",),  # every log line there is, debug included
        LIVECANDLE_WRITE_TOKEN=TOKEN,
        LIVECANDLE_CORS_ORIGINS=f"{ALLOWED},*",
    ) as w:
        yield w


def post(body: object = CANDLE, **headers: str) -> dict[str, object]:
    return {
        "content": json.dumps(body).encode(),
        "headers": {"Content-Type": "application/json", **headers},
    }


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def live_stored(redis_url: str, flush: bool = False) -> list[bytes]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        if flush:
            await client.flushdb()
        return [k async for k in client.scan_iter("live_candle*")]
    finally:
        await client.aclose()


async def test_a_token_in_the_query_string_is_refused_and_never_echoed(web: WebProcess) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        for query in (f"token={TOKEN}", f"access_token={TOKEN}", f"x={TOKEN}"):
            r = await http.post(f"/save-live-candle?{query}", **post())  # type: ignore[arg-type]
            assert r.status_code == 400, r.text
            assert "Authorization header" in r.json()["error"]
            assert TOKEN not in r.text
        # even with the right header: a URL that carries anything is refused
        r = await http.post(f"/save-live-candle?token={TOKEN}", **post(**BEARER))  # type: ignore[arg-type]
        assert r.status_code == 400
        assert (await http.post("/save-live-candle", **post(**BEARER))).status_code == 200  # type: ignore[arg-type]
    assert TOKEN not in web.log_text()


async def test_writes_from_other_origins_are_refused_preflight_and_request(
    web: WebProcess, redis_with_password: str
) -> None:
    assert await live_stored(redis_with_password, flush=True) == []
    async with httpx.AsyncClient(base_url=web.url) as http:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        evil = await http.options(
            "/save-live-candle", headers={"Origin": "http://evil.example", **preflight}
        )
        assert evil.status_code == 403
        assert "access-control-allow-origin" not in evil.headers
        # "*" in LIVECANDLE_CORS_ORIGINS opens socket.io to any page, never writes
        r = await http.post(
            "/save-live-candle",
            **post(Origin="http://evil.example", **BEARER),  # type: ignore[arg-type]
        )
        assert r.status_code == 403, r.text
        assert "evil.example" in r.json()["error"]
        assert "access-control-allow-origin" not in r.headers
        assert await live_stored(redis_with_password) == []  # nothing was written

        ok = await http.options("/save-live-candle", headers={"Origin": ALLOWED, **preflight})
        assert ok.status_code == 204
        assert ok.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in ok.headers["access-control-allow-headers"]
        r = await http.post("/save-live-candle", **post(Origin=ALLOWED, **BEARER))  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == ALLOWED
        same = web.url  # the page's own origin
        r = await http.post("/save-live-candle", **post(Origin=same, **BEARER))  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        # no Origin at all: a program, not a browser page
        assert (await http.post("/save-live-candle", **post(**BEARER))).status_code == 200  # type: ignore[arg-type]


TRAVERSALS = [
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/%2e%2e%2fapp.py",
    "/static/..%2fapp.py",
    "/static/%252e%252e%252fapp.py",
    "/static/..%252fapp.py",
    "/static/..\\app.py",
    "/static/..%5capp.py",
    "/static/%2e%2e%5capp.py",
    "/static/....//app.py",
    "/static/.%2e/.%2e/.%2e/pyproject.toml",
    "/static/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/%c0%ae%c0%ae/app.py",
    "/static/..%00/app.py",
    "/vendor/..%2f..%2fpyproject.toml",
    "/vendor/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/vendor/..%5c..%5cpyproject.toml",
    "/vendor/%252e%252e%252fpyproject.toml",
]


async def raw_get(web: WebProcess, path: str) -> tuple[int, bytes]:
    """``path`` sent exactly as written (an HTTP client would normalize it)."""
    host, port = web.host_port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer


async def test_no_file_outside_the_static_folders_is_served(web: WebProcess) -> None:
    served = await raw_get(web, "/static/main.js")
    assert served[0] == 200  # the probe itself reaches files
    for path in TRAVERSALS:
        status, answer = await raw_get(web, path)
        assert status in (400, 404), (path, status, answer[:300])
        for secret in (b"build_app", b"root:", b"[project]", b"livecandle"):
            assert secret not in answer.split(b"\r\n\r\n", 1)[-1], (path, answer[:300])


async def test_the_page_carries_its_security_headers(web: WebProcess) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        page = await http.get("/")
        for path in ("/", "/static/main.js", "/api/symbols", "/healthz"):
            h = (await http.get(path)).headers
            assert h["x-content-type-options"] == "nosniff", path
            assert h["referrer-policy"] == "no-referrer", path
            assert "frame-ancestors 'none'" in h["content-security-policy"], path
    csp = dict(
        (d.split()[0], d.split()[1:]) for d in page.headers["content-security-policy"].split("; ")
    )
    assert csp["script-src"] == ["'self'"]  # modules from this origin; no inline script
    # styles from this origin, and the chart library's one <style> element by its hash
    assert csp["style-src"] == ["'self'", CHART_LOGO_STYLE]
    library = node_modules() / VENDOR["lightweight-charts.mjs"]
    if library.exists():  # after `npm ci`: the hash is that of the style it adds
        styles = re.findall(
            r'createElement\("style"\),[\w.$]+\.innerText="([^"]+)"', library.read_text()
        )
        digests = {base64.b64encode(hashlib.sha256(t.encode()).digest()).decode() for t in styles}
        assert digests == {CHART_LOGO_STYLE.strip("'").removeprefix("sha256-")}, styles
    assert csp["default-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    host = web.url.removeprefix("http://")
    assert csp["connect-src"] == ["'self'", f"ws://{host}", f"wss://{host}"]  # socket.io
    # the page loads nothing the policy would block: no inline script, nothing off-site
    html = page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/") or url.startswith("data:"), url
    assert not re.search(r"<[^>]+\son[a-z]+=", html), "an inline event handler"
    assert "<style" not in html and " style=" not in html, "an inline style"
    js = (STATIC / "main.js").read_text()
    assert "eval(" not in js and "new Function(" not in js


async def test_no_secret_in_the_log_or_answers(redis_with_password: str, tmp_path: Path) -> None:
    with web_process(
        redis_with_password, tmp_path, ("--verbose",), LIVECANDLE_WRITE_TOKEN=TOKEN
    ) as web:
        async with httpx.AsyncClient(base_url=web.url) as http:
            answers = [
                await http.post("/save-live-candle", **post(**BEARER)),  # type: ignore[arg-type]
                await http.post(
                    "/save-live-candle",
                    **post(Authorization=f"Bearer {TOKEN}x"),  # type: ignore[arg-type]
                ),
                await http.post("/save-live-candle", **post(Authorization=TOKEN)),  # type: ignore[arg-type]
                await http.post(f"/save-live-candle?token={TOKEN}", **post()),  # type: ignore[arg-type]
                await http.get("/healthz"),
                await http.get("/metrics"),
                await http.get("/api/symbols"),
            ]
        for r in answers:
            assert TOKEN not in r.text and PASSWORD not in r.text, r.text
        log = web.log_text()
    assert "livecandle is serving" in log  # the log was captured
    assert TOKEN not in log and PASSWORD not in log

    # a start-up that fails (a wrong password): the error is told, the password is not
    wrong = redis_with_password.replace(PASSWORD, PASSWORD + "-wrong")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECANDLE_")}
    env.update(LIVECANDLE_REDIS_URL=wrong, LIVECANDLE_WRITE_TOKEN=TOKEN, LIVECANDLE_PORT="0")
    failed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "livecandle", "--verbose", "serve", "--role", "web"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0, out
    assert re.search(r"(?i)auth|password|WRONGPASS", out), out[-2000:]
    assert PASSWORD not in out and TOKEN not in out, out[-2000:]
