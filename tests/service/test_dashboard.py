"""The web dashboard: its files are served locally under a strict policy, and a real headless Chromium drives
it: sign in, submit a small CPU search through the form, watch trials arrive without a reload, compare two
jobs, download the report. Screenshots of every page at 1280 and 390 px wide are written under the test's
tmp folder (and copied to ``$ADAPRUNER_SCREENSHOTS_DIR`` when set, e.g. docs/screenshots)."""

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


@pytest.fixture
def browser():
    """Debian's Chromium driven by Playwright. Missing either is a failure that says how to install it."""
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
