// One chart's data feed: subscribe, load the newest history, apply live events, resync
// after a reconnect, and page older history in. No rendering here.

import { LiveCandleBuilder } from "./live.js";
import { fetchOlder, rowToBar } from "./history.js";

export class Feed {
  /**
   * @param {import("./connection.js").Connection} conn
   * @param {{history: Function, live: Function, status: Function, older: Function,
   *          olderState: Function}} on
   */
  constructor(conn, on) {
    this.conn = conn;
    this.on = on;
    this.socket = conn.socket;
    this.symbol = null;
    this.interval = null;
    this.builder = null;
    this.latest = null;
    this.generation = 0;
    this.loads = 0;
    this.fresh = false;
    this.reloadTimer = null;
    this.retryTimer = null;
    this.oldest = null; // open time of the oldest bar loaded
    this.listing = null; // the series' first candle, once the server knows it
    this.olderBusy = false;
    this.olderUnavailable = false;
    this.olderPages = 0;
    conn.listeners.add(this);
  }

  get reconnects() { return this.conn.reconnects; }

  close() {
    this.closed = true;
    if (this.symbol) this.conn.unsubscribe(this.symbol, this.interval);
    this.conn.listeners.delete(this);
    clearTimeout(this.reloadTimer);
    clearTimeout(this.retryTimer);
    this.generation += 1;
  }

  async select(symbol, interval) {
    if (this.symbol) this.conn.unsubscribe(this.symbol, this.interval);
    this.symbol = symbol;
    this.interval = interval;
    // nothing of the old pair may stay on screen, and no event of the new pair may be
    // drawn on the old pair's bars while its history loads
    this.builder = null;
    this.latest = null;
    this.fresh = true;
    this.oldest = null;
    this.listing = null;
    this.olderUnavailable = false;
    this.olderPages = 0;
    this.conn.subscribe(symbol, interval);
    this.on.history([], [], false);
    await this.resync("select");
  }

  // Connection listener: the socket is back; the connection subscribed our room again
  connected() { this.resync("connect"); }

  status(state, text) { this.on.status(state, text); }

  /** Load history again: live events from before the load are superseded. */
  async resync() {
    if (!this.symbol) return;
    const gen = ++this.generation;
    await this.load(gen);
  }

  /** Load the newest history; a failed load is retried with backoff until a newer one starts. */
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
      this.on.status("offline", `history: ${e.message}; retrying in ${delay / 1000} s`);
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        if (gen === this.generation) this.load(gen, attempt + 1);
      }, delay);
      return;
    }
    if (gen !== this.generation) return; // a newer selection or resync won
    this.loads += 1;
    if (this.socket.connected) this.on.status("live", "live");
    this.latest = body.latest;
    this.builder = new LiveCandleBuilder(this.interval);
    const official = [];
    const unconfirmed = []; // closed live candles whose official ones are not stored yet
    for (const row of body.candles) {
      const bar = rowToBar(row);
      if (bar.state === "official") official.push(bar);
      else if (bar.state === "unconfirmed") unconfirmed.push(bar);
      else if (bar.state === "forming") this.builder.forming = bar;
    }
    this.builder.previous = unconfirmed.length ? unconfirmed[unconfirmed.length - 1] : null;
    const live = [...unconfirmed, this.builder.forming].filter(Boolean);
    const fresh = this.fresh;
    this.fresh = false;
    if (official.length && (this.oldest === null || fresh)) this.oldest = official[0].time;
    this.on.history(official, live, fresh);
  }

  /** The page before the oldest bar; no-op while one loads or at the listing. */
  async loadOlder() {
    if (this.olderBusy || this.oldest === null || this.atListing() || this.olderUnavailable) return;
    const gen = this.generation;
    const symbol = this.symbol;
    const interval = this.interval;
    this.olderBusy = true;
    this.on.olderState("loading");
    try {
      const page = await fetchOlder(symbol, interval, this.oldest);
      if (this.closed || symbol !== this.symbol || interval !== this.interval) return;
      if (page.listing !== null) this.listing = page.listing;
      if (page.source === "unavailable" && page.bars.length === 0) this.olderUnavailable = true;
      if (page.bars.length) {
        this.oldest = page.bars[0].time;
        this.olderPages += 1;
        this.on.older(page.bars);
      }
      if (page.source === "error" && page.bars.length === 0) {
        this.on.olderState("error", page.error); // the next pan asks again
        return;
      }
      this.on.olderState(this.atListing() ? "listing" : this.olderUnavailable ? "unavailable" : "idle");
    } catch (e) {
      if (gen === this.generation) this.on.olderState("error", e.message);
    } finally {
      this.olderBusy = false;
    }
  }

  atListing() { return this.listing !== null && this.oldest !== null && this.oldest <= this.listing; }

  live_candle(m) { this.liveCandle(m); }
  live_price(m) { this.livePrice(m); }
  klines_updated(m) { this.klinesUpdated(m); }

  liveCandle(m) {
    if (!this.builder || m.symbol !== this.symbol || m.interval !== this.interval) return;
    const c = m.candle;
    if (this.latest !== null && c.time <= this.latest) return; // official already
    const prev = m.previous && (this.latest === null || m.previous.time > this.latest)
      ? m.previous : null;
    this.on.live(this.builder.applySnapshot(c, prev));
  }

  livePrice(m) {
    if (!this.builder || m.symbol !== this.symbol) return;
    this.on.live(this.builder.applyPrice(m.price, m.time), m);
  }

  klinesUpdated(m) {
    if (m.symbol !== this.symbol || m.interval !== this.interval) return;
    // official data arrived: reload it (debounced) so official candles replace live ones
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.load(++this.generation), 150);
  }
}
