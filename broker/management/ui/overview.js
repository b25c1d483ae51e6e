// Overview: alarms first, the queued-messages and message-rate charts, totals, the node, listeners.

import { Chart } from "./chart.js";
import { bytes, clear, duration, emptyState, errorBox, h, kv, loading, num, rate, table } from "./dom.js";

const ALARM_TEXT = {
  memory: "Memory alarm: the broker uses more memory than its high watermark. Publishers are blocked until consumers drain queues or the limit (--memory-high-watermark) is raised.",
  disk: "Disk alarm: free disk space is below --disk-free-limit. Publishers are blocked until space is freed.",
  metadata: "Metadata alarm: definitions could not be saved to disk. Changes are in effect but may not survive a restart; check the data directory's disk.",
};

const HISTORY = "lengths_age=600&lengths_incr=5&msg_rates_age=600&msg_rates_incr=5";

export function overviewPage(app) {
  const alarms = h("div", { class: "alarms", "aria-live": "assertive" });
  const queued = new Chart("Queued messages", [
    { key: "ready", label: "Ready", cls: "s1" },
    { key: "unacked", label: "Unacked", cls: "s2" },
    { key: "total", label: "Total", cls: "s3" },
  ], num);
  const rates = new Chart("Message rates", [
    { key: "publish", label: "Publish", cls: "s1" },
    { key: "deliver", label: "Deliver / get", cls: "s2" },
    { key: "ack", label: "Ack", cls: "s3" },
  ], (v) => `${v.toLocaleString("en-US", { maximumFractionDigits: 1 })}/s`);
  const totals = h("div", { class: "panel" }, loading());
  const node = h("div", { class: "panel" }, loading());
  const listeners = h("div", { class: "panel" });
  const root = h("section", { "aria-labelledby": "page-title" },
    h("h2", { id: "page-title", text: "Overview" }), alarms,
    h("div", { class: "charts" }, queued.el, rates.el),
    h("div", { class: "columns" }, totals, node), listeners);
  let last = null;
  const monitor = app.tags.has("monitoring") || app.tags.has("administrator");

  function sample() {
    if (!last) return;
    const q = last.queue_totals || {};
    const m = last.message_stats || {};
    queued.add({ ready: q.messages_ready || 0, unacked: q.messages_unacknowledged || 0, total: q.messages || 0 });
    rates.add({
      publish: (m.publish_details || {}).rate || 0,
      deliver: (m.deliver_get_details || {}).rate || 0,
      ack: (m.ack_details || {}).rate || 0,
    });
  }

  function showOverview(o) {
    last = o;
    const q = o.queue_totals || {};
    const t = o.object_totals || {};
    const m = o.message_stats || {};
    clear(totals, h("h3", { text: "Totals" }), kv([
      ["Ready", num(q.messages_ready)], ["Unacked", num(q.messages_unacknowledged)], ["Total", num(q.messages)],
      ["Publish", rate(m.publish_details)], ["Deliver / get", rate(m.deliver_get_details)], ["Ack", rate(m.ack_details)],
      ["Connections", num(t.connections)], ["Channels", num(t.channels)], ["Exchanges", num(t.exchanges)],
      ["Queues", num(t.queues)], ["Consumers", num(t.consumers)], ["Unroutable", num(o.unroutable)],
    ]));
    clear(listeners, h("h3", { text: "Listeners" }), table([
      { key: "protocol", label: "Protocol" },
      { key: "ip_address", label: "Bound to" },
      { key: "port", label: "Port", num: true },
    ], o.listeners || [], { label: "Listeners" }));
    if (!monitor) {
      clear(node, h("h3", { text: "Node" }), kv([
        ["Version", `${o.product_name} ${o.product_version}`], ["Runtime", o.erlang_version], ["Node", o.node],
      ]), h("p", { class: "hint", text: "Memory, disk and file descriptors are shown to users tagged monitoring or administrator." }));
    }
    if (queued.points.length === 0) sample();
  }

  function gauge(used, limit, fmt) {
    const pct = limit ? Math.min(100, Math.round((used / limit) * 100)) : 0;
    const bar = h("progress", { max: 100, value: pct, "aria-label": `${pct}%` });
    return h("span", { class: "gauge" }, bar, ` ${fmt(used)} of ${fmt(limit)}`);
  }

  function showNode(n) {
    const ov = last || {};
    clear(node, h("h3", { text: "Node" }), kv([
      ["Name", n.name], ["Version", `${ov.product_name || "BurrowMQ"} ${ov.product_version || ""}`],
      ["Runtime", ov.erlang_version || ""], ["Uptime", duration(n.uptime)],
      ["Memory", gauge(n.mem_used, n.mem_limit, bytes)],
      ["Disk free", h("span", {}, `${bytes(n.disk_free)} (limit ${bytes(n.disk_free_limit)})`,
        n.disk_free_alarm ? h("strong", { class: "bad", text: " alarm" }) : null)],
      ["File descriptors", gauge(n.fd_used, n.fd_total, num)],
      ["Sockets", `${num(n.sockets_used)} of ${num(n.sockets_total)}`],
      ["Data directory", n.data_dir || "none (transient)"],
    ]));
  }

  function showAlarms(status, body) {
    if (status === 200) {
      clear(alarms);
      return;
    }
    if (status !== 503 || !body || !body.alarms) {
      clear(alarms, errorBox({ status, reason: body && body.reason }, "Reading the alarms"));
      return;
    }
    clear(alarms, body.alarms.map((a) => h("div", { class: "alarm", role: "alert" },
      h("strong", { text: `${a.resource} alarm in effect` }), " ",
      ALARM_TEXT[a.resource] || a.reason || "")));
  }

  // the broker's last 10 minutes of samples, so the charts do not start empty
  async function history() {
    let o;
    try {
      o = await app.api.get(`/api/overview?${HISTORY}`);
    } catch {
      return;  // the live updates still draw from now on
    }
    const q = o.queue_totals || {};
    const len = (k) => ((q[`${k}_details`] || {}).samples || []).slice().reverse();
    const ready = len("messages_ready");
    const unacked = len("messages_unacknowledged");
    queued.seed(ready.map((s, i) => ({ at: s.timestamp,
      values: { ready: s.sample, unacked: (unacked[i] || {}).sample || 0, total: s.sample + ((unacked[i] || {}).sample || 0) } })));
    const m = o.message_stats || {};
    const counts = (k) => ((m[`${k}_details`] || {}).samples || []).slice().reverse();
    const pub = counts("publish");
    const del = counts("deliver_get");
    const ack = counts("ack");
    const perSecond = (list, i) => {
      if (!list[i] || !list[i - 1]) return 0;
      const dt = (list[i].timestamp - list[i - 1].timestamp) / 1000;
      return dt > 0 ? Math.max(0, (list[i].sample - list[i - 1].sample) / dt) : 0;
    };
    rates.seed(pub.slice(1).map((s, j) => ({ at: s.timestamp,
      values: { publish: perSecond(pub, j + 1), deliver: perSecond(del, j + 1), ack: perSecond(ack, j + 1) } })));
  }
  history();

  return {
    title: "Overview",
    root,
    watches() {
      return ["/api/overview", "/api/health/checks/alarms"].concat(monitor ? ["/api/nodes"] : []);
    },
    update(path, status, body) {
      if (path === "/api/health/checks/alarms") return showAlarms(status, body);
      const target = path === "/api/overview" ? totals : node;
      if (status !== 200) {
        clear(target, errorBox({ status, reason: body && body.reason }, `Reading ${path}`));
        return;
      }
      if (path === "/api/overview") showOverview(body);
      else if (body.length) showNode(body[0]);
      else clear(node, emptyState("No node information", null));
    },
    tick: sample,
  };
}
