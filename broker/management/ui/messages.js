// One message as the Get form and the message browsers show it: its fields, then the payload.
// `extra` adds rows first (a stream's offset and timestamp).

import { bytes, h, json, kv } from "./dom.js";

export function messageView(m, heading, extra = []) {
  return h("article", { class: "message" },
    h("h4", { text: heading }),
    kv([
      ...extra,
      ["Exchange", m.exchange === "" ? "(AMQP default)" : m.exchange], ["Routing key", m.routing_key],
      ["Redelivered", String(m.redelivered)], ["Properties", json(m.properties) || "none"],
      ["Payload", `${bytes(m.payload_bytes)}, encoding: ${m.payload_encoding}${m.payload_truncated ? " (cut short)" : ""}`],
    ]),
    h("pre", { class: "payload", tabindex: 0, "aria-label": "Payload" }, m.payload));
}
