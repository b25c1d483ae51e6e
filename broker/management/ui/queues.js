// Queues: the list (filter, regex, sort, pages) with "Add a new queue", and a queue's page:
// details, consumers, bindings, Publish message, Get messages, the message browser (peek,
// which leaves messages in place; a stream's pages by offset: streambrowser.js), Purge and Delete.

import { bytes, checkbox, clear, emptyState, errorBox, field, form, h, json, kv, link, loading, num, parseTable, rate, select, table } from "./dom.js";
import { bindingsTable } from "./exchanges.js";
import { listPage, vpath } from "./lists.js";
import { messageView } from "./messages.js";
import { policyPairs } from "./policies.js";
import { publishForm } from "./publish.js";
import { streamBrowser } from "./streambrowser.js";

const e = encodeURIComponent;

function features(q) {
  return [q.durable ? "D" : "", q.auto_delete ? "AD" : "", q.exclusive ? "Excl" : "",
    ...Object.keys(q.arguments || {}).map((k) => k.replace(/^x-/, ""))].filter(Boolean).join(" ");
}

export function queuesPage(app) {
  const add = form("Add a new queue", [
    field("Virtual host", app.vhostSelect("vhost")),
    field("Type", select("type", [["classic", "Classic"], ["quorum", "Quorum"], ["stream", "Stream"]], "classic"),
      "Quorum queues and streams need a broker that supports them."),
    field("Name", h("input", { name: "name", required: true, maxlength: 255, autocomplete: "off" })),
    checkbox("Durable", "durable", true), checkbox("Auto delete", "auto_delete", false),
    field("Arguments", h("textarea", { name: "arguments", rows: 2, placeholder: "x-max-length = 1000" }), "One a line: key = value."),
  ], "Add queue", async (d) => {
    const args = parseTable(d.get("arguments"), "Arguments");
    if (d.get("type") !== "classic") args["x-queue-type"] = d.get("type");
    const name = d.get("name");
    await app.api.put(`/api/queues/${e(d.get("vhost"))}/${e(name)}`, {
      durable: d.get("durable") === "on", auto_delete: d.get("auto_delete") === "on", arguments: args,
    });
    app.rewatch();
    return `Queue '${name}' added.`;
  });
  return listPage(app, {
    id: "queues",
    title: "Queues",
    path: (v) => vpath(v, "/api/queues", (x) => `/api/queues/${x}`),
    columns: [
      { label: "Virtual host", cell: (q) => q.vhost, sort: "vhost" },
      { label: "Name", cell: (q) => link(`#/queues/${e(q.vhost)}/${e(q.name)}`, q.name), sort: "name" },
      { key: "type", label: "Type", sort: "type" },
      { label: "Features", cell: features },
      { key: "state", label: "State" },
      { label: "Ready", cell: (q) => num(q.messages_ready), sort: "messages_ready", num: true },
      { label: "Unacked", cell: (q) => num(q.messages_unacknowledged), sort: "messages_unacknowledged", num: true },
      { label: "Total", cell: (q) => num(q.messages), sort: "messages", num: true },
      { label: "Consumers", cell: (q) => num(q.consumers), sort: "consumers", num: true },
      { label: "Incoming", cell: (q) => rate((q.message_stats || {}).publish_details), num: true },
      { label: "Deliver / get", cell: (q) => rate((q.message_stats || {}).deliver_get_details), num: true },
      { label: "Ack", cell: (q) => rate((q.message_stats || {}).ack_details), num: true },
    ],
    empty: () => emptyState("No queues yet", "Add one below, or declare one from a client: channel.queue_declare(queue=\"hello\")."),
    below: add,
  });
}

function getForm(app, base) {
  const out = h("div", { class: "messages", "aria-live": "polite" });
  const f = form("Get messages", [
    h("p", { class: "hint strong", text: "Getting messages takes them from the queue: with a requeue mode they come back marked redelivered. To look without taking, use the message browser below." }),
    field("Ack mode", select("ackmode", [
      ["ack_requeue_true", "Nack message requeue true"], ["ack_requeue_false", "Automatic ack"],
      ["reject_requeue_true", "Reject requeue true"], ["reject_requeue_false", "Reject requeue false"],
    ], "ack_requeue_true")),
    field("Encoding", select("encoding", [["auto", "Auto string / base64"], ["base64", "base64"]], "auto")),
    field("Messages", h("input", { name: "count", type: "number", min: 1, max: 1000, value: 1 })),
  ], "Get message(s)", async (d) => {
    const msgs = await app.api.post(`${base}/get`, {
      count: Number(d.get("count")), ackmode: d.get("ackmode"), encoding: d.get("encoding"), truncate: 50000,
    });
    clear(out, msgs.length ? msgs.map((m, i) => messageView(m, `Message ${i + 1}`)) : emptyState("Queue is empty", "There was no message to get."));
    if (msgs.length) out.prepend(h("p", { text: `The server reported ${num(msgs[msgs.length - 1].message_count)} messages remaining.` }));
    app.rewatch();
    return null;
  });
  f.append(out);
  return f;
}

function browser(app, base) {
  const PAGE = 10;
  let offset = 0;
  const out = h("div", { class: "messages", "aria-live": "polite" });
  const pos = h("span", { class: "page-of" });
  async function show() {
    try {
      const msgs = await app.api.post(`${base}/peek`, { offset, count: PAGE, truncate: 2000 });
      pos.textContent = msgs.length ? `Messages ${offset + 1}–${offset + msgs.length}` : "";
      clear(out, msgs.length ? msgs.map((m) => messageView(m, `Position ${m.position + 1}`))
        : emptyState(offset ? "No messages past this point" : "No ready messages", offset ? "Go back to the first page." : "Messages published to this queue appear here."));
      prev.disabled = offset === 0;
      next.disabled = msgs.length < PAGE;
    } catch (err) {
      clear(out, errorBox(err, "Browsing messages"));
    }
  }
  const prev = h("button", { type: "button", disabled: true, onclick: () => { offset = Math.max(0, offset - PAGE); show(); } }, "‹ Previous");
  const next = h("button", { type: "button", disabled: true, onclick: () => { offset += PAGE; show(); } }, "Next ›");
  const start = h("button", { type: "button", class: "primary", onclick: () => { offset = 0; show(); } }, "Peek at messages");
  return h("section", { class: "panel", "aria-label": "Message browser" },
    h("h3", { text: "Message browser" }),
    h("p", { class: "hint", text: "Shows ready messages without taking them: they stay in the queue, are not marked redelivered and no consumer sees a difference." }),
    h("div", { class: "actions" }, start, prev, next, pos), out);
}

function dangerZone(app, base, name) {
  async function act(question, call, done, what) {
    if (!window.confirm(question)) return;
    try {
      await call();
      app.notify(done);
      app.rewatch();
    } catch (err) {
      app.fail(err, what);
    }
  }
  return h("section", { class: "panel", "aria-label": "Purge and delete" }, h("h3", { text: "Purge / Delete" }),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "danger purge", onclick: () => act(`Purge all ready messages of '${name}'?`,
        () => app.api.del(`${base}/contents`), `Queue '${name}' purged.`, "Purging the queue") }, "Purge Messages"),
      h("button", { type: "button", class: "danger", onclick: () => act(`Delete queue '${name}' and its messages?`,
        async () => { await app.api.del(base); app.go("#/queues"); }, `Queue '${name}' deleted.`, "Deleting the queue") }, "Delete Queue")));
}

// the fields the details list shows; any other field of the queue's JSON (a quorum queue's
// leader and members, a stream's offsets…) is listed under "All fields" as it comes
const SHOWN = new Set(["name", "vhost", "type", "state", "durable", "auto_delete", "exclusive", "arguments",
  "messages", "messages_ready", "messages_unacknowledged", "message_bytes_ready", "consumers", "consumer_details",
  "message_stats", "policy", "operator_policy", "effective_policy_definition"]);

// (`view.open`: whether the list is unfolded, kept across the page's live updates)
function otherFields(q, view) {
  const rest = Object.entries(q).filter(([k, v]) => !SHOWN.has(k) && !k.endsWith("_details") && v !== null && v !== undefined)
    .sort(([a], [b]) => a.localeCompare(b));
  if (!rest.length) return null;
  return h("details", { class: "more", open: view.open, ontoggle: (ev) => { view.open = ev.target.open; } },
    h("summary", { text: "All fields" }),
    kv(rest.map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)])));
}

function consumersTable(q) {
  const rows = q.consumer_details || [];
  return rows.length ? table([
    { label: "Channel", cell: (c) => c.channel_details.name },
    { key: "consumer_tag", label: "Consumer tag" },
    { label: "Ack required", cell: (c) => String(c.ack_required) },
    { label: "Exclusive", cell: (c) => String(c.exclusive) },
    { label: "Prefetch", cell: (c) => num(c.prefetch_count), num: true },
    { label: "Active", cell: (c) => (c.active ? "yes" : "no") + (c.activity_status && c.activity_status !== "up" ? ` (${c.activity_status})` : "") },
    { label: "Arguments", cell: (c) => json(c.arguments) },
  ], rows, { label: "Consumers" }) : emptyState("No consumers", "Messages wait here until a client consumes from this queue (basic_consume).");
}

export function queuePage(app, vhost, name) {
  const base = `/api/queues/${e(vhost)}/${e(name)}`;
  const more = { open: false };
  const info = h("div", { class: "panel" }, loading());
  const consumers = h("div", { class: "panel" }, h("h3", { text: "Consumers" }), loading());
  const bindings = h("div", { class: "panel" }, h("h3", { text: "Bindings" }), loading());
  const bind = form("Add binding to this queue", [
    field("From exchange", h("input", { name: "source", required: true, autocomplete: "off" })),
    field("Routing key", h("input", { name: "routing_key", autocomplete: "off" })),
    field("Arguments", h("textarea", { name: "arguments", rows: 2 }), "One a line: key = value."),
  ], "Bind", async (d) => {
    await app.api.post(`/api/bindings/${e(vhost)}/e/${e(d.get("source"))}/q/${e(name)}`, {
      routing_key: d.get("routing_key"), arguments: parseTable(d.get("arguments"), "Arguments"),
    });
    app.rewatch();
    return "Binding added.";
  });
  // the classic browser until the queue's JSON says it is a stream, which pages by offset, and
  // whose messages cannot be got or purged (the broker answers 540 NOT_IMPLEMENTED, as RabbitMQ)
  let messages = browser(app, base);
  const get = getForm(app, base);
  const danger = dangerZone(app, base, name);
  const root = h("section", { "aria-labelledby": "page-title" },
    h("p", { class: "crumbs" }, link("#/queues", "Queues"), " › ", vhost),
    h("h2", { id: "page-title", text: `Queue: ${name}` }),
    info, consumers, bindings, bind, publishForm(app, vhost, "", name), get, messages, danger);
  return {
    title: `Queue ${name}`,
    root,
    watches: () => [base, `${base}/bindings`],
    update(path, status, body) {
      const [target, heading] = path === base ? [info, "Details"] : [bindings, "Bindings"];
      if (status !== 200) {
        clear(target, h("h3", { text: heading }), errorBox({ status, reason: body && body.reason }, `Reading ${heading.toLowerCase()}`));
        if (path === base) clear(consumers, h("h3", { text: "Consumers" }));
        return;
      }
      if (path === base) {
        const q = body;
        const ms = q.message_stats || {};
        if (q.type === "stream" && !messages.classList.contains("stream")) {
          const sb = streamBrowser(app, base);
          messages.replaceWith(sb);
          messages = sb;
          get.remove();
          danger.querySelector("button.purge").remove();
          danger.querySelector("h3").textContent = "Delete";
        }
        clear(info, h("h3", { text: heading }), kv([
          ["Virtual host", q.vhost], ["Type", q.type], ["State", q.state], ["Features", features(q) || "none"],
          ["Ready", num(q.messages_ready)], ["Unacked", num(q.messages_unacknowledged)], ["Total", num(q.messages)],
          ["Ready bytes", bytes(q.message_bytes_ready)], ["Consumers", num(q.consumers)],
          ["Incoming", rate(ms.publish_details)], ["Deliver / get", rate(ms.deliver_get_details)], ["Ack", rate(ms.ack_details)],
          ["Arguments", json(q.arguments) || "none"], ...policyPairs(q),
        ]), otherFields(q, more));
        clear(consumers, h("h3", { text: "Consumers" }), consumersTable(q));
      } else {
        clear(bindings, h("h3", { text: heading }), bindingsTable(app, body, "destination", vhost));
      }
    },
  };
}
