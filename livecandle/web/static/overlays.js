// Overlays computed from the candles themselves: SMA and EMA of the close, VWAP of the
// UTC day (typical price weighted by volume), the volume moving average; and
// Heikin-Ashi candles. Each returns one value per bar (null before it is defined), and
// `extend` recomputes only the last value so a live tick costs O(period), not O(bars).

const DAY = 86_400_000;

/** Number inputs of one bar (the chart boundary: decimal strings become numbers). */
export function nums(b) {
  return { o: Number(b.open), h: Number(b.high), l: Number(b.low), c: Number(b.close), v: Number(b.volume || 0) };
}

export const OVERLAYS = {
  sma: { label: "SMA", period: 20, color: "#f59e0b" },
  ema: { label: "EMA", period: 50, color: "#3b82f6" },
  vwap: { label: "VWAP", period: 0, color: "#a855f7" },
  vma: { label: "Vol MA", period: 20, color: "#94a3b8" },
};

/** The overlay's value at index `i`, given the values before it (`out`). */
export function valueAt(kind, period, n, out, i) {
  if (kind === "sma" || kind === "vma") {
    if (i + 1 < period) return null;
    let sum = 0;
    for (let k = i - period + 1; k <= i; k++) sum += kind === "sma" ? n[k].c : n[k].v;
    return sum / period;
  }
  if (kind === "ema") {
    if (i + 1 < period) return null;
    if (i + 1 === period || out[i - 1] === null) {
      let sum = 0;
      for (let k = i - period + 1; k <= i; k++) sum += n[k].c;
      return sum / period; // seeded with the SMA of the first period
    }
    const a = 2 / (period + 1);
    return a * n[i].c + (1 - a) * out[i - 1];
  }
  if (kind === "vwap") {
    // cumulative within the UTC day: walk back to the day's first bar
    const day = Math.floor(n[i].t / DAY);
    let pv = 0;
    let v = 0;
    for (let k = i; k >= 0 && Math.floor(n[k].t / DAY) === day; k--) {
      pv += ((n[k].h + n[k].l + n[k].c) / 3) * n[k].v;
      v += n[k].v;
    }
    return v > 0 ? pv / v : null;
  }
  throw new Error(`unknown overlay ${kind}`);
}

/** Every value of an overlay over the bars (numbers from `nums`, with `t`). */
export function compute(kind, period, n) {
  const out = new Array(n.length);
  if (kind === "vwap") {
    let day = null;
    let pv = 0;
    let v = 0;
    for (let i = 0; i < n.length; i++) {
      const d = Math.floor(n[i].t / DAY);
      if (d !== day) { day = d; pv = 0; v = 0; }
      pv += ((n[i].h + n[i].l + n[i].c) / 3) * n[i].v;
      v += n[i].v;
      out[i] = v > 0 ? pv / v : null;
    }
    return out;
  }
  if (kind === "sma" || kind === "vma") {
    let sum = 0;
    for (let i = 0; i < n.length; i++) {
      sum += kind === "sma" ? n[i].c : n[i].v;
      if (i >= period) sum -= kind === "sma" ? n[i - period].c : n[i - period].v;
      out[i] = i + 1 >= period ? sum / period : null;
    }
    return out;
  }
  for (let i = 0; i < n.length; i++) out[i] = valueAt(kind, period, n, out, i);
  return out;
}

/** Heikin-Ashi candles of the bars (numbers from `nums`). */
export function heikinAshi(n) {
  const out = new Array(n.length);
  for (let i = 0; i < n.length; i++) out[i] = haAt(n, out, i);
  return out;
}

export function haAt(n, out, i) {
  const b = n[i];
  const c = (b.o + b.h + b.l + b.c) / 4;
  const o = i === 0 || !out[i - 1] ? (b.o + b.c) / 2 : (out[i - 1].o + out[i - 1].c) / 2;
  return { o, h: Math.max(b.h, o, c), l: Math.min(b.l, o, c), c };
}
