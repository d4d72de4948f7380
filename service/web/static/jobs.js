// The job list: status filters, progress, and a selection to compare.

import { api } from "./api.js";
import { STATUSES, badge, between, clear, h, neutral, num, ppl, seconds, shortSource, table, userText, when } from "./util.js";

export const KINDS = ["search", "prune"];

const PAGE = 25;

export function progressCell(job) {
  const p = job.progress || {};
  if (job.kind === "search" && p.total) {
    return h(
      "span",
      { class: "progress" },
      h("progress", { max: p.total, value: p.finished || 0, "aria-label": `trials of ${job.id}` }),
      ` ${p.finished || 0}/${p.total}`,
    );
  }
  return job.status === "succeeded" ? "done" : "–";
}

export function bestValue(job) {
  if (job.progress && job.progress.best_value !== undefined && job.progress.best_value !== null) return ppl(job.progress.best_value);
  const best = job.result && job.result.best;
  return best && best.validation_ppl ? best.validation_ppl.toFixed(2) : "–";
}

/** The pruning ratio a job asks for (a search's at the top of its spec, a prune job's in ``prune``). */
export function jobRatio(job) {
  const spec = job.spec || {};
  return spec.ratio ?? spec.prune?.ratio ?? null;
}

/** The model a job prunes, as its user wrote it. */
export function jobModel(job) {
  return (job.spec && job.spec.model && job.spec.model.source) || "";
}

/** The pruned model's test perplexity of each test text (from the job's result), "–" before one exists. */
export function testPpl(job) {
  const ppls = job.result?.pruned?.perplexity;
  if (!ppls || !Object.keys(ppls).length) return "–";
  return Object.entries(ppls).map(([label, v]) => `${num(v, 2)} ${shortSource(label)}`).join(", ");
}

/** Why a job failed: the first line of its recorded error (the rest, a traceback, is on the job page). */
export function failureReason(job) {
  return job.error ? job.error.split("\n")[0] : "";
}

export async function jobsView(main, { query }) {
  document.title = "Jobs · adapruner";
  const chosen = new Set((query.get("status") || "").split(",").filter((s) => STATUSES.includes(s)));
  let kind = KINDS.includes(query.get("kind")) ? query.get("kind") : "";
  const selected = new Set();
  let offset = Number(query.get("offset") || 0);
  const list = h("div", { "aria-live": "polite", "aria-busy": "true" });
  const compare = h("button", { type: "button", disabled: true, onclick: () => (location.hash = `#/compare?ids=${[...selected].join(",")}`) }, "Compare selected");

  const filters = h(
    "fieldset",
    { class: "filters" },
    h("legend", {}, "Status"),
    STATUSES.map((status) =>
      h(
        "label",
        { class: "chip" },
        h("input", {
          type: "checkbox",
          name: "status",
          value: status,
          checked: chosen.has(status),
          onchange: (e) => {
            if (e.target.checked) chosen.add(status);
            else chosen.delete(status);
            refilter();
          },
        }),
        ` ${status.replace("_", " ")}`,
      ),
    ),
  );
  const kindSelect = h(
    "select",
    { id: "kind-filter", onchange: (e) => { kind = e.target.value; refilter(); } },
    h("option", { value: "" }, "all kinds"),
    KINDS.map((k) => h("option", { value: k, selected: k === kind }, k)),
  );
  const kindBox = h("div", { class: "kind-filter" }, h("label", { for: "kind-filter" }, "Kind"), kindSelect);

  function refilter() {
    offset = 0;
    const params = new URLSearchParams();
    if (chosen.size) params.set("status", [...chosen].join(","));
    if (kind) params.set("kind", kind);
    history.replaceState(null, "", `#/jobs${params.size ? `?${params}` : ""}`);
    load();
  }

  async function load() {
    const params = new URLSearchParams({ limit: PAGE, offset });
    for (const status of chosen) params.append("status", status);
    if (kind) params.set("kind", kind);
    const page = await api(`/v1/jobs?${params}`);
    const rows = page.items.map((job) =>
      h(
        "tr",
        { "data-job": job.id },
        h(
          "td",
          {},
          h("input", {
            type: "checkbox",
            "aria-label": `select ${job.id} to compare`,
            checked: selected.has(job.id),
            onchange: (e) => {
              if (e.target.checked) selected.add(job.id);
              else selected.delete(job.id);
              compare.disabled = selected.size < 2;
            },
          }),
        ),
        h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 12))),
        h("td", {}, job.kind),
        h("td", { class: "wrap" }, userText(shortSource(jobModel(job)), { title: neutral(jobModel(job)) })),
        h("td", {}, jobRatio(job) === null ? "–" : num(jobRatio(job), 3)),
        h("td", {}, badge(job.status)),
        h("td", {}, progressCell(job)),
        h("td", {}, bestValue(job)),
        h("td", {}, testPpl(job)),
        h("td", { class: "wrap reason" }, failureReason(job) ? userText(failureReason(job), { title: neutral(failureReason(job)) }) : "–"),
        h("td", { class: "when" }, when(job.created_at)),
        h("td", {}, seconds(between(job.started_at, job.finished_at))),
      ),
    );
    const filtered = chosen.size || kind;
    const pager = h(
      "div",
      { class: "pager" },
      h("span", { class: "muted" }, page.total ? `${offset + 1}–${offset + page.items.length} of ${page.total}` : "no jobs"),
      h("button", { type: "button", class: "secondary", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "Previous"),
      h("button", { type: "button", class: "secondary", disabled: offset + PAGE >= page.total, onclick: () => { offset += PAGE; load(); } }, "Next"),
    );
    clear(
      list,
      page.items.length
        ? table(["", "job", "kind", "model", "ratio", "status", "progress", "best val. PPL", "test PPL", "failure reason", "created", "run time"], rows, { caption: "Jobs", className: "jobs", stack: true })
        : h("p", { class: "empty" }, filtered ? "No job matches these filters." : "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one")),
      pager,
    );
    list.setAttribute("aria-busy", "false");
  }

  clear(
    main,
    h("div", { class: "title-row" }, h("h1", {}, "Jobs"), h("a", { class: "button", href: "#/submit" }, "New job")),
    h("div", { class: "filter-row" }, filters, kindBox),
    h("div", { class: "actions" }, compare),
    list,
  );
  await load();
  // Refresh while visible, but not under the user's keyboard focus (a redraw would lose it).
  const timer = setInterval(() => {
    if (document.visibilityState === "visible" && !list.contains(document.activeElement)) load().catch(() => {});
  }, 4000);
  return () => clearInterval(timer);
}
