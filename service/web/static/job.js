// One job, live: state and timings, objective per trial with the best-so-far curve, the trial table, the
// best trial's kept widths per layer, the final report, artifacts and the log. Updates come as
// server-sent events (the sign-in cookie authenticates the EventSource).

import { api, explain } from "./api.js";
import { PALETTE, barChart, lineChart, parallelChart, scale } from "./chart.js";
import { pruneRecipe, recipeCard, trialRecipe } from "./recipe.js";
import { RETRYABLE, TERMINAL, badge, between, clear, h, int, num, ppl, reportRows, seconds, shortSource, table, userText, weights, when } from "./util.js";

// The trial record's field of each second objective (adapruner.search.run.SECOND_FIELD) and how to show it.
const SECOND = {
  latency: { field: "latency_s", label: "latency (ms)", show: (v) => v * 1000 },
  params: { field: "non_embedding_params", label: "non-embedding params (M)", show: (v) => v / 1e6 },
};

/** What a trial's status means for people: a failure says what kind (infeasible, out of memory, …). */
export function trialState(t) {
  if (t.status === "completed") return t.stopped_early ? "stopped early" : "completed";
  if (t.status === "failed") return `failed: ${t.failure || (t.error || "error").split(":")[0]}`;
  return t.status;
}

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
  const failedNote = h("p", { class: "hint", id: "failed-trials" });
  const parallel = h("div", { class: "chart", id: "parallel-chart" });
  const importance = h("div", { id: "importance" });
  const pareto = h("div", { class: "chart", id: "pareto-chart" });
  const trialBox = h("div", { id: "trials" });
  const recipeBox = h("div", { id: "recipe-box" });
  const widths = h("div", { class: "widths" });
  let shown = null; // the trial whose recipe is shown (null: the best)
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
      ["model", spec.model && userText(spec.model.source)],
      ["ratio", spec.ratio ?? (spec.prune && spec.prune.ratio)],
      ["trials", p.total ? h("span", { class: "progress" }, h("progress", { max: p.total, value: p.finished || 0, "aria-label": "trials finished" }), ` ${p.finished || 0} of ${p.total}`) : "–"],
      ["best validation PPL", p.best_value !== undefined && p.best_value !== null ? ppl(p.best_value) : "–"],
      ["stage", progress && live ? `${progress.stage} ${progress.done}/${progress.total}` : "–"],
      ["attempt", `${job.attempts - (job.handovers || 0)} of ${job.max_attempts}${job.handovers ? `, and ${job.handovers} handed over` : ""}`],
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
      job.error ? h("pre", { class: "error-box", id: "job-error" }, userText(job.error)) : null,
    );
  }

  function bestIndex() {
    if (report && report.best) return report.best.index;
    const full = [...trials.values()].filter((t) => t.status === "completed" && !t.stopped_early && Number.isFinite(t.value));
    return full.length ? full.reduce((a, b) => (b.value < a.value ? b : a)).index : null;
  }

  function renderTrials() {
    const list = [...trials.values()].sort((a, b) => a.index - b.index);
    if (job.kind !== "search") {
      searchSection.hidden = true;
      return;
    }
    const { values, bestSoFar } = trialPoints(list);
    const refs = report && report.dense_validation_ppl ? [{ name: "dense model", y: Math.log(report.dense_validation_ppl) }] : [];
    lineChart(curve, {
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
    const failed = list.filter((t) => t.status === "failed");
    failedNote.textContent = failed.length ? `Not on the chart, no objective: ${failed.map((t) => `trial ${t.index} ${trialState(t)}`).join("; ")}.` : "";
    renderParallel(list);
    renderImportance(list);
    renderPareto(list);
    const best = bestIndex();
    const rows = list.map((t) => {
      const r = t.recipe || {};
      const showing = t.index === (shown ?? best);
      return h(
        "tr",
        { "data-trial": t.index, class: [t.index === best ? "best" : "", t.status === "failed" ? "t-failed" : "", t.stopped_early ? "t-early" : "", showing ? "shown" : ""].filter(Boolean).join(" ") },
        h("td", {}, h("button", { type: "button", class: "link-button", "aria-pressed": String(showing), "aria-label": `show the recipe of trial ${t.index}`, onclick: () => showRecipe(t.index) }, String(t.index)), t.index === best ? h("span", { class: "tag" }, report ? "best" : "best so far") : null),
        h("td", { class: `state st-${t.status}` }, trialState(t)),
        h("td", {}, num(t.value, 4)),
        h("td", {}, ppl(t.value)),
        h("td", {}, int(t.samples ?? r.samples)),
        h("td", { class: "wrap" }, weights(r.source_weights)),
        h("td", { class: "wrap" }, weights(r.mix)),
        h("td", {}, [r.aggregation, r.normalization].filter(Boolean).join(" / ") || "–"),
        h("td", {}, r.attn_share === null || r.attn_share === undefined ? "–" : num(r.attn_share, 3)),
        h("td", {}, num(r.depth_slope, 3)),
        h("td", {}, r.compensate ?? "–"),
        h("td", {}, int(r.seq_len)),
        h("td", {}, num(t.seconds, 2)),
      );
    });
    clear(
      trialBox,
      list.length
        ? table(["#", "status", "log PPL", "PPL", "samples", "calibration mix", "metric weights", "agg. / norm.", "attn share", "depth slope", "compensation", "seq_len", "time (s)"], rows, { caption: "Trials (pick a number to see its recipe)", className: "trials", stack: true })
        : h("p", { class: "empty" }, "No trial has finished yet; rows appear here as they do."),
    );
  }

  function showRecipe(index) {
    shown = index;
    renderTrials();
    renderRecipe();
    document.getElementById("recipe")?.focus();
  }

  function renderParallel(list) {
    const names = [...new Set(list.flatMap((t) => Object.keys(t.params || {})))];
    if (!names.length) {
      clear(parallel, h("p", { class: "empty" }, "The searched dimensions appear here with the first trial."));
      return;
    }
    const axes = names.map((name) => {
      const seen = list.map((t) => t.params?.[name]).filter((v) => v !== undefined);
      const choices = seen.some((v) => typeof v === "string") ? [...new Set(seen.map(String))].sort() : null;
      return { name, label: dimLabel(name), choices };
    });
    axes.push({ name: "objective", label: "val. log PPL" });
    const done = list.filter((t) => t.status === "completed" && Number.isFinite(t.value)).map((t) => t.value);
    const [lo, hi] = [Math.min(...done), Math.max(...done)];
    const lines = list.map((t) => {
      const ok = t.status === "completed" && Number.isFinite(t.value);
      return {
        id: t.index,
        values: [...names.map((n) => t.params?.[n] ?? null), ok ? t.value : null],
        color: ok ? scale(hi > lo ? (t.value - lo) / (hi - lo) : 0) : "#9ca3af",
        dash: !ok ? "2 3" : t.stopped_early ? "6 3" : null,
        width: t.index === bestIndex() ? 3.5 : 1.8,
        tip: `trial ${t.index} ${trialState(t)}${ok ? `: log PPL ${num(t.value, 4)}` : ""}`,
      };
    });
    parallelChart(parallel, {
      title: "Searched dimensions of every trial, coloured by validation log PPL",
      axes,
      lines,
      note: "Colour: validation log PPL, blue the lowest (best) to orange the highest; thick: the best trial; dashed: stopped early (an estimate); grey dotted: failed (no objective).",
    });
  }

  function renderImportance(list) {
    const final = report && report.relevance;
    const latest = [...list].reverse().find((t) => t.relevance);
    const values = final ? final.values : latest ? latest.relevance : null;
    if (!values) {
      clear(importance, h("p", { class: "empty" }, "Parameter importance appears once the GP proposes trials (after the initial design)."));
      return;
    }
    const isChoice = (name) => list.some((t) => typeof t.params?.[name] === "string");
    const group = (choice, title) => {
      const rows = Object.entries(values).filter(([name]) => isChoice(name) === choice).sort((a, b) => b[1] - a[1]);
      if (!rows.length) return null;
      return [
        h("h4", {}, title),
        h("ul", { class: "importance", "data-kind": choice ? "choice" : "numeric" }, rows.map(([name, share]) => h("li", {}, h("span", { class: "dim" }, dimLabel(name)), h("meter", { min: 0, max: 1, value: share, "aria-label": `importance of ${dimLabel(name)}`, "data-dim": name }), h("span", { class: "share" }, `${num(share * 100, 1)}%`)))),
      ];
    };
    clear(
      importance,
      h("p", { class: "hint", id: "importance-method" }, `From the GP's kernel lengthscales (ARD: importance = 1 / lengthscale), ${final ? "of the GP fitted on all trials" : `of the GP that proposed trial ${latest.index}`}; not fANOVA. A short lengthscale means the objective changes fast along that dimension. Numeric and choice dimensions sit in different kernels, so their shares are given apart (each group sums to 100%).`),
      group(false, "Numeric dimensions (RBF kernel)"),
      group(true, "Choice dimensions (categorical kernel)"),
    );
  }

  function renderPareto(list) {
    const second = SECOND[job.spec?.search?.second_objective];
    pareto.hidden = !second;
    if (!second) return;
    const full = list.filter((t) => t.status === "completed" && !t.stopped_early && Number.isFinite(t[second.field]));
    const front = (report && report.pareto) || [];
    lineChart(pareto, {
      title: `Pareto front: validation log PPL against ${second.label}`,
      xLabel: second.label,
      yLabel: "validation log PPL",
      integerX: false,
      series: [
        { name: "full trials", points: full.map((t) => ({ x: second.show(t[second.field]), y: t.value, tip: `trial ${t.index}: log PPL ${num(t.value, 4)}, ${second.label} ${num(second.show(t[second.field]), 3)}` })), style: "dots", color: "#9ca3af" },
        { name: report ? "Pareto front (non-dominated trials)" : "Pareto front (when the search ends)", points: front.map((p) => ({ x: second.show(p[second.field]), y: p.value })), style: "line", dash: "", color: PALETTE[1] },
        { name: "front trials", points: front.map((p) => ({ x: second.show(p[second.field]), y: p.value, tip: `trial ${p.index} on the front` })), style: "dots", color: PALETTE[1] },
      ],
    });
  }

  function renderRecipe() {
    let card;
    let layers = report ? report.widths || [] : [];
    let which = "";
    if (job.kind === "prune") {
      card = recipeCard(pruneRecipe(job.spec || {}), { title: "Recipe of this prune job", use: `#/submit?kind=prune&job=${id}` });
    } else {
      const best = bestIndex();
      const index = shown ?? best;
      const t = index === null ? null : trials.get(index);
      if (!t) {
        clear(recipeBox, h("p", { class: "empty" }, "The recipe of the best trial appears with the first completed trial."));
        clear(widths);
        return;
      }
      const label = index === best ? (report ? " (best)" : " (best so far)") : "";
      card = recipeCard(trialRecipe(t, job), {
        title: `Recipe of trial ${index}${label}`,
        params: t.params,
        use: t.prune_job ? `#/submit?kind=prune&job=${id}&trial=${index}` : null,
        differs: t.prune_job ? t.prune_job.differs : [],
      });
      layers = t.widths || (report && index === report.best?.index ? report.widths : null) || [];
      which = ` (trial ${index})`;
    }
    card.tabIndex = -1;
    clear(recipeBox, card, widths);
    if (!layers.length) {
      clear(widths, h("p", { class: "empty" }, "The kept widths per layer appear when the trial or job has pruned the model."));
      return;
    }
    const categories = layers.map((_, i) => String(i));
    const denseOf = (kind) => (dense && Number.isFinite(dense[kind]) ? dense[kind] : null);
    clear(widths, h("div", { class: "chart", id: "heads-chart" }), h("div", { class: "chart", id: "channels-chart" }));
    barChart(widths.children[0], { title: `Attention KV groups kept per layer${which}`, categories, series: [{ name: "KV groups kept", values: layers.map((w) => w.heads), dash: "" }], yLabel: "KV groups", ref: denseOf("heads") });
    barChart(widths.children[1], { title: `MLP channels kept per layer${which}`, categories, series: [{ name: "channels kept", values: layers.map((w) => w.channels), dash: "", color: "#c2410c" }], yLabel: "channels", ref: denseOf("channels") });
  }

  function renderReport() {
    renderRecipe();
    if (!report) {
      clear(reportBox, h("p", { class: "empty" }, job.status === "succeeded" ? "This job wrote no report." : "The final report appears when the job succeeds."));
      return;
    }
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
    const seq = log.length + 1;
    log.push(h("li", { "data-seq": seq }, h("span", { class: "seq", "aria-hidden": "true" }, `${seq}.`), when(event.created_at), h("span", { class: `k-${event.kind}` }, userText(text))));
    if (logBox.isConnected) logBox.append(log[log.length - 1]);
  }

  // The event carries the headline of a trial; its full record (params, widths, relevance) is then fetched.
  let refreshing = null;
  function refreshTrials() {
    refreshing ??= api(`/v1/jobs/${id}/trials`)
      .then((rows) => {
        for (const t of rows) trials.set(t.trial_index, fromRow(t));
        renderTrials();
        renderRecipe();
      })
      .catch(() => {})
      .finally(() => (refreshing = null));
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
      refreshTrials();
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

  const searchSection = h(
    "section",
    { "aria-labelledby": "h-search" },
    h("h2", { id: "h-search" }, "Search"),
    curve,
    failedNote,
    h("h3", {}, "Searched dimensions"),
    parallel,
    h("h3", {}, "Parameter importance"),
    importance,
    pareto,
    trialBox,
  );
  renderHead();
  clear(
    main,
    head,
    h("section", { "aria-labelledby": "h-state" }, h("h2", { id: "h-state" }, "State and timings"), facts),
    h("section", { "aria-labelledby": "h-recipe" }, h("h2", { id: "h-recipe" }, "Recipe and kept widths per layer"), recipeBox),
    searchSection,
    h("section", { "aria-labelledby": "h-report" }, h("h2", { id: "h-report" }, "Report and downloads"), reportBox),
    h("section", { "aria-labelledby": "h-log" }, h("h2", { id: "h-log" }, "Log"), logBox),
  );
  renderTrials();
  renderReport();
  follow();
  return () => {
    if (source) source.close();
    for (const chart of [curve, parallel, pareto]) if (chart.stopChart) chart.stopChart();
  };
}

/** A searched dimension's name for people: "source:file:/x/a.txt" -> "calib. a.txt", "metric:wanda" -> "wanda weight". */
export function dimLabel(name) {
  if (name.startsWith("source:")) return `calib. ${shortSource(name.slice(7))}`;
  if (name.startsWith("metric:")) return `${name.slice(7)} weight`;
  return name;
}
