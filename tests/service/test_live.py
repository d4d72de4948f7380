"""The API served for real: concurrent clients, server-sent events from a running job, the client and CLI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from adapruner.client import ApiError, Client
from service import crud
from service.cli import main as cli
from service.db import transaction
from tests.worker.cluster import Cluster, search_request


def new_key(app, *, admin=False) -> str:
    with transaction(app.state.sessions) as session:
        return crud.create_api_key(session, name="k", admin=admin)[1]


def test_twenty_concurrent_identical_posts_make_one_job(live):
    key = new_key(live.app)
    body = {"kind": "prune", "spec": {"model": {"source": "some/model"}}}
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "same-request"}

    def post(_):
        with httpx.Client(base_url=live.url, timeout=30) as c:
            return c.post("/v1/jobs", json=body, headers=headers)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert Client(live.url, api_key=key).jobs()["total"] == 1


def test_the_client_reports_field_errors_and_refusals(live):
    client = Client(live.url, api_key=new_key(live.app))
    from adapruner.config import PruneJob, SearchJob
    from service.jobs import PruneRequest, SearchRequest

    with pytest.raises(ApiError) as error:
        client.submit(SearchRequest(spec=SearchJob(search={"trials": 10_000})))
    assert error.value.status == 422 and "spec.search.trials" in str(error.value)
    job = client.submit(PruneRequest(spec=PruneJob()))
    with pytest.raises(ApiError, match="409"):
        client.retry(job["id"])
    with pytest.raises(ApiError, match="404"):
        client.job("0" * 32)
    with pytest.raises(ApiError, match="401"):
        Client(live.url, api_key="apk_nope").jobs()


def read_events(url: str, key: str, job_id: str, *, until: str) -> list[tuple[str, dict]]:
    """Follow the event stream until an event of kind ``until`` arrives."""
    seen: list[tuple[str, dict]] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=240) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                seen.append((kind, json.loads(line[6:])))
                if kind == until:
                    return seen
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_events_stream_a_trial_of_a_running_job_then_the_cli_downloads_the_report(
    live, settings, tmp_path, tiny_model_dir, job_texts
):
    key = new_key(live.app)
    request = tmp_path / "request.json"
    request.write_text(search_request(tiny_model_dir, job_texts, trials=3).model_dump_json())
    remote = ["--server", live.url, "--key", key]
    cluster = Cluster(settings, tmp_path)  # embedded mode: SQLite and a local worker
    try:
        client = Client(live.url, api_key=key)
        job = client.submit(search_request(tiny_model_dir, job_texts, trials=3), idempotency_key="cli-test")
        cluster.start_worker()
        events = read_events(live.url, key, job["id"], until="trial")
        kinds = [k for k, _ in events]
        assert kinds[0] == "state" and "running" in [e["data"].get("status") for k, e in events if k == "state"]
        trial = events[-1][1]["data"]
        assert trial["index"] == 0 and trial["value"] > 0 and "mix" in trial["recipe"]
        # The CLI: the same request with the same idempotency key is the same job; wait; download.
        assert cli(["submit", str(request), "--idempotency-key", "cli-test", "--wait", *remote]) == 0
        assert cli(["wait", job["id"], *remote]) == 0
        assert cli(["download", job["id"], str(tmp_path / "got"), *remote]) == 0
        report = json.loads((tmp_path / "got" / "report.json").read_text())
        assert [t["index"] for t in report["trials"]] == [0, 1, 2]
        assert (tmp_path / "got" / "adapruner.json").is_file()
        assert cli(["status", job["id"], *remote]) == 0
    finally:
        cluster.stop()


def test_cli_remote_commands_need_a_key_and_say_so(capsys, monkeypatch):
    monkeypatch.delenv("ADAPRUNER_API_KEY", raising=False)
    assert cli(["status", "abc", "--key", ""]) == 2
    assert "--key" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_mode_serves_and_runs_a_job_with_one_command(tmp_path, tiny_model_dir, job_texts):
    import os
    import re
    import socket
    import subprocess
    import sys
    import time

    from tests.backends import REDIS_URL, require_redis
    from tests.worker.cluster import prune_request

    require_redis()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {
        "ADAPRUNER_HOME": str(tmp_path / "home"),  # SQLite and artifacts here
        "ADAPRUNER_REDIS_URL": REDIS_URL,
        "ADAPRUNER_REDIS_PREFIX": f"adapruner-embedded-{port}",
        "ADAPRUNER_HEARTBEAT_S": "0.5",
        "ADAPRUNER_BLOCK_S": "0.2",
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--with-worker", "--open"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        key = None
        for _ in range(300):
            found = re.search(r"store it now: (apk_\S+)", log.read_text())
            if found:
                key = found.group(1)
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        assert key, log.read_text()
        client = Client(f"http://127.0.0.1:{port}", api_key=key)
        job = client.wait(client.submit(prune_request(tiny_model_dir, job_texts))["id"], timeout=120, poll_s=0.5)
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["ratio_achieved"] > 0.15
        assert (tmp_path / "home" / "adapruner.db").is_file()
        assert "open mode" in log.read_text()  # the tiny model lives outside any allowed root: --open says so
    finally:
        server.terminate()
        server.wait(30)
