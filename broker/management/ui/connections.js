// Connections and Channels: who is connected, with what, and how busy they are.

import { emptyState, h, num, rate } from "./dom.js";
import { listPage, vpath } from "./lists.js";

function clientName(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(" ") || p.connection_name || "";
}

export function connectionsPage(app) {
  return listPage(app, {
    id: "connections",
    title: "Connections",
    path: (v) => vpath(v, "/api/connections", (e) => `/api/vhosts/${e}/connections`),
    columns: [
      { key: "name", label: "Name", sort: "name" },
      { key: "vhost", label: "Virtual host", sort: "vhost" },
      { key: "user", label: "User", sort: "user" },
      { key: "state", label: "State", sort: "state" },
      { key: "channels", label: "Channels", sort: "channels", num: true },
      { label: "Client", cell: clientName },
      { label: "From client", cell: (c) => rate(c.recv_oct_details), num: true },
      { label: "To client", cell: (c) => rate(c.send_oct_details), num: true },
      { label: "", cell: (c) => h("button", { type: "button", class: "danger small", "aria-label": `Close connection ${c.name}`,
        onclick: async () => {
          if (!window.confirm(`Close connection ${c.name}?`)) return;
          try {
            await app.api.del(`/api/connections/${encodeURIComponent(c.name)}`);
            app.notify(`Connection ${c.name} closed.`);
          } catch (err) {
            app.fail(err, "Closing the connection");
          }
        } }, "Close") },
    ],
    empty: () => emptyState("No connections", "Clients that connect over AMQP (pika, aio-pika, kombu…) are listed here."),
  });
}

export function channelsPage(app) {
  return listPage(app, {
    id: "channels",
    title: "Channels",
    path: (v) => vpath(v, "/api/channels", (e) => `/api/vhosts/${e}/channels`),
    columns: [
      { key: "name", label: "Channel", sort: "name" },
      { key: "vhost", label: "Virtual host", sort: "vhost" },
      { key: "user", label: "User", sort: "user" },
      { label: "Mode", cell: (c) => [c.confirm ? "confirm" : "", c.transactional ? "tx" : ""].filter(Boolean).join(", ") },
      { key: "state", label: "State", sort: "state" },
      { label: "Prefetch", cell: (c) => num(c.prefetch_count), num: true },
      { label: "Unacked", cell: (c) => num(c.messages_unacknowledged), sort: "messages_unacknowledged", num: true },
      { label: "Unconfirmed", cell: (c) => num(c.messages_unconfirmed), num: true },
      { label: "Consumers", cell: (c) => num(c.consumer_count), sort: "consumer_count", num: true },
    ],
    empty: () => emptyState("No channels", "Each open AMQP channel of a connection is listed here."),
  });
}
