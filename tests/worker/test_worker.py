from __future__ import annotations

import json
import signal
import time

import pytest

from service.models import JobStatus
from tests.worker.cluster import prune_request, search_request

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


def trial_events(cluster, job_id: str) -> list[dict]:
    from sqlalchemy import select

    from service.db import transaction
    from service.models import Event

    with transaction(cluster.sessions) as session:
        rows = session.scalars(select(Event).where(Event.job_id == job_id, Event.kind == "trial").order_by(Event.id))
        return [e.data for e in rows]


def state_events(cluster, job_id: str) -> list[dict]:
    from sqlalchemy import select

    from service.db import transaction
    from service.models import Event

    with transaction(cluster.sessions) as session:
        rows = session.scalars(select(Event).where(Event.job_id == job_id, Event.kind == "state").order_by(Event.id))
        return [e.data for e in rows]


def states(cluster, job_id: str) -> list[str]:
    return [e["status"] for e in state_events(cluster, job_id)]


def test_kill_9_after_trial_3_resumes_elsewhere_without_rerunning_a_trial(cluster, tiny_model_dir, job_texts):
    job_id = cluster.submit(search_request(tiny_model_dir, job_texts, trials=6))
    first = cluster.start_worker()
    cluster.wait(lambda: len(cluster.trials(job_id)) >= 3, timeout=180, what="three trials")
    first.kill()
    first.wait()
    killed_at = time.monotonic()
    done_before = len(cluster.trials(job_id))
    cluster.start_worker()
    cluster.wait(lambda: cluster.job(job_id).attempts == 2, timeout=60, what="a second attempt")
    # Reclaimed within the claim timeout (plus one sweep and the new worker's start).
    assert time.monotonic() - killed_at < cluster.settings.claim_idle_s + cluster.settings.sweep_s + 30
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=240)
    assert job.status == JobStatus.succeeded, job.error
    trials = cluster.trials(job_id)
    assert [t.trial_index for t in trials] == list(range(6))
    assert {t.attempt for t in trials[:done_before]} == {1} and {t.attempt for t in trials[done_before:]} == {2}
    assert sorted(e["index"] for e in trial_events(cluster, job_id)) == list(range(6))  # none ran twice
    assert states(cluster, job_id) == ["queued", "running", "running", "succeeded"]


def test_a_long_job_with_heartbeats_is_never_redelivered(cluster, tiny_model_dir, job_texts):
    fast = {"claim_idle_s": 1.0, "sweep_s": 0.2, "heartbeat_s": 0.2}
    job_id = cluster.submit(search_request(tiny_model_dir, job_texts, trials=10_000, budget_s=15))
    cluster.start_worker(**fast)
    cluster.wait(lambda: cluster.job(job_id).status.value == "running", timeout=60, what="the job to start")
    cluster.start_worker(**fast)  # an idle worker sweeping for stale entries all along
    started = time.monotonic()
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=300)
    assert job.status == JobStatus.succeeded, job.error
    assert time.monotonic() - started > 10 * fast["claim_idle_s"]  # ran 10x the idle threshold
    assert job.attempts == 1 and states(cluster, job_id) == ["queued", "running", "succeeded"]
    assert {t.attempt for t in cluster.trials(job_id)} == {1}


def test_a_paused_worker_loses_its_lease_and_its_writes_are_refused(cluster, tiny_model_dir, job_texts):
    # A time budget: the job must outlast the reclaim and go on in the second attempt, however fast trials are.
    job_id = cluster.submit(search_request(tiny_model_dir, job_texts, trials=10_000, budget_s=15))
    paused = cluster.start_worker()
    cluster.wait(lambda: len(cluster.trials(job_id)) >= 1, timeout=180, what="a first trial")
    paused.send_signal(signal.SIGSTOP)  # its forked attempt keeps running and keeps writing
    cluster.start_worker()
    cluster.wait(lambda: cluster.job(job_id).attempts == 2, timeout=90, what="the job to be reclaimed")
    reclaimed = cluster.job(job_id).heartbeat_at
    paused.send_signal(signal.SIGCONT)
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=240)
    assert job.status == JobStatus.succeeded, job.error
    trials = cluster.trials(job_id)
    assert [t.trial_index for t in trials] == list(range(len(trials)))
    # After the reclaim only the new attempt wrote: the paused worker's late writes were refused.
    later = [t.attempt for t in trials if t.created_at > reclaimed]
    assert later and set(later) == {2}
    # The paused worker's attempt notices at its next write (its current trial must end first: slow under load).
    cluster.wait(lambda: "lost the lease" in (cluster.logs / "worker-0.log").read_text(), timeout=120, what="the log")
    assert paused.poll() is None  # it went on to wait for other jobs


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered(cluster, tiny_model_dir, job_texts):
    poison = cluster.submit(search_request(tiny_model_dir, job_texts, trials=50, max_attempts=2))
    for attempt in (1, 2):
        worker = cluster.start_worker()
        cluster.wait(
            lambda a=attempt: cluster.job(poison).attempts == a and cluster.job(poison).status.value == "running",
            timeout=90,
            what=f"attempt {attempt}",
        )
        worker.kill()
        worker.wait()
    later = cluster.submit(search_request(tiny_model_dir, job_texts, trials=2))
    cluster.start_worker()
    job = cluster.wait_status(poison, "failed", timeout=90)
    assert "dead-lettered" in job.error and job.attempts == 2
    dead = cluster.redis.xrange(cluster.keys.dead)
    assert [fields["job_id"] for _, fields in dead] == [poison]
    assert cluster.wait_status(later, "succeeded", "failed", timeout=180).status == JobStatus.succeeded


def test_cancel_queued_and_running_jobs_and_a_deadline(cluster, tiny_model_dir, job_texts):
    from service import crud
    from service.db import transaction

    queued = cluster.submit(search_request(tiny_model_dir, job_texts, trials=2))
    with transaction(cluster.sessions) as session:
        crud.request_cancel(session, job=crud.get_job(session, job_id=queued, owner=None))
    # Time budgets far past the cancel and the deadline: neither job can finish first on a fast machine.
    running = cluster.submit(search_request(tiny_model_dir, job_texts, trials=10_000, budget_s=120))
    late = cluster.submit(search_request(tiny_model_dir, job_texts, trials=10_000, budget_s=120, deadline_s=8))
    cluster.start_worker()
    cluster.wait(lambda: len(cluster.trials(running)) >= 1, timeout=180, what="the running job's first trial")
    with transaction(cluster.sessions) as session:
        crud.request_cancel(session, job=crud.get_job(session, job_id=running, owner=None))
    asked = time.monotonic()
    assert cluster.wait_status(running, "cancelled", timeout=30).status == JobStatus.cancelled
    assert time.monotonic() - asked < 5
    assert states(cluster, queued) == ["queued", "cancelled"]  # never started
    job = cluster.wait_status(late, "timed_out", "succeeded", "failed", timeout=120)
    assert job.status == JobStatus.timed_out and job.error == "deadline passed"


def test_sigterm_hands_the_job_over_and_exits_within_the_grace_period(cluster, tiny_model_dir, job_texts):
    job_id = cluster.submit(search_request(tiny_model_dir, job_texts, trials=8))
    leaving = cluster.start_worker()
    cluster.wait(lambda: len(cluster.trials(job_id)) >= 2, timeout=180, what="two trials")
    leaving.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    leaving.wait(timeout=cluster.settings.grace_s + cluster.settings.heartbeat_s + 5)
    assert time.monotonic() - asked < cluster.settings.grace_s + cluster.settings.heartbeat_s + 5
    assert leaving.returncode == 0
    assert cluster.job(job_id).status == JobStatus.queued  # handed back, not failed
    cluster.start_worker()
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=240)
    assert job.status == JobStatus.succeeded, job.error
    # The second run is attempt 2 (events and trials say so), but a hand-over does not use up max_attempts.
    assert job.attempts == 2 and job.handovers == 1
    trials = cluster.trials(job_id)
    assert [t.trial_index for t in trials] == list(range(8))
    assert [t.attempt for t in trials] == sorted(t.attempt for t in trials) and {t.attempt for t in trials} == {1, 2}
    assert states(cluster, job_id) == ["queued", "running", "queued", "running", "succeeded"]
    assert [e["attempt"] for e in state_events(cluster, job_id)] == [0, 1, 1, 2, 2]


def test_redis_restarted_empty_mid_run_every_job_finishes_once(databases, tmp_path, tiny_model_dir, job_texts):
    from tests.backends import make_settings
    from tests.worker.cluster import Cluster, PrivateRedis

    server = PrivateRedis(tmp_path)
    server.start()
    (tmp_path / "logs").mkdir()
    cluster = Cluster(make_settings(databases.postgres(), tmp_path / "home", redis_url=server.url), tmp_path / "logs")
    try:
        long_job = cluster.submit(search_request(tiny_model_dir, job_texts, trials=6))
        short = [cluster.submit(prune_request(tiny_model_dir, job_texts)) for _ in range(6)]
        cluster.start_worker()
        cluster.start_worker()
        cluster.wait(lambda: len(cluster.trials(long_job)) >= 1, timeout=180, what="the search to be under way")
        server.stop()  # every stream entry, pending list and hash is gone
        later = [cluster.submit(prune_request(tiny_model_dir, job_texts), enqueue=False) for _ in range(3)]
        time.sleep(1.0)
        server.start()  # empty: only the reconciler can bring the queued jobs back
        for job_id in [long_job, *short, *later]:
            job = cluster.wait_status(job_id, "succeeded", "failed", timeout=240)
            assert job.status == JobStatus.succeeded, (job_id, job.error)
            assert job.attempts == 1, job_id  # finished once, never run twice
        assert [t.trial_index for t in cluster.trials(long_job)] == list(range(6))
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
        assert "republished" in logs
    finally:
        cluster.stop()
        server.stop()


def test_two_hundred_small_jobs_over_four_workers_each_succeed_exactly_once(cluster, tiny_model_dir, job_texts):
    ids = [cluster.submit(prune_request(tiny_model_dir, job_texts)) for _ in range(200)]
    for _ in range(4):
        cluster.start_worker()
    cluster.wait(
        lambda: all(cluster.job(i).status.value == "succeeded" for i in ids[-5:]), timeout=600, what="the last jobs"
    )
    for job_id in ids:
        job = cluster.job(job_id)
        assert job.status == JobStatus.succeeded and job.attempts == 1, (job_id, job.status, job.error)
        assert states(cluster, job_id) == ["queued", "running", "succeeded"]
    assert len({cluster.job(i).worker_id for i in ids}) == 4  # the work was shared
