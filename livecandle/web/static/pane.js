// A pane: one chart with its own toolbar (symbol, interval, overlays, Heikin-Ashi), its
// own feed and room, and the states it must show (older history loading, start of
// history, symbol halted or not served).

import { ChartView } from "./chart.js";
import { Feed } from "./feed.js";
import { decimalsOfTick, formatTime, trimPrice } from "./format.js";
import { OVERLAYS } from "./overlays.js";

/** Decimals needed to show these prices exactly (2..8): when no tick size is known. */
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

const symbolInfo = new Map(); // symbol -> Promise<{status, tickSize}>

/** The symbol's trading status and tick size, from exchangeInfo (once per symbol). */
function infoOf(symbol) {
  if (!symbolInfo.has(symbol)) {
    symbolInfo.set(symbol, (async () => {
      const r = await fetch(`/api/v3/exchangeInfo?symbol=${encodeURIComponent(symbol)}`);
      if (!r.ok) return { status: "NOT_SERVED", tickSize: null };
      const s = (await r.json()).symbols[0] || {};
      const filter = (s.filters || []).find((f) => f.filterType === "PRICE_FILTER");
      return { status: s.status || "TRADING", tickSize: filter ? filter.tickSize : null };
    })().catch(() => ({ status: "UNKNOWN", tickSize: null })));
  }
  return symbolInfo.get(symbol);
}

const STATUS_TEXT = {
  HALT: "trading halted", BREAK: "trading halted", END_OF_DAY: "closed for the day",
  DELISTED: "delisted", NOT_SERVED: "not served here (delisted?)",
};

export class Pane {
  /**
   * @param {HTMLElement} root
   * @param {import("./connection.js").Connection} conn
   * @param {{intervals: string[], utc: boolean, theme: string, index: number,
   *          onChange: Function, onPickSymbol: Function, onStatus: Function,
   *          onTick: Function, onFocus: Function}} opts
   */
  constructor(root, conn, opts) {
    this.opts = opts;
    this.root = root;
    root.className = "pane";
    root.dataset.pane = String(opts.index);
    root.innerHTML = `
      <div class="pane-bar">
        <button class="pick" title="search a symbol (or just type)"></button>
        <select class="interval" title="interval (hotkeys: s 1 3 5 h 4 d w m)"></select>
        <details class="overlays"><summary>Indicators</summary>
          ${Object.entries(OVERLAYS).map(([k, o]) => `<label><input type="checkbox" data-overlay="${k}">
            ${o.label}${o.period ? ` <input type="number" min="1" max="500" value="${o.period}" data-period="${k}">` : ""}</label>`).join("")}
          <label><input type="checkbox" data-ha> Heikin-Ashi</label>
        </details>
        <span class="symstate" hidden></span>
        <span class="older" hidden></span>
      </div>
      <div class="chart"></div>
      <div class="legend"></div>`;
    const q = (s) => root.querySelector(s);
    this.pickEl = q(".pick");
    this.intervalEl = q(".interval");
    this.olderEl = q(".older");
    this.symStateEl = q(".symstate");
    for (const i of opts.intervals) this.intervalEl.add(new Option(i, i));
    this.view = new ChartView(q(".chart"), q(".legend"), { utc: opts.utc, theme: opts.theme });
    this.feed = new Feed(conn, {
      history: (official, live, fresh) => {
        this.view.setAll(official, live, !this.feed || fresh || official.length === 0);
        if (!this.tickKnown) this.view.setDecimals(precisionOf(this.view.bars));
        // only a new selection jumps to the newest bar; reloads keep where the user looks
        if (fresh) this.view.chart.timeScale().scrollToRealTime();
      },
      live: (bars, tick) => {
        this.view.update(bars);
        if (tick) opts.onTick(this, tick);
      },
      status: (state, text) => opts.onStatus(this, state, text),
      older: (bars) => this.view.prependOlder(bars),
      olderState: (state, why) => this.showOlder(state, why),
    });
    this.pickEl.addEventListener("click", () => opts.onPickSymbol(this));
    this.intervalEl.addEventListener("change", () => opts.onChange(this, this.feed.symbol, this.intervalEl.value));
    root.addEventListener("pointerdown", () => opts.onFocus(this));
    root.querySelectorAll("[data-overlay]").forEach((box) => box.addEventListener("change", () => {
      const kind = box.dataset.overlay;
      const period = root.querySelector(`[data-period="${kind}"]`);
      this.view.setOverlay(kind, box.checked, period ? Number(period.value) : 0);
    }));
    root.querySelectorAll("[data-period]").forEach((inp) => inp.addEventListener("change", () => {
      const kind = inp.dataset.period;
      const n = Math.max(1, Math.min(500, Math.floor(Number(inp.value)) || OVERLAYS[kind].period));
      if (this.view.overlays[kind].on) this.view.setOverlay(kind, true, n);
      else this.view.overlays[kind].period = n;
    }));
    q("[data-ha]").addEventListener("change", (e) => this.view.setHeikinAshi(e.target.checked));
    // infinite history: near the left edge, the page before the oldest bar
    this.view.chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
      if (range && range.from < 30) this.feed.loadOlder();
    });
  }

  get symbol() { return this.feed.symbol; }
  get interval() { return this.feed.interval; }

  async select(symbol, interval) {
    if (symbol === this.feed.symbol && interval === this.feed.interval) return;
    this.pickEl.textContent = symbol;
    this.intervalEl.value = interval;
    this.showOlder("idle");
    this.tickKnown = false;
    this.symStateEl.hidden = true;
    infoOf(symbol).then((info) => {
      if (this.feed.symbol !== symbol) return;
      if (info.tickSize) {
        this.tickKnown = true;
        this.view.setDecimals(decimalsOfTick(info.tickSize));
      }
      const text = STATUS_TEXT[info.status];
      this.symStateEl.hidden = !text;
      this.symStateEl.textContent = text || "";
      this.symStateEl.dataset.state = info.status;
    });
    await this.feed.select(symbol, interval);
  }

  showOlder(state, why) {
    const el = this.olderEl;
    el.dataset.state = state;
    const listed = this.feed && this.feed.listing !== null
      ? ` (first candle ${formatTime(this.feed.listing, this.view.utc)})` : "";
    const text = {
      loading: "loading older history…",
      listing: `start of history${listed}`,
      unavailable: "no older history available here",
      error: `older history failed: ${why}`,
    }[state];
    el.hidden = !text;
    el.textContent = text || "";
  }

  price(tick) { return trimPrice(tick.price); }

  close() {
    this.feed.close();
    this.view.dispose();
    this.root.remove();
  }
}
