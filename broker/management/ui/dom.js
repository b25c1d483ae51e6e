// Building the page: elements from data (never HTML from strings: names are user input),
// number formats, tables, pagers, forms, and the empty and error states every page uses.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

// -- formats ---------------------------------------------------------------------------

export function num(n) {
  if (n === undefined || n === null) return "–";
  return Number(n).toLocaleString("en-US");
}

export function rate(details) {
  const r = details && typeof details.rate === "number" ? details.rate : 0;
  return `${r.toLocaleString("en-US", { maximumFractionDigits: 1 })}/s`;
}

export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toLocaleString("en-US", { maximumFractionDigits: i ? 1 : 0 })} ${units[i]}`;
}

export function duration(ms) {
  let s = Math.floor((ms || 0) / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hr = Math.floor(s / 3600);
  s -= hr * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function json(v) {
  if (v === undefined || v === null) return "";
  if (typeof v === "object" && Object.keys(v).length === 0) return "";
  return JSON.stringify(v);
}

// -- states ----------------------------------------------------------------------------

// What to do about an error, by its HTTP status: the second half of every error text.
export function advice(status) {
  if (status === 0) return "The broker did not answer: check that it is running and reachable; the page retries on its own.";
  if (status === 401) return "Your login is no longer accepted: log out and log in again.";
  if (status === 403) return "Your user lacks the tag or permission for this: ask an administrator.";
  if (status === 404) return "It may have been deleted meanwhile: go back to the list.";
  if (status === 400 || status === 405 || status === 413) return "Correct the field named above and try again.";
  if (status === 503) return "The broker refused it for now (an alarm or a limit): see the Overview page.";
  return "The broker had a problem: its log says more.";
}

export function errorBox(err, what) {
  const status = err && typeof err.status === "number" ? err.status : 0;
  const reason = (err && err.reason) || String(err);
  return h("div", { class: "state error", role: "alert" },
    h("strong", { text: `${what} failed` + (status ? ` (HTTP ${status})` : "") + ": " }),
    h("span", { class: "reason", text: reason }),
    h("p", { text: advice(status) }));
}

export function emptyState(title, hint) {
  return h("div", { class: "state empty" }, h("strong", { text: title }), hint ? h("p", {}, hint) : null);
}

export function loading() {
  return h("p", { class: "state loading", text: "Loading…" });
}

// -- tables ----------------------------------------------------------------------------

// columns: [{key, label, cell(row) -> node|text, sort: "api sort key" | undefined, num: bool}]
export function table(columns, rows, opts = {}) {
  const head = h("tr", {}, columns.map((c) => {
    const attrs = { scope: "col", class: c.num ? "num" : "" };
    if (c.sort && opts.onSort) {
      const active = opts.sort === c.sort;
      attrs["aria-sort"] = active ? (opts.reverse ? "descending" : "ascending") : "none";
      const arrow = active ? (opts.reverse ? " ▼" : " ▲") : "";
      return h("th", attrs, h("button", {
        type: "button", class: "sort", onclick: () => opts.onSort(c.sort),
        title: `Sort by ${c.label}`,
      }, c.label + arrow));
    }
    return h("th", attrs, c.label);
  }));
  const body = h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => {
    const v = c.cell ? c.cell(r) : r[c.key];
    return h("td", { class: c.num ? "num" : "", "data-label": c.label }, v instanceof Node ? v : (v ?? ""));
  }))));
  return h("div", { class: "table-wrap" },
    h("table", { class: "list", "aria-label": opts.label || null }, h("thead", {}, head), body));
}

export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [
    h("dt", { text: k }), h("dd", {}, v instanceof Node ? v : String(v ?? "–")),
  ]));
}

export function link(href, text) {
  return h("a", { href, text });
}

// -- pagination (the API's page / page_size / filtered_count) ---------------------------------

export function pager(page, onPage, onSize) {
  const sizeId = uid("page-size");
  return h("nav", { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", disabled: page.page <= 1 || null, onclick: () => onPage(page.page - 1) }, "‹ Previous"),
    h("span", { class: "page-of", "aria-live": "polite" },
      `Page ${page.page} of ${page.page_count} · ${num(page.filtered_count)} shown of ${num(page.total_count)}`),
    h("button", { type: "button", disabled: page.page >= page.page_count || null, onclick: () => onPage(page.page + 1) }, "Next ›"),
    h("label", { for: sizeId }, "Page size"),
    h("select", { id: sizeId, onchange: (e) => onSize(Number(e.target.value)) },
      [20, 50, 100, 500].map((n) => h("option", { value: n, selected: n === page.page_size || null }, String(n)))));
}

// -- forms -----------------------------------------------------------------------------

export function field(label, input, hint) {
  const id = input.id || uid("f");
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input,
    hint ? h("small", { class: "hint", text: hint }) : null);
}

export function checkbox(label, name, checked) {
  const id = uid("c");
  return h("div", { class: "field check" },
    h("input", { type: "checkbox", id, name, checked }), h("label", { for: id, text: label }));
}

export function select(name, options, value) {
  return h("select", { name }, options.map(([v, t]) => h("option", { value: v, selected: v === value || null }, t)));
}

// A form section that runs `submit(form data)` and shows its outcome below the button.
export function form(title, fields, buttonText, submit) {
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary", text: buttonText });
  const el = h("form", {
    class: "panel form", "aria-label": title,
    onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      clear(status);
      try {
        const msg = await submit(new FormData(el), el);
        if (msg) clear(status, h("p", { class: "ok", role: "status", text: msg }));
      } catch (err) {
        clear(status, errorBox(err, title));
      } finally {
        button.disabled = false;
      }
    },
  }, h("h3", { text: title }), fields, h("div", { class: "actions" }, button), status);
  return el;
}

// Arguments / headers typed as `key = value` lines; numbers and booleans become JSON's.
export function parseTable(text, what) {
  const out = {};
  for (const raw of (text || "").split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf("=");
    if (i < 1) throw { status: 400, reason: `${what}: write each as key = value, not "${line}"` };
    const k = line.slice(0, i).trim();
    const v = line.slice(i + 1).trim();
    if (/^-?\d+$/.test(v)) out[k] = Number(v);
    else if (v === "true" || v === "false") out[k] = v === "true";
    else out[k] = v;
  }
  return out;
}
