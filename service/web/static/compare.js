// Two or more jobs side by side: best-so-far curves on one chart and the final metrics in one table,
// with the dense model as the reference.

import { api } from "./api.js";
import { PALETTE, lineChart } from "./chart.js";
import { loadReport, trialPoints } from "./job.js";
import { badge, clear, h, num, reportRows, shortSource, table, when } from "./util.js";

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
        " ",
        h("span", { class: "mono" }, job.id.slice(0, 12)),
        " ",
        badge(job.status),
        ` ${job.kind}, ${(job.spec.model && job.spec.model.source) || ""} — ${when(job.created_at)}`,
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
  const reference = jobs.find((j) => j.report);
  const refs = reference && reference.report.dense_validation_ppl ? [{ name: "dense model", y: Math.log(reference.report.dense_validation_ppl) }] : [];
  const chart = h("div", { class: "chart", id: "compare-chart" });

  // Final metrics: one row per quantity, the dense model first, then each job.
  const labels = [];
  const cells = new Map();
  const denseCol = new Map();
  jobs.forEach(({ report }, k) => {
    if (!report) return;
    for (const [label, dense, pruned] of reportRows(report)) {
      if (!cells.has(label)) {
        labels.push(label);
        cells.set(label, new Array(jobs.length).fill("–"));
      }
      cells.get(label)[k] = pruned;
      if (!denseCol.has(label) && report === reference.report) denseCol.set(label, dense);
    }
  });
  const best = (j) => {
    const values = j.trials.filter((t) => t.status === "completed" && t.value !== null).map((t) => t.value);
    return values.length ? Math.exp(Math.min(...values)) : null;
  };
  const head = ["", "dense", ...jobs.map(({ job }) => job.id.slice(0, 8))];
  const model = reference ? shortSource(reference.job.spec.model?.source || "") : "";
  const rows = [
    ["status", "", ...jobs.map(({ job }) => badge(job.status))],
    ["trials", "", ...jobs.map(({ trials }) => String(trials.length))],
    ["best validation PPL", reference ? num(reference.report.dense_validation_ppl, 2) : "–", ...jobs.map((j) => num(best(j), 2))],
    ...labels.map((label) => [label, denseCol.get(label) ?? "–", ...cells.get(label)]),
  ];
  clear(
    main,
    h("div", { class: "title-row" }, h("h1", {}, `Compare ${jobs.length} jobs`), h("a", { class: "button secondary", href: "#/compare" }, "Change selection")),
    h("section", { "aria-labelledby": "h-curves" }, h("h2", { id: "h-curves" }, "Best validation log PPL so far"), chart),
    h("section", { "aria-labelledby": "h-final" }, h("h2", { id: "h-final" }, "Final metrics"), table(head, rows, { caption: `The dense model ${model} is the reference`, className: "compare" })),
    h(
      "ul",
      { class: "legend jobs-legend" },
      jobs.map(({ job }) => h("li", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 8)), ` ${job.kind} · ratio ${job.spec.ratio ?? job.spec.prune?.ratio ?? "–"} · ${job.spec.space?.metrics?.join(", ") || ""}`)),
    ),
  );
  lineChart(chart, {
    title: "Best-so-far validation objective of each job",
    xLabel: "trial",
    yLabel: "best validation log PPL",
    refs,
    series: jobs.map(({ job, trials }, i) => ({ name: job.id.slice(0, 8), points: trialPoints(trials).bestSoFar, style: "step", color: PALETTE[i % PALETTE.length] })),
  });
  return () => chart.stopChart && chart.stopChart();
}
