// livecandle page: charts (1, 2 or 4 panes) of official history plus the live candle,
// a symbol search and a market overview; the view lives in the URL. This module wires
// the parts; data feeds, rendering and pages are in their own modules.

import { Connection } from "./connection.js";
import { HOTKEYS, nextOpen, openOf } from "./intervals.js";
import { LiveCandleBuilder } from "./live.js";
import { Layout, LAYOUTS } from "./layout.js";
import { Market } from "./market.js";
import { Overview } from "./overview.js";
import { Search } from "./search.js";
import { trimPrice } from "./format.js";
import { readState, writeState } from "./urlstate.js";

const $ = (id) => document.getElementById(id);
const UTC_KEY = "livecandle.utc";

function systemTheme() {
  return matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
}

async function main() {
  const meta = await (await fetch("/api/symbols")).json();
  const conn = new Connection();
  const market = new Market(meta.symbols);
  let utc = localStorage.getItem(UTC_KEY) !== "local";
  let theme = systemTheme();

  // the pill says "live" only when both the socket and the server's exchange link are up
  let socketStatus = conn.state;
  let exchangeDown = false;
  const renderStatus = () => {
    const el = $("status");
    const stale = exchangeDown && socketStatus.state === "live";
    const state = stale ? "stale" : socketStatus.state;
    el.className = `status ${state}`;
    el.dataset.state = state;
    el.textContent = stale ? "exchange offline · cached data" : socketStatus.text;
    el.title = stale ? "The server cannot reach the exchange: no new candles until it can." : "";
  };

  // the last trade's price, written once per animation frame (ticks come faster: each
  // write is a layout of the page)
  let price = null;
  let priceFrame = 0;
  const showPrice = (p) => {
    price = p;
    if (priceFrame) return;
    priceFrame = requestAnimationFrame(() => {
      priceFrame = 0;
      const text = price === null ? "–" : trimPrice(price);
      if ($("price").textContent !== text) $("price").textContent = text;
    });
  };

  let state = readState(location.search, meta.symbols, meta.intervals);
  const layout = new Layout($("charts"), conn, {
    intervals: meta.intervals, utc, theme,
    onChange: (pane, symbol, interval) => {
      pane.select(symbol, interval).then(() => commit());
      commit();
    },
    onPickSymbol: (pane) => { layout.focus(pane); search.open(); },
    onStatus: (pane, s, text) => {
      if (pane !== layout.panes[0] && s === "live") return;
      socketStatus = { state: s, text };
      renderStatus();
    },
    onTick: (pane, tick) => { if (pane === layout.active) showPrice(tick.price); },
  });
  const commit = (replace = false) => {
    state = { view: state.view, charts: layout.charts() };
    writeState(state, replace);
    document.title = `${state.charts.map((c) => `${c.symbol} ${c.interval}`).join(" · ")} – livecandle`;
    renderLayoutButtons();
  };

  const openSymbol = (symbol) => {
    const pane = layout.active || layout.panes[0];
    state.view = "chart";
    showView();
    price = null;
    $("price").textContent = "–";
    pane.select(symbol, pane.interval);
    commit();
  };
  const search = new Search($("search"), $("search-list"), market, openSymbol);
  const overview = new Overview($("overview"), market, openSymbol);

  const showView = () => {
    const ov = state.view === "overview";
    $("charts").hidden = ov;
    $("chart-footer").hidden = ov;
    if (ov) overview.show(); else overview.hide();
    for (const b of document.querySelectorAll("[data-view]")) b.classList.toggle("on", b.dataset.view === state.view);
  };

  const renderLayoutButtons = () => {
    for (const b of document.querySelectorAll("[data-layout]")) {
      b.classList.toggle("on", Number(b.dataset.layout) === layout.panes.length);
    }
  };

  const apply = async (s) => {
    state = s;
    showView();
    await layout.show(s.charts);
    renderLayoutButtons();
  };

  // header controls
  $("layouts").innerHTML = LAYOUTS.map((n) => `<button data-layout="${n}" title="${n} chart${n > 1 ? "s" : ""}">${n}</button>`).join("");
  $("layouts").addEventListener("click", async (e) => {
    const b = e.target.closest("[data-layout]");
    if (!b) return;
    const n = Number(b.dataset.layout);
    const charts = layout.charts().slice(0, n);
    // new panes: the served symbols in turn, same interval
    let k = 0;
    while (charts.length < n) {
      const used = new Set(charts.map((c) => c.symbol));
      const next = meta.symbols.find((s) => !used.has(s)) || meta.symbols[k++ % meta.symbols.length];
      charts.push({ symbol: next, interval: charts[0].interval });
    }
    state.view = "chart";
    await apply({ view: "chart", charts });
    commit();
  });
  for (const b of document.querySelectorAll("[data-view]")) {
    b.addEventListener("click", () => { state.view = b.dataset.view; showView(); commit(); });
  }
  const utcEl = $("utc");
  const renderUtc = () => { utcEl.textContent = utc ? "UTC" : "Local"; utcEl.title = `time axis in ${utc ? "UTC" : "the browser's zone"} (click to switch)`; };
  renderUtc();
  utcEl.addEventListener("click", () => {
    utc = !utc;
    localStorage.setItem(UTC_KEY, utc ? "utc" : "local");
    layout.opts.utc = utc;
    for (const p of layout.panes) p.view.setUtc(utc);
    renderUtc();
  });
  matchMedia("(prefers-color-scheme: light)").addEventListener("change", () => {
    theme = systemTheme();
    layout.opts.theme = theme;
    for (const p of layout.panes) p.view.setTheme(theme);
  });

  // interval hotkeys (and typing a letter opens the search) on the active pane
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || state.view !== "chart") return;
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    const interval = HOTKEYS[e.key];
    const pane = layout.active;
    if (interval && meta.intervals.includes(interval) && pane) {
      pane.select(pane.symbol, interval).then(() => commit());
      commit();
      e.preventDefault();
    } else if (e.key === "/" ) {
      search.open();
      e.preventDefault();
    }
  });

  window.addEventListener("popstate", () => {
    apply(readState(location.search, meta.symbols, meta.intervals));
  });

  window.livecandle = {
    get view() { return layout.panes[0].view; },
    get feed() { return layout.panes[0].feed; },
    layout, conn, market, overview, search, openOf, nextOpen, LiveCandleBuilder,
  };
  await apply(state);
  commit(true);

  const checkHealth = async () => {
    try {
      const h = await (await fetch("/healthz")).json();
      const banner = $("banner");
      const err = h.exchange && h.exchange.error;
      banner.hidden = !err;
      banner.textContent = err ? `Exchange unreachable: ${err}. Showing cached data; retrying.` : "";
      exchangeDown = Boolean(err);
      renderStatus();
    } catch (e) {
      // the socket status already says the server is unreachable
    }
  };
  checkHealth();
  setInterval(checkHealth, 5_000);
  market.follow(state.view === "overview" ? 2_000 : 30_000);
}

main().catch((e) => {
  console.error("livecandle failed to start:", e);
  const s = document.getElementById("status");
  if (s) { s.className = "status offline"; s.textContent = `error: ${e.message}`; }
});
