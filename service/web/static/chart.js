// Small self-written SVG charts: a line/dot chart (objective per trial, best-so-far curves) and a grouped
// bar chart (kept widths per layer). They redraw at the width of their container, so text stays readable.

const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#1d4ed8", "#c2410c", "#047857", "#be185d", "#6d28d9", "#0e7490", "#a16207"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

/** About ``count`` round tick values covering [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function label(value) {
  return Math.abs(value) >= 1000 ? value.toLocaleString("en-US") : String(Number(value.toPrecision(4)));
}

function frame(width, height, title) {
  return s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title }, s("title", {}, title));
}

/**
 * Draw series of points. series: [{name, points: [{x, y, tip}], style: "dots" | "step" | "line"}];
 * refs: [{name, y}] horizontal reference lines (the dense model).
 */
export function lineChart(container, { title, series, refs = [], xLabel = "", yLabel = "", integerX = true }) {
  const draw = (width) => {
    const height = Math.max(220, Math.min(320, width * 0.5));
    const pad = { left: 58, right: 14, top: 12, bottom: 40 };
    const svg = frame(width, height, title);
    const points = series.flatMap((se) => se.points);
    const ys = points.map((p) => p.y).concat(refs.map((r) => r.y)).filter(Number.isFinite);
    const xs = points.map((p) => p.x);
    if (!ys.length) {
      svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "muted" }, "no trials yet"));
      return svg;
    }
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const margin = (y1 - y0 || Math.abs(y1) || 1) * 0.08;
    [y0, y1] = [y0 - margin, y1 + margin];
    const [x0, x1] = [Math.min(0, ...xs) - 0.25, Math.max(1, ...xs) + 0.25];
    const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
    const Y = (y) => pad.top + (1 - (y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
    const axes = s("g", { class: "axis" });
    for (const t of ticks(y0, y1, 5)) {
      axes.append(s("line", { x1: pad.left, x2: width - pad.right, y1: Y(t), y2: Y(t), class: "grid" }));
      axes.append(s("text", { x: pad.left - 6, y: Y(t) + 4, "text-anchor": "end" }, label(t)));
    }
    const xt = ticks(x0, x1, Math.max(2, Math.floor(width / 80))).filter((t) => !integerX || Number.isInteger(t));
    for (const t of xt) axes.append(s("text", { x: X(t), y: height - pad.bottom + 16, "text-anchor": "middle" }, label(t)));
    axes.append(s("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, class: "base" }));
    axes.append(s("text", { x: (pad.left + width - pad.right) / 2, y: height - 6, "text-anchor": "middle" }, xLabel));
    axes.append(s("text", { transform: `translate(13 ${(pad.top + height - pad.bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, yLabel));
    svg.append(axes);
    refs.forEach((r) => {
      svg.append(
        s("line", { x1: pad.left, x2: width - pad.right, y1: Y(r.y), y2: Y(r.y), class: "ref", stroke: r.color }, s("title", {}, `${r.name}: ${label(r.y)}`)),
        s("text", { x: width - pad.right - 4, y: Y(r.y) - 5, "text-anchor": "end", class: "ref-label", fill: r.color }, r.name),
      );
    });
    series.forEach((se, i) => {
      const color = se.color || PALETTE[i % PALETTE.length];
      const pts = se.points.filter((p) => Number.isFinite(p.y));
      if (se.style === "dots") {
        const g = s("g", { fill: color, class: "dots" });
        for (const p of pts) {
          const hollow = p.hollow ? { fill: "#fff", stroke: color, "stroke-width": 2 } : {};
          g.append(s("circle", { cx: X(p.x), cy: Y(p.y), r: 4.5, ...hollow }, s("title", {}, p.tip || `${p.x}: ${label(p.y)}`)));
        }
        svg.append(g);
        return;
      }
      let d = "";
      pts.forEach((p, j) => {
        if (j === 0) d += `M${X(p.x)},${Y(p.y)}`;
        else d += se.style === "step" ? `H${X(p.x)}V${Y(p.y)}` : `L${X(p.x)},${Y(p.y)}`;
      });
      svg.append(
        s("path", { d, fill: "none", stroke: color, "stroke-width": 2.5, "stroke-dasharray": (se.dash ?? DASHES[i % DASHES.length]) || null }),
      );
    });
    return svg;
  };
  return mount(container, draw, () => [legend(series, refs)]);
}

/** Grouped bars: categories along x, one bar per series. series: [{name, values}]; ref: a dashed line. */
export function barChart(container, { title, categories, series, yLabel = "", ref = null }) {
  const draw = (width) => {
    const height = Math.max(180, Math.min(260, width * 0.42));
    const pad = { left: 58, right: 10, top: 12, bottom: 40 };
    const svg = frame(width, height, title);
    const top = Math.max(1, ...series.flatMap((se) => se.values), ref ?? 0) * (ref === null ? 1 : 1.12);
    const Y = (y) => pad.top + (1 - y / top) * (height - pad.top - pad.bottom);
    const band = (width - pad.left - pad.right) / categories.length;
    const bar = Math.max(2, (band * 0.8) / series.length);
    const axes = s("g", { class: "axis" });
    for (const t of ticks(0, top, 4)) {
      axes.append(s("line", { x1: pad.left, x2: width - pad.right, y1: Y(t), y2: Y(t), class: "grid" }));
      axes.append(s("text", { x: pad.left - 6, y: Y(t) + 4, "text-anchor": "end" }, label(t)));
    }
    const every = Math.ceil(categories.length / Math.max(1, Math.floor((width - pad.left) / 28)));
    categories.forEach((c, i) => {
      if (i % every === 0) axes.append(s("text", { x: pad.left + band * (i + 0.5), y: height - pad.bottom + 16, "text-anchor": "middle" }, c));
    });
    axes.append(s("text", { x: (pad.left + width) / 2, y: height - 6, "text-anchor": "middle" }, "layer"));
    axes.append(s("text", { transform: `translate(13 ${(pad.top + height - pad.bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, yLabel));
    svg.append(axes);
    series.forEach((se, k) => {
      const g = s("g", { fill: se.color || PALETTE[k % PALETTE.length] });
      se.values.forEach((v, i) => {
        const x = pad.left + band * i + band * 0.1 + bar * k;
        g.append(s("rect", { x, y: Y(v), width: bar - 1, height: Y(0) - Y(v) }, s("title", {}, `layer ${categories[i]}: ${se.name} ${label(v)}`)));
      });
      svg.append(g);
    });
    if (ref !== null) {
      svg.append(
        s("line", { x1: pad.left, x2: width - pad.right, y1: Y(ref), y2: Y(ref), class: "ref" }, s("title", {}, `dense: ${ref}`)),
        s("text", { x: width - pad.right - 4, y: Y(ref) - 5, "text-anchor": "end", class: "ref-label" }, `dense ${label(ref)}`),
      );
    }
    return svg;
  };
  return mount(container, draw, () => [legend(series, ref === null ? [] : [{ name: "dense", y: ref }])]);
}

/** Colour of ``t`` in [0, 1] on a blue (0, best) to orange (1, worst) scale. */
export function scale(t) {
  const stops = [[29, 78, 216], [14, 116, 144], [161, 98, 7], [194, 65, 12]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c.join(",")})`;
}

/**
 * Parallel coordinates: one vertical axis per dimension, one polyline per trial.
 * axes: [{name, choices?}] (a choice axis spaces its values evenly; a numeric one spans the values seen);
 * lines: [{values: [per axis, null = none], color, dash, tip, id}].
 */
export function parallelChart(container, { title, axes, lines, note = "" }) {
  const draw = (width) => {
    const height = Math.max(240, Math.min(340, width * 0.45));
    const pad = { left: 16, right: 16, top: 48, bottom: 24 };
    const svg = frame(width, height, title);
    const step = axes.length > 1 ? (width - pad.left - pad.right) / (axes.length - 1) : 0;
    const X = (i) => pad.left + step * i;
    const Y = (t) => pad.top + (1 - t) * (height - pad.top - pad.bottom);
    const spans = axes.map((axis, i) => {
      if (axis.choices) return null;
      const vs = lines.map((l) => l.values[i]).filter(Number.isFinite);
      const lo = Math.min(...vs);
      const hi = Math.max(...vs);
      return vs.length ? [lo, hi > lo ? hi : lo + 1] : [0, 1];
    });
    const pos = (i, v) => {
      if (v === null || v === undefined) return null;
      const axis = axes[i];
      if (axis.choices) return axis.choices.length > 1 ? axis.choices.indexOf(String(v)) / (axis.choices.length - 1) : 0.5;
      const [lo, hi] = spans[i];
      return (v - lo) / (hi - lo);
    };
    const g = s("g", { class: "lines", fill: "none" });
    for (const line of lines) {
      let d = "";
      line.values.forEach((v, i) => {
        const t = pos(i, v);
        if (t === null || !Number.isFinite(t)) return;
        d += `${d ? "L" : "M"}${X(i)},${Y(t)}`;
      });
      g.append(s("path", { d, stroke: line.color, "stroke-width": line.width || 1.8, "stroke-dasharray": line.dash || null, opacity: 0.85, "data-trial": line.id }, s("title", {}, line.tip)));
    }
    svg.append(g);
    const axisG = s("g", { class: "axis" });
    axes.forEach((axis, i) => {
      const anchor = i === 0 ? "start" : i === axes.length - 1 ? "end" : "middle";
      axisG.append(s("line", { x1: X(i), x2: X(i), y1: Y(0), y2: Y(1), class: "base" }));
      const crowded = step < 90 && i % 2 === 1; // names of neighbouring axes alternate between two rows
      axisG.append(s("text", { x: X(i), y: crowded ? 30 : 14, "text-anchor": anchor, class: "axis-name" }, axis.label || axis.name));
      const [lo, hi] = spans[i] || [0, 1];
      const digits = Math.min(8, Math.max(3, Math.ceil(Math.log10(Math.abs(hi) / (hi - lo || 1))) + 2)); // enough to tell the ends apart
      const marks = axis.choices ? axis.choices.map((c, k) => [c, axis.choices.length > 1 ? k / (axis.choices.length - 1) : 0.5]) : spans[i].map((v, k) => [String(Number(v.toPrecision(digits))), k]);
      for (const [text, t] of marks) axisG.append(s("text", { x: X(i) + (anchor === "end" ? -4 : 4), y: Y(t) + (t === 1 ? 10 : -3), "text-anchor": anchor === "end" ? "end" : "start" }, text));
    });
    svg.append(axisG);
    return svg;
  };
  return mount(container, draw, () => (note ? [Object.assign(document.createElement("p"), { className: "hint", textContent: note })] : []));
}

function legend(series, refs) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  const item = (name, stroke, dash, dots, hollow = false) => {
    const li = document.createElement("li");
    const key = s("svg", { width: 24, height: 10, "aria-hidden": "true" });
    key.append(dots ? s("circle", { cx: 12, cy: 4.5, r: 3.5, fill: hollow ? "#fff" : stroke, stroke, "stroke-width": 1.5 }) : s("line", { x1: 0, x2: 24, y1: 5, y2: 5, stroke, "stroke-width": 3, "stroke-dasharray": dash || null }));
    li.append(key, ` ${name}`);
    ul.append(li);
  };
  series
    .filter((se) => se.points === undefined || se.points.length || !se.hollow)
    .forEach((se, i) => item(se.name, se.color || PALETTE[i % PALETTE.length], se.dash ?? DASHES[i % DASHES.length], se.style === "dots", se.hollow));
  refs.forEach((r) => item(r.name, r.color || "#6b7280", "4 3", false));
  return ul;
}

/** Draw now at the container's width and again whenever that width changes; ``after()``: nodes below it. */
function mount(container, draw, after) {
  if (container.stopChart) container.stopChart();
  let last = 0;
  const render = () => {
    const width = Math.floor(container.clientWidth);
    if (!width || width === last) return;
    last = width;
    container.replaceChildren(draw(width), ...after());
  };
  const observer = new ResizeObserver(render);
  observer.observe(container);
  render();
  container.stopChart = () => observer.disconnect();
  return container.stopChart;
}
