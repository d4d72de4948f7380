from __future__ import annotations

import json

import pytest

from service.models import JobStatus
from tests.worker.conftest import search_request

pytestmark = pytest.mark.slow


def test_a_worker_runs_a_search_job_and_records_every_trial(cluster, tiny_model_dir, job_texts):
    job_id = cluster.submit(search_request(tiny_model_dir, job_texts, trials=3))
    cluster.start_worker()
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=180)
    assert job.status == JobStatus.succeeded, job.error
    assert [t.trial_index for t in cluster.trials(job_id)] == [0, 1, 2]
    assert job.result["best"]["index"] in {0, 1, 2} and job.attempts == 1
    report = json.loads((cluster.settings.artifacts / job_id / "report.json").read_text())
    assert [t["index"] for t in report["trials"]] == [0, 1, 2]
    cluster.wait(lambda: cluster.redis.xlen(cluster.keys.stream) == 0, timeout=10, what="the entry to be acked")
    assert not cluster.redis.hgetall(cluster.keys.enqueued)
