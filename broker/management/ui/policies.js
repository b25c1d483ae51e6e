// Admin → Policies and Operator policies: the list, and a form to add or update one whose
// definition is typed as key / value / type rows, with RabbitMQ's keys one click away.
// The broker checks the whole policy; its refusal (which names the field or key) is shown
// under the form.

import { clear, emptyState, field, form, h, select, table, uid } from "./dom.js";

const e = encodeURIComponent;

// RabbitMQ's policy keys as its UI groups them, each with the type its value takes and,
// for keys with a fixed set of values, what may go there.
const KEY_GROUPS = [
  ["Queues [all types]", ["max-length", "max-length-bytes", "overflow", "expires", "message-ttl",
    "dead-letter-exchange", "dead-letter-routing-key", "consumer-timeout"]],
  ["Queues [classic]", ["queue-version"]],
  ["Queues [quorum]", ["delivery-limit", "dead-letter-strategy", "max-in-memory-length", "max-in-memory-bytes",
    "queue-leader-locator", "initial-cluster-size", "consumer-disconnected-timeout"]],
  ["Streams", ["max-age", "stream-max-segment-size-bytes", "stream-filter-size-bytes"]],
  ["Exchanges", ["alternate-exchange"]],
];
// the keys an operator policy takes (the limits)
const OPERATOR_KEYS = ["max-length", "max-length-bytes", "message-ttl", "expires", "delivery-limit",
  "max-in-memory-length", "max-in-memory-bytes", "queue-version", "overflow"];
const STRING_KEYS = new Set(["overflow", "dead-letter-exchange", "dead-letter-routing-key", "dead-letter-strategy",
  "queue-leader-locator", "max-age", "alternate-exchange"]);
const HINTS = {
  overflow: "drop-head | reject-publish | reject-publish-dlx",
  "dead-letter-strategy": "at-most-once | at-least-once",
  "queue-leader-locator": "client-local | balanced",
  "queue-version": "1 | 2",
  "max-age": "e.g. 7D, 12h, 30m",
  "message-ttl": "milliseconds",
  expires: "milliseconds",
  "consumer-timeout": "milliseconds",
};
const TYPES = [["string", "String"], ["number", "Number"], ["boolean", "Boolean"], ["list", "List"]];

// a definition as one `key: value` line per key
function definitionView(definition) {
  return h("span", {}, Object.entries(definition || {}).map(([k, v]) => h("code", { class: "def-pair" }, `${k}: ${JSON.stringify(v)}`)));
}

function typeOf(key, value) {
  if (value === undefined) return STRING_KEYS.has(key) || !KEY_GROUPS.some(([, ks]) => ks.includes(key)) ? "string" : "number";
  if (Array.isArray(value)) return "list";
  if (typeof value === "boolean") return "boolean";
  return typeof value === "number" ? "number" : "string";
}

function typed(key, text, type) {
  const bad = (what) => ({ status: 400, reason: `Definition: the value of '${key}' is not ${what}: "${text}"` });
  if (type === "number") {
    if (!/^-?\d+(\.\d+)?$/.test(text.trim())) throw bad("a number");
    return Number(text);
  }
  if (type === "boolean") {
    if (text !== "true" && text !== "false") throw bad("true or false");
    return text === "true";
  }
  if (type === "list") return text.split(",").map((s) => s.trim()).filter(Boolean);
  return text;
}

// The definition editor: rows of key, value and type; a new empty row appears when the last
// one is used.  `keys` is the list the key field suggests and the buttons below it add.
function definitionEditor(keys) {
  const listId = uid("policy-keys");
  const rows = h("div", { class: "def-rows" });
  function row(key = "", value, type) {
    const k = h("input", { class: "def-key", "aria-label": "Definition key", list: listId, value: key, autocomplete: "off" });
    const v = h("input", { class: "def-value", "aria-label": "Definition value", autocomplete: "off",
      value: value === undefined ? "" : Array.isArray(value) ? value.join(", ") : String(value),
      placeholder: HINTS[key] || "" });
    const t = select("", TYPES, type || typeOf(key, value));
    t.removeAttribute("name");
    t.setAttribute("aria-label", "Definition value type");
    t.className = "def-type";
    k.addEventListener("change", () => {
      v.placeholder = HINTS[k.value] || "";
      if (!v.value) t.value = typeOf(k.value);
    });
    const r = h("div", { class: "def-row" }, k, " = ", v, t);
    r.addEventListener("input", () => { if (r === rows.lastElementChild && k.value) rows.append(row()); });
    return r;
  }
  function set(definition) {
    clear(rows, Object.entries(definition || {}).map(([key, value]) => row(key, value)), row());
  }
  function add(key) {
    const free = [...rows.children].find((r) => !r.querySelector(".def-key").value);
    const r = row(key);
    if (free) free.replaceWith(r);
    else rows.append(r);
    if (r === rows.lastElementChild) rows.append(row());
    r.querySelector(".def-value").focus();
  }
  function read() {
    const out = {};
    for (const r of rows.children) {
      const key = r.querySelector(".def-key").value.trim();
      const text = r.querySelector(".def-value").value;
      if (!key && !text) continue;
      if (!key) throw { status: 400, reason: `Definition: a value ("${text}") has no key` };
      out[key] = typed(key, text, r.querySelector(".def-type").value);
    }
    return out;
  }
  const groups = keys === OPERATOR_KEYS ? [["Limits", OPERATOR_KEYS]] : KEY_GROUPS;
  const el = h("fieldset", { class: "definition" },
    h("legend", { text: "Definition" }),
    h("datalist", { id: listId }, keys.map((k) => h("option", { value: k }))),
    rows,
    groups.map(([title, ks]) => h("p", { class: "hint keys" }, `${title}: `,
      ks.map((k) => h("button", { type: "button", class: "link", "aria-label": `Add key ${k}`, onclick: () => add(k) }, k)))));
  set({});
  return { el, set, read };
}

// One of the two sections: `operator` picks /api/operator-policies and the operator's keys.
export function policySection(app, operator) {
  const kind = operator ? "operator policy" : "policy";
  const api = operator ? "/api/operator-policies" : "/api/policies";
  const editor = definitionEditor(operator ? OPERATOR_KEYS : KEY_GROUPS.flatMap(([, ks]) => ks));
  const applyTo = operator
    ? [["queues", "Queues [all types]"], ["classic_queues", "Queues [classic]"], ["quorum_queues", "Queues [quorum]"], ["streams", "Streams"]]
    : [["all", "Exchanges and queues"], ["exchanges", "Exchanges"], ["queues", "Queues [all types]"],
      ["classic_queues", "Queues [classic]"], ["quorum_queues", "Queues [quorum]"], ["streams", "Streams"]];
  const title = operator ? "Add / update an operator policy" : "Add / update a policy";
  const formEl = form(title, [
    field("Virtual host", app.vhostSelect("vhost")),
    field("Name", h("input", { name: "name", required: true, maxlength: 255, autocomplete: "off" })),
    field("Pattern", h("input", { name: "pattern", required: true, maxlength: 1024, placeholder: "^amq\\.", autocomplete: "off" }),
      "A regular expression searched in queue (and exchange) names."),
    field("Apply to", select("apply-to", applyTo, applyTo[0][0])),
    field("Priority", h("input", { name: "priority", type: "number", value: 0 }),
      "Of the policies that match a name, the one of highest priority applies."),
    editor.el,
  ], operator ? "Add / update operator policy" : "Add / update policy", async (d) => {
    const name = d.get("name");
    await app.api.put(`${api}/${e(d.get("vhost"))}/${e(name)}`, {
      pattern: d.get("pattern"), "apply-to": d.get("apply-to"), priority: Number(d.get("priority")),
      definition: editor.read(),
    });
    app.rewatch();
    return `${operator ? "Operator policy" : "Policy"} '${name}' saved.`;
  });

  function edit(p) {
    const f = formEl.elements;
    f.vhost.value = p.vhost;
    f.name.value = p.name;
    f.pattern.value = p.pattern;
    f["apply-to"].value = p["apply-to"];
    f.priority.value = String(p.priority);
    editor.set(p.definition);
    formEl.scrollIntoView();
    f.pattern.focus();
  }

  function render(body, rows) {
    clear(body, rows.length ? table([
      { key: "vhost", label: "Virtual host" }, { key: "name", label: "Name" }, { key: "pattern", label: "Pattern" },
      { key: "apply-to", label: "Apply to" },
      { label: "Definition", cell: (p) => definitionView(p.definition) },
      { key: "priority", label: "Priority", num: true },
      { label: "", cell: (p) => h("span", { class: "row-actions" },
        h("button", { type: "button", class: "small", "aria-label": `Edit ${kind} ${p.name}`, onclick: () => edit(p) }, "Edit"),
        h("button", { type: "button", class: "danger small", "aria-label": `Delete ${kind} ${p.name}`, onclick: async () => {
          if (!window.confirm(`Delete ${kind} '${p.name}'?`)) return;
          try {
            await app.api.del(`${api}/${e(p.vhost)}/${e(p.name)}`);
            app.notify(`${operator ? "Operator policy" : "Policy"} '${p.name}' deleted.`);
            app.rewatch();
          } catch (err) {
            app.fail(err, `Deleting the ${kind}`);
          }
        } }, "Delete")) },
    ], rows, { label: operator ? "Operator policies" : "Policies" })
      : emptyState(operator ? "No operator policies" : "No policies", operator
        ? "An operator policy caps what users' policies and queue arguments may set (max-length, message-ttl…) on the queues its pattern matches."
        : "A policy applies arguments (max-length, message-ttl, dead-letter-exchange…) to every queue or exchange whose name matches its pattern."));
  }

  return { path: api, form: formEl, render };
}

// a policy's effect: the policy, the operator policy and the definition they make together
export function policyPairs(x) {
  const eff = x.effective_policy_definition;
  return [
    ["Policy", x.policy || "none"],
    "operator_policy" in x ? ["Operator policy", x.operator_policy || "none"] : null,
    eff && Object.keys(eff).length ? ["Effective policy definition", definitionView(eff)] : null,
  ];
}
