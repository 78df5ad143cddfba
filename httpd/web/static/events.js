// The records the page shows, kept live by event.from (never by polling records): the first
// call (token "") brings every object, each later one what changed since its token.

import { XenAPIError } from "./xapi.js";

export const CLASSES = ["host", "host_metrics", "SR", "VM", "VM_guest_metrics", "VM_metrics",
                        "VBD", "VDI", "VIF", "network", "task"];

export class Records {
  constructor(session, { onChange, onExpired, onTrouble }) {
    this.session = session;
    this.onChange = onChange;      // called after each batch of events
    this.onExpired = onExpired;    // the session is gone: back to the login form
    this.onTrouble = onTrouble;    // (error or null) a transient failure, shown, retried
    this.stopped = false;
    this.clear();
  }

  clear() {
    this.byClass = new Map(CLASSES.map((c) => [c.toLowerCase(), new Map()]));
  }

  all(cls) { return this.byClass.get(cls.toLowerCase()) || new Map(); }
  get(cls, ref) { return this.all(cls).get(ref); }
  find(cls, pred) {
    for (const [ref, rec] of this.all(cls)) if (pred(rec)) return [ref, rec];
    return [null, null];
  }

  apply(ev) {
    const map = this.all(ev.class);
    if (ev.operation === "del") map.delete(ev.ref);
    else if (ev.snapshot) map.set(ev.ref, ev.snapshot);
  }

  async run() {
    let token = "";
    while (!this.stopped) {
      try {
        const out = await this.session.call("event.from", CLASSES, token, 30.0);
        if (this.stopped) return;
        if (token === "") this.clear();
        for (const ev of out.events) this.apply(ev);
        token = out.token;
        this.onTrouble(null);
        this.onChange();
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof XenAPIError && e.code === "SESSION_INVALID") {
          this.stop();
          this.onExpired();
          return;
        }
        if (e instanceof XenAPIError && e.code === "EVENTS_LOST") token = "";
        this.onTrouble(e);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  stop() { this.stopped = true; }
}
