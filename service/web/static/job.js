// One job, live: state and timings, objective per trial with the best-so-far curve, the trial table, the
// best trial's kept widths per layer, the final report, artifacts and the log. Updates come as
// server-sent events (the sign-in cookie authenticates the EventSource).

import { api, explain } from "./api.js";
import { PALETTE, barChart, lineChart } from "./chart.js";
import { RETRYABLE, TERMINAL, badge, between, clear, h, int, num, ppl, reportRows, seconds, table, weights, when } from "./util.js";

function fromRow(t) {
  return { ...t.record, index: t.trial_index, status: t.status, value: t.value, best_value: t.best_value, seconds: t.seconds };
}

function fromEvent(d) {
  return { ...d, samples: d.recipe && d.recipe.samples };
}

export function trialPoints(trials) {
  const sorted = [...trials].sort((a, b) => a.index - b.index);
  let best = Infinity;
  const values = [];
  const bestSoFar = [];
  for (const t of sorted) {
    if (t.status !== "completed" || t.value === null || t.value === undefined) continue;
    best = Math.min(best, t.value);
    const early = t.stopped_early ? ", stopped early (an estimate)" : "";
    values.push({ x: t.index, y: t.value, hollow: Boolean(t.stopped_early), tip: `trial ${t.index}: log PPL ${num(t.value, 4)} (PPL ${ppl(t.value)})${early}` });
    bestSoFar.push({ x: t.index, y: best });
  }
  return { values, bestSoFar };
}

export function loadReport(job) {
  if (job.status !== "succeeded") return Promise.resolve(null);
  return api(`/v1/jobs/${job.id}/artifacts/report.json`).catch(() => null);
}

/** The dense widths, from the saved model's config.json (it keeps the dense sizes; the kept ones are per layer). */
async function denseWidths(job) {
  const config = await api(`/v1/jobs/${job.id}/artifacts/config.json`).catch(() => null);
  if (!config) return null;
  return { heads: config.num_key_value_heads ?? config.num_attention_heads ?? null, channels: config.intermediate_size ?? null };
}

export async function jobView(main, { params: [id] }) {
  let job = await api(`/v1/jobs/${id}`);
  const trials = new Map((await api(`/v1/jobs/${id}/trials`)).map((t) => [t.trial_index, fromRow(t)]));
  let report = await loadReport(job);
  let dense = report ? await denseWidths(job) : null;
  let artifacts = job.status === "succeeded" ? await api(`/v1/jobs/${id}/artifacts`) : [];
  const log = [];
  let lastEvent = 0;
  let source = null;
  let progress = null;
  document.title = `Job ${id.slice(0, 8)} · adapruner`;

  const head = h("div", { class: "job-head" });
  const facts = h("div", { class: "facts" });
  const curve = h("div", { class: "chart", id: "objective-chart" });
  const trialBox = h("div", { id: "trials" });
  const widths = h("div", { class: "widths" });
  const reportBox = h("div", { id: "report" });
  const logBox = h("ol", { class: "log", id: "log", "aria-live": "polite" });
  const notice = h("p", { class: "error", role: "alert" });

  async function act(verb) {
    notice.textContent = "";
    try {
      job = await api(`/v1/jobs/${id}/${verb}`, { method: "POST" });
      renderHead();
      if (verb === "retry") follow();
    } catch (err) {
      notice.textContent = explain(err);
    }
  }

  function renderHead() {
    const live = !TERMINAL.has(job.status);
    clear(
      head,
      h("div", { class: "title-row" }, h("h1", {}, `Job `, h("span", { class: "mono" }, id.slice(0, 12))), h("span", { id: "status", role: "status" }, badge(job.status))),
      h(
        "div",
        { class: "actions" },
        live ? h("button", { type: "button", class: "danger", id: "cancel", disabled: job.cancel_requested, onclick: () => act("cancel") }, job.cancel_requested ? "Cancelling…" : "Cancel") : null,
        RETRYABLE.has(job.status) ? h("button", { type: "button", id: "retry", onclick: () => act("retry") }, "Retry") : null,
        h("a", { class: "button secondary", href: `#/compare?ids=${id}` }, "Compare with…"),
      ),
      notice,
    );
    const p = job.progress || {};
    const spec = job.spec || {};
    const rows = [
      ["kind", job.kind],
      ["model", spec.model && spec.model.source],
      ["ratio", spec.ratio ?? (spec.prune && spec.prune.ratio)],
      ["trials", p.total ? h("span", { class: "progress" }, h("progress", { max: p.total, value: p.finished || 0, "aria-label": "trials finished" }), ` ${p.finished || 0} of ${p.total}`) : "–"],
      ["best validation PPL", p.best_value !== undefined && p.best_value !== null ? ppl(p.best_value) : "–"],
      ["stage", progress && live ? `${progress.stage} ${progress.done}/${progress.total}` : "–"],
      ["attempt", `${job.attempts} of ${job.max_attempts}`],
      ["worker", job.worker_id || "–"],
      ["created", when(job.created_at)],
      ["waited in queue", seconds(between(job.created_at, job.started_at))],
      ["started", when(job.started_at)],
      ["finished", when(job.finished_at)],
      ["run time", seconds(between(job.started_at, job.finished_at))],
      ["deadline", seconds(job.deadline_s)],
    ];
    clear(
      facts,
      h("dl", {}, rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v ?? "–")))),
      job.error ? h("pre", { class: "error-box" }, job.error) : null,
    );
  }

  function renderTrials() {
    const list = [...trials.values()].sort((a, b) => a.index - b.index);
    const { values, bestSoFar } = trialPoints(list);
    const refs = report && report.dense_validation_ppl ? [{ name: "dense model", y: Math.log(report.dense_validation_ppl) }] : [];
    if (job.kind !== "search") curve.hidden = true;
    else lineChart(curve, {
      title: "Validation objective per trial and best so far",
      xLabel: "trial",
      yLabel: "validation log PPL",
      refs,
      series: [
        { name: "objective of the trial", points: values.filter((p) => !p.hollow), style: "dots", color: PALETTE[0] },
        { name: "stopped early (estimate)", points: values.filter((p) => p.hollow), style: "dots", color: PALETTE[0], hollow: true },
        { name: "best so far", points: bestSoFar, style: "step", dash: "", color: PALETTE[1] },
      ],
    });
    const bestIndex = report && report.best ? report.best.index : null;
    const rows = list.map((t) => {
      const r = t.recipe || {};
      return h(
        "tr",
        { "data-trial": t.index, class: t.index === bestIndex ? "best" : "" },
        h("td", {}, t.index, t.index === bestIndex ? h("span", { class: "tag" }, "best") : null),
        h("td", {}, t.status === "completed" && t.stopped_early ? "stopped early" : t.status),
        h("td", {}, num(t.value, 4)),
        h("td", {}, ppl(t.value)),
        h("td", {}, int(t.samples ?? r.samples)),
        h("td", { class: "wrap" }, weights(r.source_weights)),
        h("td", { class: "wrap" }, weights(r.mix)),
        h("td", {}, [r.aggregation, r.normalization].filter(Boolean).join(" / ") || "–"),
        h("td", {}, r.attn_share === null || r.attn_share === undefined ? "–" : num(r.attn_share, 3)),
        h("td", {}, num(t.seconds, 2)),
      );
    });
    clear(
      trialBox,
      list.length
        ? table(["#", "status", "log PPL", "PPL", "samples", "calibration mix", "metric weights", "agg. / norm.", "attn share", "time (s)"], rows, { caption: "Trials", className: "trials" })
        : h("p", { class: "empty" }, job.kind === "search" ? "No trial has finished yet; rows appear here as they do." : "A prune job has no trials."),
    );
  }

  function renderReport() {
    if (!report) {
      clear(widths, h("p", { class: "empty" }, "The kept widths of the best trial appear when the job succeeds."));
      clear(reportBox, h("p", { class: "empty" }, job.status === "succeeded" ? "This job wrote no report." : "The final report appears when the job succeeds."));
      return;
    }
    const layers = report.widths || [];
    const categories = layers.map((_, i) => String(i));
    const denseOf = (kind) => (dense && Number.isFinite(dense[kind]) ? dense[kind] : null);
    clear(widths, h("div", { class: "chart", id: "heads-chart" }), h("div", { class: "chart", id: "channels-chart" }));
    barChart(widths.children[0], { title: "Attention KV groups kept per layer (best trial)", categories, series: [{ name: "KV groups kept", values: layers.map((w) => w.heads), dash: "" }], yLabel: "KV groups", ref: denseOf("heads") });
    barChart(widths.children[1], { title: "MLP channels kept per layer (best trial)", categories, series: [{ name: "channels kept", values: layers.map((w) => w.channels), dash: "", color: "#c2410c" }], yLabel: "channels", ref: denseOf("channels") });
    const best = report.best || {};
    const timing = report.timings || {};
    const reportLink = artifacts.find((a) => a.path === "report.json");
    clear(
      reportBox,
      table(["", "dense", "pruned"], reportRows(report), { caption: "Final report", className: "report" }),
      h(
        "dl",
        { class: "inline" },
        best.index !== undefined ? [h("dt", {}, "best trial"), h("dd", {}, `#${best.index}, validation PPL ${num(best.validation_ppl, 2)} (confirmed ${num(best.confirmed_validation_ppl, 2)})`)] : null,
        report.dense_validation_ppl ? [h("dt", {}, "dense validation PPL"), h("dd", {}, num(report.dense_validation_ppl, 2))] : null,
        Object.entries(timing).map(([k, v]) => [h("dt", {}, k.replace(/_s$/, "").replaceAll("_", " ")), h("dd", {}, seconds(v))]),
      ),
      h(
        "div",
        { class: "actions" },
        reportLink ? h("a", { class: "button", id: "download-report", href: reportLink.url, download: `report-${id.slice(0, 8)}.json` }, "Download report") : null,
      ),
      h("h3", {}, "Artifacts"),
      h("ul", { class: "artifacts" }, artifacts.map((a) => h("li", {}, h("a", { href: a.url, download: a.path.split("/").pop() }, a.path), h("span", { class: "muted" }, ` ${int(a.size)} bytes`)))),
    );
  }

  function addLog(event) {
    const d = event.data || {};
    let text;
    if (event.kind === "state") text = `state: ${d.status}${d.attempt ? ` (attempt ${d.attempt})` : ""}${d.error ? ` — ${d.error.split("\n")[0]}` : ""}`;
    else if (event.kind === "trial") text = `trial ${d.index} ${d.status}: log PPL ${num(d.value, 4)}, best ${num(d.best_value, 4)} (${d.finished}/${d.total})`;
    else text = d.message || JSON.stringify(d);
    log.push(h("li", {}, h("time", { datetime: event.created_at }, when(event.created_at)), " ", h("span", { class: `k-${event.kind}` }, text)));
    if (logBox.isConnected) logBox.append(log[log.length - 1]);
  }

  async function finished() {
    job = await api(`/v1/jobs/${id}`);
    report = await loadReport(job);
    dense = report ? await denseWidths(job) : null;
    artifacts = job.status === "succeeded" ? await api(`/v1/jobs/${id}/artifacts`) : [];
    for (const t of await api(`/v1/jobs/${id}/trials`)) trials.set(t.trial_index, fromRow(t));  // full records
    renderHead();
    renderTrials();
    renderReport();
  }

  function follow() {
    if (source) source.close();
    source = new EventSource(`/v1/jobs/${id}/events?after=${lastEvent}`);
    const on = (kind, fn) =>
      source.addEventListener(kind, (message) => {
        const event = JSON.parse(message.data);
        if (event.id) lastEvent = Math.max(lastEvent, event.id);
        fn(event);
      });
    on("state", async (event) => {
      addLog(event);
      job = { ...job, status: event.data.status };
      renderHead();
      api(`/v1/jobs/${id}`).then((j) => { job = j; renderHead(); }).catch(() => {});
    });
    on("trial", (event) => {
      addLog(event);
      trials.set(event.data.index, { ...trials.get(event.data.index), ...fromEvent(event.data) });
      job.progress = { ...(job.progress || {}), finished: event.data.finished, total: event.data.total, best_value: event.data.best_value };
      renderHead();
      renderTrials();
    });
    on("progress", (event) => {
      progress = event.data;
      renderHead();
    });
    on("log", addLog);
    on("end", () => {
      source.close();
      finished().catch((err) => (notice.textContent = explain(err)));
    });
  }

  renderHead();
  renderTrials();
  clear(
    main,
    head,
    h("section", { "aria-labelledby": "h-state" }, h("h2", { id: "h-state" }, "State and timings"), facts),
    h("section", { "aria-labelledby": "h-search" }, h("h2", { id: "h-search" }, "Search"), curve, trialBox),
    h("section", { "aria-labelledby": "h-widths" }, h("h2", { id: "h-widths" }, "Kept widths per layer (best trial)"), widths),
    h("section", { "aria-labelledby": "h-report" }, h("h2", { id: "h-report" }, "Report and downloads"), reportBox),
    h("section", { "aria-labelledby": "h-log" }, h("h2", { id: "h-log" }, "Log"), logBox),
  );
  renderTrials();
  renderReport();
  follow();
  return () => {
    if (source) source.close();
    if (curve.stopChart) curve.stopChart();
  };
}
