// The submit form, built from GET /v1/catalog (plug-in names and the job schema's defaults). The server
// validates: its 422 field errors are shown next to the fields they name, with the API's own messages.

import { ApiError, api, explain, fieldPath } from "./api.js";
import { clear, h } from "./util.js";

const SOURCE_KINDS = ["builtin", "file", "hf"];
const ROLES = [
  ["spec.space.sources", "Calibration sources", "the search mixes these; empty: the server's default corpora"],
  ["spec.search.validation", "Validation texts", "choose among the trials; empty: the server's default"],
  ["spec.evaluate.texts", "Test texts", "held out, read once for the final report; empty: the server's default"],
];

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

export async function submitView(main) {
  document.title = "New job · adapruner";
  const catalog = await api("/v1/catalog");
  const schema = catalog.schemas.search;
  const defs = schema.$defs;
  const metrics = catalog.plugins.metrics || [];
  const corpora = catalog.plugins.builtin_corpora || [];
  const defaultMetrics = new Set(defs.SearchSpace.properties.metrics.default);

  const model = h("input", { id: "model", name: "model", value: defs.ModelSpec.properties.source.default, list: "models", autocomplete: "off" });
  const ratio = h("input", { id: "ratio", name: "ratio", type: "number", step: "0.01", min: "0.01", max: "0.99", value: schema.properties.ratio.default, inputmode: "decimal" });
  const trials = h("input", { id: "trials", name: "trials", type: "number", step: "1", min: "1", value: defs.SearchConfig.properties.trials.default, inputmode: "numeric" });
  const budget = h("input", { id: "time-budget", name: "time_budget_s", type: "number", min: "1", placeholder: "no limit", inputmode: "numeric" });
  const recovery = h(
    "select",
    { id: "recovery", name: "recovery" },
    h("option", { value: "none" }, "none"),
    (catalog.plugins.recovery || []).map((r) => h("option", { value: r.name }, `${r.name}: ${r.summary}`)),
  );
  const steps = h("input", { id: "recover-steps", name: "recover_steps", type: "number", min: "1", value: defs.RecoverConfig.properties.steps.default, inputmode: "numeric" });
  const deadline = h("input", { id: "deadline", name: "deadline_s", type: "number", min: "1", placeholder: "server default", inputmode: "numeric" });
  const advanced = h("textarea", { id: "advanced", name: "advanced", rows: 6, spellcheck: "false", placeholder: '{"search": {"n_init": 4}, "space": {"seq_lens": [128]}}' });
  const metricBoxes = h(
    "fieldset",
    { class: "field", "data-field": "spec.space.metrics" },
    h("legend", {}, "Importance metrics to mix"),
    h(
      "div",
      { class: "checks" },
      metrics.map((m) =>
        h("label", { class: "check", title: m.summary }, h("input", { type: "checkbox", name: "metric", value: m.name, checked: defaultMetrics.has(m.name) }), ` ${m.name}`, h("small", { class: "hint" }, m.summary)),
      ),
    ),
    h("p", { class: "field-error", role: "alert" }),
  );
  const listId = "corpora";
  const editors = ROLES.map((role) => sourceEditor(role, corpora, listId));
  const summary = h("div", { class: "error-summary", role: "alert", tabindex: "-1", hidden: true });
  const submit = h("button", { type: "submit" }, "Submit job");

  function request() {
    const spec = { model: { source: model.value.trim() }, ratio: ratio.value === "" ? null : Number(ratio.value) };
    put(spec, "space.metrics", [...metricBoxes.querySelectorAll("input:checked")].map((i) => i.value));
    editors.forEach((box) => {
      const sources = readSources(box);
      if (sources.length) put(spec, box.dataset.sources.slice(5), sources);
    });
    put(spec, "search.trials", trials.value === "" ? null : Number(trials.value));
    if (budget.value !== "") put(spec, "search.time_budget_s", Number(budget.value));
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
    const body = { kind: "search", spec };
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
    h("h1", { id: "submit-title" }, "New search job"),
    h("p", { class: "muted" }, "Searches calibration data × importance-metric mixes for the pruned model with the lowest validation perplexity."),
    summary,
    h("datalist", { id: "models" }, h("option", { value: defs.ModelSpec.properties.source.default })),
    h("datalist", { id: listId }, corpora.map((c) => h("option", { value: c.name }, c.summary))),
    h(
      "div",
      { class: "grid2" },
      field("spec.model", "Model", model, "a known name or a local model folder (no hub access needed)"),
      field("spec.ratio", "Pruning ratio", ratio, "share of the non-embedding parameters removed, 0 to 1"),
      field("spec.search.trials", "Trial budget", trials, "number of pruned models the search tries"),
      field("spec.search.time_budget_s", "Time budget (s)", budget, "optional: stop starting trials after this long"),
    ),
    metricBoxes,
    editors,
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
  model.focus();
}
