"""A search's trials on the worker pool (issue 21 item 1): the same Redis stream and SQL rows as any job.

The driver (the search job's attempt, ``search.parallel > 1``) hands each trial to :class:`PoolExecutor`,
which writes it as a job row of kind ``search_trial`` (spec: the search job's id and the
:class:`~adapruner.search.executor.TrialTask`) and enqueues it; any worker claims it under a lease like
any job, so a trial whose worker dies is reclaimed and run again, one that keeps killing its worker is
dead-lettered, and the reconciler republishes one that Redis lost. The trial's
:class:`~adapruner.search.records.TrialRecord` comes back as the trial job's ``result``; the driver
alone tells the optimiser and writes the search's trial rows (unique per job and trial index).

A trial job's id is derived from the search job, the trial index and its parameters: a driver that died
and resumes re-issues its pending trials under the same ids, so a trial that finished meanwhile is not
run again, and one asked anew with other parameters is a new job (the old one's result is never read).

A worker runs trial attempts in one long-lived child (:class:`TrialHost`), not a fresh fork per attempt,
and that child keeps the search's :class:`~adapruner.search.run.TrialContext` (the dense model, the pools,
the validation text) between its trials. Pools come from the statistics cache under the worker's home,
keyed by model fingerprint: the driver's warm-up writes them to its host's cache and publishes them to the
artifact store (``stats-<fingerprint>``: a folder of the local store, objects in S3), from which a trial
worker on another host copies them into its own cache before its first trial of the search.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from pydantic import Field
from sqlalchemy import func, select

from adapruner.config import SearchJob, StrictModel
from adapruner.errors import UserError
from adapruner.search.executor import TrialExecutor, TrialTask
from adapruner.search.records import TrialRecord
from service import queue
from service.crud import TRIAL_KIND, add_event
from service.db import transaction
from service.models import TERMINAL, Job, JobStatus
from service.settings import Settings
from worker import lease

log = logging.getLogger("adapruner.worker")
POLL_S = 0.2  # how often a waiting driver reads its trials' rows
_NAMESPACE = uuid.UUID("6f1d7c84-3c1e-4f43-9d0e-9a3c2b1e5a77")


class TrialSpec(StrictModel):
    """A trial job's spec: the search job it belongs to and the task (a ``TrialTask`` as JSON)."""

    search: str = Field(min_length=1, max_length=32)
    task: dict[str, Any]


def trial_job_id(search_id: str, task: TrialTask) -> str:
    """The id of the trial job of ``task`` in search ``search_id``: the same for the same index and parameters."""
    params = json.dumps(task.params, sort_keys=True)
    return uuid.uuid5(_NAMESPACE, f"{search_id}:{task.index}:{params}").hex


class IdleWorkers:
    """Which workers are waiting for a job: each marks itself idle (a Redis sorted set, member the worker id,
    score the time) every time it reads the stream, and busy when it takes an entry; a mark older than
    ``fresh_s`` is a worker that stopped or died."""

    def __init__(self, client, keys: queue.Keys, *, fresh_s: float) -> None:
        self.client, self.key, self.fresh_s = client, f"{keys.prefix}:workers:idle", fresh_s

    def idle(self, worker_id: str) -> None:
        self.client.zadd(self.key, {worker_id: time.time()})

    def busy(self, worker_id: str) -> None:
        """Best effort: a mark Redis could not drop goes stale within ``fresh_s``."""
        try:
            self.client.zrem(self.key, worker_id)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            log.warning("worker %s: could not mark itself busy: %s", worker_id, error)

    def count(self) -> int:
        now = time.time()
        self.client.zremrangebyscore(self.key, "-inf", now - 10 * self.fresh_s)  # long gone
        return int(self.client.zcount(self.key, now - self.fresh_s, "+inf"))


def idle_workers(client, settings: Settings) -> IdleWorkers:
    """The pool's idle marks; fresh for a few reads' blocking time (``block_s``)."""
    return IdleWorkers(client, queue.Keys(settings.redis_prefix), fresh_s=max(3 * settings.block_s, 2.0))


class PoolExecutor(TrialExecutor):
    """The trials of search job ``search_id`` (whose attempt holds lease ``token``) as ``search_trial`` jobs,
    as many in flight as there are free workers (idle ones not yet given one of these trials), at least one
    and at most ``search.parallel``. A trial job that fails stops the search with its error, as a trial
    that raises does in one process."""

    def __init__(self, factory, settings: Settings, *, search_id: str, token: str, job: SearchJob) -> None:
        self.factory, self.settings, self.search_id, self.token = factory, settings, search_id, token
        self.parallel = job.search.parallel
        self.keys = queue.Keys(settings.redis_prefix)
        self.redis = queue.connect(settings.redis_url)
        self.idle = idle_workers(self.redis, settings)
        self.in_flight: dict[str, int] = {}  # trial job id -> trial index

    def capacity(self, in_flight: int) -> int:
        if in_flight >= self.parallel:
            return self.parallel
        with transaction(self.factory) as session:
            waiting = session.scalar(
                select(func.count()).where(Job.id.in_(list(self.in_flight)), Job.status == JobStatus.queued)
            )
        free = self.idle.count() - (waiting or 0)
        return max(1, min(self.parallel, in_flight + free))

    def submit(self, task: TrialTask) -> None:
        trial_id = trial_job_id(self.search_id, task)
        with transaction(self.factory) as session:
            search = lease.owned(session, job_id=self.search_id, token=self.token)  # a stale driver writes nothing
            job = session.get(Job, trial_id)
            if job is None:
                job = Job(
                    id=trial_id,
                    owner_id=search.owner_id,
                    kind=TRIAL_KIND,
                    spec=TrialSpec(search=self.search_id, task=task.as_dict()).model_dump(mode="json"),
                    status=JobStatus.queued,
                    attempts=0,
                    cancel_requested=False,
                    deadline_s=search.deadline_s,
                    max_attempts=search.max_attempts,
                )
                session.add(job)
                session.flush()
                add_event(session, job_id=trial_id, kind="state", data={"status": "queued", "attempt": 0})
            queued = job.status == JobStatus.queued
        if queued:  # a duplicate entry of a queued job is harmless: the second claim drops it
            queue.enqueue(self.redis, self.keys, trial_id)
        self.in_flight[trial_id] = task.index

    def wait(self) -> list[TrialRecord]:
        while True:
            with transaction(self.factory) as session:
                lease.owned(session, job_id=self.search_id, token=self.token)
                rows = session.execute(
                    select(Job.id, Job.status, Job.result, Job.error).where(
                        Job.id.in_(list(self.in_flight)), Job.status.in_(list(TERMINAL))
                    )
                ).all()
            if rows:
                return [self._outcome(*row) for row in rows]
            time.sleep(POLL_S)

    def _outcome(self, trial_id: str, status: JobStatus, result: dict | None, error: str | None) -> TrialRecord:
        index = self.in_flight.pop(trial_id)
        if status != JobStatus.succeeded:
            raise RuntimeError(f"trial {index} (job {trial_id}) {status.value}: {error}")
        return TrialRecord.from_dict(result["record"])


def executor_for(attempt: Any, job: SearchJob):
    """The executor factory a search attempt passes to ``run_search``: for ``search.parallel > 1`` the pool,
    once the driver's warm-up has published its pools; else None (the trials run in the attempt's own
    process, one after another)."""
    if job.search.parallel == 1:
        return None

    def pool(run) -> PoolExecutor:
        share_pools(run.loaded.model, attempt.settings)
        return PoolExecutor(attempt.factory, attempt.settings, search_id=attempt.job_id, token=attempt.token, job=job)

    return pool


# ---- the pools, shared through the artifact store ----------------------------------------------------
POOLS = "stats-"  # the artifact store's folder of a model's pools: stats-<model fingerprint>


def stats_cache(settings: Settings) -> Path:
    """Where this host caches pools (``<model fingerprint>/<pool key>.pt``, see ``adapruner.search.cache``)."""
    return settings.home / "cache" / "stats"


def share_pools(model: Any, settings: Settings) -> None:
    """Publish this host's cached pools of ``model`` (the driver's warm-up wrote them) to the artifact store,
    keyed by the model's fingerprint, for trial workers on other hosts."""
    from adapruner.search.cache import model_fingerprint
    from service.storage import artifact_store

    fingerprint = model_fingerprint(model)
    store = artifact_store(settings)
    _copy_new(stats_cache(settings) / fingerprint, store.folder(POOLS + fingerprint))
    store.publish(POOLS + fingerprint)


def fetch_pools(model: Any, settings: Settings) -> None:
    """Copy the published pools of ``model`` into this host's cache (those it lacks), before a trial
    context reads them."""
    from adapruner.search.cache import model_fingerprint
    from service.storage import artifact_store

    fingerprint = model_fingerprint(model)
    _copy_new(artifact_store(settings).local_copy(POOLS + fingerprint), stats_cache(settings) / fingerprint)


def _copy_new(source: Path, target: Path) -> None:
    """Every pool file of ``source`` that ``target`` lacks, linked (or copied) in whole or not at all."""
    if source.resolve() == target.resolve():
        return
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.pt"):
        if (target / path.name).exists():
            continue
        partial = target / f"{path.name}.{os.getpid()}.tmp"
        try:
            os.link(path, partial)
        except OSError:  # another filesystem
            shutil.copyfile(path, partial)
        partial.replace(target / path.name)


# ---- the worker's side -------------------------------------------------------------------------------
_CONTEXT: dict[str, Any] = {}  # in a TrialHost: {"key": the search job id and spec, "context": TrialContext}


def search_of(factory, spec: TrialSpec, settings: Settings) -> SearchJob:
    """The trial's search job, its sources checked for the search's owner as the search's were; a UserError
    when the search has ended (its driver wants no more trials)."""
    from service.admission import check_sources

    with transaction(factory) as session:
        search = session.get(Job, spec.search)
        if search is None or search.status in TERMINAL:
            state = "is gone" if search is None else f"is {search.status.value}"
            raise UserError(f"search: job {spec.search} {state}; its trial is not run")
        job = SearchJob.model_validate(search.spec)
        check_sources(session, spec=job, owner_id=search.owner_id, settings=settings)
    return job


def trial_context(search_id: str, job: SearchJob, settings: Settings, load) -> Any:
    """The search's trial context, kept in this process between its trials (one search at a time: a trial
    of another search replaces it). ``load(job)`` loads the dense model."""
    from adapruner.search.run import TrialContext

    key = f"{search_id}:{job.model_dump_json()}"
    if _CONTEXT.get("key") != key:
        _CONTEXT.clear()
        loaded = load(job)
        fetch_pools(loaded.model, settings)
        context = TrialContext.build(job, loaded=loaded, cache_dir=stats_cache(settings))
        _CONTEXT.update(key=key, context=context)
        log.info("trial host %d: built the trial context of search %s", os.getpid(), search_id)
    return _CONTEXT["context"]


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial attempt gives back: the trial's record (the trial job's ``result``)."""

    record: TrialRecord

    def result(self) -> dict[str, Any]:
        return {"record": self.record.as_dict()}


class TrialHost:
    """One long-lived child of a worker that runs its ``search_trial`` attempts one after another (see the
    module's docstring). Started on the first trial; a new one after it died or was stopped."""

    def __init__(self, settings_json: str) -> None:
        self.settings_json = settings_json
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.conn: multiprocessing.connection.Connection | None = None

    def start(self, job_id: str, token: str) -> HostedAttempt:
        from worker.runner import host_main

        if self.proc is None or not self.proc.is_alive():
            ctx = multiprocessing.get_context("fork")
            self.conn, theirs = ctx.Pipe()
            self.proc = ctx.Process(target=host_main, args=(theirs, self.settings_json), daemon=False)
            self.proc.start()
            theirs.close()
        self.conn.send((job_id, token))
        return HostedAttempt(self)

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join()
        self.proc = self.conn = None


class HostedAttempt:
    """One attempt running in a :class:`TrialHost`, with the process methods the worker's supervision uses
    (``is_alive``, ``join``, ``exitcode``, ``terminate``, ``kill``): it ends when the host replies with the
    attempt's exit code, or when the host dies (its exit code then)."""

    def __init__(self, host: TrialHost) -> None:
        self.host = host
        self.exitcode: int | None = None

    def _poll(self, timeout: float | None) -> None:
        if self.exitcode is not None:
            return
        proc, conn = self.host.proc, self.host.conn
        ready = multiprocessing.connection.wait([conn, proc.sentinel], timeout)
        if conn in ready:
            try:
                self.exitcode = int(conn.recv())
                return
            except EOFError:
                pass
        if proc.sentinel in ready or not proc.is_alive():
            proc.join()
            self.exitcode = proc.exitcode if proc.exitcode is not None else -9
            self.host.stop()

    def is_alive(self) -> bool:
        self._poll(0)
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        self._poll(timeout)

    def terminate(self) -> None:
        self.kill()

    def kill(self) -> None:
        if self.exitcode is None:
            self.host.stop()
            self.exitcode = -9
