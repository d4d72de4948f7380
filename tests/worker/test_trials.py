"""The worker pool's side of a parallel search (worker.trials), against the machine's PostgreSQL and Redis
in this process: trial jobs written once per index and parameters, their records read back, the free
workers counted, a driver that lost its lease refused."""

from __future__ import annotations

import pytest

from adapruner.search.executor import TrialTask
from adapruner.search.records import TrialRecord
from service.db import transaction
from service.models import Job, JobStatus
from tests.worker.test_parallel_search import parallel_request, trial_jobs
from worker import lease
from worker.trials import PoolExecutor, idle_workers, trial_job_id


@pytest.fixture
def driver(cluster, tiny_model_dir, job_texts):
    """A search job claimed by a (pretend) worker, and the pool executor of its attempt."""
    request = parallel_request(tiny_model_dir, job_texts)
    search_id = cluster.submit(request, enqueue=False)
    with transaction(cluster.sessions) as session:
        got = lease.claim(session, job_id=search_id, worker_id="w-1-a", claim_idle_s=3.0)
    pool = PoolExecutor(cluster.sessions, cluster.settings, search_id=search_id, token=got.token, job=request.spec)
    return search_id, got.token, pool


def finish(cluster, job_id: str, record: TrialRecord) -> None:
    with transaction(cluster.sessions) as session:
        job = session.get(Job, job_id)
        job.status, job.result = JobStatus.succeeded, {"record": record.as_dict()}


def test_a_reissued_trial_is_one_job_and_its_record_comes_back_once(cluster, driver):
    search_id, _, pool = driver
    task = TrialTask(0, {"x": 0.5}, [1.0, 2.0])
    pool.submit(task)
    pool.submit(task)  # re-issued (a driver that resumed): the same job
    jobs = trial_jobs(cluster, search_id)
    assert [j.id for j in jobs] == [trial_job_id(search_id, task)]
    assert jobs[0].kind == "search_trial" and jobs[0].spec["task"] == task.as_dict()
    carried = {fields["job_id"] for _, fields in cluster.redis.xrange(cluster.keys.stream)}
    assert carried == {jobs[0].id}
    finish(cluster, jobs[0].id, TrialRecord(index=0, params=task.params, recipe={}, status="completed", value=1.5))
    assert [(r.index, r.value) for r in pool.wait()] == [(0, 1.5)]
    # other parameters for the same index (asked anew after a resume) are another job
    assert trial_job_id(search_id, TrialTask(0, {"x": 0.25}, [])) != jobs[0].id


def test_a_failed_trial_job_stops_the_search_with_its_error(cluster, driver):
    _, _, pool = driver
    task = TrialTask(3, {"x": 0.5}, [])
    pool.submit(task)
    with transaction(cluster.sessions) as session:
        job = session.get(Job, trial_job_id(driver[0], task))
        job.status, job.error = JobStatus.failed, "gave up after 3 attempts"
    with pytest.raises(RuntimeError, match="trial 3 .* failed: gave up after 3 attempts"):
        pool.wait()


def test_capacity_is_the_free_workers_within_parallel(cluster, driver):
    _, _, pool = driver
    idle = idle_workers(cluster.redis, cluster.settings)
    assert pool.capacity(0) == 1  # no worker is idle: one trial waits in the queue
    for worker_id in ("a", "b", "c"):
        idle.idle(worker_id)
    assert pool.capacity(0) == 2  # three idle, search.parallel is 2
    pool.submit(TrialTask(0, {"x": 0.5}, []))
    idle.busy("a")
    idle.busy("b")
    assert pool.capacity(1) == 1  # one idle worker, and the queued trial will take it


def test_a_driver_that_lost_its_lease_submits_nothing(cluster, driver):
    search_id, token, pool = driver
    with transaction(cluster.sessions) as session:
        lease.release(session, job_id=search_id, token=token, reason="test", count_attempt=False)
    with pytest.raises(lease.OwnershipLost):
        pool.submit(TrialTask(0, {"x": 0.5}, []))
    assert trial_jobs(cluster, search_id) == []
