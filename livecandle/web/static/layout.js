// The chart layout: 1, 2 or 4 panes in a grid, the active pane (hotkeys and the search
// act on it), and crosshairs kept in sync between panes showing the same symbol.

import { Pane } from "./pane.js";

export const LAYOUTS = [1, 2, 4];

export class Layout {
  constructor(el, conn, opts) {
    this.el = el;
    this.conn = conn;
    this.opts = opts;
    /** @type {Pane[]} */ this.panes = [];
    this.active = null;
    this.syncing = false;
    this.synced = 0; // crosshairs placed on other panes (for tests)
  }

  /** Show `charts` ([{symbol, interval}], one per pane); panes are kept where they can be. */
  async show(charts) {
    const n = charts.length;
    while (this.panes.length > n) this.panes.pop().close();
    while (this.panes.length < n) this.add();
    this.el.className = `layout layout-${n}`;
    // the page draws about 20 live updates a second in all: each chart's drawing costs a
    // frame of the main thread, which a busy machine stretches
    for (const p of this.panes) p.view.drawPeriodMs = Math.max(100, 50 * n);
    if (!this.panes.includes(this.active)) this.active = this.panes[0];
    this.focus(this.active);
    await Promise.all(charts.map((c, i) => this.panes[i].select(c.symbol, c.interval)));
  }

  add() {
    const root = document.createElement("section");
    this.el.appendChild(root);
    const pane = new Pane(root, this.conn, {
      ...this.opts, index: this.panes.length, onFocus: (p) => this.focus(p),
    });
    pane.view.chart.subscribeCrosshairMove((p) => this.syncCrosshair(pane, p));
    this.panes.push(pane);
    return pane;
  }

  focus(pane) {
    this.active = pane;
    for (const p of this.panes) p.root.classList.toggle("active", p === pane && this.panes.length > 1);
  }

  charts() { return this.panes.map((p) => ({ symbol: p.symbol, interval: p.interval })); }

  /** The crosshair of `from` shown on every other pane of the same symbol. */
  syncCrosshair(from, param) {
    if (this.syncing) return;
    this.syncing = true;
    try {
      for (const p of this.panes) {
        if (p === from || p.symbol !== from.symbol) continue;
        if (!param || param.time === undefined || !param.point) {
          p.view.chart.clearCrosshairPosition();
          continue;
        }
        const ms = param.time * 1000;
        const i = p.view.barAt(p.view.bars.length && p.interval === from.interval ? ms : nearest(p.view.bars, ms));
        if (i < 0) { p.view.chart.clearCrosshairPosition(); continue; }
        const bar = p.view.bars[i];
        p.view.chart.setCrosshairPosition(Number(bar.close), Math.floor(bar.time / 1000), p.view.candles);
        this.synced += 1;
      }
    } finally {
      this.syncing = false;
    }
  }
}

/** Open time of the last bar at or before `ms` (panes of other intervals). */
function nearest(bars, ms) {
  let lo = 0;
  let hi = bars.length - 1;
  let best = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (bars[mid].time <= ms) { best = bars[mid].time; lo = mid + 1; } else hi = mid - 1;
  }
  return best;
}
