// A small SVG line chart of the last minutes: one series per line, with a legend that
// also gives the latest values as text (what a screen reader reads).

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 160;
const PAD = 36;

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export class Chart {
  // series: [{key, label, cls}]; minutes: how much history is kept and drawn
  constructor(title, series, format, minutes = 10) {
    this.series = series;
    this.format = format;
    this.span = minutes * 60 * 1000;
    this.points = [];
    this.el = document.createElement("figure");
    this.el.className = "chart";
    const cap = document.createElement("figcaption");
    cap.textContent = `${title} (last ${minutes} minutes)`;
    this.svg = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, preserveAspectRatio: "none" });
    this.legend = document.createElement("ul");
    this.legend.className = "legend";
    this.el.append(cap, this.svg, this.legend);
  }

  add(values, at = Date.now()) {
    this.points.push({ at, values });
    while (this.points.length && this.points[0].at < at - this.span) this.points.shift();
    this.draw();
  }

  // history from the broker (oldest first), kept before what was added since
  seed(points) {
    const first = this.points.length ? this.points[0].at : Infinity;
    this.points = points.filter((p) => p.at < first).concat(this.points);
    this.draw();
  }

  draw() {
    const pts = this.points;
    this.svg.replaceChildren();
    const now = pts.length ? pts[pts.length - 1].at : Date.now();
    let max = 1;
    for (const p of pts) for (const s of this.series) max = Math.max(max, p.values[s.key] || 0);
    const x = (t) => PAD + ((t - (now - this.span)) / this.span) * (W - PAD - 4);
    const y = (v) => H - 16 - (v / max) * (H - 28);
    this.svg.append(svg("line", { x1: PAD, y1: y(0), x2: W - 4, y2: y(0), class: "axis" }));
    this.svg.append(svg("line", { x1: PAD, y1: y(max), x2: W - 4, y2: y(max), class: "grid" }));
    const top = svg("text", { x: 2, y: y(max) + 4, class: "tick" });
    top.textContent = this.format(max);
    const zero = svg("text", { x: 2, y: y(0) + 4, class: "tick" });
    zero.textContent = "0";
    this.svg.append(top, zero);
    for (const s of this.series) {
      if (pts.length < 2) continue;
      const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p.values[s.key] || 0).toFixed(1)}`).join(" ");
      this.svg.append(svg("path", { d, class: `line ${s.cls}` }));
    }
    const last = pts.length ? pts[pts.length - 1].values : {};
    this.legend.replaceChildren(...this.series.map((s) => {
      const li = document.createElement("li");
      const mark = document.createElement("span");
      mark.className = `swatch ${s.cls}`;
      mark.setAttribute("aria-hidden", "true");
      li.append(mark, `${s.label}: ${this.format(last[s.key] || 0)}`);
      return li;
    }));
  }
}
