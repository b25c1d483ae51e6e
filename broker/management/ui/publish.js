// The "Publish message" form of an exchange's page and of a queue's page (through the default
// exchange), with RabbitMQ's form field names: routing_key, delivery_mode, headers, properties,
// payload, payload_encoding.  It posts to /api/exchanges/VHOST/NAME/publish.

import { field, form, h, parseTable, select } from "./dom.js";

const PROPERTY_KEYS = ["content_type", "content_encoding", "priority", "correlation_id", "reply_to", "expiration",
  "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"];

// routingKey: fixed for a queue's page (its name); exchange: "" is the default exchange
export function publishForm(app, vhost, exchange, routingKey) {
  const rk = h("input", { name: "routing_key", value: routingKey ?? "", readonly: routingKey !== undefined || null,
    autocomplete: "off" });
  const fields = [
    routingKey !== undefined
      ? h("p", { class: "hint", text: "The message goes to the default exchange with this queue's name as its routing key." })
      : null,
    field("Routing key", rk),
    field("Delivery mode", select("delivery_mode", [["1", "1 - Non-persistent"], ["2", "2 - Persistent"]], "1")),
    field("Headers", h("textarea", { name: "headers", rows: 2, placeholder: "key = value (one a line)" }),
      "One header a line: key = value; numbers and true/false are typed."),
    field("Properties", h("textarea", { name: "properties", rows: 2, placeholder: "content_type = text/plain" }),
      `One a line: key = value, key among ${PROPERTY_KEYS.join(", ")}.`),
    field("Payload", h("textarea", { name: "payload", rows: 4 })),
    field("Payload encoding", select("payload_encoding", [["string", "String (default)"], ["base64", "Base64"]], "string")),
  ];
  return form("Publish message", fields, "Publish message", async (data) => {
    const properties = parseTable(data.get("properties"), "Properties");
    for (const k of Object.keys(properties)) {
      if (!PROPERTY_KEYS.includes(k)) throw { status: 400, reason: `Properties: '${k}' is not a message property (${PROPERTY_KEYS.join(", ")})` };
    }
    const headers = parseTable(data.get("headers"), "Headers");
    if (Object.keys(headers).length) properties.headers = headers;
    properties.delivery_mode = Number(data.get("delivery_mode"));
    const name = exchange === "" ? "amq.default" : exchange;
    const out = await app.api.post(`/api/exchanges/${encodeURIComponent(vhost)}/${encodeURIComponent(name)}/publish`, {
      routing_key: data.get("routing_key"), payload: data.get("payload"),
      payload_encoding: data.get("payload_encoding"), properties,
    });
    return out.routed ? "Message published." : "Message published, but not routed: no queue is bound for this routing key.";
  });
}
