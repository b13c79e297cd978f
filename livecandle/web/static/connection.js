// The page's one socket.io connection, shared by every chart: rooms are counted so two
// charts of the same series share one subscription, and every room is subscribed again
// after a reconnect.

import { io } from "/vendor/socket.io.mjs";

export class Connection {
  constructor() {
    this.rooms = new Map(); // "SYMBOL:interval" -> count
    this.listeners = new Set();
    this.reconnects = 0;
    this.state = { state: "connecting", text: "connecting…" };
    this.socket = io({ transports: ["websocket"], reconnectionDelayMax: 5000 });
    this.socket.on("connect", () => {
      for (const room of this.rooms.keys()) this.emitRoom("subscribe", room);
      this.setState("live", "live");
      this.each((l) => l.connected && l.connected());
    });
    this.socket.on("disconnect", (reason) => this.setState("reconnecting", `disconnected (${reason})`));
    this.socket.io.on("reconnect", () => { this.reconnects += 1; });
    this.socket.on("connect_error", () => this.setState("offline", "cannot reach the server"));
    this.socket.on("error", (e) => console.warn("livecandle server said:", e));
    for (const event of ["live_candle", "live_price", "klines_updated"]) {
      this.socket.on(event, (m) => this.each((l) => l[event] && l[event](m)));
    }
  }

  each(fn) { for (const l of this.listeners) fn(l); }

  setState(state, text) {
    this.state = { state, text };
    this.each((l) => l.status && l.status(state, text));
  }

  emitRoom(what, room) {
    const [symbol, interval] = room.split(":");
    this.socket.emit(what, { symbol, interval });
  }

  subscribe(symbol, interval) {
    const room = `${symbol}:${interval}`;
    const n = this.rooms.get(room) || 0;
    this.rooms.set(room, n + 1);
    if (n === 0 && this.socket.connected) this.emitRoom("subscribe", room);
  }

  unsubscribe(symbol, interval) {
    const room = `${symbol}:${interval}`;
    const n = this.rooms.get(room) || 0;
    if (n <= 1) {
      this.rooms.delete(room);
      if (n === 1 && this.socket.connected) this.emitRoom("unsubscribe", room);
    } else {
      this.rooms.set(room, n - 1);
    }
  }
}
