// The market overview: every served symbol with last price, 24 h change and 24 h quote
// volume; sortable by any column, filtered by quote asset and text, live (refreshed
// every 2 s while shown); a click opens the symbol's chart.

import { formatPct, formatVolume, trimPrice } from "./format.js";

const COLUMNS = [
  ["symbol", "Symbol"], ["last", "Last price"], ["change_pct", "24 h change"],
  ["quote_volume", "24 h volume (quote)"],
];

export class Overview {
  constructor(el, market, onOpen) {
    this.el = el;
    this.market = market;
    this.onOpen = onOpen;
    this.sort = { key: "quote_volume", dir: -1 };
    this.quote = "";
    this.text = "";
    this.renders = 0;
    this.visible = false;
    el.innerHTML = `
      <div class="ov-bar">
        <input class="ov-filter" type="search" placeholder="filter symbols" aria-label="filter symbols">
        <span class="ov-quotes" role="group" aria-label="quote asset"></span>
        <span class="ov-note"></span>
      </div>
      <table class="ov-table"><thead><tr>
        <th></th>${COLUMNS.map(([k, label]) => `<th data-sort="${k}" tabindex="0">${label}</th>`).join("")}
      </tr></thead><tbody></tbody></table>`;
    this.body = el.querySelector("tbody");
    el.querySelector(".ov-filter").addEventListener("input", (e) => { this.text = e.target.value.trim().toUpperCase(); this.render(); });
    el.querySelector("thead").addEventListener("click", (e) => {
      const th = e.target.closest("[data-sort]");
      if (!th) return;
      const key = th.dataset.sort;
      this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : key === "symbol" ? 1 : -1 };
      this.render();
    });
    el.querySelector(".ov-quotes").addEventListener("click", (e) => {
      const b = e.target.closest("[data-quote]");
      if (b) { this.quote = b.dataset.quote; this.render(); }
    });
    this.body.addEventListener("click", (e) => {
      const star = e.target.closest("[data-star]");
      if (star) { this.market.toggleFavourite(star.dataset.star); return; }
      const row = e.target.closest("[data-symbol]");
      if (row) this.onOpen(row.dataset.symbol);
    });
    market.listeners.add(() => { if (this.visible) this.render(); });
  }

  show() {
    this.visible = true;
    this.el.hidden = false;
    this.market.follow(2_000);
    this.render();
  }

  hide() {
    this.visible = false;
    this.el.hidden = true;
    this.market.follow(30_000);
  }

  rows() {
    const all = [...this.market.tickers.values()];
    const rows = all.filter((t) => (!this.quote || t.quote === this.quote) && (!this.text || t.symbol.includes(this.text)));
    const { key, dir } = this.sort;
    const val = (t) => (key === "symbol" ? t.symbol : t[key] === null || t[key] === undefined ? null : Number(t[key]));
    rows.sort((a, b) => {
      const x = val(a);
      const y = val(b);
      if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1; // unknown last
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.symbol < b.symbol ? -1 : 1;
    });
    return rows;
  }

  render() {
    this.renders += 1;
    const quotes = [...new Set([...this.market.tickers.values()].map((t) => t.quote).filter(Boolean))].sort();
    this.el.querySelector(".ov-quotes").innerHTML = ["", ...quotes].map((q) =>
      `<button data-quote="${q}" class="${q === this.quote ? "on" : ""}">${q || "All"}</button>`).join("");
    for (const th of this.el.querySelectorAll("[data-sort]")) {
      th.dataset.dir = th.dataset.sort === this.sort.key ? (this.sort.dir > 0 ? "asc" : "desc") : "";
    }
    const rows = this.rows();
    this.el.querySelector(".ov-note").textContent =
      `${rows.length} symbols · 24 h from ${this.market.interval || "stored"} candles · updated ${new Date().toLocaleTimeString()}`;
    this.body.innerHTML = rows.map((t) => {
      const pct = t.change_pct === null || t.change_pct === undefined ? null : Number(t.change_pct);
      const fav = this.market.isFavourite(t.symbol);
      return `<tr data-symbol="${t.symbol}"><td data-star="${t.symbol}" class="star ${fav ? "on" : ""}">${fav ? "★" : "☆"}</td>` +
        `<td><b>${t.symbol}</b></td><td class="num">${t.last ? trimPrice(t.last) : "–"}</td>` +
        `<td class="num ${pct === null ? "" : pct >= 0 ? "up" : "down"}">${formatPct(t.change_pct)}</td>` +
        `<td class="num">${t.quote_volume ? formatVolume(t.quote_volume) : "–"}</td></tr>`;
    }).join("");
  }
}
