// A stream's message browser: reads the stream from an offset without a consumer (nothing is
// taken, no consumer sees a difference) and pages by offset. The offset is what a consumer's
// x-stream-offset takes: a number, first, last, next, an interval such as 1h, or a time.

import { clear, emptyState, errorBox, field, h } from "./dom.js";
import { messageView } from "./messages.js";

const PAGE = 10;

function stamp(ms) {
  return new Date(ms).toISOString();
}

export function streamBrowser(app, base) {
  let shown = null; // the last answer: offset, next_offset, first_offset, last_offset, messages
  const out = h("div", { class: "messages", "aria-live": "polite" });
  const pos = h("span", { class: "page-of" });
  const input = h("input", { name: "offset", value: "first", autocomplete: "off", spellcheck: "false", required: true });
  async function show(offset) {
    try {
      const r = await app.api.post(`${base}/peek`, { offset, count: PAGE, truncate: 2000 });
      shown = r;
      const msgs = r.messages;
      const held = r.last_offset === null ? "the stream is empty" : `the stream holds offsets ${r.first_offset}–${r.last_offset}`;
      pos.textContent = msgs.length ? `Offsets ${msgs[0].offset}–${msgs[msgs.length - 1].offset}; ${held}` : held;
      clear(out, msgs.length
        ? msgs.map((m) => messageView(m, `Offset ${m.offset}`, [["Offset", String(m.offset)], ["Timestamp", stamp(m.timestamp)]]))
        : emptyState(r.last_offset === null ? "No messages yet" : "No messages from this offset",
          r.last_offset === null ? "Messages published to this stream appear here." : `Try first, or an offset up to ${r.last_offset}.`));
      prev.disabled = r.last_offset === null || r.offset <= r.first_offset;
      next.disabled = r.last_offset === null || r.next_offset > r.last_offset;
    } catch (err) {
      pos.textContent = "";
      clear(out, errorBox(err, "Reading the stream"));
    }
  }
  const prev = h("button", { type: "button", disabled: true,
    onclick: () => show(Math.max(shown.first_offset, shown.offset - PAGE)) }, "‹ Previous");
  const next = h("button", { type: "button", disabled: true, onclick: () => show(shown.next_offset) }, "Next ›");
  const from = h("form", { class: "offset-form", "aria-label": "Read from offset",
    onsubmit: (ev) => { ev.preventDefault(); show(input.value.trim()); } },
  field("Offset", input, "A number, first, last, next, an interval such as 30m or 1h, or a time such as 2026-01-31T12:00:00Z (UTC unless a zone is given)."),
  h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Read from offset"), prev, next, pos));
  return h("section", { class: "panel stream", "aria-label": "Message browser" },
    h("h3", { text: "Message browser" }),
    h("p", { class: "hint", text: "Reads the stream from an offset without a consumer: nothing is taken and no consumer sees a difference." }),
    from, out);
}
