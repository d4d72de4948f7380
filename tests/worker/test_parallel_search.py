"""A parallel search on the worker pool (issue 21 item 1), with real PostgreSQL, Redis and worker
subprocesses: its trials are ``search_trial`` jobs on the same stream; a worker killed mid-trial and the
driver's worker killed once, the search still finishes with every trial index recorded once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from service.db import transaction
from service.jobs import SearchRequest
from service.models import Job, JobStatus
from tests.conftest import tiny_search_spec
from tests.worker.test_worker import trial_events
from worker.trials import TRIAL_KIND

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TRIALS = 8


def parallel_request(model_dir: Path, texts: dict[str, str]) -> SearchRequest:
    search = {"parallel": 2, "early_reject": False}
    spec = tiny_search_spec(texts, model=str(model_dir), trials=TRIALS, top_k=1, search=search)
    return SearchRequest.model_validate({"kind": "search", "spec": spec})


def trial_jobs(cluster, search_id: str) -> list[Job]:
    with transaction(cluster.sessions) as session:
        rows = session.scalars(select(Job).where(Job.kind == TRIAL_KIND).order_by(Job.created_at))
        return [job for job in rows if job.spec["search"] == search_id]


def worker_of(cluster, job: Job):
    """The worker subprocess whose id (``host-pid-suffix``) is ``job.worker_id``."""
    pid = int(job.worker_id.rsplit("-", 2)[1])
    return next(p for p in cluster.workers if p.pid == pid)


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def kill_mid_trial(cluster, search_id: str, driver_pid: int) -> str:
    """Freeze a worker while its trial runs, check that the trial is still running, then SIGKILL it (its
    trial host goes with it); returns the trial job's id. A trial that ended before the freeze: try another."""
    for _ in range(20):
        cluster.wait(
            lambda: any(j.status == JobStatus.running for j in trial_jobs(cluster, search_id)),
            timeout=180,
            what="a running trial",
        )
        running = [j for j in trial_jobs(cluster, search_id) if j.status == JobStatus.running]
        if not running:
            continue
        proc = worker_of(cluster, running[0])
        assert proc.pid != driver_pid  # the driver's worker runs the driver, not trials
        frozen = [proc.pid, *children(proc.pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        if cluster.job(running[0].id).status == JobStatus.running:  # frozen mid-trial
            proc.kill()
            proc.wait()
            return running[0].id
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    raise AssertionError("no trial could be caught running")


def test_a_parallel_search_survives_a_killed_trial_worker_and_a_killed_driver(cluster, tiny_model_dir, job_texts):
    search_id = cluster.submit(parallel_request(tiny_model_dir, job_texts))
    for _ in range(3):
        cluster.start_worker()
    cluster.wait(lambda: cluster.job(search_id).status.value == "running", timeout=120, what="the search to start")
    driver = worker_of(cluster, cluster.job(search_id))
    lost = kill_mid_trial(cluster, search_id, driver.pid)
    cluster.start_worker()
    cluster.wait(lambda: len(cluster.trials(search_id)) >= 3, timeout=240, what="three recorded trials")
    driver.kill()  # the driver dies with its worker; its trials in flight go on
    driver.wait()
    cluster.start_worker()
    job = cluster.wait_status(search_id, "succeeded", "failed", timeout=420)
    assert job.status == JobStatus.succeeded, job.error
    assert job.attempts == 2  # the driver resumed once, elsewhere
    assert [t.trial_index for t in cluster.trials(search_id)] == list(range(TRIALS))
    assert sorted(e["index"] for e in trial_events(cluster, search_id)) == list(range(TRIALS))  # each once
    assert {t.attempt for t in cluster.trials(search_id)} == {1, 2}
    reissued = cluster.job(lost)
    assert reissued.status == JobStatus.succeeded and reissued.attempts >= 2  # the lost trial ran again
    runs = [j for j in trial_jobs(cluster, search_id) if j.status == JobStatus.succeeded]
    assert {j.spec["task"]["index"] for j in runs} == set(range(TRIALS))
    assert list(cluster.settings.artifacts.glob("stats-*/*.pt"))  # the driver's pools, published for trial workers
    # A worker keeps the search's model loaded between its trials: fewer loads than trial attempts.
    loads = sum(p.read_text().count("built the trial context") for p in cluster.logs.glob("*.log"))
    assert 1 <= loads < sum(j.attempts for j in trial_jobs(cluster, search_id))
