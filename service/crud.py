"""Reads and writes of the API: jobs, keys, events. Keyword-only arguments; callers own the transaction."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from adapruner.errors import UserError
from service.jobs import PruneRequest, SearchRequest
from service.models import TERMINAL, ApiKey, Event, Job, JobStatus, Trial, utcnow
from service.settings import Settings

KEY_PREFIX = "apk_"
TRIAL_KIND = "search_trial"  # the jobs of a search's trials on the worker pool (worker.trials)


class Conflict(Exception):
    """The job is in a state that does not allow the action (HTTP 409)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    session: Session, *, name: str, admin: bool = False, max_job_cost: int | None = None
) -> tuple[ApiKey, str]:
    """A new key; the plain text is returned once and only its hash is stored. ``max_job_cost`` caps the
    estimated cost of each of its jobs (``None``: the server's ``max_job_cost``)."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name, prefix=plain[: len(KEY_PREFIX) + 6], hash=hash_key(plain), admin=admin, max_job_cost=max_job_cost
    )
    session.add(key)
    session.flush()
    return key, plain


def find_api_key(session: Session, *, plain: str) -> ApiKey | None:
    key = session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(plain)))
    return None if key is None or key.revoked else key


def revoke_api_key(session: Session, *, ident: str) -> ApiKey:
    """Revoke the key with this id or prefix (as ``adapruner keys list`` shows them)."""
    match = ApiKey.id == int(ident) if ident.isdigit() else ApiKey.prefix == ident.removesuffix("...")
    found = list(session.scalars(select(ApiKey).where(match)))
    if len(found) != 1:
        raise UserError(f"key: {len(found) or 'no'} keys match {ident!r}; give an id that `adapruner keys list` shows")
    found[0].revoked = True
    return found[0]


def add_event(session: Session, *, job_id: str, kind: str, data: dict[str, Any]) -> Event:
    event = Event(job_id=job_id, kind=kind, data=data)
    session.add(event)
    return event


def set_status(session: Session, job: Job, status: JobStatus, *, error: str | None = None) -> None:
    """Move ``job`` to ``status`` with its timestamp and a state event."""
    job.status = status
    now = utcnow()
    if status == JobStatus.running:
        job.started_at = job.started_at or now
        job.heartbeat_at = now
    if status in TERMINAL:
        job.finished_at = now
        job.lease_token = None
    if error is not None:
        job.error = error
    data: dict[str, Any] = {"status": status.value, "attempt": job.attempts}
    if error:
        data["error"] = error
    add_event(session, job_id=job.id, kind="state", data=data)


def request_fields(request: PruneRequest | SearchRequest, settings: Settings) -> dict[str, Any]:
    """The columns of a job row that its request decides (a replayed Idempotency-Key must match them all)."""
    return {
        "kind": request.kind,
        "spec": request.spec.model_dump(mode="json"),
        "max_attempts": request.max_attempts or settings.max_attempts,
        "deadline_s": request.deadline_s or settings.default_deadline_s,
    }


def create_job(
    session: Session,
    *,
    owner_id: int | None,
    request: PruneRequest | SearchRequest,
    settings: Settings,
    idempotency_key: str | None = None,
) -> Job:
    """Insert a queued job (the caller commits, then enqueues)."""
    job = Job(
        id=uuid.uuid4().hex,
        owner_id=owner_id,
        idempotency_key=idempotency_key,
        status=JobStatus.queued,
        attempts=0,
        cancel_requested=False,
        **request_fields(request, settings),
    )
    session.add(job)
    session.flush()
    add_event(session, job_id=job.id, kind="state", data={"status": JobStatus.queued.value, "attempt": 0})
    return job


def find_idempotent(session: Session, *, owner_id: int | None, idempotency_key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == idempotency_key))


def visible(query, owner: ApiKey | None):
    """Restrict a job query to what ``owner`` may see (admins and the embedded mode see all)."""
    if owner is None or owner.admin:
        return query
    return query.where(Job.owner_id == owner.id)


def get_job(session: Session, *, job_id: str, owner: ApiKey | None, lock: bool = False) -> Job | None:
    query = visible(select(Job).where(Job.id == job_id), owner)
    if lock:
        query = query.with_for_update()
    return session.scalar(query)


def list_jobs(
    session: Session,
    *,
    owner: ApiKey | None,
    statuses: Sequence[JobStatus] = (),
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    query = visible(select(Job), owner)
    if kind != TRIAL_KIND:  # a search's trials are listed with their search (its /trials), not as jobs
        query = query.where(Job.kind != TRIAL_KIND)
    if statuses:
        query = query.where(Job.status.in_(list(statuses)))
    if kind is not None:
        query = query.where(Job.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return list(rows), total


def request_cancel(session: Session, *, job: Job) -> Job:
    """A queued job is cancelled at once (it will never start); a running one is asked to stop."""
    if job.status in TERMINAL:
        raise Conflict(f"job is already {job.status.value}")
    job.cancel_requested = True
    if job.status == JobStatus.queued:
        set_status(session, job, JobStatus.cancelled)
    else:
        add_event(session, job_id=job.id, kind="log", data={"message": "cancel requested"})
    return job


def retry_job(session: Session, *, job: Job) -> Job:
    """Queue a failed, cancelled or timed-out job again; a search resumes after its last finished trial."""
    if job.status not in (JobStatus.failed, JobStatus.cancelled, JobStatus.timed_out):
        raise Conflict(f"only failed, cancelled or timed-out jobs can be retried; this one is {job.status.value}")
    job.attempts = 0
    job.handovers = 0
    job.cancel_requested = False
    job.error = None
    job.finished_at = None
    job.started_at = None
    job.lease_token = None
    set_status(session, job, JobStatus.queued)
    return job


def list_trials(session: Session, *, job_id: str) -> list[Trial]:
    return list(session.scalars(select(Trial).where(Trial.job_id == job_id).order_by(Trial.trial_index)).all())


def events_after(session: Session, *, job_id: str, after: int = 0, limit: int = 500) -> list[Event]:
    query = select(Event).where(Event.job_id == job_id, Event.id > after).order_by(Event.id).limit(limit)
    return list(session.scalars(query).all())


def reusable_job(session: Session, *, job_id: str, owner_id: int | None) -> Job | None:
    """The succeeded job ``job_id`` whose artifacts a job of ``owner_id`` may start from (``model: job:<id>``):
    one of the same key's jobs, any job for an admin key; None otherwise, whether or not it exists."""
    query = select(Job).where(Job.id == job_id, Job.status == JobStatus.succeeded)
    owner = session.get(ApiKey, owner_id) if owner_id is not None else None
    if owner is None or not owner.admin:
        query = query.where(Job.owner_id.is_(None) if owner_id is None else Job.owner_id == owner_id)
    return session.scalar(query)
