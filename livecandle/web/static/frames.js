// Animation frames shared by the charts of a page: at most one chart changes its drawn
// data per frame. lightweight-charts repaints a chart in the animation frame after its
// data changed; charts fed by the same stream change together (a tick burst, the minute
// close, the official candles' reload), and their repaints in one frame made one long
// task (4 charts: over 50 ms). A chart's drawing waits here for a frame no other chart
// has drawn in; its data (bars, overlay values) is always current at once.

export class FrameSlots {
  constructor(requestFrame = (cb) => requestAnimationFrame(cb)) {
    this.requestFrame = requestFrame;
    this.holder = null; // the chart that drew in the current frame
    this.queue = []; // [{owner, job}] waiting for a frame, oldest first
    this.ticking = false;
  }

  /** Run `job` now if no other chart drew in this frame, else in the next free frame (in
   * order of asking). One waiting job per owner: asking again replaces it. Returns
   * whether it ran now. */
  run(owner, job) {
    if ((this.holder === null || this.holder === owner) && this.queue.length === 0) {
      this.take(owner);
      job();
      return true;
    }
    const waiting = this.queue.find((e) => e.owner === owner);
    if (waiting) waiting.job = job;
    else this.queue.push({ owner, job });
    this.tick();
    return false;
  }

  /** The owner is gone: its waiting job is dropped. */
  forget(owner) {
    this.queue = this.queue.filter((e) => e.owner !== owner);
    if (this.holder === owner) this.holder = null;
  }

  take(owner) {
    this.holder = owner;
    this.tick();
  }

  tick() {
    if (this.ticking) return;
    this.ticking = true;
    this.requestFrame(() => this.frame());
  }

  frame() {
    this.ticking = false;
    this.holder = null;
    const next = this.queue.shift();
    if (!next) return;
    this.take(next.owner);
    next.job();
  }
}

/** The page's one set of frame slots. */
export const frames = new FrameSlots();
