// The recipe of a trial (or of a prune job) at a glance: metric mix, calibration, allocation knobs,
// compensation and window length, each marked when the search chose it, with a link that fills the prune
// form with the prune job of that recipe (recorded by the search as the trial's ``prune_job``).

import { h, int, neutral, num, shortSource, weights } from "./util.js";

const SEARCHED = "searched";

/** Which recipe fields a trial's searched parameters set (``source:…`` and ``metric:…`` are the mixes). */
function searchedFields(params = {}) {
  const out = new Set();
  for (const name of Object.keys(params)) {
    if (name.startsWith("source:")) out.add("source_weights");
    else if (name.startsWith("metric:")) out.add("mix");
    else out.add(name);
  }
  return out;
}

function protectedBlocks(first, last) {
  return first || last ? `first ${first}, last ${last}` : "none";
}

/** Groups of (label, value, recipe field) rows for a search trial's record. */
export function trialRecipe(trial, job) {
  const r = trial.recipe || {};
  const samples = trial.samples ?? r.samples;
  return [
    ["Importance metrics", [
      ["metric mix", weights(r.mix), "mix"],
      ["aggregation", r.aggregation, "aggregation"],
      ["normalisation", r.normalization, "normalization"],
    ]],
    ["Calibration", [
      ["calibration mix", weights(r.source_weights), "source_weights"],
      ["samples", int(samples), "samples"],
      ["subset of the pool", r.subset_seed === undefined ? "–" : `seeded subset ${r.subset_seed}`, "subset_seed"],
      ["seq_len (tokens)", int(r.seq_len), "seq_len"],
    ]],
    ["Allocation", [
      ["ratio", num(r.ratio ?? job.spec?.ratio, 3), "ratio"],
      ["attention share", r.attn_share === null || r.attn_share === undefined ? "proportional" : num(r.attn_share, 3), "attn_share"],
      ["depth_slope", num(r.depth_slope, 3), "depth_slope"],
      ["protected blocks", protectedBlocks(r.protect_first, r.protect_last), ["protect_first", "protect_last"]],
      ["whole blocks removed", r.depth_share ? `${num(r.depth_share, 3)} of the budget (${r.block_criterion})` : "none", ["depth_share", "block_criterion"]],
    ]],
    ["Compensation", [["compensation", r.compensate ?? "none", "compensate"]]],
  ];
}

/** The same groups for a prune job's spec (what the prune job was run with). */
export function pruneRecipe(spec) {
  const cal = spec.calibration || {};
  const imp = spec.importance || {};
  const p = spec.prune || {};
  const split = p.attn_gamma ? `attn_gamma ${num(p.attn_gamma, 3)}` : p.attn_share === null || p.attn_share === undefined ? "proportional" : num(p.attn_share, 3);
  return [
    ["Importance metrics", [
      ["metric mix", weights(imp.mix)],
      ["aggregation", imp.aggregation],
      ["normalisation", imp.normalization],
    ]],
    ["Calibration", [
      ["calibration sources", (cal.sources || []).map((s) => `${s.kind}:${shortSource(s.name)}`).join(", ") + ((cal.sources || []).length > 1 ? " (samples split evenly)" : "")],
      ["samples", int(cal.samples)],
      ["sampling seed", cal.seed],
      ["seq_len (tokens)", int(cal.seq_len)],
    ]],
    ["Allocation", [
      ["ratio", num(p.ratio, 3)],
      ["allocation", p.allocation],
      ["attention share", split],
      ["depth_slope", num(p.depth_slope, 3)],
      ["protected blocks", p.allocation === "protected" ? protectedBlocks(p.protect_first, p.protect_last) : "none"],
      ["whole blocks removed", p.depth_share ? `${num(p.depth_share, 3)} of the budget (${p.block_criterion})` : "none"],
    ]],
    ["Compensation", [["compensation", spec.compensate?.method ?? "none"]]],
  ];
}

/** The card: ``groups`` from trialRecipe/pruneRecipe; ``searched``: the trial's params (marks the chosen fields). */
export function recipeCard(groups, { title, params = null, use = null, differs = [], id = "recipe" }) {
  const chosen = searchedFields(params || {});
  const isSearched = (field) => params && [field].flat().some((f) => f && chosen.has(f));
  return h(
    "article",
    { class: "recipe", id, "aria-labelledby": `${id}-title` },
    h("h3", { id: `${id}-title` }, title),
    params ? h("p", { class: "hint" }, h("span", { class: "tag searched" }, SEARCHED), " marks what the search chose; the rest was fixed by the job.") : null,
    groups.map(([group, rows]) =>
      h(
        "div",
        { class: "recipe-group" },
        h("h4", {}, group),
        h("dl", { class: "inline" }, rows.map(([label, value, field]) => [
          h("dt", {}, label),
          h("dd", { "data-field": [field].flat()[0] || label }, neutral(value ?? "–"), isSearched(field) ? h("span", { class: "tag searched" }, SEARCHED) : null),
        ])),
      ),
    ),
    use ? h("div", { class: "actions" }, h("a", { class: "button", href: use, id: `${id}-use` }, "Use this recipe")) : null,
    use && differs.length ? h("ul", { class: "hint differs" }, differs.map((d) => h("li", {}, `A prune job differs: ${neutral(d)}`))) : null,
  );
}
