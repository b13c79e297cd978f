"""Shared pieces of the browser tests: Chromium's flags, a page that records console
errors, and the service fed by the session emulator."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from livecandle.runtime.service import Service
from tests.helpers import EmulatorProcess
from tests.integration.live_support import running_service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chart_service(
    redis_url: str, emulator: EmulatorProcess, intervals: str
) -> AsyncIterator[Service]:
    """The service a page drives: every role in one process on a free port, fed by the
    session emulator, 300 candles of history per series."""
    async with running_service(
        redis_url,
        emulator,
        intervals,
        roles=("fetcher", "stream", "web"),
        port=0,
        backfill_candles=300,
    ) as svc:
        yield svc


@contextlib.asynccontextmanager
async def browser_page(artifacts: Path, name: str, **context: Any) -> AsyncIterator[Page]:
    """A fresh page (``context``: viewport, color scheme ...); a screenshot at the end;
    no console error allowed."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = await browser.new_context(**{"viewport": {"width": 1280, "height": 720}, **context})
        pg = await ctx.new_page()
        problems: list[str] = []
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: problems.append(str(e)))
        try:
            yield pg
            await pg.screenshot(path=str(artifacts / f"{name}.png"))
        finally:
            await browser.close()
        assert problems == [], problems  # no console errors


async def wait_panes_live(page: Page, n: int, bars: int = 50, within_ms: int = 20_000) -> None:
    await page.wait_for_function(
        f"""() => {{ const lc = window.livecandle;
            return lc && lc.layout.panes.length === {n} &&
              lc.layout.panes.every(p => p.view.bars.length > {bars}) &&
              document.getElementById('status').dataset.state === 'live'; }}""",
        timeout=within_ms,
    )
