"""Hostile text reaching the worker (a model's config, a row written around the API) never stops it from
recording the job's end: NUL characters and lone surrogates are stored as visible escapes."""

from __future__ import annotations

import json
import shutil

import pytest

from service.db import transaction
from service.models import Event, Job, JobStatus
from tests.worker.cluster import prune_request
from worker import lease

HOSTILE = "lla\x00ma\ud800"


def test_the_worker_stores_errors_and_events_with_nul_and_lone_surrogates(cluster, tiny_model_dir, job_texts):
    job_id = cluster.submit(prune_request(tiny_model_dir, job_texts), enqueue=False)
    with transaction(cluster.sessions) as session:
        got = lease.claim(session, job_id=job_id, worker_id="w", claim_idle_s=60)
    with transaction(cluster.sessions) as session:
        lease.progress(session, job_id=job_id, token=got.token, data={"stage": HOSTILE, "done": float("nan")})
    with transaction(cluster.sessions) as session:
        lease.release(session, job_id=job_id, token=got.token, reason=f"stopped {HOSTILE}", count_attempt=False)
    with transaction(cluster.sessions) as session:
        got = lease.claim(session, job_id=job_id, worker_id="w", claim_idle_s=60)
    with transaction(cluster.sessions) as session:
        lease.finish(session, job_id=job_id, token=got.token, status=JobStatus.failed, error=f"ValueError: {HOSTILE}")
    with transaction(cluster.sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.failed and job.error == "ValueError: lla\\x00ma\\ud800"
        events = {e.kind: e.data for e in session.query(Event).filter(Event.job_id == job_id)}
    assert events["progress"] == {"stage": "lla\\x00ma\\ud800", "done": None}
    assert events["log"] == {"message": "stopped lla\\x00ma\\ud800"}


@pytest.mark.slow
def test_a_model_whose_config_holds_a_nul_fails_once_with_its_cause(cluster, tiny_model_dir, job_texts, tmp_path):
    hostile = tmp_path / "hostile-model"
    shutil.copytree(tiny_model_dir, hostile)
    config = json.loads((hostile / "config.json").read_text())
    (hostile / "config.json").write_text(json.dumps(config | {"model_type": HOSTILE}))
    job_id = cluster.submit(prune_request(hostile, job_texts))
    cluster.start_worker(confine=False)  # the single-user mode: the loader's own text reaches the job
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=120)
    assert job.status == JobStatus.failed and job.attempts == 1, job.error
    assert "lla\\x00ma\\ud800" in job.error and "dead-lettered" not in job.error, job.error


@pytest.mark.slow
def test_a_row_written_around_the_api_with_a_nul_fails_once_naming_the_field(cluster, tiny_model_dir, job_texts):
    job_id = cluster.submit(prune_request(tiny_model_dir, job_texts), enqueue=False)
    with transaction(cluster.sessions) as session:
        job = session.get(Job, job_id)
        job.spec = job.spec | {"model": job.spec["model"] | {"source": f"{tiny_model_dir}\x00"}}
    from service import queue

    queue.enqueue(cluster.redis, cluster.keys, job_id)
    cluster.start_worker()
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=120)
    assert job.status == JobStatus.failed and job.attempts == 1, job.error
    assert "model.source" in job.error and "NUL" in job.error, job.error
