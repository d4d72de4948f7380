"""A worker's fenced writes: every attempt at a job gets a fresh lease token, and every write a worker
makes about the job (heartbeat, trial, final state) checks that the token is still the job's. A worker
that was paused past its lease and came back finds its token replaced and its writes refused.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapruner.search.records import TrialDone
from service.crud import add_event, set_status
from service.models import TERMINAL, Job, JobStatus, Trial, utcnow
from service.strict import storable


class OwnershipLost(Exception):
    """The job's lease token is no longer ours: another worker owns it now."""


class ClaimOutcome(enum.Enum):
    started = "started"
    missing = "missing"  # no such job (deleted): drop the entry
    finished = "finished"  # already in a terminal state (e.g. cancelled while queued)
    owned = "owned"  # running under a live lease elsewhere: a duplicate entry
    exhausted = "exhausted"  # started max_attempts times (hand-overs aside) without finishing: dead-letter it


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    token: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class Beat:
    cancel: bool
    deadline_passed: bool


def _locked(session: Session, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id).with_for_update())


def claim(session: Session, *, job_id: str, worker_id: str, claim_idle_s: float) -> Claim:
    """Start a new attempt at ``job_id`` unless it is finished, owned by a live worker, or out of attempts."""
    job = _locked(session, job_id)
    if job is None:
        return Claim(ClaimOutcome.missing)
    if job.status in TERMINAL:
        return Claim(ClaimOutcome.finished)
    beat = job.heartbeat_at
    if job.status == JobStatus.running and beat and utcnow() - beat < timedelta(seconds=claim_idle_s):
        return Claim(ClaimOutcome.owned)
    if job.attempts - job.handovers >= job.max_attempts:
        set_status(
            session,
            job,
            JobStatus.failed,
            error=f"gave up after {job.attempts - job.handovers} attempts: the job stopped its worker every time "
            "(dead-lettered)",
        )
        return Claim(ClaimOutcome.exhausted)
    job.attempts += 1
    job.lease_token = uuid.uuid4().hex
    job.worker_id = worker_id
    set_status(session, job, JobStatus.running)
    return Claim(ClaimOutcome.started, job.lease_token, job.attempts)


def owned(session: Session, *, job_id: str, token: str) -> Job:
    """The job, locked, if ``token`` is still its lease; else :class:`OwnershipLost`."""
    job = _locked(session, job_id)
    if job is None or job.lease_token != token or job.status != JobStatus.running:
        raise OwnershipLost(job_id)
    return job


def heartbeat(session: Session, *, job_id: str, token: str) -> Beat:
    job = owned(session, job_id=job_id, token=token)
    now = utcnow()
    job.heartbeat_at = now
    started = job.started_at or now
    return Beat(cancel=job.cancel_requested, deadline_passed=now - started > timedelta(seconds=job.deadline_s))


def record_trial(
    session: Session,
    *,
    job_id: str,
    token: str,
    done: TrialDone,
    state: dict[str, Any],
    optimizer: dict[str, Any] | None = None,
) -> None:
    """Write a finished trial (a row of the trials table, with the optimizer's ``optimizer`` entry of it)
    and the search state after it (the job's ``search_state`` column: the optimizer's state without its
    trials) in one fenced transaction."""
    job = owned(session, job_id=job_id, token=token)
    record = done.record
    session.add(
        Trial(
            job_id=job_id,
            trial_index=record.index,
            status=record.status,
            value=storable(record.value),
            best_value=storable(done.best_value),
            seconds=record.seconds,
            attempt=job.attempts,
            record=storable(record.as_dict()),
            optimizer=storable(optimizer),
        )
    )
    try:
        session.flush()
    except IntegrityError as error:  # the unique (job, trial index) key: a trial must never be written twice
        raise OwnershipLost(f"{job_id}: trial {record.index} is already recorded") from error
    job.search_state = storable(state)
    headline = {"index": record.index, "value": record.value, "best_value": done.best_value}
    job.progress = storable(headline | {"finished": done.finished, "total": done.total})
    add_event(
        session,
        job_id=job_id,
        kind="trial",
        data=storable(
            headline
            | {"status": record.status, "seconds": record.seconds, "finished": done.finished, "total": done.total}
            | {"recipe": record.recipe, "attempt": job.attempts}
        ),
    )


def progress(session: Session, *, job_id: str, token: str, data: dict[str, Any]) -> None:
    owned(session, job_id=job_id, token=token)
    add_event(session, job_id=job_id, kind="progress", data=storable(data))


def finish(
    session: Session,
    *,
    job_id: str,
    token: str,
    status: JobStatus,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    job = owned(session, job_id=job_id, token=token)
    if result is not None:
        job.result = storable(result)
    set_status(session, job, status, error=storable(error))


def release(session: Session, *, job_id: str, token: str, reason: str, count_attempt: bool) -> Job:
    """Give the job back to the queue (worker stopping, or its child died); the next attempt resumes. A
    hand-over (``count_attempt`` false) still numbers the next run as a new attempt, but it does not count
    towards ``max_attempts``."""
    job = owned(session, job_id=job_id, token=token)
    if not count_attempt:
        job.handovers += 1
    job.lease_token = None
    job.worker_id = None
    job.heartbeat_at = None
    set_status(session, job, JobStatus.queued)
    add_event(session, job_id=job_id, kind="log", data={"message": storable(reason)})
    return job
