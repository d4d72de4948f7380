"""``adapruner worker``: pull job ids from the Redis stream and run each attempt in a child process.

Protocol (Redis Streams consumer group; SQL is the record of truth, see :mod:`worker.lease`):
- read a new entry (``XREADGROUP``), or, every ``sweep_s`` while idle, reclaim one whose worker stopped
  heartbeating for ``claim_idle_s`` (``XAUTOCLAIM``);
- claim the job in SQL (a new lease token; a job delivered ``max_attempts`` times is dead-lettered);
- fork a child for the attempt; every ``heartbeat_s`` renew the lease in SQL and, only if that succeeded,
  reset the entry's idle time (``XCLAIM`` to ourselves); stop the child on cancel, deadline or lost lease;
- when the child ends, ack the entry if the job reached an end state, else put the job back in the queue;
- on SIGTERM stop taking jobs, stop the child within ``grace_s`` and hand the job back (it resumes
  elsewhere after its last finished trial); reconnect to Redis with backoff; reconcile (see
  :mod:`worker.reconcile`) every ``reconcile_s``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from typing import Any

import redis
from prometheus_client import Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import select

from service import queue
from service.db import make_engine, make_sessionmaker, transaction
from service.logs import configure
from service.models import Job, JobStatus
from service.settings import Settings
from worker import lease
from worker.reconcile import reconcile
from worker.runner import EXIT_LEASE_LOST, child_main, signal_when_parent_dies
from worker.trials import TRIAL_KIND, TrialHost, idle_workers

log = logging.getLogger("adapruner.worker")

JOBS = Counter("adapruner_worker_jobs", "attempts this worker ran, by how they ended", ["outcome"])
BUSY = Gauge("adapruner_worker_busy", "1 while an attempt runs")
HEARTBEAT = Gauge("adapruner_worker_heartbeat_timestamp_seconds", "time of the last successful heartbeat")


class GpuCollector(Collector):
    """GPU memory in use, read with nvidia-smi at scrape time (the worker itself never touches CUDA)."""

    def collect(self):
        family = GaugeMetricFamily("adapruner_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        if shutil.which("nvidia-smi"):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout
            for line in out.strip().splitlines():
                index, used = (x.strip() for x in line.split(","))
                family.add_metric([index], float(used) * 2**20)
        yield family


def preload() -> None:
    """Import torch, the library and every supported architecture's modeling code once, here: children
    fork from this process, so an attempt starts in milliseconds instead of importing for seconds.
    Nothing touches CUDA here (a forked child could not use it)."""
    import importlib

    import adapruner.pipeline  # noqa: F401
    import adapruner.search.run  # noqa: F401
    from adapruner.catalog import ADAPTERS

    for model_type in ADAPTERS.names():
        family = model_type.removesuffix("_text")
        try:
            importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        except ImportError:
            log.warning("preload: no modeling module for %s", model_type)
    importlib.import_module("transformers").AutoTokenizer  # noqa: B018 (resolves the lazy module)


class Worker:
    def __init__(self, settings: Settings, *, worker_id: str | None = None, parent: int | None = None) -> None:
        """``parent``: the pid of the process that started this worker (``serve --with-worker``); when it
        dies, the worker stops as on SIGTERM: its running job is handed back, then it exits."""
        self.settings = settings
        self.parent = parent
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keys = queue.Keys(settings.redis_prefix)
        self.sessions = make_sessionmaker(make_engine(settings.db_url))
        self.redis = queue.connect(settings.redis_url)
        self.stopping = False
        self.jobs_done = 0
        self.trial_host: TrialHost | None = None  # started by the first search trial this worker runs
        self.idle = idle_workers(self.redis, settings)
        self._last_sweep = self._last_reconcile = 0.0

    # -- signals ---------------------------------------------------------------------------------------
    def install_signals(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("worker %s: signal %s, stopping", self.id, signum)
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.parent is not None:
            signal_when_parent_dies(signal.SIGTERM)

    def _watch_parent(self) -> None:
        """Stop if the parent is gone (where the kernel cannot signal it, or it died before we asked)."""
        if self.parent is not None and not self.stopping and os.getppid() != self.parent:
            log.info("worker %s: parent %d is gone, stopping", self.id, self.parent)
            self.stopping = True

    # -- main loop -------------------------------------------------------------------------------------
    def run(self, *, max_jobs: int | None = None) -> None:
        if self.settings.preload:
            preload()
        if self.settings.metrics_port:
            REGISTRY.register(GpuCollector())
            start_http_server(self.settings.metrics_port)
        backoff = 0.1
        log.info("worker %s: consuming %s", self.id, self.keys.stream)
        while not self.stopping and (max_jobs is None or self.jobs_done < max_jobs):
            try:
                self.step()
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError) as error:
                log.warning("worker %s: redis unavailable (%s); retrying in %.1fs", self.id, error, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                queue.ensure_group(self.redis, self.keys)  # Redis restarted empty
        if self.trial_host is not None:
            self.trial_host.stop()
        self.idle.busy(self.id)  # no longer waiting for jobs
        log.info("worker %s: stopped after %d jobs", self.id, self.jobs_done)

    def step(self) -> None:
        self._watch_parent()
        if self.stopping:
            return
        now = time.monotonic()
        if now - self._last_reconcile >= self.settings.reconcile_s:
            self._last_reconcile = now
            reconcile(self.redis, self.keys, self.sessions, self.settings)
        entry = None
        if now - self._last_sweep >= self.settings.sweep_s:
            self._last_sweep = now
            entry = self.reclaim()
        if entry is None:
            entry = self.read()
        if entry is not None:
            self.handle(*entry)

    def read(self) -> tuple[str, str] | None:
        queue.ensure_group(self.redis, self.keys)
        self.idle.idle(self.id)  # a search's driver counts the free workers (worker.trials)
        got = self.redis.xreadgroup(
            queue.GROUP, self.id, {self.keys.stream: ">"}, count=1, block=int(self.settings.block_s * 1000)
        )
        for _stream, messages in got or []:
            for entry_id, fields in messages:
                return entry_id, fields.get("job_id", "")
        return None

    def reclaim(self) -> tuple[str, str] | None:
        """An entry whose worker stopped heartbeating (died, paused or lost) for ``claim_idle_s``."""
        queue.ensure_group(self.redis, self.keys)
        _next, messages, _deleted = self.redis.xautoclaim(
            self.keys.stream, queue.GROUP, self.id, min_idle_time=int(self.settings.claim_idle_s * 1000), count=1
        )
        for entry_id, fields in messages:
            if fields:
                log.info("worker %s: reclaimed %s", self.id, fields.get("job_id"))
                return entry_id, fields.get("job_id", "")
            self.redis.xack(self.keys.stream, queue.GROUP, entry_id)  # deleted meanwhile
        return None

    # -- one job -----------------------------------------------------------------------------------------
    def handle(self, entry_id: str, job_id: str) -> None:
        self.idle.busy(self.id)
        with transaction(self.sessions) as session:
            got = lease.claim(session, job_id=job_id, worker_id=self.id, claim_idle_s=self.settings.claim_idle_s)
            kind = session.scalar(select(Job.kind).where(Job.id == job_id))
        if got.outcome == lease.ClaimOutcome.exhausted:
            queue.dead_letter(self.redis, self.keys, job_id, entry_id, "out of attempts")
            return
        if got.outcome != lease.ClaimOutcome.started:
            queue.done(self.redis, self.keys, job_id, entry_id)
            return
        log.info("worker %s: job %s attempt %d", self.id, job_id, got.attempt, extra=self._about(job_id, got.attempt))
        BUSY.set(1)
        try:
            JOBS.labels(self.supervise(entry_id, job_id, got.token, got.attempt, kind=kind)).inc()
        finally:
            BUSY.set(0)
        self.jobs_done += 1

    def supervise(self, entry_id: str, job_id: str, token: str, attempt: int, *, kind: str | None = None) -> str:
        """Run the attempt to its end; returns how it ended (a job status, ``lost`` or ``requeued``). A search's
        trial runs in this worker's trial host (its search's model stays loaded), any other job in a new child."""
        if kind == TRIAL_KIND:
            if self.trial_host is None:
                self.trial_host = TrialHost(self.settings.model_dump_json())
            child = self.trial_host.start(job_id, token)
        else:
            if self.trial_host is not None:  # one model per worker: a search's kept model goes first
                self.trial_host.stop()
            ctx = multiprocessing.get_context("fork")
            child = ctx.Process(target=child_main, args=(job_id, token, self.settings.model_dump_json()), daemon=False)
            child.start()
        ending, lost = self._watch(child, entry_id, job_id, token, attempt)
        child.join()
        if not lost and child.exitcode == EXIT_LEASE_LOST:
            self._log_lost(job_id, "its attempt stopped at its next write")
            lost = True
        if lost:
            return "lost"  # the entry now belongs to the worker that reclaimed the job
        return self._settle(entry_id, job_id, token, exitcode=child.exitcode, ending=ending)

    def _watch(
        self, child: multiprocessing.process.BaseProcess, entry_id: str, job_id: str, token: str, attempt: int
    ) -> tuple[tuple[JobStatus, str] | None, bool]:
        """Heartbeat while the child runs; stop it on cancel, deadline, shutdown or a lost lease. Returns
        the end we decided (a status and why, or ``None``) and whether the lease was lost."""
        while child.is_alive():
            child.join(timeout=self.settings.heartbeat_s)
            if not child.is_alive():
                break
            try:
                with transaction(self.sessions) as session:
                    beat = lease.heartbeat(session, job_id=job_id, token=token)
            except lease.OwnershipLost:
                if self._ended_by(job_id, attempt):
                    break  # the child has just recorded the end; it is exiting
                self._log_lost(job_id, "stopping its attempt")
                self._stop_child(child, grace=0)
                return None, True
            HEARTBEAT.set_to_current_time()
            self._refresh(entry_id)
            self._watch_parent()
            if beat.cancel or beat.deadline_passed:
                self._stop_child(child, grace=0)
                if beat.cancel:
                    return (JobStatus.cancelled, "cancelled by request"), False
                return (JobStatus.timed_out, "deadline passed"), False
            if self.stopping:
                self._stop_child(child, grace=self.settings.grace_s)
                break
        return None, False

    def _settle(
        self, entry_id: str, job_id: str, token: str, *, exitcode: int | None, ending: tuple[JobStatus, str] | None
    ) -> str:
        """Record the attempt's end in SQL (the end we decided, or the job handed back: not counted as an
        attempt when this worker is stopping) and ack or requeue the entry; returns how it ended."""
        try:
            with transaction(self.sessions) as session:
                job = session.get(Job, job_id)
                if ending and job.lease_token == token:
                    lease.finish(session, job_id=job_id, token=token, status=ending[0], error=ending[1])
                if job.status.terminal:
                    pass
                elif job.lease_token != token:
                    return "lost"  # someone else owns it
                elif self.stopping:
                    lease.release(
                        session, job_id=job_id, token=token, reason=f"worker {self.id} stopped", count_attempt=False
                    )
                else:
                    reason = f"worker {self.id}: the attempt ended with exit code {exitcode}"
                    lease.release(session, job_id=job_id, token=token, reason=reason, count_attempt=True)
        except lease.OwnershipLost:
            return "lost"
        if job.status.terminal:
            queue.done(self.redis, self.keys, job_id, entry_id)
            return job.status.value
        queue.enqueue(self.redis, self.keys, job_id, replaces=entry_id)
        return "requeued"

    def _about(self, job_id: str, attempt: int | None = None) -> dict:
        return {"job_id": job_id, "worker_id": self.id} | ({"attempt": attempt} if attempt else {})

    def _ended_by(self, job_id: str, attempt: int) -> bool:
        """Whether the job ended with no later attempt started: this attempt (or the API) ended it."""
        with transaction(self.sessions) as session:
            job = session.get(Job, job_id)
            return job.status.terminal and job.attempts == attempt

    def _log_lost(self, job_id: str, what: str) -> None:
        log.warning("worker %s: lost the lease of %s; %s", self.id, job_id, what, extra=self._about(job_id))

    def _refresh(self, entry_id: str) -> None:
        """Reset the entry's idle time so that no other worker reclaims it while we heartbeat."""
        try:
            self.redis.xclaim(
                self.keys.stream, queue.GROUP, self.id, min_idle_time=0, message_ids=[entry_id], justid=True
            )
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
            log.warning("worker %s: could not refresh entry %s: %s", self.id, entry_id, error)

    @staticmethod
    def _stop_child(child: multiprocessing.process.BaseProcess, *, grace: float) -> None:
        if grace > 0 and child.is_alive():
            child.terminate()
            child.join(grace)
        if child.is_alive():
            child.kill()
        child.join()


def main(settings: Settings | None = None, *, max_jobs: int | None = None, parent: int | None = None) -> None:
    configure()
    worker = Worker(settings or Settings.from_env(), parent=parent)
    worker.install_signals()
    worker.run(max_jobs=max_jobs)
