// Formatting at the display boundary: prices by the symbol's tick size, times in UTC or
// the browser's zone, volumes and changes. Values arrive as decimal strings.

/** Decimals of a tick size ("0.01000000" -> 2); 2 when unknown. */
export function decimalsOfTick(tickSize) {
  if (!tickSize) return 2;
  const frac = String(tickSize).split(".")[1] || "";
  const kept = frac.replace(/0+$/, "");
  return kept.length;
}

/** A decimal string cut (never rounded: exact) or padded to `decimals` places. */
export function formatPrice(text, decimals = 2) {
  if (text === null || text === undefined) return "–";
  const s = String(text);
  const neg = s.startsWith("-");
  const [whole, frac = ""] = (neg ? s.slice(1) : s).split(".");
  const body = decimals > 0 ? `${whole}.${frac.padEnd(decimals, "0").slice(0, decimals)}` : whole;
  return neg ? `-${body}` : body;
}

/** "51106.50000000" -> "51106.50": trailing zeros beyond two decimals removed. */
export function trimPrice(text) {
  if (typeof text !== "string") return String(text);
  if (!text.includes(".")) return /^-?\d+$/.test(text) ? `${text}.00` : text;
  const [whole, frac] = text.split(".");
  const kept = frac.replace(/0+$/, "");
  return `${whole}.${kept.length >= 2 ? kept : kept.padEnd(2, "0")}`;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** "2026-12-01 13:05:07" in UTC or in the browser's zone. */
export function formatTime(ms, utc) {
  const d = new Date(ms);
  if (utc) return d.toISOString().replace("T", " ").slice(0, 19);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Tick marks of the time axis (lightweight-charts' TickMarkType 0..4). */
export function tickMark(ms, type, utc) {
  const d = new Date(ms);
  const g = utc
    ? { y: d.getUTCFullYear(), mo: d.getUTCMonth(), d: d.getUTCDate(), h: d.getUTCHours(), mi: d.getUTCMinutes(), s: d.getUTCSeconds() }
    : { y: d.getFullYear(), mo: d.getMonth(), d: d.getDate(), h: d.getHours(), mi: d.getMinutes(), s: d.getSeconds() };
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  if (type === 0) return String(g.y);
  if (type === 1) return months[g.mo];
  if (type === 2) return `${g.d} ${months[g.mo]}`;
  if (type === 3) return `${pad(g.h)}:${pad(g.mi)}`;
  return `${pad(g.h)}:${pad(g.mi)}:${pad(g.s)}`;
}

/** 1234567.8 -> "1.23M". */
export function formatVolume(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return "–";
  const units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]];
  for (const [size, unit] of units) if (Math.abs(n) >= size) return `${(n / size).toFixed(2)}${unit}`;
  return n.toFixed(n >= 100 ? 0 : 2);
}

/** "+1.25%" / "-0.40%" / "–". */
export function formatPct(pct) {
  if (pct === null || pct === undefined) return "–";
  const n = Number(pct);
  return `${n > 0 ? "+" : ""}${n.toFixed(2)}%`;
}
