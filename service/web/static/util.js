// Small DOM and formatting helpers shared by the views.

/** h("a", {href: "#/x", class: "b", onclick: fn}, "text", child, [more]) -> an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"];
export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
export const RETRYABLE = new Set(["failed", "cancelled", "timed_out"]);

export function badge(status) {
  return h("span", { class: `badge s-${status}` }, status.replace("_", " "));
}

export function num(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function int(x) {
  return x === null || x === undefined ? "–" : Math.round(x).toLocaleString("en-US");
}

/** A validation objective is a log perplexity; people read perplexities. */
export function ppl(logValue) {
  return logValue === null || logValue === undefined ? "–" : num(Math.exp(logValue), 2);
}

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${num(s, s < 1 ? 2 : 1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** The API's timestamps are UTC; those without a zone ("2026-12-01T10:00:00") are read as UTC. */
function instant(iso) {
  return new Date(/(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`);
}

const pad = (n, width = 2) => String(Math.trunc(Math.abs(n))).padStart(width, "0");

/** ISO 8601 in the viewer's time zone: "2026-12-01 15:04:05+01:00" (RFC 3339's space for the "T"). */
export function isoLocal(iso) {
  const d = instant(iso);
  const offset = -d.getTimezoneOffset();
  const zone = `${offset < 0 ? "-" : "+"}${pad(offset / 60)}:${pad(offset % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${zone}`;
}

/** A <time> element for an API timestamp (machine-readable UTC, shown in the viewer's zone). */
export function when(iso) {
  if (!iso) return "–";
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  return h("time", { datetime: instant(iso).toISOString(), title: `${zone} time` }, isoLocal(iso));
}

export function between(a, b) {
  if (!a) return null;
  return ((b ? instant(b) : new Date()) - instant(a)) / 1000;
}

// Bidirectional-text controls (embeddings, overrides, isolates, marks): in text from users they are shown
// as visible code points, so that a name cannot reorder what is displayed after it.
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function neutral(text) {
  return String(text ?? "").replace(BIDI, (c) => `[U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}]`);
}

/** Text from users (model names, paths, messages) as an isolated, inert element. */
export function userText(text, attrs = {}) {
  return h("bdi", { class: "user", ...attrs }, neutral(text));
}

/** "a=0.5, b=0.5" for a {name: weight} mapping (calibration mix, metric weights). */
export function weights(mapping) {
  if (!mapping) return "–";
  return Object.entries(mapping)
    .filter(([, w]) => w > 0)
    .map(([k, w]) => `${shortSource(k)} ${num(w, 2)}`)
    .join(", ");
}

/** "file:/long/path/a.txt" -> "a.txt": the end of a path is what tells sources apart. */
export function shortSource(label) {
  const i = label.lastIndexOf("/");
  return neutral(i >= 0 ? label.slice(i + 1) : label);
}

/** Rows (label, dense, pruned) of a final report: params, PPL per text, zero-shot, speed-up. */
export function reportRows(report) {
  const dense = report.dense || {};
  const pruned = report.pruned || {};
  const rows = [
    ["non-embedding params", int(report.params_before), int(report.params_after)],
    ["total params", int(report.total_params_before), int(report.total_params_after)],
    ["ratio achieved (target)", "", `${num(report.ratio_achieved, 3)} (${num(report.ratio_target, 3)})`],
  ];
  for (const label of Object.keys(dense.perplexity || {})) {
    rows.push([`PPL ${shortSource(label)}`, num(dense.perplexity[label], 2), num(pruned.perplexity?.[label], 2)]);
  }
  for (const [task, result] of Object.entries(pruned.zero_shot || {})) {
    rows.push([`zero-shot acc ${task}`, num(dense.zero_shot?.[task]?.acc, 3), num(result.acc, 3)]);
  }
  if (dense.speed && pruned.speed) {
    rows.push(["tokens/s", num(dense.speed.tokens_per_s, 0), num(pruned.speed.tokens_per_s, 0)]);
  }
  rows.push(["ideal speed-up (FLOPs)", "1", `${num(report.ideal_speedup, 2)}×`]);
  if (report.measured_speedup) rows.push(["measured speed-up", "1", `${num(report.measured_speedup, 2)}×`]);
  return rows;
}

/**
 * A table in its own horizontal scroller (narrow screens scroll the table, not the page). With
 * ``stack: true`` each row becomes a labelled card on narrow screens instead (every cell gets its
 * column's name as ``data-label``), so that no column is out of sight.
 */
export function table(head, rows, { caption, className = "", stack = false } = {}) {
  const body = h("tbody", {}, rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => h("td", {}, c))))));
  if (stack) {
    for (const tr of body.rows) [...tr.cells].forEach((td, i) => head[i] && td.setAttribute("data-label", head[i]));
  }
  const scroller = h(
    "div",
    { class: "scroll", tabindex: "0", role: "region", "aria-label": caption || "table" },
    h(
      "table",
      { class: `${className}${stack ? " stack" : ""}` },
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      body,
    ),
  );
  const frag = document.createDocumentFragment();
  frag.append(...(caption ? [h("p", { class: "caption", "aria-hidden": "true" }, caption)] : []), scroller);
  return frag;
}
