// Exchanges: the list with "Add a new exchange", and an exchange's page with its bindings,
// "Add binding from this exchange", "Publish message" and "Delete this exchange".

import { checkbox, clear, emptyState, errorBox, field, form, h, json, kv, link, loading, parseTable, select, table } from "./dom.js";
import { listPage, vpath } from "./lists.js";
import { policyPairs } from "./policies.js";
import { publishForm } from "./publish.js";

const e = encodeURIComponent;

export function exchangeLabel(name) {
  return name === "" ? "(AMQP default)" : name;
}

export function exchangeHref(vhost, name) {
  return `#/exchanges/${e(vhost)}/${e(name === "" ? "amq.default" : name)}`;
}

export function exchangesPage(app) {
  const add = form("Add a new exchange", [
    field("Virtual host", app.vhostSelect("vhost")),
    field("Name", h("input", { name: "name", required: true, maxlength: 255, autocomplete: "off" })),
    field("Type", select("type", [["direct", "direct"], ["fanout", "fanout"], ["topic", "topic"], ["headers", "headers"]], "direct")),
    checkbox("Durable", "durable", true), checkbox("Auto delete", "auto_delete", false), checkbox("Internal", "internal", false),
    field("Arguments", h("textarea", { name: "arguments", rows: 2, placeholder: "alternate-exchange = my-ae" }),
      "One a line: key = value."),
  ], "Add exchange", async (d) => {
    const name = d.get("name");
    await app.api.put(`/api/exchanges/${e(d.get("vhost"))}/${e(name)}`, {
      type: d.get("type"), durable: d.get("durable") === "on", auto_delete: d.get("auto_delete") === "on",
      internal: d.get("internal") === "on", arguments: parseTable(d.get("arguments"), "Arguments"),
    });
    app.rewatch();
    return `Exchange '${name}' added.`;
  });
  return listPage(app, {
    id: "exchanges",
    title: "Exchanges",
    path: (v) => vpath(v, "/api/exchanges", (x) => `/api/exchanges/${x}`),
    columns: [
      { label: "Virtual host", cell: (x) => x.vhost, sort: "vhost" },
      { label: "Name", cell: (x) => link(exchangeHref(x.vhost, x.name), exchangeLabel(x.name)), sort: "name" },
      { key: "type", label: "Type", sort: "type" },
      { label: "Features", cell: (x) => [x.durable ? "D" : "", x.auto_delete ? "AD" : "", x.internal ? "I" : ""].filter(Boolean).join(" ") },
      { label: "Arguments", cell: (x) => json(x.arguments) },
    ],
    empty: () => emptyState("No exchanges", "Add one below, or declare one from a client."),
    below: add,
  });
}

export function bindingsTable(app, rows, side, vhost) {
  if (!rows.length) return emptyState("No bindings", side === "source" ? "Bind a queue or an exchange below." : null);
  return table([
    { label: "From", cell: (b) => link(exchangeHref(vhost, b.source), exchangeLabel(b.source)) },
    { label: "To", cell: (b) => b.destination_type === "queue"
      ? link(`#/queues/${e(vhost)}/${e(b.destination)}`, b.destination)
      : link(exchangeHref(vhost, b.destination), b.destination) },
    { label: "Routing key", cell: (b) => b.routing_key },
    { label: "Arguments", cell: (b) => json(b.arguments) },
    { label: "", cell: (b) => (b.source === "" ? "" : h("button", { type: "button", class: "small",
      "aria-label": `Unbind ${b.destination} from ${b.source}`,
      onclick: async () => {
        const kind = b.destination_type === "queue" ? "q" : "e";
        try {
          await app.api.del(`/api/bindings/${e(vhost)}/e/${e(b.source)}/${kind}/${e(b.destination)}/${e(b.properties_key)}`);
          app.notify("Binding removed.");
          app.rewatch();
        } catch (err) {
          app.fail(err, "Removing the binding");
        }
      } }, "Unbind")) },
  ], rows, { label: "Bindings" });
}

export function exchangePage(app, vhost, name) {
  const base = `/api/exchanges/${e(vhost)}/${e(name)}`;
  const info = h("div", { class: "panel" }, loading());
  const source = h("div", { class: "panel" }, h("h3", { text: "Bindings from this exchange" }), loading());
  const dest = h("div", { class: "panel" });
  const real = name === "amq.default" ? "" : name;
  const bind = form("Add binding from this exchange", [
    field("To", select("destination_type", [["q", "Queue"], ["e", "Exchange"]], "q")),
    field("Destination name", h("input", { name: "destination", required: true, autocomplete: "off" })),
    field("Routing key", h("input", { name: "routing_key", autocomplete: "off" })),
    field("Arguments", h("textarea", { name: "arguments", rows: 2 }), "One a line: key = value."),
  ], "Bind", async (d) => {
    await app.api.post(`/api/bindings/${e(vhost)}/e/${e(name)}/${d.get("destination_type")}/${e(d.get("destination"))}`, {
      routing_key: d.get("routing_key"), arguments: parseTable(d.get("arguments"), "Arguments"),
    });
    app.rewatch();
    return "Binding added.";
  });
  const del = h("button", { type: "button", class: "danger", onclick: async () => {
    if (!window.confirm(`Delete exchange '${name}'?`)) return;
    try {
      await app.api.del(base);
      app.notify(`Exchange '${name}' deleted.`);
      app.go("#/exchanges");
    } catch (err) {
      app.fail(err, "Deleting the exchange");
    }
  } }, "Delete this exchange");
  const root = h("section", { "aria-labelledby": "page-title" },
    h("p", { class: "crumbs" }, link("#/exchanges", "Exchanges"), " › ", vhost),
    h("h2", { id: "page-title", text: `Exchange: ${exchangeLabel(real)}` }),
    info, source, dest, real === "" ? null : bind, publishForm(app, vhost, real),
    real === "" || real.startsWith("amq.") ? null : h("div", { class: "panel" }, h("h3", { text: "Delete" }), del));
  return {
    title: `Exchange ${exchangeLabel(real)}`,
    root,
    watches: () => [base, `${base}/bindings/source`, `${base}/bindings/destination`],
    update(path, status, body) {
      const target = path === base ? info : path.endsWith("/source") ? source : dest;
      const heading = path === base ? "Details" : path.endsWith("/source") ? "Bindings from this exchange" : "Bindings to this exchange";
      if (status !== 200) {
        clear(target, h("h3", { text: heading }), errorBox({ status, reason: body && body.reason }, `Reading ${heading.toLowerCase()}`));
        return;
      }
      if (path === base) {
        clear(info, h("h3", { text: heading }), kv([
          ["Virtual host", body.vhost], ["Type", body.type], ["Durable", String(body.durable)],
          ["Auto delete", String(body.auto_delete)], ["Internal", String(body.internal)],
          ["Arguments", json(body.arguments) || "none"], ...policyPairs(body),
        ]));
      } else if (path.endsWith("/source")) {
        clear(source, h("h3", { text: heading }), bindingsTable(app, body, "source", vhost));
      } else if (body.length) {
        clear(dest, h("h3", { text: heading }), bindingsTable(app, body, "destination", vhost));
      } else {
        clear(dest);
      }
    },
  };
}
