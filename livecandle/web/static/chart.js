// One chart's rendering: candles (or Heikin-Ashi), volume, overlays, the legend under
// the crosshair, price format by tick size, UTC or local time. Bars arrive from the
// feed ascending and unique by time; prices become numbers only here.

import {
  createChart, CandlestickSeries, HistogramSeries, LineSeries,
} from "/vendor/lightweight-charts.mjs";
import { formatTime, tickMark } from "./format.js";
import { legendHtml } from "./legend.js";
import { OVERLAYS, compute, haAt, heikinAshi, nums, valueAt } from "./overlays.js";
import { changeOf, prepend } from "./history.js";
import { frames } from "./frames.js";

const COLORS = { up: "#26a69a", down: "#ef5350", unconfirmed: "#8b7cf6", forming: "#f59e0b" };
const S = (ms) => Math.floor(ms / 1000);
// a reload changing more bars than this is drawn with setData (an update each is slower)
const MAX_REDRAWN = 200;

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
      this.overlays[kind] = { on: false, period: o.period, series: null, values: [], full: false };
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
    this.drawn = 0; // draws of the chart's data
    this.drawTimer = 0;
    this.pending = false; // a draw waits for this chart's frame
    this.dirtyFrom = null; // the oldest bar changed since the last draw
    this.full = false; // the next draw is a setData of every bar
    this.drawnLen = 0;
    this.popTo = null; // drawn bars from this index on are removed at the next draw
    this.viewTarget = null; // a visible range keepingView set, until the chart applies it
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
    frames.forget(this);
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
  //
  // The model (bars, their numbers, Heikin-Ashi and overlay values) changes at once; the
  // drawing follows: a full setData for a new selection, older pages and display modes,
  // else series.update() of the bars that changed since the last draw, in a frame no
  // other chart draws in (frames.js). `drawnLen` bars are in the series.

  /** Replace the newest bars: official then live, ascending and unique by time. A reload
   * (not `fresh`) keeps the older pages loaded before the official ones and redraws only
   * the bars it changed. */
  setAll(official, live, fresh = true) {
    const byTime = new Map();
    for (const b of official) byTime.set(b.time, b);
    for (const b of live) if (!byTime.has(b.time)) byTime.set(b.time, b);
    const bars = [...byTime.values()].sort((a, b) => a.time - b.time);
    if (!fresh && bars.length) this.reload(prepend(this.bars, bars));
    else this.replace(bars);
  }

  /** Older bars before the first one, keeping what the user looks at in place. */
  prependOlder(older) {
    const before = this.bars.length;
    const bars = prepend(older, this.bars);
    const added = bars.length - before;
    if (!added) return 0;
    this.replace(bars); // what the user looks at stays in place (keepingView)
    return added;
  }

  /** New bars, drawn now (setData): a selection, older pages, a display mode. */
  replace(bars) {
    if (this.closed) return;
    this.model(bars);
    this.drawAll();
  }

  /** The same series reloaded (official candles arrived, a reconnect): drawn in this
   * chart's next frame, by updating the bars from the first one that changed (bars the
   * reload no longer has, live ones it is behind, are removed from the end); a reload
   * that changed many bars is drawn whole. */
  reload(bars) {
    if (this.closed) return;
    const { kept, from } = changeOf(this.bars, bars);
    if (from === bars.length && kept === this.bars.length) return; // nothing new
    if (bars.length - from > MAX_REDRAWN) {
      this.model(bars);
      this.full = true;
      this.drawNow();
      return;
    }
    if (kept < this.drawnLen) {
      this.popTo = Math.min(this.popTo ?? kept, kept);
      for (const o of Object.values(this.overlays)) if (o.on) o.full = true;
    }
    this.bars = bars;
    this.n.length = from;
    for (let i = from; i < bars.length; i++) this.n.push({ ...nums(bars[i]), t: bars[i].time });
    this.derive(from);
    this.dirty(from);
    this.drawNow();
  }

  /** All derived values of `bars`, computed whole. */
  model(bars) {
    this.bars = bars;
    this.n = bars.map((b) => ({ ...nums(b), t: b.time }));
    this.haBars = this.ha ? heikinAshi(this.n) : [];
    for (const [kind, o] of Object.entries(this.overlays)) {
      o.values = o.on ? compute(kind, o.period, this.n) : [];
    }
  }

  /** Heikin-Ashi and overlay values from bar `from` on (each depends on the ones before).
   * A drawn bar that gains or loses its overlay value cannot be updated in place: that
   * overlay is drawn whole. */
  derive(from) {
    if (this.ha) {
      this.haBars.length = this.n.length;
      for (let k = from; k < this.n.length; k++) this.haBars[k] = haAt(this.n, this.haBars, k);
    }
    for (const [kind, o] of Object.entries(this.overlays)) {
      if (!o.on) continue;
      for (let k = from; k < this.n.length; k++) {
        const had = o.values[k] !== null && o.values[k] !== undefined;
        o.values[k] = valueAt(kind, o.period, this.n, o.values, k);
        if (k < this.drawnLen - 1 && had !== (o.values[k] !== null)) o.full = true;
      }
      o.values.length = this.n.length;
    }
  }

  shown(i) { return this.ha ? this.haBars[i] : this.n[i]; }

  /** Apply live bars (oldest first). The model changes at once; the newest bar is drawn
   * at most every drawPeriodMs (a burst of ticks costs one redraw). An older bar is
   * updated in place: the just-closed candle gets its final values after a tick has
   * started the next one. */
  update(bars) {
    if (this.closed) return;
    let older = false;
    for (const b of bars) {
      const last = this.bars[this.bars.length - 1];
      let i;
      const inPlace = Boolean(last && b.time < last.time);
      if (inPlace) {
        i = this.bars.length - 2;
        while (i >= 0 && this.bars[i].time > b.time) i -= 1;
        if (i < 0 || this.bars[i].time !== b.time || this.bars[i].state === "official") continue;
        older = true;
      } else if (last && b.time === last.time) {
        if (last.state === "official") continue; // official always wins
        i = this.bars.length - 1;
      } else {
        i = this.bars.length;
      }
      this.bars[i] = { ...b };
      this.n[i] = { ...nums(b), t: b.time };
      if (inPlace) {
        this.derive(i);
      } else {
        if (this.ha) this.haBars[i] = haAt(this.n, this.haBars, i);
        for (const [kind, o] of Object.entries(this.overlays)) {
          if (o.on) o.values[i] = valueAt(kind, o.period, this.n, o.values, i);
        }
      }
      this.dirty(i);
      this.updates += 1;
    }
    if (older) this.drawNow();
    else if (bars.length) this.drawSoon();
  }

  dirty(i) {
    if (this.dirtyFrom === null || i < this.dirtyFrom) this.dirtyFrom = i;
  }

  /** Draw within drawPeriodMs of the last draw (live ticks). */
  drawSoon() {
    if (this.pending || this.drawTimer) return;
    const wait = Math.max(0, this.drawPeriodMs - (performance.now() - this.lastDraw));
    this.drawTimer = setTimeout(() => { this.drawTimer = 0; this.drawNow(); }, wait);
  }

  /** Draw in this chart's next frame: now if no other chart drew in this one. */
  drawNow() {
    clearTimeout(this.drawTimer);
    this.drawTimer = 0;
    if (this.pending) return;
    this.pending = true;
    frames.run(this, () => this.flush());
  }

  /** Draw what changed since the last draw (ascending: the chart's update order). */
  flush() {
    this.pending = false;
    if (this.closed) return;
    if (this.full) { this.drawAll(); return; }
    const from = this.dirtyFrom;
    if (from === null) return;
    this.dirtyFrom = null;
    this.lastDraw = performance.now();
    this.keepingView(() => this.drawFrom(from));
    this.drawn += 1;
    this.showLegend();
  }

  /** The bars from `from` on drawn with update(), after removing the ones a reload dropped. */
  drawFrom(from) {
    if (this.popTo !== null) { // bars the last reload no longer has
      const k = this.drawnLen - this.popTo;
      if (k > 0) { this.candles.pop(k); this.volume.pop(k); }
      this.drawnLen = this.popTo;
      this.popTo = null;
    }
    for (let i = from; i < this.bars.length; i++) {
      const b = this.bars[i];
      const historical = i < this.drawnLen - 1; // not the newest drawn bar: in place
      this.candles.update(candleOf(b, this.shown(i)), historical);
      this.volume.update(volumeOf(b, this.n[i]), historical);
      for (const o of Object.values(this.overlays)) {
        if (o.on && o.series && !o.full && o.values[i] !== null) {
          o.series.update({ time: S(b.time), value: o.values[i] }, historical);
        }
      }
    }
    this.drawnLen = this.bars.length;
    for (const kind of Object.keys(this.overlays)) if (this.overlays[kind].full) this.drawOverlay(kind);
  }

  /** Run `draw` keeping what a user scrolled back from the newest bar looks at in place:
   * the bar at the view's left edge stays there, whatever the draw adds or removes on
   * either side (older pages on the left, a candle started or dropped on the right, both
   * in one setData). lightweight-charts keeps the view's distance from the newest bar
   * instead, and compensates only bars added alone on the right. At the newest bar its
   * rule holds: the view follows new bars. */
  keepingView(draw) {
    const ts = this.chart.timeScale();
    // a range set here is applied at the chart's next frame: until then it is the view
    const range = this.drawnLen ? this.viewTarget || ts.getVisibleLogicalRange() : null;
    if (!range || range.to >= this.drawnLen - 1) { draw(); return; }
    const edge = Math.min(Math.max(Math.round(range.from), 0), this.drawnLen - 1);
    const anchor = this.candles.dataByIndex(edge);
    draw();
    const i = anchor ? this.barAt(anchor.time * 1000) : -1;
    const now = ts.getVisibleLogicalRange();
    if (i < 0 || !now) return;
    const from = range.from + (i - edge);
    if (Math.abs(now.from - from) < 1e-6 && !this.viewTarget) return;
    this.keepAt({ from, to: from + (range.to - range.from) });
  }

  /** Set the visible range to `target`: the chart applies it at its next frame, and
   * until then it is the view a draw keeps (no second look: by then the user may be
   * dragging, and the drag wins). */
  keepAt(target) {
    this.viewTarget = target;
    this.chart.timeScale().setVisibleLogicalRange(target);
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (this.viewTarget === target) this.viewTarget = null;
    }));
  }

  /** Every bar and overlay value drawn with setData. */
  drawAll() {
    this.full = false;
    this.dirtyFrom = null;
    this.popTo = null;
    this.lastDraw = performance.now();
    this.keepingView(() => {
      this.candles.setData(this.bars.map((b, i) => candleOf(b, this.shown(i))));
      this.volume.setData(this.bars.map((b, i) => volumeOf(b, this.n[i])));
      this.drawnLen = this.bars.length;
    });
    for (const kind of Object.keys(this.overlays)) this.drawOverlay(kind);
    this.drawn += 1;
    this.showLegend();
  }

  // -- overlays and display modes ---------------------------------------------------------

  setOverlay(kind, on, period) {
    this.flush(); // the bars waiting to be drawn first: an overlay never leads the candles
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
    }
    o.values = on ? compute(kind, o.period, this.n) : [];
    this.drawOverlay(kind);
    this.showLegend();
  }

  /** The overlay's values drawn whole (setData). */
  drawOverlay(kind) {
    const o = this.overlays[kind];
    o.full = false;
    if (!o.on || !o.series) return;
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
    this.setLegend(this.bars[i] ? legendHtml(this, i) : this.bars.length ? "" : "no data yet");
  }

  /** The legend's HTML, written only when it changed (each write is a layout). */
  setLegend(html) {
    if (html === this.legendHtml) return;
    this.legendHtml = html;
    this.legend.innerHTML = html;
  }
}
