"""The web dashboard: its files are served locally under a strict policy, and a real headless Chromium drives
it: sign in, submit a small CPU search through the form, watch trials arrive without a reload, compare two
jobs, download the report. Then, on one server with finished jobs of every kind (``site``: two searches on
different validation texts, one with an infeasible trial, a two-objective search, a prune job and a failed
job), each view of the issue-20 dashboard: the recipe card, the search views, honest comparisons, the job
list, both submit forms, the prune job page, inert user text and 390 px. Screenshots of the pages at 1280
and 390 px wide are written under the test's tmp folder (and copied to ``$ADAPRUNER_SCREENSHOTS_DIR`` when
set, e.g. docs/screenshots)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service import crud
from service.db import transaction
from service.main import create_app
from service.web.router import FILES, STATIC
from tests.backends import drop_redis_keys, make_settings, require_redis
from tests.service.conftest import LiveServer
from tests.worker.cluster import Cluster, search_request

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL = (
    "install Debian's Chromium and the Playwright package: `apt-get install -y chromium` and "
    "`.venv/bin/python -m pip install playwright` (no `playwright install`: the test uses /usr/bin/chromium)"
)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
NULLS = {"config": None, "split": None, "field": "text", "data_files": None}  # a DataSource's defaults


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_the_page_and_every_module_it_imports_are_served_with_a_same_origin_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    # Follow every reference from the page and the modules: each is one of our files and is served.
    todo, seen = ["index.html"], set()
    while todo:
        name = todo.pop()
        seen.add(name)
        text = (STATIC / name).read_text()
        refs = re.findall(r'(?:href|src)="/static/([\w.-]+)"', text) + re.findall(r'from "\./([\w.-]+)"', text)
        for ref in refs:
            response = client.get(f"/static/{ref}")
            assert response.status_code == 200, ref
            assert response.headers["x-content-type-options"] == "nosniff"
            if ref.endswith(".js"):
                assert response.headers["content-type"].startswith("text/javascript"), ref
            if ref not in seen:
                todo.append(ref)
    assert {"app.js", "api.js", "chart.js", "job.js", "jobs.js", "submit.js", "compare.js", "style.css"} <= seen


def test_no_asset_loads_anything_from_another_host():
    for name, path in FILES.items():
        text = path.read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?://|//cdn|@import", text), f"{name} refers to another host"


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
@pytest.mark.parametrize("path", ["/static/nope.js", "/static/..%2Frouter.py", "/static/__init__.py", "/static/"])
def test_only_the_shipped_files_are_served(client, path):
    assert client.get(path).status_code == 404


# -- the browser ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (one per module). Missing either is a failure that says how to
    install it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL}", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the playwright package is missing: {INSTALL}", pytrace=False)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def stack(databases, tmp_path):
    """PostgreSQL, Redis, the app served by uvicorn on a free port, and workers started on demand."""
    redis_client = require_redis()
    logs = tmp_path / "logs"
    logs.mkdir()
    settings = make_settings(databases.postgres(), tmp_path / "home")
    cluster = Cluster(settings, logs)
    app = create_app(settings)
    with transaction(app.state.sessions) as session:
        _, key = crud.create_api_key(session, name="dashboard-test")
    try:
        with LiveServer(app) as server:
            server.key, server.cluster = key, cluster
            yield server
    finally:
        cluster.stop()
        drop_redis_keys(redis_client, settings.redis_prefix)


class Shots:
    """Screenshots of the test run: under tmp, and copied to $ADAPRUNER_SCREENSHOTS_DIR when it is set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.taken: list[Path] = []

    def __call__(self, page, name: str, *, full_page: bool = True) -> None:
        page.wait_for_timeout(150)  # charts redraw on resize
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)

    def publish(self) -> None:
        target = os.environ.get("ADAPRUNER_SCREENSHOTS_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            for path in self.taken:
                shutil.copy(path, Path(target) / path.name)


def watch(page, origin: str) -> list[str]:
    """Collect console errors, page errors and any request that leaves the server's origin."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "request",
        lambda r: None if r.url.startswith((origin, "data:")) else problems.append(f"foreign request: {r.url}"),
    )
    return problems


def advanced_spec(request) -> dict:
    """The small-job settings the form leaves to its advanced JSON field (pool sizes, lengths, budgets)."""
    spec = request.spec.model_dump(mode="json", exclude_defaults=True)
    space = {k: v for k, v in spec["space"].items() if k not in ("sources", "metrics")}
    search = {k: v for k, v in spec["search"].items() if k not in ("trials", "validation")}
    evaluate = {k: v for k, v in spec["evaluate"].items() if k != "texts"}
    return {"space": space, "search": search, "evaluate": evaluate}


def add_source(page, role: str, kind: str, name: str) -> None:
    box = page.locator(f'fieldset[data-sources="{role}"]')
    box.locator("button", has_text="Add").click()
    row = box.locator("li.source").last
    row.locator("select").select_option(kind)
    row.locator("input").fill(name)


def fill_form(page, model_dir, texts, *, ratio: str, trials: int, metrics: set[str], advanced: dict) -> None:
    page.fill("#model", str(model_dir))
    page.fill("#ratio", ratio)
    page.fill("#trials", str(trials))
    for box in page.locator('input[name="metric"]').all():
        box.set_checked(box.get_attribute("value") in metrics)
    for role, names in (
        ("spec.space.sources", ["a", "b"]),
        ("spec.search.validation", ["val"]),
        ("spec.evaluate.texts", ["test"]),
    ):
        page.locator(f'fieldset[data-sources="{role}"] li.source').evaluate_all("rows => rows.forEach(r => r.remove())")
        for name in names:
            add_source(page, role, "file", texts[name])
    page.click("details.advanced summary")
    page.fill("#advanced", json.dumps(advanced))


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def unlabelled_controls(page) -> list[str]:
    return page.evaluate(
        """() => [...document.querySelectorAll('main input, main select, main textarea, main button')]
            .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
            .map(c => c.outerHTML.slice(0, 80))"""
    )


@pytest.mark.slow
def test_sign_in_submit_watch_compare_and_download_in_a_real_browser(
    browser, stack, tmp_path, tiny_model_dir, job_texts
):
    from playwright.sync_api import expect

    shots = Shots(tmp_path / "screenshots")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems = watch(page, stack.url)

    # Sign in with the keyboard only: the key field has the focus; a wrong key is refused with the API's words.
    page.goto(stack.url + "/")
    expect(page.locator("#key")).to_be_focused()
    page.keyboard.type("apk_wrong")
    page.keyboard.press("Enter")
    expect(page.locator("#sign-in-error")).to_contain_text("a valid API key is required")
    page.fill("#key", "")
    page.keyboard.type(stack.key)
    shots(page, "signin-1280")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.locator("#who")).to_contain_text("dashboard-test")

    # The form: a bad ratio gets the API's own message next to the field, and nothing is submitted.
    request = search_request(tiny_model_dir, job_texts, trials=3)
    page.get_by_role("link", name="New job").first.click()
    expect(page.locator("#model")).to_be_focused()
    assert unlabelled_controls(page) == []
    page.keyboard.press("Tab")
    expect(page.locator("#ratio")).to_be_focused()
    metrics = {"taylor", "wanda", "l2"}
    fill_form(page, tiny_model_dir, job_texts, ratio="1.5", trials=3, metrics=metrics, advanced=advanced_spec(request))
    page.get_by_role("button", name="Submit job").click()
    ratio_error = page.locator('[data-field="spec.ratio"] .field-error')
    expect(ratio_error).not_to_be_empty()
    expect(page.locator(".error-summary")).to_be_focused()
    auth = {"Authorization": f"Bearer {stack.key}"}
    api_says = httpx.post(f"{stack.url}/v1/jobs", json={"kind": "search", "spec": {"ratio": 1.5}}, headers=auth)
    assert ratio_error.inner_text() in [e["msg"] for e in api_says.json()["detail"]]
    assert httpx.get(f"{stack.url}/v1/jobs", headers=auth).json()["total"] == 0
    shots(page, "submit-error-1280")

    page.fill("#ratio", "0.25")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#status")).to_contain_text("queued")
    got = httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=auth).json()
    assert set(got["spec"]["space"]["metrics"]) == metrics
    assert got["spec"]["ratio"] == 0.25 and got["spec"]["search"]["trials"] == 3
    assert got["spec"]["search"]["validation"] == [{"kind": "file", "name": job_texts["val"], **NULLS}]
    # A second, smaller search to compare with, submitted through the API.
    other = search_request(tiny_model_dir, job_texts, trials=2).model_dump(mode="json")
    other["spec"]["space"]["metrics"] = ["l2"]
    other_id = httpx.post(f"{stack.url}/v1/jobs", json=other, headers=auth).json()["id"]

    # Live: the trial rows and the chart come over server-sent events, without a reload.
    page.evaluate("window.notReloaded = true")
    stack.cluster.start_worker()
    expect(page.locator('#trials tr[data-trial="0"]')).to_be_visible(timeout=240_000)
    assert page.evaluate("window.notReloaded === true")
    expect(page.locator("#status")).to_contain_text("running")
    assert page.locator('#objective-chart svg[role="img"] circle').count() >= 1  # a point per trial
    # The live page's recipe card follows the best trial so far, and its searched dimensions are drawn.
    expect(page.locator("#recipe h3")).to_have_text(re.compile(r"^Recipe of trial \d+ \(best( so far)?\)$"))
    expect(page.locator("#parallel-chart path[data-trial]").first).to_be_visible()
    shots(page, "job-running-1280")
    expect(page.locator("#status")).to_contain_text("succeeded", timeout=240_000)
    expect(page.locator('#trials tr[data-trial="2"]')).to_be_visible()
    assert page.evaluate("window.notReloaded === true")
    expect(page.locator("#report table")).to_contain_text("PPL")
    assert page.locator("#heads-chart rect").count() == 4  # one bar per layer of the tiny model
    assert page.locator("#channels-chart line.ref").count() == 1  # the dense width, for reference
    assert page.locator("#trials tr.best").count() == 1
    assert "state: succeeded" in page.locator("#log").inner_text()
    shots(page, "job-done-1280")

    # Download the final report through the link (the sign-in cookie authenticates it).
    with page.expect_download() as download:
        page.click("#download-report")
    report = json.loads(Path(download.value.path()).read_text())
    assert [t["index"] for t in report["trials"]] == [0, 1, 2]
    assert report["pruned"]["perplexity"] and report["params_after"] < report["params_before"]

    # Compare: pick both jobs on the list once the second has finished.
    stack.cluster.wait_status(other_id, "succeeded", timeout=240)
    page.get_by_role("link", name="Jobs").first.click()
    for jid in (job_id, other_id):
        page.get_by_label(f"select {jid} to compare").check()
    shots(page, "jobs-1280")
    page.get_by_role("button", name="Compare selected").click()
    expect(page.get_by_role("heading", name="Compare 2 jobs")).to_be_visible()
    expect(page.locator('#compare-chart svg[role="img"] path')).to_have_count(2)  # a curve per job
    final = page.locator("table.compare")
    expect(final).to_contain_text("dense")
    expect(final).to_contain_text(job_id[:8])
    expect(final).to_contain_text(other_id[:8])
    shots(page, "compare-1280")
    compare_url = page.url

    # Cancel and retry from the job page (no worker now, so the job waits in the queue).
    stack.cluster.stop()
    queued_id = httpx.post(f"{stack.url}/v1/jobs", json={"kind": "prune", "spec": {}}, headers=auth).json()["id"]
    page.goto(f"{stack.url}/#/jobs/{queued_id}")
    expect(page.locator("#status")).to_contain_text("queued")
    page.click("#cancel")
    expect(page.locator("#status")).to_contain_text("cancelled")
    expect(page.locator("#log")).to_contain_text("state: cancelled")
    page.click("#retry")
    expect(page.locator("#status")).to_contain_text("queued")
    assert httpx.get(f"{stack.url}/v1/jobs/{queued_id}", headers=auth).json()["status"] == "queued"

    # 390 px wide: every page fits (tables scroll inside their own box) and the form stays usable.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    small = phone.new_page()
    small.set_default_timeout(20_000)
    problems += watch(small, stack.url)
    small.goto(stack.url + "/")
    small.fill("#key", stack.key)
    small.keyboard.press("Enter")
    expect(small.get_by_role("heading", name="Jobs")).to_be_visible()
    for name, hash_ in (
        ("jobs", "#/jobs"),
        ("submit", "#/submit"),
        ("job", f"#/jobs/{job_id}"),
        ("compare", "#" + compare_url.split("#", 1)[1]),
    ):
        small.goto(f"{stack.url}/{hash_}")
        expect(small.locator("main h1").first).to_be_visible()
        if name == "job":
            expect(small.locator("#heads-chart rect")).to_have_count(4)
        else:
            small.wait_for_load_state("networkidle")
        assert no_horizontal_scroll(small), f"{name} page scrolls sideways at 390 px"
        shots(small, f"{name}-390")
    phone.close()
    context.close()
    # The refused key and the bad ratio are the only failed loads; nothing else went wrong or left the server.
    refused = tuple(
        f"console error: Failed to load resource: the server responded with a status of {s}" for s in (401, 422)
    )
    assert [p for p in problems if not p.startswith(refused)] == []
    assert len(problems) == 2
    shots.publish()


# -- one server with finished jobs of every kind, shared by the view tests below ---------------------------

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: reverses the display of everything after it, unless isolated
MAX_TRIALS = 40  # this server's search.trials limit (the schema allows 10,000)
LATENCY = {"second_objective": "latency", "latency_seq_len": 8, "latency_repeats": 2}


def _search(model_dir, texts, *, trials: int, space=None, search=None):
    from service.jobs import SearchRequest
    from tests.conftest import tiny_search_spec

    spec = tiny_search_spec(texts, model=str(model_dir), trials=trials, top_k=1, space=space, search=search)
    return SearchRequest.model_validate({"kind": "search", "spec": spec})


def _prune(model, texts):
    from service.jobs import PruneRequest

    spec = {
        "model": {"source": str(model)},
        "calibration": {"sources": [{"kind": "file", "name": texts["a"]}], "samples": 4, "seq_len": 16},
        "importance": {"mix": {"taylor": 0.5, "wanda": 0.5}},
        "prune": {"ratio": 0.25},
        "evaluate": {"texts": [{"kind": "file", "name": texts["test"]}], "seq_len": 32, "max_tokens": 256, "speed": False},
    }
    return PruneRequest.model_validate({"kind": "prune", "spec": spec})


@pytest.fixture(scope="module")
def site(databases, tmp_path_factory, tiny_model_dir, job_texts):
    """The app on a free port with an admin key and five finished jobs, run by a real worker: ``search`` (10
    trials, protected blocks and compensation searched: its first trial is infeasible), ``other`` (the same
    search read on another validation text), ``pareto`` (latency as a second objective), ``prune`` (a
    metric mix of taylor and wanda) and ``failed`` (a model name with a right-to-left override)."""
    redis_client = require_redis()
    root = tmp_path_factory.mktemp("site")
    (root / "logs").mkdir()
    val2 = root / "val2.txt"
    val2.write_text("\n\n".join(f"another validation text for the same pruned models {i}." * 3 for i in range(40)))
    settings = make_settings(databases.postgres(), root / "home", max_trials=MAX_TRIALS)
    cluster = Cluster(settings, root / "logs")
    app = create_app(settings)
    with transaction(app.state.sessions) as session:
        _, key = crud.create_api_key(session, name="views", admin=True)
    protect = {"protect_first": {"low": 0, "high": 3}, "protect_last": {"low": 0, "high": 3}, "compensators": ["none", "bias"]}
    requests = {
        "search": _search(tiny_model_dir, job_texts, trials=10, space=protect),
        "other": _search(tiny_model_dir, job_texts, trials=3, search={"validation": [{"kind": "file", "name": str(val2)}]}),
        "pareto": _search(tiny_model_dir, job_texts, trials=4, search=LATENCY),
        "prune": _prune(tiny_model_dir, job_texts),
        "failed": _prune(root / f"{RLO}ledom-gnissim", job_texts),
    }
    try:
        jobs = {name: cluster.submit(request) for name, request in requests.items()}
        cluster.start_worker()
        for name, job_id in jobs.items():
            cluster.wait_status(job_id, "failed" if name == "failed" else "succeeded", timeout=300)
        cluster.stop()  # what the tests submit stays queued (and is cancelled at once)
        with LiveServer(app) as server:
            server.key, server.cluster, server.jobs, server.settings = key, cluster, jobs, settings
            server.auth = {"Authorization": f"Bearer {key}"}
            yield server
    finally:
        cluster.stop()
        drop_redis_keys(redis_client, settings.redis_prefix)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    taken = Shots(tmp_path_factory.mktemp("views") / "screenshots")
    yield taken
    taken.publish()


@pytest.fixture
def open_page(browser, site):
    """``open_page(hash, width=1280, **context options)``: a signed-in page at ``#hash``; at the end of the
    test nothing went wrong in any of them (no console or page error, nothing loaded from elsewhere)."""
    contexts, problems = [], []

    def open_(hash_: str = "#/jobs", *, width: int = 1280, **options):
        context = browser.new_context(viewport={"width": width, "height": 900}, device_scale_factor=1, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        problems.extend(watch(page, site.url))
        page.goto(site.url + "/")
        page.fill("#key", site.key)
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Jobs").wait_for()
        page.goto(f"{site.url}/{hash_}")
        page.locator("main h1").first.wait_for()
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


def api_get(site, path: str):
    return httpx.get(f"{site.url}{path}", headers=site.auth).json()


def records(site, name: str) -> list[dict]:
    return [t["record"] for t in api_get(site, f"/v1/jobs/{site.jobs[name]}/trials")]


def js_num(x: float, digits: int) -> str:
    """A number as the dashboard writes it (en-US grouping, at most ``digits`` decimals, no trailing zeros)."""
    text = f"{x:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def reads_left_to_right(locator, tail: int = 8) -> bool:
    """Whether the last ``tail`` characters of the element's text (e.g. the end of a time) are drawn from left
    to right: an unisolated right-to-left override earlier in the row would draw them reversed."""
    return locator.evaluate(
        """(el, tail) => {
            const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
            let last = null;
            while (walker.nextNode()) if (walker.currentNode.textContent.trim().length >= tail) last = walker.currentNode;
            const end = last.textContent.trimEnd().length;
            const x = (i) => { const r = document.createRange(); r.setStart(last, i); r.setEnd(last, i + 1);
                               return r.getBoundingClientRect().left; };
            return x(end - tail) < x(end - 1);
        }""",
        tail,
    )


@pytest.mark.slow
def test_the_best_trials_recipe_card_and_any_trials_on_click_or_key(open_page, site, shots):
    from playwright.sync_api import expect

    report = api_get(site, f"/v1/jobs/{site.jobs['search']}/artifacts/report.json")
    best = report["trials"][report["best"]["index"]]
    page = open_page(f"#/jobs/{site.jobs['search']}")
    card = page.locator("#recipe")
    expect(card.locator("h3")).to_have_text(f"Recipe of trial {best['index']} (best)")
    recipe = best["recipe"]
    for field, text in (
        ("depth_slope", js_num(recipe["depth_slope"], 3)),
        ("seq_len", str(recipe["seq_len"])),
        ("compensate", recipe["compensate"]),
        ("samples", str(recipe["samples"])),
        ("subset_seed", f"seeded subset {recipe['subset_seed']}"),
        ("protect_first", f"first {recipe['protect_first']}, last {recipe['protect_last']}" if recipe["protect_first"] or recipe["protect_last"] else "none"),
    ):
        expect(card.locator(f'dd[data-field="{field}"]')).to_contain_text(text)
    for metric, weight in recipe["mix"].items():
        if weight > 0:
            expect(card.locator('dd[data-field="mix"]')).to_contain_text(f"{metric} {js_num(weight, 2)}")
    # What the search chose is marked; the job's fixed choices are not.
    expect(card.locator('dd[data-field="depth_slope"] .searched')).to_have_count(1)
    expect(card.locator('dd[data-field="aggregation"] .searched')).to_have_count(0)
    # The per-layer widths beside it are the best trial's.
    expect(page.locator("#recipe-box #heads-chart rect")).to_have_count(4)
    heads = [w["heads"] for w in best["widths"]]
    titles = page.locator("#heads-chart rect title").all_text_contents()
    assert [int(t.rsplit(" ", 1)[1]) for t in titles] == heads
    page.evaluate("document.getElementById('h-recipe').scrollIntoView()")
    shots(page, "job-recipe-1280", full_page=False)

    # Another trial, with the keyboard: its number is a button; Enter shows its recipe and moves the focus there.
    other = next(r for r in records(site, "search") if r["status"] == "completed" and r["index"] != best["index"])
    page.locator(f'#trials button[aria-label="show the recipe of trial {other["index"]}"]').focus()
    page.keyboard.press("Enter")
    expect(card.locator("h3")).to_have_text(f"Recipe of trial {other['index']}")
    expect(page.locator("#recipe")).to_be_focused()
    expect(page.locator(f'#trials tr[data-trial="{other["index"]}"] button')).to_have_attribute("aria-pressed", "true")
    expect(page.locator('#heads-chart svg[role="img"]')).to_have_attribute("aria-label", re.compile(f"trial {other['index']}"))
    titles = page.locator("#channels-chart rect title").all_text_contents()
    assert [int(t.rsplit(" ", 1)[1]) for t in titles] == [w["channels"] for w in other["widths"]]


@pytest.mark.slow
def test_use_this_recipe_fills_the_prune_form_with_the_trials_prune_job(open_page, site, shots):
    from playwright.sync_api import expect

    record = records(site, "search")[1]
    wanted = record["prune_job"]["spec"]
    page = open_page(f"#/jobs/{site.jobs['search']}")
    page.locator('#trials button[aria-label="show the recipe of trial 1"]').click()
    page.click("#recipe-use")
    expect(page.get_by_role("heading", name="New prune job")).to_be_visible()
    expect(page.locator("#prefilled")).to_contain_text("trial 1 of search")
    expect(page.locator("#prefilled")).to_contain_text("subset")  # what a prune job cannot carry over
    for metric, weight in wanted["importance"]["mix"].items():
        assert float(page.input_value(f"#mix-{metric}")) == pytest.approx(weight)
    assert int(page.input_value("#samples")) == wanted["calibration"]["samples"]
    assert int(page.input_value("#seq-len")) == wanted["calibration"]["seq_len"]
    assert float(page.input_value("#depth-slope")) == pytest.approx(wanted["prune"]["depth_slope"])
    assert page.input_value("#compensate") == record["recipe"]["compensate"]
    shots(page, "submit-prune-from-recipe-1280")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f]+$"))
    new_id = page.url.rsplit("/", 1)[1]
    job = api_get(site, f"/v1/jobs/{new_id}")
    httpx.post(f"{site.url}/v1/jobs/{new_id}/cancel", headers=site.auth)
    assert job["kind"] == "prune"
    spec = job["spec"]
    assert spec["importance"]["mix"] == pytest.approx(wanted["importance"]["mix"])
    assert spec["prune"]["depth_slope"] == pytest.approx(wanted["prune"]["depth_slope"])
    assert spec["calibration"]["sources"] == [dict(NULLS, **s) for s in wanted["calibration"]["sources"]]
    assert spec["evaluate"]["max_tokens"] == wanted["evaluate"]["max_tokens"]  # from the advanced JSON
    assert spec["model"]["source"] == wanted["model"]["source"]


@pytest.mark.slow
def test_search_views_parallel_coordinates_importance_and_trial_states(open_page, site, shots):
    from playwright.sync_api import expect

    trials = records(site, "search")
    report = api_get(site, f"/v1/jobs/{site.jobs['search']}/artifacts/report.json")
    assert any(t.get("failure") == "infeasible" for t in trials)  # the fixture's first trial protects every layer
    page = open_page(f"#/jobs/{site.jobs['search']}")
    # Parallel coordinates: an axis per searched dimension (and the objective), a line per trial.
    chart = page.locator("#parallel-chart svg")
    expect(chart.locator("path[data-trial]")).to_have_count(len(trials))
    axes = chart.locator("text.axis-name").all_text_contents()
    assert {"depth_slope", "protect_first", "compensate", "val. log PPL"} <= set(axes)
    assert len(axes) == len(trials[0]["params"]) + 1
    done = [t for t in trials if t["status"] == "completed"]
    colours = {chart.locator(f'path[data-trial="{t["index"]}"]').get_attribute("stroke") for t in done}
    assert len(colours) > 1  # coloured by objective
    # Importance: the final GP's inverse lengthscales, said so, one meter per dimension, largest first within
    # the numeric and the choice dimensions (two kernels, shares given apart).
    expect(page.locator("#importance-method")).to_contain_text("lengthscales")
    expect(page.locator("#importance-method")).to_contain_text("all trials")
    relevance = report["relevance"]["values"]
    expect(page.locator("#importance meter")).to_have_count(len(relevance))
    choices = {k for k, v in trials[0]["params"].items() if isinstance(v, str)}
    for kind, names in (("numeric", set(relevance) - choices), ("choice", choices)):
        shown = page.locator(f'#importance ul[data-kind="{kind}"] meter').evaluate_all(
            "ms => ms.map(m => [m.dataset.dim, m.value])"
        )
        assert {name for name, _ in shown} == names
        assert [v for _, v in shown] == pytest.approx(sorted((relevance[n] for n in names), reverse=True))
    # Every trial's state: failed ones say why, early-stopped ones say so.
    for t in trials:
        state = page.locator(f'#trials tr[data-trial="{t["index"]}"] td.state')
        if t["status"] == "failed":
            expect(state).to_have_text(f"failed: {t['failure']}")
        else:
            expect(state).to_have_text("stopped early" if t["stopped_early"] else "completed")
    expect(page.locator("#failed-trials")).to_contain_text("infeasible")
    expect(page.locator("#pareto-chart")).to_be_hidden()  # one objective: no front
    page.evaluate("document.getElementById('h-search').scrollIntoView()")
    shots(page, "job-search-views-1280", full_page=False)


@pytest.mark.slow
def test_a_two_objective_search_shows_its_pareto_front(open_page, site):
    from playwright.sync_api import expect

    report = api_get(site, f"/v1/jobs/{site.jobs['pareto']}/artifacts/report.json")
    page = open_page(f"#/jobs/{site.jobs['pareto']}")
    chart = page.locator('#pareto-chart svg[role="img"]')
    expect(chart).to_have_attribute("aria-label", re.compile("latency"))
    front = chart.locator("g.dots").nth(1).locator("circle")
    expect(front).to_have_count(len(report["pareto"]))
    assert {t.split(" ")[1] for t in front.locator("title").all_text_contents()} == {
        str(p["index"]) for p in report["pareto"]
    }


@pytest.mark.slow
def test_compare_warns_what_differs_draws_each_dense_line_and_labels_each_job(open_page, site, shots):
    from playwright.sync_api import expect

    ids = [site.jobs["search"], site.jobs["other"]]
    page = open_page(f"#/compare?ids={','.join(ids)}")
    banner = page.locator("#compare-banner")
    expect(banner).to_contain_text("Not like for like")
    expect(banner).to_contain_text("validation texts")
    expect(banner).to_contain_text("val2.txt")
    assert "model" not in banner.locator("li").first.inner_text().split(":")[0]
    # Each job's own dense line, in its colour.
    refs = page.locator("#compare-chart line.ref")
    expect(refs).to_have_count(2)
    assert len({r.get_attribute("stroke") for r in refs.all()}) == 2
    dense = [api_get(site, f"/v1/jobs/{i}/artifacts/report.json")["dense_validation_ppl"] for i in ids]
    assert dense[0] != dense[1]
    # Test PPL side by side, each with its own dense value; footer labels tell the jobs apart.
    row = page.locator("table.compare tr", has_text="PPL test.txt")
    for i in ids:
        ppl = api_get(site, f"/v1/jobs/{i}")["result"]["pruned"]["perplexity"]
        expect(row).to_contain_text(js_num(next(iter(ppl.values())), 2))
    labels = page.locator("ul.jobs-legend li").all_inner_texts()
    assert len(set(labels)) == 2 and all("validation" in label for label in labels)
    shots(page, "compare-banner-1280")
    page.goto(f"{site.url}/#/compare?ids={site.jobs['search']},{site.jobs['pareto']}")
    expect(page.locator("#compare-banner")).to_contain_text("Like for like")


@pytest.mark.slow
def test_job_list_columns_iso_times_in_the_viewers_zone_and_filters(open_page, site, shots):
    from playwright.sync_api import expect

    page = open_page("#/jobs", timezone_id="Asia/Kolkata")
    page.locator("table.jobs").wait_for()
    heads = page.locator("table.jobs thead th").all_text_contents()
    for name in ("kind", "model", "ratio", "best val. PPL", "test PPL", "failure reason", "created"):
        assert name in heads
    failed = page.locator(f'tr[data-job="{site.jobs["failed"]}"]')
    reason = api_get(site, f"/v1/jobs/{site.jobs['failed']}")["error"].split("\n")[0]
    expect(failed.locator("td.reason")).to_have_text(reason.replace(RLO, "[U+202E]"))
    prune = page.locator(f'tr[data-job="{site.jobs["prune"]}"]')
    expect(prune).to_contain_text("0.25")
    created = prune.locator("time").first
    expect(created).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30$"))
    utc = api_get(site, f"/v1/jobs/{site.jobs['prune']}")["created_at"]
    assert created.get_attribute("datetime")[:19] == utc[:19]
    shots(page, "jobs-list-1280")
    # Filters: the kind (asked of the server) and the status.
    page.select_option("#kind-filter", "prune")
    expect(page.locator("table.jobs tbody tr")).to_have_count(api_get(site, "/v1/jobs?kind=prune")["total"])
    assert "kind=prune" in page.url
    page.get_by_label("failed").check()
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    expect(page.locator("table.jobs tbody tr")).to_have_attribute("data-job", site.jobs["failed"])
    assert api_get(site, "/v1/jobs?kind=search")["total"] == 3


@pytest.mark.slow
def test_both_submit_forms_take_their_maxima_from_the_servers_limits(open_page, site, shots):
    from playwright.sync_api import expect

    limits = api_get(site, "/v1/catalog")["limits"]
    assert limits["search"]["search.trials"] == MAX_TRIALS
    page = open_page("#/submit")
    expect(page.locator("#trials")).to_have_attribute("max", str(MAX_TRIALS))
    expect(page.locator('[data-field="spec.search.trials"] .hint')).to_contain_text(f"at most {MAX_TRIALS} on this server")
    page.fill("#trials", str(MAX_TRIALS + 1))
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator('[data-field="spec.search.trials"] .field-error')).to_contain_text(str(MAX_TRIALS))
    # The prune form, by keyboard: the kind switch is a link; its fields come from the prune schema.
    page.get_by_role("link", name="Prune", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="New prune job")).to_be_visible()
    expect(page.locator("#model")).to_be_focused()
    assert unlabelled_controls(page) == []
    samples_max = limits.get("prune", {}).get("calibration.samples", 100_000)  # the server's, else the schema's
    expect(page.locator("#samples")).to_have_attribute("max", str(int(samples_max)))
    for control in ("#aggregation", "#normalization", "#allocation", "#compensate", "#attn-share", "#depth-slope"):
        expect(page.locator(control)).to_be_visible()
    page.fill("#mix-wanda", "1")
    page.fill("#ratio", "0.3")
    page.select_option("#allocation", "protected")
    shots(page, "submit-prune-1280")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f]+$"))
    new_id = page.url.rsplit("/", 1)[1]
    httpx.post(f"{site.url}/v1/jobs/{new_id}/cancel", headers=site.auth)
    job = api_get(site, f"/v1/jobs/{new_id}")
    assert job["kind"] == "prune" and job["spec"]["importance"]["mix"] == {"wanda": 1.0}
    assert job["spec"]["prune"]["ratio"] == 0.3 and job["spec"]["prune"]["allocation"] == "protected"


@pytest.mark.slow
def test_the_prune_job_page_shows_its_metric_mix_and_calibration(open_page, site, shots):
    from playwright.sync_api import expect

    page = open_page(f"#/jobs/{site.jobs['prune']}")
    card = page.locator("#recipe")
    expect(card.locator("h3")).to_have_text("Recipe of this prune job")
    expect(card).to_contain_text("taylor 0.5, wanda 0.5")
    expect(card).to_contain_text("file:a.txt")
    expect(card.locator('dd[data-field="samples"]')).to_have_text("4")
    expect(card.locator('dd[data-field="seq_len (tokens)"]')).to_have_text("16")
    expect(page.locator("#recipe-box #heads-chart rect")).to_have_count(4)
    expect(page.locator("#h-search")).to_be_hidden()
    shots(page, "job-prune-1280")


@pytest.mark.slow
def test_log_numbers_stay_visible_past_nine(open_page, site):
    from playwright.sync_api import expect

    page = open_page(f"#/jobs/{site.jobs['search']}")
    items = page.locator("#log li")
    expect(items.nth(9)).to_be_visible()
    log_left = page.locator("#log").bounding_box()["x"]
    for i in (0, 9, items.count() - 1):
        number = items.nth(i).locator(".seq")
        expect(number).to_have_text(f"{i + 1}.")
        box, time_box = number.bounding_box(), items.nth(i).locator("time").bounding_box()
        assert box["x"] >= log_left and box["x"] + box["width"] <= time_box["x"]


@pytest.mark.slow
def test_a_right_to_left_override_in_a_model_name_reverses_nothing(open_page, site):
    from playwright.sync_api import expect

    failed = site.jobs["failed"]
    page = open_page("#/compare")
    row = page.locator("ul.pick li", has_text=failed[:12])
    assert reads_left_to_right(row), "the creation time after the model name is drawn reversed"
    expect(row).to_contain_text("[U+202E]ledom-gnissim")  # the control is shown, not obeyed
    assert RLO not in row.inner_text()
    page.goto(f"{site.url}/#/jobs")
    assert reads_left_to_right(page.locator(f'tr[data-job="{failed}"]'))
    page.goto(f"{site.url}/#/jobs/{failed}")
    expect(page.locator(".facts")).to_contain_text("[U+202E]ledom-gnissim")
    assert RLO not in page.locator("main").inner_text()


@pytest.mark.slow
def test_the_sign_in_text_says_what_the_page_does(browser, site):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    page.goto(site.url + "/")
    note = page.locator("#sign-in-note")
    expect(note).to_contain_text("cookie for this browser")
    expect(note).not_to_contain_text("tab only")
    page.fill("#key", site.key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    [cookie] = context.cookies()
    assert cookie["httpOnly"] and cookie["value"] == site.key and cookie["expires"] == -1  # until the browser closes
    page.click("#sign-out")
    expect(page.locator("#key")).to_be_visible()
    assert context.cookies() == []
    context.close()


@pytest.mark.slow
def test_at_390_px_the_trials_table_and_the_job_list_fit_without_scrolling(open_page, site, shots):
    from playwright.sync_api import expect

    page = open_page(f"#/jobs/{site.jobs['search']}", width=390)
    expect(page.locator("#heads-chart rect")).to_have_count(4)
    assert no_horizontal_scroll(page), "the job page scrolls sideways at 390 px"
    scroller = page.locator("#trials .scroll")
    assert scroller.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), "the trials table scrolls sideways"
    cells = page.locator('#trials tr[data-trial="1"] td')
    expect(cells).to_have_count(13)
    edges = cells.evaluate_all("tds => tds.map(td => { const r = td.getBoundingClientRect(); return [r.left, r.right]; })")
    assert all(left >= 0 and right <= 390 for left, right in edges), edges
    expect(cells.nth(9)).to_have_attribute("data-label", "depth slope")  # every value is labelled with its column
    page.evaluate("document.getElementById('h-recipe').scrollIntoView()")
    shots(page, "job-recipe-390", full_page=False)
    page.goto(f"{site.url}/#/jobs")
    page.locator("table.jobs").wait_for()
    assert page.locator("#main .scroll").first.evaluate("el => el.scrollWidth <= el.clientWidth + 1")
    assert no_horizontal_scroll(page)
    shots(page, "jobs-list-390")
    for hash_ in (f"#/compare?ids={site.jobs['search']},{site.jobs['other']}", "#/submit?kind=prune"):
        page.goto(f"{site.url}/{hash_}")
        page.locator("main h1").first.wait_for()
        page.wait_for_load_state("networkidle")
        assert no_horizontal_scroll(page), f"{hash_} scrolls sideways at 390 px"
    shots(page, "submit-prune-390")
