// Older pages of a series (GET /api/history): stored in Redis, or fetched from the
// exchange on demand by the server; `listing` says where the series begins.

import { previousOpen } from "./intervals.js";

/** A /api/klines or /api/history row -> a bar (prices stay decimal strings). */
export function rowToBar(row) {
  return {
    time: row[0], open: row[1], high: row[2], low: row[3], close: row[4],
    volume: row[5], quoteVolume: row[7], state: row[12],
  };
}

/** The page of official candles before `oldestMs`: {bars, listing, source}. */
export async function fetchOlder(symbol, interval, oldestMs, limit = 1000) {
  const end = previousOpen(interval, oldestMs);
  const url = `/api/history?symbol=${encodeURIComponent(symbol)}` +
    `&interval=${encodeURIComponent(interval)}&end=${end}&limit=${limit}`;
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return {
    bars: body.candles.map(rowToBar), listing: body.listing, source: body.source, error: body.error,
  };
}

/** `older` (ascending) before `bars` (ascending): unique by time, older ones never win. */
export function prepend(older, bars) {
  const first = bars.length ? bars[0].time : Infinity;
  const head = [];
  let last = -Infinity;
  for (const b of older) {
    if (b.time < first && b.time > last) { head.push(b); last = b.time; }
  }
  return head.concat(bars);
}

const SAME = ["open", "high", "low", "close", "volume", "state", "complete"];

/** How `bars` differs from `old` (both ascending): `kept`, the leading bars at the same
 * times; `from`, the first bar that changed (its values, or `kept` when none did). The
 * chart keeps the first `from` bars, updates the others up to `kept` in place, removes
 * the rest of `old` and appends the rest of `bars`. */
export function changeOf(old, bars) {
  const n = Math.min(old.length, bars.length);
  let from = -1;
  let kept = 0;
  while (kept < n && old[kept].time === bars[kept].time) {
    if (from < 0 && SAME.some((k) => old[kept][k] !== bars[kept][k])) from = kept;
    kept += 1;
  }
  return { kept, from: from < 0 ? kept : from };
}
