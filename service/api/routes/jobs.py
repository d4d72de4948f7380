"""``/v1/jobs``: submit, list, read, follow (server-sent events), cancel, retry, download."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Annotated, Literal

import redis
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service import admission, crud, queue
from service.api.deps import KeyDep, RedisDep, SessionDep, SettingsDep
from service.db import transaction
from service.models import Artifact, Job, JobStatus
from service.schemas import ArtifactOut, EventOut, JobOut, JobPage, JobRequest, TrialOut
from service.settings import Settings

router = APIRouter(prefix="/jobs", tags=["jobs"])
# largest offset or row id a query may name: SQL integers are signed 64-bit
ROW_MAX = 2**63 - 1
log = logging.getLogger("adapruner.api")

KEEPALIVE_S = 15.0


def unprocessable(loc: list[str | int], msg: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, [{"loc": ["body", *loc], "msg": msg, "type": "value_error"}]
    )


def check_budget(session, request: JobRequest, key, settings: Settings) -> None:
    """The server's limits, cost and source confinement (service.admission), as a 422 naming the field."""
    try:
        admission.admit(
            session, request=request, owner_id=key.id, settings=settings, cost_limit=key.max_job_cost
        )
    except admission.Refused as error:
        raise unprocessable(list(error.loc), error.msg) from None


def found(session, job_id: str, key, *, lock: bool = False) -> Job:
    job = crud.get_job(session, job_id=job_id, owner=key, lock=lock)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return job


def transition(session, job_id: str, key, change: Callable[..., Job]) -> Job:
    """The job after ``change(session, job=job)`` (a crud state change on the locked row), committed; a
    :class:`crud.Conflict` (the job's state does not allow it) is a 409."""
    job = found(session, job_id, key, lock=True)
    try:
        change(session, job=job)
    except crud.Conflict as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    session.commit()
    return job


def publish(client: redis.Redis, settings: Settings, job_id: str) -> None:
    """Enqueue after commit; if Redis is down the reconciler publishes the job later."""
    try:
        queue.enqueue(client, queue.Keys(settings.redis_prefix), job_id)
    except redis.RedisError as error:
        log.warning("job %s committed but not enqueued (%s); the reconciler will publish it", job_id, error)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def submit(
    request: JobRequest,
    session: SessionDep,
    key: KeyDep,
    settings: SettingsDep,
    client: RedisDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Job:
    """Record a job and queue it. With ``Idempotency-Key``, repeating the same request returns the same job."""
    check_budget(session, request, key, settings)
    if idempotency_key:
        existing = crud.find_idempotent(session, owner_id=key.id, idempotency_key=idempotency_key)
        if existing is not None:
            return _replay(existing, request, settings, response)
    try:
        job = crud.create_job(
            session, owner_id=key.id, request=request, settings=settings, idempotency_key=idempotency_key
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = crud.find_idempotent(session, owner_id=key.id, idempotency_key=idempotency_key)
        if existing is None:
            raise
        return _replay(existing, request, settings, response)
    publish(client, settings, job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


def _replay(existing: Job, request: JobRequest, settings: Settings, response: Response) -> Job:
    """The job an earlier request with this Idempotency-Key made; 409 if this body asks something else."""
    asked = crud.request_fields(request, settings)
    differ = [name for name, value in asked.items() if getattr(existing, name) != value]
    if differ:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"this Idempotency-Key was used for a different request ({', '.join(differ)} differ); use a new key",
        )
    response.headers["Location"] = f"/v1/jobs/{existing.id}"
    return existing


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    key: KeyDep,
    status_: Annotated[list[JobStatus], Query(alias="status")] = [],  # noqa: B006 (FastAPI query list)
    kind: Annotated[Literal["search", "prune"] | None, Query(description="only jobs of this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=ROW_MAX)] = 0,
) -> JobPage:
    jobs, total = crud.list_jobs(session, owner=key, statuses=status_, kind=kind, limit=limit, offset=offset)
    return JobPage(items=[JobOut.model_validate(j) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, request: Request, key: KeyDep) -> JobOut:
    """The job's state, progress and result (the endpoint pipelines poll: one thread hop, one query)."""

    def read() -> JobOut:
        with request.app.state.reads() as session:
            return JobOut.model_validate(found(session, job_id, key))

    return await run_in_threadpool(read)


@router.get("/{job_id}/trials", response_model=list[TrialOut])
def get_trials(job_id: str, session: SessionDep, key: KeyDep):
    found(session, job_id, key)
    return crud.list_trials(session, job_id=job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel(job_id: str, session: SessionDep, key: KeyDep) -> Job:
    """A queued job is cancelled at once; a running one stops within a heartbeat."""
    return transition(session, job_id, key, crud.request_cancel)


@router.post("/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def retry(job_id: str, session: SessionDep, key: KeyDep, settings: SettingsDep, client: RedisDep) -> Job:
    """Queue a failed, cancelled or timed-out job again; a search resumes after its last finished trial."""
    job = transition(session, job_id, key, crud.retry_job)
    publish(client, settings, job.id)
    return job


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def events(
    job_id: str,
    request: Request,
    key: KeyDep,
    after: Annotated[int, Query(ge=0, le=ROW_MAX, description="only events with a larger id")] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=ROW_MAX)] = None,
):
    """Server-sent events: ``state``, ``trial``, ``progress`` and ``log``, from ``after`` (or the
    ``Last-Event-ID`` a reconnecting browser sends) until the job has ended."""
    sessions = request.app.state.sessions
    settings: Settings = request.app.state.settings

    def read(since: int):
        with transaction(sessions) as session:
            job = found(session, job_id, key)
            rows = crud.events_after(session, job_id=job_id, after=since)
            return job.status.terminal, [EventOut.model_validate(e) for e in rows]

    await run_in_threadpool(read, 0)  # 404 before the stream starts

    async def stream():
        since = last_event_id if last_event_id is not None else after
        quiet = 0.0
        yield f"retry: {int(settings.sse_poll_s * 4000)}\n\n"
        while not await request.is_disconnected():
            ended, rows = await run_in_threadpool(read, since)
            for event in rows:
                since = event.id
                yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.model_dump(mode='json'))}\n\n"
            if ended and not rows:
                yield "event: end\ndata: {}\n\n"
                return
            quiet = 0.0 if rows else quiet + settings.sse_poll_s
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(settings.sse_poll_s)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut])
def artifacts(job_id: str, session: SessionDep, key: KeyDep) -> list[ArtifactOut]:
    found(session, job_id, key)
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.path)).all()
    return [ArtifactOut(path=a.path, size=a.size, url=f"/v1/jobs/{job_id}/artifacts/{a.path}") for a in rows]


@router.get("/{job_id}/artifacts/{path:path}")
def download(job_id: str, path: str, request: Request, session: SessionDep, key: KeyDep):
    """Stream one artifact file. Only files the job recorded can be read: no path leaves the job's folder."""
    found(session, job_id, key)
    row = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.path == path))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no artifact {path!r}")
    return request.app.state.artifacts.response(job_id, path)
