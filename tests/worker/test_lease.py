"""Lease bookkeeping: a hand-over numbers the next run as a new attempt without using up max_attempts; a
search's trials are rows and the job's state column holds only the optimizer's state."""

from __future__ import annotations

import pytest

from service.db import transaction
from service.schemas import JobOut
from tests.worker.cluster import prune_request, search_request
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


def test_the_lease_store_writes_trials_as_rows_and_rebuilds_the_state_from_them(cluster, tiny_model_dir, job_texts):
    from adapruner.search.records import SearchState, TrialRecord
    from worker.store import LeaseStore

    request = search_request(tiny_model_dir, job_texts, trials=3)
    job_id = cluster.submit(request, enqueue=False)
    with transaction(cluster.sessions) as session:
        got = lease.claim(session, job_id=job_id, worker_id="w", claim_idle_s=60)
    store = LeaseStore(cluster.sessions, job_id=job_id, token=got.token, job=request.spec)
    assert store.load() is None
    state = SearchState(request.spec, timings={"warmup_s": 1.0})
    for index, value in enumerate((2.0, 1.5)):
        record = TrialRecord(
            index=index,
            params={"samples": 4},
            recipe={"samples": 4},
            status="completed",
            value=value,
            stopped_early=False,
            chunk_nlls=[value] * 4,
            seconds=0.5,
        )
        state.records[index] = record
        state.optimizer = {"version": 2, "trials": [{"index": i} for i in range(index + 1)]}
        store.commit(state, record)
        # The job's column holds the optimizer's state without its trials (each row carries its own entry)
        # and the timings: its size does not grow with the trial count.
        column = cluster.job(job_id).search_state
        assert column == {"optimizer": {"version": 2}, "timings": state.timings}
    rows = cluster.trials(job_id)
    assert [(t.trial_index, t.value, t.best_value, t.attempt) for t in rows] == [(0, 2.0, 2.0, 1), (1, 1.5, 1.5, 1)]
    assert rows[1].record == state.records[1].as_dict()
    assert cluster.job(job_id).progress == {"index": 1, "value": 1.5, "best_value": 1.5, "finished": 2, "total": 3}
    assert store.load() == state  # what a new attempt resumes from
    with transaction(cluster.sessions) as session:
        lease.release(session, job_id=job_id, token=got.token, reason="worker stopped", count_attempt=False)
    with pytest.raises(lease.OwnershipLost):  # the old attempt's writes are refused
        store.commit(state, state.records[1])
