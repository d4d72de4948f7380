"""Republish from SQL every job that should be in the stream and is not.

A job is carried by a stream entry from the moment it is queued until it ends. The entry can be lost
(Redis restarted empty, the API committed a job and died before enqueueing it); the job row never is.
Every ``reconcile_s`` one worker (a Redis lock) compares the queued jobs, and the running jobs whose
heartbeat is older than ``claim_idle_s``, with the ``:enqueued`` hash, and enqueues the missing ones.
A duplicate entry is harmless: a claim finds the job running under a live lease and drops it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service import queue
from service.db import transaction
from service.models import Job, JobStatus, utcnow
from service.settings import Settings

log = logging.getLogger("adapruner.reconcile")


def missing_jobs(session: Session, *, enqueued: set[str], claim_idle_s: float) -> list[str]:
    stale = utcnow() - timedelta(seconds=claim_idle_s)
    rows = session.execute(
        select(Job.id, Job.status, Job.heartbeat_at).where(Job.status.in_([JobStatus.queued, JobStatus.running]))
    ).all()
    out = []
    for job_id, status, beat in rows:
        if job_id in enqueued:
            continue
        if status == JobStatus.running and beat is not None and beat > stale:
            continue
        out.append(job_id)
    return out


def reconcile(client: redis.Redis, keys: queue.Keys, sessions: sessionmaker[Session], settings: Settings) -> list[str]:
    """Enqueue the missing jobs; returns their ids (empty when another worker holds the lock)."""
    if not client.set(keys.reconcile_lock, "1", nx=True, px=max(1, int(settings.reconcile_s * 1000 * 0.9))):
        return []
    enqueued = set(client.hkeys(keys.enqueued))
    with transaction(sessions) as session:
        missing = missing_jobs(session, enqueued=enqueued, claim_idle_s=settings.claim_idle_s)
    for job_id in missing:
        queue.enqueue(client, keys, job_id)
    if missing:
        log.info("reconcile: republished %d jobs", len(missing))
    return missing
