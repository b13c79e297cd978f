// The legend under the crosshair: the hovered (or newest) bar's OHLCV in the symbol's
// decimals, its change from the bar before, the overlays' values there and the bar's
// state (forming, unconfirmed, incomplete).

import { formatPrice, formatTime, formatVolume } from "./format.js";
import { OVERLAYS } from "./overlays.js";

/** The legend of bar `i` of a ChartView (bars, their numbers, overlays, decimals, utc). */
export function legendHtml(view, i) {
  const b = view.bars[i];
  const d = view.decimals;
  const p = (x) => formatPrice(x, d);
  const prev = i > 0 ? view.n[i - 1].c : view.n[i].o;
  const change = view.n[i].c - prev;
  const pct = prev ? (change / prev) * 100 : 0;
  const cls = change >= 0 ? "up" : "down";
  const parts = [
    `<span>${formatTime(b.time, view.utc)} ${view.utc ? "UTC" : ""}</span>`,
    `O <b>${p(b.open)}</b>`, `H <b>${p(b.high)}</b>`, `L <b>${p(b.low)}</b>`,
    `C <b>${p(b.close)}</b>`,
    `<b class="${cls}">${change >= 0 ? "+" : ""}${change.toFixed(d)} (${pct >= 0 ? "+" : ""}${pct.toFixed(2)}%)</b>`,
    `V <b>${formatVolume(b.volume)}</b>`,
  ];
  for (const [kind, o] of Object.entries(view.overlays)) {
    if (o.on && o.values[i] !== null && o.values[i] !== undefined) {
      const label = `${OVERLAYS[kind].label}${o.period ? ` ${o.period}` : ""}`;
      const v = kind === "vma" ? formatVolume(o.values[i]) : o.values[i].toFixed(d);
      parts.push(`<span class="ov-${kind}">${label} ${v}</span>`);
    }
  }
  if (b.state !== "official") parts.push(`<i class="state ${b.state}">${b.state}</i>`);
  if (b.complete === false) parts.push(`<i class="state incomplete" title="trades were lost to a gap in the stream; the official candle will replace it">incomplete</i>`);
  return parts.join(" ");
}
