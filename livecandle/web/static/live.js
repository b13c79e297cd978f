// The forming candle, from the server's exact `live_candle` snapshots and the
// `live_price` ticks between them; and the move to the next period.

import { openOf } from "./intervals.js";

/**
 * @typedef {{time: number, open: string, high: string, low: string, close: string,
 *            volume: string, state: string, complete?: boolean}} LiveBar
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
