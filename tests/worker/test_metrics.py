from __future__ import annotations

import re
import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.worker.cluster import search_request

pytestmark = pytest.mark.slow


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_move_as_a_job_runs(cluster, tiny_model_dir, job_texts):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with TestClient(create_app(cluster.settings)) as api:
        before = api.get("/metrics").text
        job_id = cluster.submit(search_request(tiny_model_dir, job_texts, trials=3))
        queued = api.get("/metrics").text
        cluster.start_worker(metrics_port=port)
        cluster.wait_status(job_id, "succeeded", "failed", timeout=180)
        after = api.get("/metrics").text
    assert sample(before, "adapruner_jobs", '{status="queued"}') == 0
    assert sample(queued, "adapruner_jobs", '{status="queued"}') == 1
    assert sample(queued, "adapruner_queue_entries", '{state="waiting"}') == 1
    assert sample(after, "adapruner_jobs", '{status="succeeded"}') == 1
    assert sample(after, "adapruner_trial_seconds_count") == 3 and sample(after, "adapruner_trial_seconds_sum") > 0
    url = f"http://127.0.0.1:{port}/metrics"
    cluster.wait(lambda: 'outcome="succeeded"' in httpx.get(url).text, timeout=20, what="the worker's counter")
    worker = httpx.get(url).text
    assert sample(worker, "adapruner_worker_jobs_total", '{outcome="succeeded"}') == 1
    assert sample(worker, "adapruner_worker_busy") == 0
    assert sample(worker, "adapruner_worker_heartbeat_timestamp_seconds") > 0
