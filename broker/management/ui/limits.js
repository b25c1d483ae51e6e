// Admin → Limits: virtual host limits (max-connections, max-queues) and user limits
// (max-connections, max-channels), each listed with a Clear button per limit and set by a form.
// A limit applies to the next connection, channel or queue; what is open stays.

import { clear, emptyState, field, form, h, num, select, table } from "./dom.js";

const e = encodeURIComponent;

// what: "vhost" or "user": the two kinds differ in their API path, their keys and their owner
const KINDS = {
  vhost: { api: "/api/vhost-limits", owner: "vhost", label: "Virtual host", keys: ["max-connections", "max-queues"] },
  user: { api: "/api/user-limits", owner: "user", label: "User", keys: ["max-connections", "max-channels"] },
};

export function limitSection(app, what, ownerSelect) {
  const k = KINDS[what];
  const title = what === "vhost" ? "Set a virtual host limit" : "Set a user limit";
  const formEl = form(title, [
    field(k.label, ownerSelect),
    field("Limit", select("limit", k.keys.map((x) => [x, x]), k.keys[0])),
    field("Value", h("input", { name: "value", type: "number", required: true, step: "any" }),
      "0 allows none; a negative value means no limit."),
  ], "Set limit", async (d) => {
    const owner = d.get(k.owner);
    await app.api.put(`${k.api}/${e(owner)}/${e(d.get("limit"))}`, { value: Number(d.get("value")) });
    app.rewatch();
    return `Limit ${d.get("limit")} of '${owner}' set to ${d.get("value")}.`;
  });

  function clearButton(owner, key) {
    return h("button", { type: "button", class: "danger small", "aria-label": `Clear ${key} of ${owner}`, onclick: async () => {
      try {
        await app.api.del(`${k.api}/${e(owner)}/${e(key)}`);
        app.notify(`Limit ${key} of '${owner}' cleared.`);
        app.rewatch();
      } catch (err) {
        app.fail(err, "Clearing the limit");
      }
    } }, "Clear");
  }

  function render(body, rows) {
    clear(body, rows.length ? table([
      { key: k.owner, label: k.label },
      ...k.keys.map((key) => ({ label: key, num: true, cell: (r) => (key in r.value
        ? h("span", { class: "limit" }, num(r.value[key]), " ", clearButton(r[k.owner], key)) : "") })),
    ], rows, { label: what === "vhost" ? "Virtual host limits" : "User limits" })
      : emptyState(what === "vhost" ? "No virtual host limits" : "No user limits", what === "vhost"
        ? "Limit the connections or queues of a virtual host below."
        : "Limit the connections or channels a user may open below."));
  }

  return { path: k.api, form: formEl, render };
}
