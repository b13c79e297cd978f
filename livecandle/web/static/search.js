// The symbol search: type (e.g. "eth"), arrows, Enter. Matches by prefix first, then
// anywhere; favourites first; each row shows the last price and 24 h change.

import { formatPct, trimPrice } from "./format.js";

const SHOWN = 50;

/** Symbols matching `text`, best first (favourites, then prefix, then substring). */
export function matches(symbols, text, favourites) {
  const t = text.trim().toUpperCase();
  const rank = (s) => {
    const fav = favourites.has(s) ? 0 : 1;
    if (!t) return fav * 3;
    if (s.startsWith(t)) return fav * 3 + 1;
    if (s.includes(t)) return fav * 3 + 2;
    return -1;
  };
  const out = [];
  for (const s of symbols) {
    const r = rank(s);
    if (r >= 0) out.push([r, s]);
  }
  out.sort((a, b) => a[0] - b[0] || a[1].length - b[1].length || (a[1] < b[1] ? -1 : 1));
  return out.slice(0, SHOWN).map((x) => x[1]);
}

export class Search {
  /**
   * @param {HTMLInputElement} input
   * @param {HTMLElement} list
   * @param {import("./market.js").Market} market
   * @param {(symbol: string) => void} onPick
   */
  constructor(input, list, market, onPick) {
    this.input = input;
    this.list = list;
    this.market = market;
    this.onPick = onPick;
    this.items = [];
    this.index = 0;
    input.addEventListener("input", () => { this.index = 0; this.render(); });
    input.addEventListener("focus", () => { this.market.refresh(); this.render(); });
    // closed a moment after the input loses focus (a click on a row lands first), unless
    // it has it again by then (a pick, then the search at once: the list stays open)
    input.addEventListener("blur", () => setTimeout(() => {
      if (document.activeElement !== this.input) this.close();
    }, 150));
    input.addEventListener("keydown", (e) => this.key(e));
    list.addEventListener("mousedown", (e) => {
      e.preventDefault(); // keep the input focused
      const star = e.target.closest("[data-star]");
      const row = e.target.closest("[data-symbol]");
      if (star) { this.market.toggleFavourite(star.dataset.star); this.render(); }
      else if (row) this.pick(row.dataset.symbol);
    });
    market.listeners.add(() => { if (!this.list.hidden) this.render(); });
  }

  open(initial = "") {
    this.input.value = initial;
    this.input.focus();
    this.render();
  }

  close() { this.list.hidden = true; }

  key(e) {
    if (e.key === "ArrowDown") { this.index = Math.min(this.items.length - 1, this.index + 1); this.render(); e.preventDefault(); }
    else if (e.key === "ArrowUp") { this.index = Math.max(0, this.index - 1); this.render(); e.preventDefault(); }
    else if (e.key === "Enter") { if (this.items[this.index]) this.pick(this.items[this.index]); e.preventDefault(); }
    else if (e.key === "Escape") { this.close(); this.input.blur(); }
  }

  pick(symbol) {
    this.input.value = "";
    this.close();
    this.input.blur();
    this.onPick(symbol);
  }

  render() {
    this.items = matches(this.market.symbols, this.input.value, this.market.favourites);
    if (this.index >= this.items.length) this.index = Math.max(0, this.items.length - 1);
    const rows = this.items.map((s, i) => {
      const t = this.market.tickers.get(s) || {};
      const pct = t.change_pct === null || t.change_pct === undefined ? null : Number(t.change_pct);
      const cls = pct === null ? "" : pct >= 0 ? "up" : "down";
      const fav = this.market.isFavourite(s);
      return `<li data-symbol="${s}" class="${i === this.index ? "selected" : ""}" role="option">
        <span data-star="${s}" class="star ${fav ? "on" : ""}" title="favourite">${fav ? "★" : "☆"}</span>
        <b>${s}</b><span class="num">${t.last ? trimPrice(t.last) : "–"}</span>
        <span class="num ${cls}">${formatPct(t.change_pct)}</span></li>`;
    });
    this.list.innerHTML = rows.join("") || `<li class="empty">no symbol matches “${escapeHtml(this.input.value)}”</li>`;
    this.list.hidden = false;
    const sel = this.list.querySelector(".selected");
    if (sel) sel.scrollIntoView({ block: "nearest" });
  }
}

/** Text for innerHTML: what the user typed is never markup. */
function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
