// The management API as the UI uses it: Basic credentials kept for the browser tab
// (sessionStorage), JSON requests, and live updates from GET /api/events read over fetch
// (EventSource cannot send an Authorization header), with polling when no stream is possible.

const KEY = "burrowmq.credentials";

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
    this.reason = reason;
  }
}

export class Api {
  constructor() {
    this.auth = sessionStorage.getItem(KEY);
    this.onUnauthorized = () => {};
  }

  login(user, password) {
    // btoa wants Latin-1: encode UTF-8 first, as RabbitMQ's UI does for non-ASCII names
    const bytes = new TextEncoder().encode(`${user}:${password}`);
    this.auth = btoa(String.fromCharCode(...bytes));
  }

  remember() {
    sessionStorage.setItem(KEY, this.auth);
  }

  logout() {
    this.auth = null;
    sessionStorage.removeItem(KEY);
  }

  headers(extra = {}) {
    // X-Requested-With: a refused login then comes without WWW-Authenticate, so that the
    // browser does not open its own login dialog over the UI's
    return { Authorization: `Basic ${this.auth}`, "X-Requested-With": "XMLHttpRequest", ...extra };
  }

  async request(method, path, body) {
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers: this.headers(body === undefined ? {} : { "Content-Type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, `no answer from the broker (${err.message})`);
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!resp.ok) {
      if (resp.status === 401) this.onUnauthorized(data && data.reason);
      const reason = (data && (data.reason || data.error)) || resp.statusText;
      throw new ApiError(resp.status, reason);
    }
    return data;
  }

  get(path) { return this.request("GET", path); }
  put(path, body) { return this.request("PUT", path, body || {}); }
  post(path, body) { return this.request("POST", path, body || {}); }
  del(path) { return this.request("DELETE", path); }

  // Keep `paths` live: onUpdate(path, status, body) for each answer that changed.
  // interval 0: read them once.  Returns a function that stops it.
  watch(paths, interval, onUpdate, onState) {
    const ctl = { stopped: false, abort: new AbortController(), timer: null };
    const stop = () => {
      ctl.stopped = true;
      ctl.abort.abort();
      clearTimeout(ctl.timer);
    };
    if (!paths.length) return stop;
    if (!interval) {
      this.readOnce(paths, onUpdate);
      onState("paused");
      return stop;
    }
    this.stream(paths, interval, onUpdate, onState, ctl);
    return stop;
  }

  async readOnce(paths, onUpdate) {
    await Promise.all(paths.map(async (p) => {
      try {
        onUpdate(p, 200, await this.get(p));
      } catch (err) {
        onUpdate(p, err.status || 0, { reason: err.reason || String(err) });
      }
    }));
  }

  async stream(paths, interval, onUpdate, onState, ctl) {
    const qs = new URLSearchParams({ interval: String(interval) });
    for (const p of paths) qs.append("watch", p);
    let resp;
    try {
      resp = await fetch(`/api/events?${qs}`, {
        headers: this.headers({ Accept: "text/event-stream" }), signal: ctl.abort.signal, cache: "no-store",
      });
    } catch (err) {
      if (ctl.stopped) return;
      resp = null;
    }
    if (ctl.stopped) return;
    if (!resp || !resp.ok || !resp.body) {
      if (resp && resp.status === 401) {
        this.onUnauthorized();
        return;
      }
      // no stream (too many open, or none at all): poll instead, and try the stream again later
      onState("polling");
      await this.readOnce(paths, onUpdate);
      if (!ctl.stopped) ctl.timer = setTimeout(() => this.stream(paths, interval, onUpdate, onState, ctl), interval * 1000);
      return;
    }
    onState("live");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          this.dispatch(block, onUpdate, onState);
        }
      }
    } catch (err) {
      if (ctl.stopped) return;
    }
    if (ctl.stopped) return;
    onState("reconnecting");
    ctl.timer = setTimeout(() => this.stream(paths, interval, onUpdate, onState, ctl), 2000);
  }

  dispatch(block, onUpdate, onState) {
    let event = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (!data) return;
    const msg = JSON.parse(data);
    if (event === "update") onUpdate(msg.watch, msg.status, msg.body);
    else if (event === "end") {
      onState("ended", msg.reason);
      if (/log in again|deleted/.test(msg.reason)) this.onUnauthorized(msg.reason);
    }
  }
}
