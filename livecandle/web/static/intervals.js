// Interval arithmetic of the page (UTC, Binance alignment); times in ms.

const MINUTE = 60_000;
const FIXED = {
  "1s": 1000, "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE,
  "30m": 30 * MINUTE, "1h": 60 * MINUTE, "2h": 120 * MINUTE, "4h": 240 * MINUTE,
  "6h": 360 * MINUTE, "8h": 480 * MINUTE, "12h": 720 * MINUTE, "1d": 1440 * MINUTE,
  "3d": 3 * 1440 * MINUTE, "1w": 7 * 1440 * MINUTE,
};
const ANCHOR = { "3d": 1440 * MINUTE, "1w": 4 * 1440 * MINUTE };

/** Open time (ms) of the candle of `interval` containing `ms`. */
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

/** Open time of the candle before the one opening at `openMs`. */
export function previousOpen(interval, openMs) {
  if (interval === "1M") {
    const d = new Date(openMs);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1);
  }
  return openOf(interval, openMs) - FIXED[interval];
}

/** Keyboard shortcuts: key -> interval (used when the interval is served). */
export const HOTKEYS = {
  s: "1s", 1: "1m", 3: "3m", 5: "5m", h: "1h", 4: "4h", d: "1d", w: "1w", m: "1M",
};
