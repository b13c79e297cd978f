// The view in the URL: symbol, interval, layout and page. A single chart keeps the old
// form (?symbol=BTCUSDT&interval=1m); several: ?layout=4&charts=BTCUSDT:1m,ETHUSDT:1m,...;
// the market overview: ?view=overview.

/** @typedef {{view: string, charts: {symbol: string, interval: string}[]}} ViewState */

/** The state a query string asks for, made valid against what the server serves. */
export function readState(search, symbols, intervals) {
  const q = new URLSearchParams(search);
  const okSymbol = (s) => (symbols.includes(s) ? s : symbols[0]);
  const okInterval = (i) => (intervals.includes(i) ? i : intervals[0]);
  const view = q.get("view") === "overview" ? "overview" : "chart";
  let charts = [];
  const layout = [1, 2, 4].includes(Number(q.get("layout"))) ? Number(q.get("layout")) : 1;
  if (q.get("charts")) {
    charts = q.get("charts").split(",").map((c) => {
      const [symbol, interval] = c.split(":");
      return { symbol: okSymbol(symbol), interval: okInterval(interval) };
    });
  } else {
    charts = [{ symbol: okSymbol(q.get("symbol")), interval: okInterval(q.get("interval")) }];
  }
  charts = charts.slice(0, layout);
  while (charts.length < layout) charts.push({ ...charts[charts.length - 1] });
  return { view, charts };
}

/** The query string of a state. */
export function queryOf(state) {
  const parts = [];
  if (state.view === "overview") parts.push("view=overview");
  if (state.charts.length === 1) {
    const c = state.charts[0];
    parts.push(`symbol=${encodeURIComponent(c.symbol)}`, `interval=${encodeURIComponent(c.interval)}`);
  } else {
    parts.push(`layout=${state.charts.length}`);
    parts.push(`charts=${state.charts.map((c) => `${c.symbol}:${c.interval}`).join(",")}`);
  }
  return `?${parts.join("&")}`;
}

/** Record a state: a new history entry (back returns to the previous view) unless `replace`. */
export function writeState(state, replace = false) {
  const url = queryOf(state);
  if (url === location.search) return;
  if (replace) history.replaceState(state, "", url);
  else history.pushState(state, "", url);
}
