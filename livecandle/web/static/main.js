// livecandle chart: official history from /api/klines plus the forming candle, live.
// Data feed (load, subscribe, live updates, resync) is kept apart from rendering.
// Times: ms everywhere; seconds only at the chart boundary. Prices: decimal strings
// until the chart, where they become numbers.

import { createChart, CandlestickSeries, HistogramSeries } from "/vendor/lightweight-charts.mjs";
import { io } from "/vendor/socket.io.mjs";

const MINUTE = 60_000;
const FIXED = {
  "1s": 1000, "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE,
  "30m": 30 * MINUTE, "1h": 60 * MINUTE, "2h": 120 * MINUTE, "4h": 240 * MINUTE,
  "6h": 360 * MINUTE, "8h": 480 * MINUTE, "12h": 720 * MINUTE, "1d": 1440 * MINUTE,
  "3d": 3 * 1440 * MINUTE, "1w": 7 * 1440 * MINUTE,
};
const ANCHOR = { "3d": 1440 * MINUTE, "1w": 4 * 1440 * MINUTE };

/** Open time (ms) of the candle of `interval` containing `ms` (UTC, Binance alignment). */
export function openOf(interval, ms) {
  if (interval === "1M") {
    const d = new Date(ms);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  }
  const len = FIXED[interval];
  const anchor = ANCHOR[interval] || 0;
  return ms - ((((ms - anchor) % len) + len) % len);
}

/** Open time of the candle after the one opening at `openMs`. */
export function nextOpen(interval, openMs) {
  if (interval === "1M") {
    const d = new Date(openMs);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  }
  return openOf(interval, openMs) + FIXED[interval];
}

/**
 * @typedef {{time: number, open: string, high: string, low: string, close: string,
 *            volume: string, state: string}} LiveBar
 */

/**
 * Keeps the forming candle from `live_candle` snapshots (exact, from the server) and
 * `live_price` ticks (between snapshots), and handles the move to the next period.
 */
export class LiveCandleBuilder {
  constructor(interval) {
    this.interval = interval;
    /** @type {LiveBar|null} */ this.forming = null;
    /** @type {LiveBar|null} */ this.previous = null;
    this.lastTradeMs = 0;
  }

  /** A server snapshot: replaces what ticks built. Returns the bars to draw, oldest first. */
  applySnapshot(candle, previous) {
    const out = [];
    if (previous && (!this.previous || previous.time >= this.previous.time)) {
      this.previous = { ...previous, state: "unconfirmed" };
      out.push(this.previous);
    }
    if (!this.forming || candle.time >= this.forming.time) {
      this.forming = { ...candle, state: "forming" };
      out.push(this.forming);
    }
    return out;
  }

  /** A trade price: updates the forming candle, or starts the next one. */
  applyPrice(price, timeMs) {
    if (timeMs < this.lastTradeMs) return [];
    this.lastTradeMs = timeMs;
    const open = openOf(this.interval, timeMs);
    const out = [];
    if (!this.forming || open > this.forming.time) {
      if (this.forming) {
        this.previous = { ...this.forming, state: "unconfirmed" };
        out.push(this.previous);
      }
      this.forming = {
        time: open, open: price, high: price, low: price, close: price, volume: "0",
        state: "forming",
      };
    } else if (open === this.forming.time) {
      const f = this.forming;
      const p = Number(price);
      if (p > Number(f.high)) f.high = price;
      if (p < Number(f.low)) f.low = price;
      f.close = price;
    } else {
      return [];
    }
    out.push(this.forming);
    return out;
  }

  /** Official data now covers up to `latestMs`: live bars at or before it are dropped. */
  confirm(latestMs) {
    if (this.previous && this.previous.time <= latestMs) this.previous = null;
    if (this.forming && this.forming.time <= latestMs) this.forming = null;
  }
}

// ---------------------------------------------------------------------------------------
// data feed

class Feed {
  constructor(onHistory, onLive, onStatus) {
    this.onHistory = onHistory;
    this.onLive = onLive;
    this.onStatus = onStatus;
    this.symbol = null;
    this.interval = null;
    this.builder = null;
    this.latest = null;
    this.generation = 0;
    this.reconnects = 0;
    this.loads = 0;
    this.fresh = false;
    this.reloadTimer = null;
    this.retryTimer = null;
    this.socket = io({ transports: ["websocket"], reconnectionDelayMax: 5000 });
    this.socket.on("connect", () => this.resync("connect"));
    this.socket.on("disconnect", (reason) => {
      this.onStatus("reconnecting", `disconnected (${reason})`);
    });
    this.socket.io.on("reconnect", () => { this.reconnects += 1; });
    this.socket.on("connect_error", () => this.onStatus("offline", "cannot reach the server"));
    this.socket.on("error", (e) => console.warn("livecandle server said:", e));
    this.socket.on("live_candle", (m) => this.liveCandle(m));
    this.socket.on("live_price", (m) => this.livePrice(m));
    this.socket.on("klines_updated", (m) => this.klinesUpdated(m));
  }

  async select(symbol, interval) {
    if (this.symbol && this.socket.connected) {
      this.socket.emit("unsubscribe", { symbol: this.symbol, interval: this.interval });
    }
    this.symbol = symbol;
    this.interval = interval;
    // nothing of the old pair may stay on screen, and no event of the new pair may be
    // drawn on the old pair's bars while its history loads
    this.builder = null;
    this.latest = null;
    this.fresh = true;
    this.onHistory([], [], false);
    await this.resync("select");
  }

  /** Subscribe, then load history: live events from before the load are superseded. */
  async resync(why) {
    if (!this.symbol) return;
    const gen = ++this.generation;
    if (this.socket.connected) {
      this.socket.emit("subscribe", { symbol: this.symbol, interval: this.interval });
      this.onStatus("live", "live");
    }
    await this.load(gen);
  }

  /** Load history; a failed load is retried with backoff until a newer load starts. */
  async load(gen, attempt = 0) {
    const url = `/api/klines?symbol=${encodeURIComponent(this.symbol)}` +
      `&interval=${encodeURIComponent(this.interval)}&limit=1000`;
    let body;
    try {
      const r = await fetch(url);
      body = await r.json();
      if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    } catch (e) {
      if (gen !== this.generation) return;
      const delay = Math.min(30_000, 1000 * 2 ** attempt);
      this.onStatus("offline", `history: ${e.message}; retrying in ${delay / 1000} s`);
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        if (gen === this.generation) this.load(gen, attempt + 1);
      }, delay);
      return;
    }
    if (gen !== this.generation) return; // a newer selection or resync won
    this.loads += 1;
    if (this.socket.connected) this.onStatus("live", "live");
    this.latest = body.latest;
    this.builder = new LiveCandleBuilder(this.interval);
    const official = [];
    const unconfirmed = []; // closed live candles whose official ones are not stored yet
    for (const row of body.candles) {
      const bar = {
        time: row[0], open: row[1], high: row[2], low: row[3], close: row[4],
        volume: row[5], state: row[12],
      };
      if (bar.state === "official") official.push(bar);
      else if (bar.state === "unconfirmed") unconfirmed.push(bar);
      else if (bar.state === "forming") this.builder.forming = bar;
    }
    this.builder.previous = unconfirmed.length ? unconfirmed[unconfirmed.length - 1] : null;
    const live = [...unconfirmed, this.builder.forming].filter(Boolean);
    const fresh = this.fresh;
    this.fresh = false;
    this.onHistory(official, live, fresh);
  }

  liveCandle(m) {
    if (!this.builder || m.symbol !== this.symbol || m.interval !== this.interval) return;
    const c = m.candle;
    if (this.latest !== null && c.time <= this.latest) return; // official already
    const prev = m.previous && (this.latest === null || m.previous.time > this.latest)
      ? m.previous : null;
    this.onLive(this.builder.applySnapshot(c, prev));
  }

  livePrice(m) {
    if (!this.builder || m.symbol !== this.symbol) return;
    this.onLive(this.builder.applyPrice(m.price, m.time), m);
  }

  klinesUpdated(m) {
    if (m.symbol !== this.symbol || m.interval !== this.interval) return;
    // official data arrived: reload it (debounced) so official candles replace live ones
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.load(++this.generation), 150);
  }
}

// ---------------------------------------------------------------------------------------
// rendering

/** "51106.50000000" -> "51106.50": trailing zeros beyond two decimals removed. */
export function trimPrice(text) {
  if (typeof text !== "string" || !text.includes(".")) return String(text);
  const [whole, frac] = text.split(".");
  const kept = frac.replace(/0+$/, "");
  return `${whole}.${kept.length >= 2 ? kept : kept.padEnd(2, "0")}`;
}

/** Decimals needed to show these prices exactly (2..8). */
function precisionOf(bars) {
  let p = 2;
  for (const b of bars.slice(-200)) {
    for (const v of [b.open, b.high, b.low, b.close]) {
      const frac = String(v).split(".")[1] || "";
      p = Math.max(p, frac.replace(/0+$/, "").length);
    }
  }
  return Math.min(8, p);
}

const COLORS = {
  up: "#26a69a", down: "#ef5350", unconfirmed: "#8b7cf6", forming: "#f59e0b",
};

function toChartBar(b) {
  const open = Number(b.open);
  const close = Number(b.close);
  const bar = {
    time: Math.floor(b.time / 1000), open, high: Number(b.high), low: Number(b.low), close,
  };
  if (b.state === "unconfirmed" || b.state === "forming") {
    const c = COLORS[b.state];
    bar.color = close >= open ? c : "transparent";
    bar.borderColor = c;
    bar.wickColor = c;
  }
  return bar;
}

function toVolumeBar(b) {
  const up = Number(b.close) >= Number(b.open);
  let color = up ? "rgba(38,166,154,0.45)" : "rgba(239,83,80,0.45)";
  if (b.state === "forming") color = "rgba(245,158,11,0.55)";
  if (b.state === "unconfirmed") color = "rgba(139,124,246,0.55)";
  return { time: Math.floor(b.time / 1000), value: Number(b.volume || 0), color };
}

class ChartView {
  constructor(el, legend) {
    this.legend = legend;
    this.chart = createChart(el, {
      autoSize: true,
      layout: { background: { color: "#0f1419" }, textColor: "#d1d4dc" },
      grid: { vertLines: { color: "#1c232c" }, horzLines: { color: "#1c232c" } },
      timeScale: { timeVisible: true, secondsVisible: true },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: COLORS.up, downColor: COLORS.down, borderVisible: true,
      wickUpColor: COLORS.up, wickDownColor: COLORS.down,
      borderUpColor: COLORS.up, borderDownColor: COLORS.down,
    });
    this.volume = this.chart.addSeries(HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "",
    });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.bars = [];
    this.updates = 0;
  }

  /** Replace everything: official bars then live bars, ascending and unique by time. */
  setAll(official, live) {
    const byTime = new Map();
    for (const b of official) byTime.set(b.time, b);
    for (const b of live) if (!byTime.has(b.time)) byTime.set(b.time, b);
    this.bars = [...byTime.values()].sort((a, b) => a.time - b.time);
    const precision = precisionOf(this.bars);
    this.candles.applyOptions({ priceFormat: { type: "price", precision, minMove: 10 ** -precision } });
    this.candles.setData(this.bars.map(toChartBar));
    this.volume.setData(this.bars.map(toVolumeBar));
    this.showLegend();
  }

  /** Draw live bars (oldest first). An older bar is only redrawn in place: the
   * just-closed candle gets its final values after a tick has started the next one. */
  update(bars) {
    for (const b of bars) {
      const last = this.bars[this.bars.length - 1];
      if (last && b.time < last.time) {
        let i = this.bars.length - 2;
        while (i >= 0 && this.bars[i].time > b.time) i -= 1;
        if (i < 0 || this.bars[i].time !== b.time || this.bars[i].state === "official") continue;
        this.bars[i] = { ...b };
        this.candles.update(toChartBar(b), true);
        this.volume.update(toVolumeBar(b), true);
        this.updates += 1;
        continue;
      }
      if (last && b.time === last.time) {
        if (last.state === "official") continue; // official always wins
        this.bars[this.bars.length - 1] = { ...b };
      } else {
        this.bars.push({ ...b });
      }
      this.candles.update(toChartBar(b));
      this.volume.update(toVolumeBar(b));
      this.updates += 1;
    }
    if (bars.length) this.showLegend();
  }

  showLegend() {
    const b = this.bars[this.bars.length - 1];
    if (!b) { this.legend.textContent = "no data yet"; return; }
    const t = new Date(b.time).toISOString().replace("T", " ").slice(0, 19);
    this.legend.textContent =
      `${t} UTC  O ${trimPrice(b.open)}  H ${trimPrice(b.high)}  L ${trimPrice(b.low)}` +
      `  C ${trimPrice(b.close)}  V ${Number(b.volume)}` +
      (b.state !== "official" ? `  (${b.state})` : "");
  }
}

// ---------------------------------------------------------------------------------------
// page

async function main() {
  const $ = (id) => document.getElementById(id);
  const view = new ChartView($("chart"), $("legend"));
  const statusEl = $("status");
  // the pill says "live" only when both the socket and the server's exchange link are up
  let socketStatus = { state: "connecting", text: "connecting…" };
  let exchangeDown = false;
  const renderStatus = () => {
    const stale = exchangeDown && socketStatus.state === "live";
    const state = stale ? "stale" : socketStatus.state;
    statusEl.className = `status ${state}`;
    statusEl.dataset.state = state;
    statusEl.textContent = stale ? "exchange offline · cached data" : socketStatus.text;
    statusEl.title = stale ? "The server cannot reach the exchange: no new candles until it can." : "";
  };
  const setStatus = (state, text) => {
    socketStatus = { state, text };
    renderStatus();
  };
  const feed = new Feed(
    (official, live, fresh) => {
      view.setAll(official, live);
      // only a new selection jumps to the newest bar; reloads keep where the user looks
      if (fresh) view.chart.timeScale().scrollToRealTime();
    },
    (bars, tick) => {
      view.update(bars);
      if (tick) $("price").textContent = trimPrice(tick.price);
    },
    setStatus,
  );
  window.livecandle = { view, feed, openOf, nextOpen, LiveCandleBuilder };

  const meta = await (await fetch("/api/symbols")).json();
  const params = new URLSearchParams(location.search);
  const fill = (el, values, wanted) => {
    el.innerHTML = "";
    for (const v of values) el.add(new Option(v, v, false, v === wanted));
  };
  const symbol = meta.symbols.includes(params.get("symbol")) ? params.get("symbol") : meta.symbols[0];
  const interval = meta.intervals.includes(params.get("interval"))
    ? params.get("interval") : meta.intervals[0];
  fill($("symbol"), meta.symbols, symbol);
  fill($("interval"), meta.intervals, interval);
  const onPick = () => {
    const s = $("symbol").value;
    const i = $("interval").value;
    history.replaceState(null, "", `?symbol=${s}&interval=${i}`);
    $("price").textContent = "–";
    feed.select(s, i);
  };
  $("symbol").addEventListener("change", onPick);
  $("interval").addEventListener("change", onPick);
  await feed.select(symbol, interval);

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
}

main().catch((e) => {
  console.error("livecandle failed to start:", e);
  const s = document.getElementById("status");
  if (s) { s.className = "status offline"; s.textContent = `error: ${e.message}`; }
});
