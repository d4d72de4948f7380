// The dashboard's shell: sign-in, navigation and a hash router (#/jobs, #/submit, #/jobs/ID, #/compare?ids=a,b).

import { explain, keyName, signIn, signOut, signedIn } from "./api.js";
import { compareView } from "./compare.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { submitView } from "./submit.js";
import { clear, h, neutral } from "./util.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;

const ROUTES = [
  [/^\/?(jobs)?$/, jobsView],
  [/^\/submit$/, submitView],
  [/^\/jobs\/([0-9a-zA-Z_-]+)$/, jobView],
  [/^\/compare$/, compareView],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "");
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

function signInView() {
  document.title = "Sign in · adapruner";
  const input = h("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { class: "error", id: "sign-in-error", role: "alert" });
  const form = h(
    "form",
    {
      class: "card narrow",
      "aria-labelledby": "sign-in-title",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        if (!input.value.trim()) {
          error.textContent = "Enter an API key (create one with `adapruner keys create`).";
          input.focus();
          return;
        }
        try {
          await signIn(input.value.trim());
          route();
        } catch (err) {
          error.textContent = explain(err);
          input.setAttribute("aria-invalid", "true");
          input.focus();
        }
      },
    },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", { class: "muted", id: "sign-in-note" }, "Use an API key of this server. Signing in sets a cookie for this browser (HttpOnly, sent only to this server) until you sign out or close the browser; this tab also keeps the key to send with its requests."),
    h("label", { for: "key" }, "API key"),
    input,
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  clear(main, form);
  input.focus();
}

async function route() {
  if (cleanup) cleanup();
  cleanup = null;
  nav.hidden = !signedIn();
  if (!signedIn()) return signInView();
  document.getElementById("who").textContent = keyName() ? `key: ${neutral(keyName())}` : "";
  const { path, query } = parseHash();
  for (const a of nav.querySelectorAll("a")) {
    const here = a.getAttribute("href").slice(1) === `${path.split("/").slice(0, 2).join("/")}` || (path === "" && a.getAttribute("href") === "#/jobs");
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, view] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    clear(main, h("p", { class: "muted", role: "status" }, "Loading…"));
    try {
      cleanup = (await view(main, { params: match.slice(1), query })) || null;
    } catch (err) {
      clear(main, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, explain(err)));
    }
    return;
  }
  clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await signOut();
  location.hash = "#/jobs";
  route();
});
window.addEventListener("signed-out", () => route());
window.addEventListener("hashchange", () => {
  route();
  main.focus({ preventScroll: true });
});
route();
