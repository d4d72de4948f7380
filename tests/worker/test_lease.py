"""Lease bookkeeping: a hand-over numbers the next run as a new attempt without using up max_attempts."""

from __future__ import annotations

from service.db import transaction
from service.schemas import JobOut
from tests.worker.cluster import prune_request
from worker import lease


def test_a_hand_over_is_a_new_attempt_that_does_not_use_up_max_attempts(cluster, tiny_model_dir, job_texts):
    request = prune_request(tiny_model_dir, job_texts).model_copy(update={"max_attempts": 1})
    job_id = cluster.submit(request, enqueue=False)
    attempts = []
    for _ in range(3):
        with transaction(cluster.sessions) as session:
            got = lease.claim(session, job_id=job_id, worker_id="w", claim_idle_s=60)
            attempts.append((got.outcome, got.attempt))
        with transaction(cluster.sessions) as session:
            lease.release(session, job_id=job_id, token=got.token, reason="worker stopped", count_attempt=False)
    assert attempts == [(lease.ClaimOutcome.started, n) for n in (1, 2, 3)]
    shown = JobOut.model_validate(cluster.job(job_id))  # what the API and the dashboard show
    assert (shown.attempts, shown.handovers, shown.max_attempts) == (3, 3, 1)
    with transaction(cluster.sessions) as session:
        got = lease.claim(session, job_id=job_id, worker_id="w", claim_idle_s=60)
    with transaction(cluster.sessions) as session:
        lease.release(session, job_id=job_id, token=got.token, reason="the child crashed", count_attempt=True)
    with transaction(cluster.sessions) as session:
        got = lease.claim(session, job_id=job_id, worker_id="w", claim_idle_s=60)
    assert got.outcome == lease.ClaimOutcome.exhausted
