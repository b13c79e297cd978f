// The market: every served symbol's last price, 24 h change and quote volume
// (GET /api/tickers), refreshed while someone looks; and the favourites (localStorage).

const FAVOURITES = "livecandle.favourites";

export class Market {
  constructor(symbols) {
    /** @type {Map<string, object>} */ this.tickers = new Map();
    for (const s of symbols) this.tickers.set(s, { symbol: s, quote: "", last: null, change_pct: null, quote_volume: null });
    this.symbols = symbols;
    this.listeners = new Set();
    this.refreshes = 0;
    this.period = 10_000;
    this.timer = null;
    this.interval = null;
    try {
      this.favourites = new Set(JSON.parse(localStorage.getItem(FAVOURITES) || "[]"));
    } catch (e) {
      this.favourites = new Set();
    }
  }

  /** Refresh now and every `periodMs` (the overview asks for more often). */
  follow(periodMs) {
    this.period = periodMs;
    clearTimeout(this.timer);
    this.refresh();
  }

  async refresh() {
    clearTimeout(this.timer);
    try {
      const r = await fetch("/api/tickers");
      if (r.ok) {
        const body = await r.json();
        this.interval = body.interval;
        for (const t of body.tickers) this.tickers.set(t.symbol, t);
        this.refreshes += 1;
        for (const l of this.listeners) l(this);
      }
    } catch (e) {
      // the status pill already says when the server is out of reach
    }
    this.timer = setTimeout(() => this.refresh(), this.period);
  }

  isFavourite(symbol) { return this.favourites.has(symbol); }

  toggleFavourite(symbol) {
    if (this.favourites.has(symbol)) this.favourites.delete(symbol);
    else this.favourites.add(symbol);
    localStorage.setItem(FAVOURITES, JSON.stringify([...this.favourites]));
    for (const l of this.listeners) l(this);
  }
}
