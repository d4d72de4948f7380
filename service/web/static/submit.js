// The submit forms (a search or a prune job), built from GET /v1/catalog: plug-in names, each job kind's
// schema (defaults, bounds) and the server's own limits (``limits``: kind -> dotted spec path -> maximum),
// which win over the schema's. The server validates: its 422 field errors are shown next to the fields
// they name, with the API's own messages. ``#/submit?kind=prune&job=ID[&trial=N]`` fills the prune form
// with a prune job's spec or with the prune job of a search trial's recipe.

import { ApiError, api, explain, fieldPath } from "./api.js";
import { clear, h, neutral } from "./util.js";

const SOURCE_KINDS = ["builtin", "file", "hf"];
const ROLES = {
  search: [
    ["spec.space.sources", "Calibration sources", "the search mixes these; empty: the server's default corpora"],
    ["spec.search.validation", "Validation texts", "choose among the trials; empty: the server's default"],
    ["spec.evaluate.texts", "Test texts", "held out, read once for the final report; empty: the server's default"],
  ],
  prune: [
    ["spec.calibration.sources", "Calibration sources", "the samples are split evenly over these; empty: the server's default corpora"],
    ["spec.evaluate.texts", "Test texts", "held out, read once for the final report; empty: the server's default"],
  ],
};

let uid = 0;
const nextId = (base) => `${base}-${++uid}`;

function field(path, labelText, control, hint) {
  const hintId = hint ? nextId("hint") : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field", "data-field": path },
    h("label", { for: control.id }, labelText),
    control,
    hint ? h("small", { id: hintId, class: "hint" }, hint) : null,
    h("p", { class: "field-error", role: "alert" }),
  );
}

function sourceRow(corpora, listId, source = { kind: "builtin", name: "" }) {
  const kindId = nextId("kind");
  const nameId = nextId("name");
  const kind = h("select", { id: kindId, class: "kind" }, SOURCE_KINDS.map((k) => h("option", { value: k, selected: k === source.kind }, k)));
  const name = h("input", { id: nameId, class: "name", value: source.name, list: listId, placeholder: "corpus name, file path or dataset id" });
  const row = h(
    "li",
    { class: "source" },
    h("label", { for: kindId, class: "sr-only" }, "kind"),
    kind,
    h("label", { for: nameId, class: "sr-only" }, "name"),
    name,
    h("button", { type: "button", class: "secondary small", "aria-label": "remove this source", onclick: () => row.remove() }, "Remove"),
  );
  return row;
}

function sourceEditor([path, title, hint], corpora, listId) {
  const rows = h("ol", { class: "sources" });
  const add = h(
    "button",
    {
      type: "button",
      class: "secondary small",
      onclick: () => {
        const row = sourceRow(corpora, listId);
        rows.append(row);
        row.querySelector("select").focus();
      },
    },
    `Add ${title.toLowerCase().replace(/s$/, "")}`,
  );
  const box = h(
    "fieldset",
    { class: "field", "data-field": path, "data-sources": path },
    h("legend", {}, title),
    h("small", { class: "hint" }, hint),
    rows,
    add,
    h("p", { class: "field-error", role: "alert" }),
  );
  return box;
}

function readSources(box) {
  return [...box.querySelectorAll("li.source")]
    .map((li) => ({ kind: li.querySelector(".kind").value, name: li.querySelector(".name").value.trim() }))
    .filter((s) => s.name);
}

/** Set ``value`` at a dotted path of ``target`` (creating objects on the way). */
function put(target, path, value) {
  const keys = path.split(".");
  let node = target;
  for (const k of keys.slice(0, -1)) node = node[k] ??= {};
  node[keys[keys.length - 1]] = value;
}

function merge(base, extra) {
  for (const [k, v] of Object.entries(extra)) {
    if (v && typeof v === "object" && !Array.isArray(v) && base[k] && typeof base[k] === "object" && !Array.isArray(base[k])) merge(base[k], v);
    else base[k] = v;
  }
  return base;
}

/** The JSON schema of the dotted ``path`` below ``schema`` ($ref and nullable anyOf resolved), or null. */
export function schemaAt(schema, path) {
  const resolve = (node) => {
    while (node && (node.$ref || node.anyOf)) {
      if (node.$ref) node = schema.$defs[node.$ref.split("/").pop()];
      else node = node.anyOf.find((n) => n.type !== "null") || null;
    }
    return node;
  };
  let node = schema;
  for (const key of path.split(".")) {
    node = resolve(node);
    node = node && node.properties ? node.properties[key] : null;
    if (!node) return null;
  }
  return resolve(node) && { ...resolve(node), default: node.default ?? resolve(node).default };
}

/** The bounds of a spec field: the server's limit when it has one (it is the one enforced), else the schema's. */
export function bounds(catalog, kind, path) {
  const node = schemaAt(catalog.schemas[kind], path) || {};
  const server = catalog.limits?.[kind]?.[path];
  const max = server ?? node.maximum ?? node.exclusiveMaximum;
  const min = node.minimum ?? node.exclusiveMinimum;
  return { node, min, max, server: server !== undefined };
}

function limitHint(hint, b) {
  if (b.max === undefined) return hint;
  return `${hint}; at most ${Number(b.max).toLocaleString("en-US")}${b.server ? " on this server" : ""}`;
}

/** A number input for the spec field ``path`` (dotted, below spec) with its bounds and default. */
function numberField(catalog, kind, path, id, label, hint, { step = "any", placeholder } = {}) {
  const b = bounds(catalog, kind, path);
  const value = b.node.default ?? "";
  const input = h("input", { id, type: "number", step, min: b.min, max: b.max, value: value === null ? "" : value, placeholder, inputmode: step === "1" ? "numeric" : "decimal" });
  return { path, input, el: field(`spec.${path}`, label, input, limitHint(hint, b)), get: () => (input.value === "" ? null : Number(input.value)), set: (v) => (input.value = v ?? "") };
}

function selectField(kind, path, id, label, hint, options, value) {
  const select = h("select", { id }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return { path, input: select, el: field(`spec.${path}`, label, select, hint), get: () => select.value, set: (v) => (select.value = v) };
}

function metricChecks(metrics, chosen) {
  const box = h(
    "fieldset",
    { class: "field", "data-field": "spec.space.metrics" },
    h("legend", {}, "Importance metrics to mix"),
    h("div", { class: "checks" }, metrics.map((m) => h("label", { class: "check", title: m.summary }, h("input", { type: "checkbox", name: "metric", value: m.name, checked: chosen.has(m.name) }), ` ${m.name}`, h("small", { class: "hint" }, m.summary)))),
    h("p", { class: "field-error", role: "alert" }),
  );
  const boxes = () => [...box.querySelectorAll("input")];
  return { path: "space.metrics", el: box, get: () => boxes().filter((i) => i.checked).map((i) => i.value), set: (v) => boxes().forEach((i) => (i.checked = v.includes(i.value))) };
}

function metricWeights(metrics, mix) {
  const inputs = metrics.map((m) => h("input", { type: "number", id: `mix-${m.name}`, min: 0, step: "any", value: mix[m.name] ?? "", placeholder: "0", inputmode: "decimal" }));
  const box = h(
    "fieldset",
    { class: "field", "data-field": "spec.importance.mix" },
    h("legend", {}, "Metric mix (weights)"),
    h("small", { class: "hint" }, "each metric is normalised per unit group, then mixed with these weights; empty or 0: not used; all empty: the server's default mix"),
    h("div", { class: "checks weights" }, metrics.map((m, i) => h("div", { class: "weight" }, h("label", { for: inputs[i].id, title: m.summary }, m.name), inputs[i]))),
    h("p", { class: "field-error", role: "alert" }),
  );
  return {
    path: "importance.mix",
    el: box,
    optional: true,
    get: () => Object.fromEntries(metrics.map((m, i) => [m.name, Number(inputs[i].value)]).filter(([, w]) => w > 0)),
    set: (v) => metrics.forEach((m, i) => (inputs[i].value = v[m.name] ?? "")),
  };
}

function sourcesBinding(role, corpora) {
  const box = sourceEditor(role, corpora, "corpora");
  const path = role[0].slice(5);
  return {
    path,
    el: box,
    get: () => readSources(box),
    set: (sources) => {
      const list = box.querySelector("ol.sources");
      list.replaceChildren(...sources.map((src) => sourceRow(corpora, "corpora", src)));
    },
    optional: true,
  };
}

/** The controls of one job kind: [{path (below spec), el, get, set}] and the layout. */
function controls(catalog, kind) {
  const schema = catalog.schemas[kind];
  const metrics = catalog.plugins.metrics || [];
  const corpora = catalog.plugins.builtin_corpora || [];
  const model = h("input", { id: "model", name: "model", value: schemaAt(schema, "model.source").default, list: "models", autocomplete: "off" });
  const c = { model: { path: "model.source", input: model, el: field("spec.model", "Model", model, "a known name or a local model folder (no hub access needed)"), get: () => model.value.trim(), set: (v) => (model.value = v) } };
  const num = (path, id, label, hint, opts) => numberField(catalog, kind, path, id, label, hint, opts);
  const enumOf = (path) => (schemaAt(schema, path)?.enum || []).map((v) => [v, v]);
  if (kind === "search") {
    c.ratio = num("ratio", "ratio", "Pruning ratio", "share of the non-embedding parameters removed, 0 to 1", { step: "0.01" });
    c.trials = num("search.trials", "trials", "Trial budget", "number of pruned models the search tries", { step: "1" });
    c.budget = num("search.time_budget_s", "time-budget", "Time budget (s)", "optional: stop starting trials after this long", { placeholder: "no limit" });
    c.metrics = metricChecks(metrics, new Set(schemaAt(schema, "space.metrics").default));
    c.sources = ROLES.search.map((role) => sourcesBinding(role, corpora));
    c.layout = [["grid2", [c.model, c.ratio, c.trials, c.budget]], c.metrics, ...c.sources];
  } else {
    c.ratio = num("prune.ratio", "ratio", "Pruning ratio", "share of the non-embedding parameters removed, 0 to 1", { step: "0.01" });
    c.mix = metricWeights(metrics, schemaAt(schema, "importance.mix").default || {});
    c.aggregation = selectField(kind, "importance.aggregation", "aggregation", "Aggregation", "how a unit's per-weight scores are combined", enumOf("importance.aggregation"), schemaAt(schema, "importance.aggregation").default);
    c.normalization = selectField(kind, "importance.normalization", "normalization", "Normalisation", "per unit group, before mixing the metrics", enumOf("importance.normalization"), schemaAt(schema, "importance.normalization").default);
    c.samples = num("calibration.samples", "samples", "Calibration samples", "windows drawn from the calibration sources", { step: "1" });
    c.seqLen = num("calibration.seq_len", "seq-len", "Calibration seq_len", "tokens per calibration window", { step: "1" });
    c.allocation = selectField(kind, "prune.allocation", "allocation", "Allocation", "uniform: the same share from every layer; protected: the first/last blocks are kept", enumOf("prune.allocation"), schemaAt(schema, "prune.allocation").default);
    c.attnShare = num("prune.attn_share", "attn-share", "Attention share", "share of the removed parameters taken from attention; empty: proportional", { step: "0.01", placeholder: "proportional" });
    c.depthSlope = num("prune.depth_slope", "depth-slope", "Depth slope", "-1 to 1: more pruning in later (positive) or earlier layers", { step: "0.01" });
    c.protectFirst = num("prune.protect_first", "protect-first", "Protected first blocks", "with the protected allocation", { step: "1" });
    c.protectLast = num("prune.protect_last", "protect-last", "Protected last blocks", "with the protected allocation", { step: "1" });
    c.depthShare = num("prune.depth_share", "depth-share", "Whole-block share", "share of the budget removed as whole blocks", { step: "0.01" });
    c.compensate = selectField(kind, "compensate.method", "compensate", "Compensation", "restores the layer outputs after pruning", (catalog.plugins.compensators || []).map((e) => [e.name, `${e.name}: ${e.summary}`]), schemaAt(schema, "compensate.method").default);
    c.sources = ROLES.prune.map((role) => sourcesBinding(role, corpora));
    c.layout = [
      ["grid2", [c.model, c.ratio]],
      c.mix,
      ["grid2", [c.aggregation, c.normalization]],
      c.sources[0],
      ["grid2", [c.samples, c.seqLen]],
      ["grid2", [c.allocation, c.attnShare, c.depthSlope, c.protectFirst, c.protectLast, c.depthShare, c.compensate]],
      c.sources[1],
    ];
  }
  c.all = [c.model, ...Object.values(c).filter((x) => x && x.path && x !== c.model && !Array.isArray(x)), ...c.sources];
  return c;
}

/** Remove ``path`` from ``spec`` (dotted), and objects left empty on the way. */
function take(spec, path) {
  const keys = path.split(".");
  const chain = [spec];
  for (const k of keys.slice(0, -1)) {
    const next = chain[chain.length - 1]?.[k];
    if (!next || typeof next !== "object") return undefined;
    chain.push(next);
  }
  const last = chain[chain.length - 1];
  if (!(keys[keys.length - 1] in last)) return undefined;
  const value = last[keys[keys.length - 1]];
  delete last[keys[keys.length - 1]];
  for (let i = chain.length - 1; i > 0; i--) if (!Object.keys(chain[i]).length) delete chain[i - 1][keys[i - 1]];
  return value;
}

/** The spec a link asks to start from: a prune job's own, or the prune job of a search trial's recipe. */
async function prefill(query) {
  const id = query.get("job");
  if (!id) return null;
  if (query.has("trial")) {
    const index = Number(query.get("trial"));
    const row = (await api(`/v1/jobs/${id}/trials`)).find((t) => t.trial_index === index);
    if (!row || !row.record.prune_job) throw new Error(`trial ${index} of job ${id} has no recorded prune recipe`);
    return { spec: row.record.prune_job.spec, differs: row.record.prune_job.differs, from: `trial ${index} of search ${id.slice(0, 8)}` };
  }
  const job = await api(`/v1/jobs/${id}`);
  return { spec: job.spec, differs: [], from: `prune job ${id.slice(0, 8)}` };
}

export async function submitView(main, { query }) {
  const kind = query.get("kind") === "prune" ? "prune" : "search";
  document.title = `New ${kind} job · adapruner`;
  const catalog = await api("/v1/catalog");
  const start = kind === "prune" ? await prefill(query) : null;
  const defs = catalog.schemas.search.$defs;
  const corpora = catalog.plugins.builtin_corpora || [];
  const c = controls(catalog, kind);
  const recovery = h(
    "select",
    { id: "recovery", name: "recovery" },
    h("option", { value: "none" }, "none"),
    (catalog.plugins.recovery || []).map((r) => h("option", { value: r.name }, `${r.name}: ${r.summary}`)),
  );
  const steps = h("input", { id: "recover-steps", name: "recover_steps", type: "number", min: "1", value: defs.RecoverConfig.properties.steps.default, inputmode: "numeric" });
  const deadline = h("input", { id: "deadline", name: "deadline_s", type: "number", min: "1", placeholder: "server default", inputmode: "numeric" });
  const advanced = h("textarea", { id: "advanced", name: "advanced", rows: 6, spellcheck: "false", placeholder: kind === "search" ? '{"search": {"n_init": 4}, "space": {"seq_lens": [128]}}' : '{"evaluate": {"max_tokens": 4096}}' });
  const summary = h("div", { class: "error-summary", role: "alert", tabindex: "-1", hidden: true });
  const submit = h("button", { type: "submit" }, "Submit job");

  if (start) {
    const rest = structuredClone(start.spec);
    for (const binding of c.all) {
      const value = take(rest, binding.path);
      if (value !== undefined && value !== null) binding.set(value);
      else if (value === null) binding.set("");
    }
    const recover = take(rest, "recover");
    if (recover && recover.method && recover.method !== "none") {
      recovery.value = recover.method;
      if (recover.steps) steps.value = recover.steps;
      delete recover.method;
      delete recover.steps;
      if (Object.keys(recover).length) rest.recover = recover;
    }
    if (Object.keys(rest).length) advanced.value = JSON.stringify(rest, null, 1);
  }

  function request() {
    const spec = {};
    for (const binding of c.all) {
      const value = binding.get();
      if (binding.optional && !Object.keys(value).length) continue; // no sources or weights: the server's default
      if (value === null && binding.input?.placeholder) continue; // an optional number left empty
      put(spec, binding.path, value);
    }
    if (recovery.value !== "none") spec.recover = { method: recovery.value, steps: Number(steps.value) };
    if (advanced.value.trim()) {
      let extra;
      try {
        extra = JSON.parse(advanced.value);
      } catch (err) {
        throw new ApiError(422, [{ loc: ["body", "spec"], msg: `advanced JSON does not parse: ${err.message}`, advanced: true }]);
      }
      if (!extra || typeof extra !== "object" || Array.isArray(extra)) {
        throw new ApiError(422, [{ loc: ["body", "spec"], msg: "advanced JSON must be an object of spec fields", advanced: true }]);
      }
      merge(spec, extra);
    }
    const body = { kind, spec };
    if (deadline.value !== "") body.deadline_s = Number(deadline.value);
    return body;
  }
  function showErrors(errors) {
    const placed = [];
    for (const error of errors) {
      const path = error.advanced ? "advanced" : fieldPath(error.loc);
      let best = null;
      for (const el of form.querySelectorAll("[data-field]")) {
        const f = el.dataset.field;
        if ((path === f || path.startsWith(`${f}.`)) && (!best || f.length > best.dataset.field.length)) best = el;
      }
      if (best) {
        const details = best.closest("details");
        if (details) details.open = true;
        const p = best.querySelector(".field-error");
        p.textContent = p.textContent ? `${p.textContent}\n${error.msg}` : error.msg;
        best.classList.add("invalid");
        for (const c of best.querySelectorAll("input, select, textarea")) c.setAttribute("aria-invalid", "true");
      }
      placed.push(h("li", {}, best ? h("a", { href: `#${best.querySelector("input, select, textarea")?.id || ""}`, onclick: (e) => { e.preventDefault(); best.querySelector("input, select, textarea")?.focus(); } }, `${path}: ${error.msg}`) : `${path}: ${error.msg}`));
    }
    clear(summary, h("h2", {}, errors.length === 1 ? "1 problem" : `${errors.length} problems`), h("ul", {}, placed));
    summary.hidden = false;
    summary.focus();
  }

  function resetErrors() {
    summary.hidden = true;
    for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  const form = h(
    "form",
    {
      class: "card submit",
      novalidate: true,
      "aria-labelledby": "submit-title",
      onsubmit: async (event) => {
        event.preventDefault();
        resetErrors();
        submit.disabled = true;
        try {
          const job = await api("/v1/jobs", { method: "POST", body: request() });
          location.hash = `#/jobs/${job.id}`;
        } catch (err) {
          if (err instanceof ApiError && Array.isArray(err.detail)) showErrors(err.detail);
          else showErrors([{ loc: ["body"], msg: explain(err) }]);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", { id: "submit-title" }, kind === "search" ? "New search job" : "New prune job"),
    h(
      "nav",
      { class: "kind-switch", "aria-label": "Job kind" },
      [["search", "Search"], ["prune", "Prune"]].map(([k, text]) => h("a", { href: `#/submit?kind=${k}`, class: `button ${k === kind ? "" : "secondary"}`, "aria-current": k === kind ? "page" : null }, text)),
    ),
    h("p", { class: "muted" }, kind === "search" ? "Searches calibration data × importance-metric mixes × allocation for the pruned model with the lowest validation perplexity." : "Prunes once with the recipe below: metric mix, calibration, allocation and compensation."),
    start ? h("div", { class: "notice", id: "prefilled", role: "status" }, h("p", {}, `Filled with the recipe of ${start.from}; fields without a control are in the advanced JSON.`), start.differs.length ? h("ul", {}, start.differs.map((d) => h("li", {}, neutral(d)))) : null) : null,
    summary,
    h("datalist", { id: "models" }, h("option", { value: defs.ModelSpec.properties.source.default })),
    h("datalist", { id: "corpora" }, corpora.map((x) => h("option", { value: x.name }, x.summary))),
    c.layout.map((item) => (Array.isArray(item) ? h("div", { class: item[0] }, item[1].map((b) => b.el)) : item.el)),
    h(
      "div",
      { class: "grid2" },
      field("spec.recover", "Recovery of the best trial", recovery, "optional fine-tuning after pruning"),
      field("spec.recover.steps", "Recovery steps", steps, "training steps when a recovery is chosen"),
      field("deadline_s", "Deadline (s)", deadline, "the job is stopped after this long"),
    ),
    h(
      "details",
      { class: "advanced" },
      h("summary", {}, "Advanced: more spec fields as JSON"),
      field("advanced", "Spec fields merged over the form (JSON object)", advanced, "e.g. pool sizes, sequence lengths, evaluation settings; see the job schema at /docs"),
    ),
    h("div", { class: "actions" }, submit, h("a", { href: "#/jobs", class: "button secondary" }, "Cancel")),
  );
  clear(main, form);
  c.model.input.focus();
}
