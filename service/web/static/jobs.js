// The job list: status filters, progress, and a selection to compare.

import { api } from "./api.js";
import { STATUSES, badge, between, clear, h, ppl, seconds, table, when } from "./util.js";

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

export async function jobsView(main, { query }) {
  document.title = "Jobs · adapruner";
  const chosen = new Set((query.get("status") || "").split(",").filter((s) => STATUSES.includes(s)));
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
            offset = 0;
            history.replaceState(null, "", `#/jobs${chosen.size ? `?status=${[...chosen].join(",")}` : ""}`);
            load();
          },
        }),
        ` ${status.replace("_", " ")}`,
      ),
    ),
  );

  async function load() {
    const params = new URLSearchParams({ limit: PAGE, offset });
    for (const status of chosen) params.append("status", status);
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
        h("td", {}, badge(job.status)),
        h("td", {}, progressCell(job)),
        h("td", {}, bestValue(job)),
        h("td", {}, when(job.created_at)),
        h("td", {}, seconds(between(job.started_at, job.finished_at))),
      ),
    );
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
        ? table(["", "job", "kind", "status", "progress", "best val. PPL", "created", "run time"], rows, { caption: "Jobs", className: "jobs" })
        : h("p", { class: "empty" }, chosen.size ? "No job with these statuses." : "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one")),
      pager,
    );
    list.setAttribute("aria-busy", "false");
  }

  clear(
    main,
    h("div", { class: "title-row" }, h("h1", {}, "Jobs"), h("a", { class: "button", href: "#/submit" }, "New job")),
    filters,
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
