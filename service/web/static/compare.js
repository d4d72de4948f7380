// Two or more jobs side by side: best-so-far curves on one chart (each job with its own dense line), the
// final metrics and test perplexities in one table (each job's pruned value beside its own dense one), and
// a banner whenever the jobs are not like for like (model, validation texts, test texts).

import { api } from "./api.js";
import { PALETTE, lineChart } from "./chart.js";
import { loadReport, trialPoints } from "./job.js";
import { jobModel, jobRatio } from "./jobs.js";
import { badge, clear, h, neutral, num, reportRows, shortSource, table, userText, when } from "./util.js";

async function picker(main, preselected) {
  const page = await api("/v1/jobs?limit=100");
  const chosen = new Set(preselected);
  const go = h("button", { type: "submit", disabled: chosen.size < 2 }, "Compare");
  const rows = page.items.map((job) =>
    h(
      "li",
      {},
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          name: "job",
          value: job.id,
          checked: chosen.has(job.id),
          onchange: (e) => {
            if (e.target.checked) chosen.add(job.id);
            else chosen.delete(job.id);
            go.disabled = chosen.size < 2;
          },
        }),
        h("span", { class: "mono" }, job.id.slice(0, 12)),
        badge(job.status),
        h("span", {}, job.kind),
        userText(jobModel(job), { class: "user model" }),
        h("span", { class: "muted" }, "created ", when(job.created_at)),
      ),
    ),
  );
  clear(
    main,
    h(
      "form",
      {
        class: "card",
        onsubmit: (e) => {
          e.preventDefault();
          location.hash = `#/compare?ids=${[...chosen].join(",")}`;
        },
      },
      h("h1", {}, "Compare jobs"),
      h("fieldset", {}, h("legend", {}, "Pick two or more jobs"), rows.length ? h("ul", { class: "pick" }, rows) : h("p", { class: "empty" }, "No jobs yet.")),
      h("div", { class: "actions" }, go),
    ),
  );
}

const textLabels = (sources) => (sources || []).map((s) => `${s.kind}:${s.name}`).sort().join(", ");

/** What must match for two jobs' numbers to be comparable, as [aspect, value] of one job. */
function identity(job) {
  const spec = job.spec || {};
  const model = [jobModel(job), spec.model?.gguf_file, spec.model?.revision].filter(Boolean).join(" ");
  return [
    ["model", model],
    ["validation texts", job.kind === "search" ? textLabels(spec.search?.validation) : "none (a prune job)"],
    ["test texts", textLabels(spec.evaluate?.texts)],
  ];
}

/** The aspects on which the jobs differ: [{aspect, values: [per job]}]. */
export function differences(jobs) {
  const ids = jobs.map(identity);
  return ids[0]
    .map(([aspect], i) => ({ aspect, values: ids.map((id) => id[i][1]) }))
    .filter(({ values }) => new Set(values).size > 1);
}

function leaves(value, prefix = "", out = new Map()) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, JSON.stringify(value));
  return out;
}

/** A spec value in a few words: a list of sources by their file or corpus names. */
function describe(json) {
  const value = json === undefined ? null : JSON.parse(json);
  if (Array.isArray(value)) return value.map((v) => (v && typeof v === "object" ? shortSource(String(v.name ?? JSON.stringify(v))) : String(v))).join(", ");
  return value === null ? "–" : shortSource(String(value));
}

// Fields that decide whether numbers are comparable come first in a job's label.
const FIRST = ["model.", "search.validation", "evaluate.texts", "kind", "ratio", "prune.ratio"];
const rank = (path) => {
  const i = FIRST.findIndex((f) => path === f || path.startsWith(f));
  return i < 0 ? FIRST.length : i;
};

/** Per job, the spec fields whose values tell it apart from the others (at most ``limit``). */
export function distinguishing(jobs, limit = 3) {
  const flat = jobs.map(({ spec, kind }) => leaves({ kind, ...spec }));
  const paths = [...new Set(flat.flatMap((f) => [...f.keys()]))]
    .filter((p) => new Set(flat.map((f) => f.get(p))).size > 1)
    .sort((a, b) => rank(a) - rank(b));
  return flat.map((f) => paths.slice(0, limit).map((p) => `${p}: ${neutral(describe(f.get(p)))}`));
}

function banner(jobs, diffs) {
  if (!diffs.length) {
    return h("p", { class: "notice ok", id: "compare-banner", role: "status" }, "Like for like: the same model, validation texts and test texts.");
  }
  return h(
    "div",
    { class: "notice warn", id: "compare-banner", role: "alert" },
    h("p", {}, h("strong", {}, "Not like for like. "), "These jobs differ in ", diffs.map((d) => d.aspect).join(", "), ": their perplexities are not on the same footing, and each job's dense line is its own."),
    h("ul", {}, diffs.map((d) => h("li", {}, `${d.aspect}: `, jobs.map((j, k) => [k ? "; " : "", h("span", { class: "mono" }, j.job.id.slice(0, 8)), " ", userText(d.values[k] || "–")])))),
  );
}

export async function compareView(main, { query }) {
  document.title = "Compare · adapruner";
  const ids = (query.get("ids") || "").split(",").filter(Boolean);
  if (ids.length < 2) return picker(main, ids);
  const jobs = await Promise.all(
    ids.map(async (id) => {
      const job = await api(`/v1/jobs/${id}`);
      const [trials, report] = await Promise.all([api(`/v1/jobs/${id}/trials`), loadReport(job)]);
      return { job, report, trials: trials.map((t) => ({ index: t.trial_index, status: t.status, value: t.value, ...t.record })) };
    }),
  );
  const diffs = differences(jobs.map((j) => j.job));
  const tells = distinguishing(jobs.map((j) => j.job));
  const short = (j) => j.job.id.slice(0, 8);
  const color = (k) => PALETTE[k % PALETTE.length];
  const chart = h("div", { class: "chart", id: "compare-chart" });

  // Final metrics: one row per quantity, one column per job: its pruned value and its own dense value.
  const labels = [];
  const cells = new Map();
  jobs.forEach(({ report }, k) => {
    if (!report) return;
    for (const [label, dense, pruned] of reportRows(report)) {
      if (!cells.has(label)) {
        labels.push(label);
        cells.set(label, new Array(jobs.length).fill("–"));
      }
      cells.get(label)[k] = h("span", { class: "pair" }, h("span", { class: "pruned" }, pruned), dense !== "" ? h("small", { class: "dense muted" }, ` dense ${dense}`) : null);
    }
  });
  const best = (j) => {
    const values = j.trials.filter((t) => t.status === "completed" && !t.stopped_early && t.value !== null).map((t) => t.value);
    return values.length ? Math.exp(Math.min(...values)) : null;
  };
  const bestCell = (j) => {
    if (j.job.kind !== "search") return "– (no search)";
    const dense = j.report?.dense_validation_ppl;
    return h("span", { class: "pair" }, num(best(j), 2), dense ? h("small", { class: "dense muted" }, ` dense ${num(dense, 2)}`) : null);
  };
  const head = ["", ...jobs.map((j) => short(j))];
  const rows = [
    ["status", ...jobs.map(({ job }) => badge(job.status))],
    ["kind · ratio", ...jobs.map(({ job }) => `${job.kind} · ${num(jobRatio(job), 3)}`)],
    ["model", ...jobs.map(({ job }) => userText(shortSource(jobModel(job))))],
    ["trials", ...jobs.map(({ trials }) => String(trials.length))],
    ["best validation PPL", ...jobs.map(bestCell)],
    ...labels.map((label) => [label, ...cells.get(label)]),
  ];
  clear(
    main,
    h("div", { class: "title-row" }, h("h1", {}, `Compare ${jobs.length} jobs`), h("a", { class: "button secondary", href: "#/compare" }, "Change selection")),
    banner(jobs, diffs),
    h("section", { "aria-labelledby": "h-curves" }, h("h2", { id: "h-curves" }, "Best validation log PPL so far"), chart),
    h("section", { "aria-labelledby": "h-final" }, h("h2", { id: "h-final" }, "Final metrics (pruned, with each job's dense model)"), table(head, rows, { caption: "Final metrics of each job, pruned and dense", className: "compare" })),
    h(
      "ul",
      { class: "legend jobs-legend" },
      jobs.map(({ job }, k) =>
        h(
          "li",
          { "data-job": job.id },
          h("span", { class: "swatch", "aria-hidden": "true", "data-color": k }),
          h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 8)),
          ` ${job.kind} · ratio ${num(jobRatio(job), 3)} · `,
          userText(shortSource(jobModel(job))),
          tells[k].length ? [" · ", h("span", { class: "tells" }, tells[k].join(" · "))] : null,
        ),
      ),
    ),
  );
  for (const swatch of main.querySelectorAll(".swatch")) swatch.style.background = color(Number(swatch.dataset.color));
  lineChart(chart, {
    title: "Best-so-far validation objective of each job, each with its own dense model",
    xLabel: "trial",
    yLabel: "best validation log PPL",
    refs: jobs.flatMap((j, k) => (j.report && j.report.dense_validation_ppl ? [{ name: `dense ${short(j)}`, y: Math.log(j.report.dense_validation_ppl), color: color(k) }] : [])),
    series: jobs.map((j, k) => ({ name: `${short(j)} best so far`, points: trialPoints(j.trials).bestSoFar, style: "step", dash: "", color: color(k) })),
  });
  return () => chart.stopChart && chart.stopChart();
}
