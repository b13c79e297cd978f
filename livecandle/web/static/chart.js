// One chart's rendering: candles (or Heikin-Ashi), volume, overlays, the legend under
// the crosshair, price format by tick size, UTC or local time. Bars arrive from the
// feed ascending and unique by time; prices become numbers only here.

import {
  createChart, CandlestickSeries, HistogramSeries, LineSeries,
} from "/vendor/lightweight-charts.mjs";
import { formatPrice, formatTime, formatVolume, tickMark } from "./format.js";
import { OVERLAYS, compute, haAt, heikinAshi, nums, valueAt } from "./overlays.js";
import { prepend } from "./history.js";

const COLORS = { up: "#26a69a", down: "#ef5350", unconfirmed: "#8b7cf6", forming: "#f59e0b" };
const S = (ms) => Math.floor(ms / 1000);

export const THEMES = {
  dark: { bg: "#0f1419", fg: "#d1d4dc", grid: "#1c232c" },
  light: { bg: "#ffffff", fg: "#1f2933", grid: "#eef1f4" },
};

function candleOf(b, v) {
  const bar = { time: S(b.time), open: v.o, high: v.h, low: v.l, close: v.c };
  if (b.state === "unconfirmed" || b.state === "forming") {
    const c = COLORS[b.state];
    bar.color = v.c >= v.o ? c : "transparent";
    bar.borderColor = c;
    bar.wickColor = c;
  }
  return bar;
}

function volumeOf(b, v) {
  let color = v.c >= v.o ? "rgba(38,166,154,0.45)" : "rgba(239,83,80,0.45)";
  if (b.state === "forming") color = "rgba(245,158,11,0.55)";
  if (b.state === "unconfirmed") color = "rgba(139,124,246,0.55)";
  return { time: S(b.time), value: v.v, color };
}

export class ChartView {
  constructor(el, legend, { utc = true, theme = "dark", drawPeriodMs = 100 } = {}) {
    this.legend = legend;
    this.utc = utc;
    this.decimals = 2;
    this.ha = false;
    this.hovered = null;
    this.overlays = {};
    for (const [kind, o] of Object.entries(OVERLAYS)) {
      this.overlays[kind] = { on: false, period: o.period, series: null, values: [] };
    }
    this.chart = createChart(el, {
      autoSize: true,
      timeScale: { timeVisible: true, secondsVisible: true },
      crosshair: { mode: 0 },
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
    this.n = []; // numbers of each bar (with t), parallel to bars
    this.haBars = [];
    this.updates = 0;
    this.drawn = 0; // redraws of live bars
    this.drawTimer = 0;
    this.dirtyFrom = null;
    // live bars are drawn at most every drawPeriodMs (a repaint of the chart each time);
    // charts start at different phases so their repaints do not share one frame
    this.drawPeriodMs = drawPeriodMs;
    this.lastDraw = performance.now() - Math.random() * drawPeriodMs;
    this.setTheme(theme);
    this.setUtc(utc);
    this.chart.subscribeCrosshairMove((p) => {
      this.hovered = p && p.time !== undefined ? p.time * 1000 : null;
      this.showLegend();
    });
  }

  /** The chart is gone (its pane closed): late data and timers must not touch it. */
  dispose() {
    this.closed = true;
    clearTimeout(this.drawTimer);
    this.chart.remove();
  }

  setTheme(name) {
    const t = THEMES[name] || THEMES.dark;
    this.chart.applyOptions({
      layout: { background: { color: t.bg }, textColor: t.fg },
      grid: { vertLines: { color: t.grid }, horzLines: { color: t.grid } },
    });
  }

  setUtc(utc) {
    this.utc = utc;
    this.chart.applyOptions({
      localization: { timeFormatter: (t) => formatTime(t * 1000, this.utc) },
      timeScale: { tickMarkFormatter: (t, type) => tickMark(t * 1000, type, this.utc) },
    });
    this.showLegend();
  }

  /** Prices shown with the decimals of the symbol's tick size. */
  setDecimals(decimals) {
    this.decimals = decimals;
    const priceFormat = { type: "price", precision: decimals, minMove: 10 ** -decimals };
    this.candles.applyOptions({ priceFormat });
    for (const o of Object.values(this.overlays)) if (o.series) o.series.applyOptions({ priceFormat });
    this.showLegend();
  }

  // -- data ------------------------------------------------------------------------------

  /** Replace the newest bars: official then live, ascending and unique by time. A reload
   * (not `fresh`) keeps the older pages loaded before the official ones. */
  setAll(official, live, fresh = true) {
    const byTime = new Map();
    for (const b of official) byTime.set(b.time, b);
    for (const b of live) if (!byTime.has(b.time)) byTime.set(b.time, b);
    let bars = [...byTime.values()].sort((a, b) => a.time - b.time);
    if (!fresh && bars.length) bars = prepend(this.bars, bars);
    this.replace(bars);
  }

  /** Older bars before the first one, keeping what the user looks at in place. */
  prependOlder(older) {
    const before = this.bars.length;
    const bars = prepend(older, this.bars);
    const added = bars.length - before;
    if (!added) return 0;
    // lightweight-charts keeps the view's distance from the newest bar across setData:
    // bars added on the left leave what the user looks at in place
    this.replace(bars);
    return added;
  }

  replace(bars) {
    if (this.closed) return;
    clearTimeout(this.drawTimer);
    this.drawTimer = 0;
    this.dirtyFrom = null; // setData draws everything
    this.bars = bars;
    this.n = bars.map((b) => ({ ...nums(b), t: b.time }));
    this.haBars = this.ha ? heikinAshi(this.n) : [];
    this.candles.setData(bars.map((b, i) => candleOf(b, this.shown(i))));
    this.volume.setData(bars.map((b, i) => volumeOf(b, this.n[i])));
    for (const kind of Object.keys(this.overlays)) this.drawOverlay(kind);
    this.showLegend();
  }

  shown(i) { return this.ha ? this.haBars[i] : this.n[i]; }

  /** Apply live bars (oldest first). The bars and overlay values change at once; the
   * drawing waits up to drawPeriodMs, so a burst of ticks costs one redraw. An older bar
   * is only redrawn in place: the just-closed candle gets its final values after a tick
   * has started the next one. */
  update(bars) {
    if (this.closed) return;
    for (const b of bars) {
      const last = this.bars[this.bars.length - 1];
      if (last && b.time < last.time) {
        let i = this.bars.length - 2;
        while (i >= 0 && this.bars[i].time > b.time) i -= 1;
        if (i < 0 || this.bars[i].time !== b.time || this.bars[i].state === "official") continue;
        this.bars[i] = { ...b };
        this.n[i] = { ...nums(b), t: b.time };
        this.redrawFrom(i);
        this.updates += 1;
        continue;
      }
      let i;
      if (last && b.time === last.time) {
        if (last.state === "official") continue; // official always wins
        i = this.bars.length - 1;
        this.bars[i] = { ...b };
        this.n[i] = { ...nums(b), t: b.time };
      } else {
        this.bars.push({ ...b });
        this.n.push({ ...nums(b), t: b.time });
        i = this.bars.length - 1;
      }
      if (this.ha) this.haBars[i] = haAt(this.n, this.haBars, i);
      for (const [kind, o] of Object.entries(this.overlays)) {
        if (o.on) o.values[i] = valueAt(kind, o.period, this.n, o.values, i);
      }
      if (this.dirtyFrom === null || i < this.dirtyFrom) this.dirtyFrom = i;
      this.updates += 1;
    }
    if (bars.length && !this.drawTimer) {
      const wait = Math.max(0, this.drawPeriodMs - (performance.now() - this.lastDraw));
      this.drawTimer = setTimeout(() => this.flush(), wait);
    }
  }

  /** Draw the bars changed since the last frame (ascending: the chart's update order). */
  flush() {
    if (this.closed) return;
    clearTimeout(this.drawTimer);
    this.drawTimer = 0;
    this.lastDraw = performance.now();
    const from = this.dirtyFrom;
    this.dirtyFrom = null;
    if (from === null) return;
    for (let i = from; i < this.bars.length; i++) {
      const b = this.bars[i];
      this.candles.update(candleOf(b, this.shown(i)));
      this.volume.update(volumeOf(b, this.n[i]));
      for (const o of Object.values(this.overlays)) {
        if (o.on && o.values[i] !== null) o.series.update({ time: S(b.time), value: o.values[i] });
      }
    }
    this.drawn += 1;
    this.showLegend();
  }

  /** Bar `i` (not the last) changed: redraw it and what depends on it (rare). */
  redrawFrom(i) {
    this.flush(); // the chart must hold every bar before one is redrawn in place
    if (this.ha) for (let k = i; k < this.n.length; k++) this.haBars[k] = haAt(this.n, this.haBars, k);
    for (let k = i; k < this.bars.length; k++) {
      this.candles.update(candleOf(this.bars[k], this.shown(k)), true);
    }
    this.volume.update(volumeOf(this.bars[i], this.n[i]), true);
    for (const kind of Object.keys(this.overlays)) this.drawOverlay(kind);
  }

  // -- overlays and display modes ---------------------------------------------------------

  setOverlay(kind, on, period) {
    const o = this.overlays[kind];
    o.on = on;
    if (period) o.period = period;
    if (on && !o.series) {
      const spec = OVERLAYS[kind];
      o.series = this.chart.addSeries(LineSeries, {
        color: spec.color, lineWidth: 1, priceLineVisible: false, lastValueVisible: false,
        crosshairMarkerVisible: false,
        ...(kind === "vma" ? { priceScaleId: "", priceFormat: { type: "volume" } } : {}),
      });
      if (kind === "vma") o.series.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
      else o.series.applyOptions({ priceFormat: { type: "price", precision: this.decimals, minMove: 10 ** -this.decimals } });
    }
    if (!on && o.series) {
      this.chart.removeSeries(o.series);
      o.series = null;
      o.values = [];
    }
    this.drawOverlay(kind);
    this.showLegend();
  }

  drawOverlay(kind) {
    const o = this.overlays[kind];
    if (!o.on || !o.series) return;
    o.values = compute(kind, o.period, this.n);
    const data = [];
    for (let i = 0; i < this.bars.length; i++) {
      if (o.values[i] !== null) data.push({ time: S(this.bars[i].time), value: o.values[i] });
    }
    o.series.setData(data);
  }

  setHeikinAshi(on) {
    this.ha = on;
    this.replace(this.bars);
  }

  // -- legend -----------------------------------------------------------------------------

  barAt(ms) {
    if (ms === null) return this.bars.length - 1;
    let lo = 0;
    let hi = this.bars.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const t = this.bars[mid].time;
      if (t === ms) return mid;
      if (t < ms) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }

  showLegend() {
    const i = this.barAt(this.hovered);
    const b = this.bars[i];
    if (!b) { this.legend.textContent = this.bars.length ? "" : "no data yet"; return; }
    const d = this.decimals;
    const p = (x) => formatPrice(x, d);
    const prev = i > 0 ? this.n[i - 1].c : this.n[i].o;
    const change = this.n[i].c - prev;
    const pct = prev ? (change / prev) * 100 : 0;
    const cls = change >= 0 ? "up" : "down";
    const parts = [
      `<span>${formatTime(b.time, this.utc)} ${this.utc ? "UTC" : ""}</span>`,
      `O <b>${p(b.open)}</b>`, `H <b>${p(b.high)}</b>`, `L <b>${p(b.low)}</b>`,
      `C <b>${p(b.close)}</b>`,
      `<b class="${cls}">${change >= 0 ? "+" : ""}${change.toFixed(d)} (${pct >= 0 ? "+" : ""}${pct.toFixed(2)}%)</b>`,
      `V <b>${formatVolume(b.volume)}</b>`,
    ];
    for (const [kind, o] of Object.entries(this.overlays)) {
      if (o.on && o.values[i] !== null && o.values[i] !== undefined) {
        const label = `${OVERLAYS[kind].label}${o.period ? ` ${o.period}` : ""}`;
        const v = kind === "vma" ? formatVolume(o.values[i]) : o.values[i].toFixed(d);
        parts.push(`<span class="ov-${kind}">${label} ${v}</span>`);
      }
    }
    if (b.state !== "official") parts.push(`<i class="state ${b.state}">${b.state}</i>`);
    if (b.complete === false) parts.push(`<i class="state incomplete" title="trades were lost to a gap in the stream; the official candle will replace it">incomplete</i>`);
    this.legend.innerHTML = parts.join(" ");
  }
}
