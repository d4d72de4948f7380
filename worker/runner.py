"""The child process that runs one attempt at a job.

It opens its own database connections (never the parent's), restores a search's state from SQL (the
record of truth, whatever host ran the earlier attempts), writes every finished trial through the fenced
lease, and finally records the result. Exit codes: 0 the job reached a recorded end state, 3 the lease
was lost (another worker owns the job now), anything else a crash that the parent handles.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete

from adapruner.errors import UserError
from service.admission import check_sources
from service.confine import job_reference
from service.db import make_engine, make_sessionmaker, transaction
from service.jobs import JOB_SPECS
from service.models import Artifact, Job, JobStatus
from service.settings import Settings
from service.storage import artifact_store
from worker import lease
from worker.trials import (
    TRIAL_KIND,
    TrialOutcome,
    TrialSpec,
    executor_for,
    search_of,
    stats_cache,
    trial_context,
)

EXIT_LEASE_LOST = 3
log = logging.getLogger("adapruner.worker")
PROGRESS_EVERY_S = 1.0


def signal_when_parent_dies(signum: int = signal.SIGKILL) -> None:
    """Linux: the kernel sends ``signum`` to this process when its parent dies (PR_SET_PDEATHSIG). An
    attempt's child is killed with its worker (no orphan keeps the GPU); a worker started by ``serve`` is
    sent SIGTERM, so it hands its job back. Elsewhere a no-op (the worker also polls its parent)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum)
    except (OSError, AttributeError):
        pass


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a report kept on the job row (the whole report is an artifact)."""
    keep = ("ratio_target", "ratio_achieved", "params_before", "params_after", "dense", "pruned", "best", "timings")
    out = {k: report[k] for k in keep if k in report}
    for side in ("dense", "pruned"):
        if isinstance(out.get(side), dict):
            out[side] = {k: v for k, v in out[side].items() if k in ("perplexity", "params", "speed")}
    return out


def artifact_rows(job_id: str, settings: Settings) -> list[Artifact]:
    """Publish the job's files to the artifact store and describe them for the job row."""
    files = artifact_store(settings).publish(job_id)
    return [Artifact(job_id=job_id, path=path, size=size) for path, size in files]


def checked_job(factory, kind: str, spec: dict[str, Any], owner_id: int | None, settings: Settings):
    """The job's config, refused (:class:`~service.confine.SourceRefused`) before anything is read when it names
    a model or data its owner may not read, and the model of ``job:<id>`` loaded from that job's artifacts
    (else None: the pipeline loads the model)."""
    config = job_kind(kind).config.model_validate(spec)
    if kind == TRIAL_KIND:  # checked, and its model loaded, for its search (worker.trials.search_of)
        return config, None
    with transaction(factory) as session:
        check_sources(session, spec=config, owner_id=owner_id, settings=settings)
    if job_reference(config.model.source) is None:
        return config, None
    return config, load_job_model(config, settings)


def load_job_model(config: Any, settings: Settings) -> Any:
    """The model of ``config.model``; that of ``job:<id>`` from that job's artifacts."""
    from adapruner.models import load_model

    reference = job_reference(config.model.source)
    if reference is None:
        return load_model(config.model)
    folder = artifact_store(settings).local_copy(reference)
    loaded = load_model(config.model.model_copy(update={"source": str(folder)}))
    loaded.name = config.model.source
    return loaded


def user_error(exc: Exception, settings: Settings) -> str:
    """The one-line reason a job failed on its input. Confined, a model that cannot be loaded is reported
    without the loader's text, which can tell what exists on the worker's host (logged for the operator)."""
    from adapruner.models.loading import ModelLoadError

    line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if isinstance(exc, ValidationError):  # its first line only counts the errors: name each field and why
        line += ": " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if settings.confine and isinstance(exc, ModelLoadError):
        log.warning("model load failed: %s", line)
        return (
            "ModelLoadError: model: cannot load the model; check that it is a supported model folder, .gguf "
            "file or hub id (org/name) that this worker can reach"
        )
    return line


@dataclass(frozen=True)
class Attempt:
    """One attempt at a job, as a job kind's runner sees it: the lease (``job_id``, ``token``) its writes are
    fenced by, the database, the worker's settings, the job's folder ``out`` and its progress callback."""

    factory: Any
    job_id: str
    token: str
    settings: Settings
    out: Path
    progress: Callable[[str, int, int], None]


def run_prune_job(config: Any, loaded: Any, attempt: Attempt) -> Any:
    from adapruner.pipeline import run_prune

    return run_prune(config, out=attempt.out, loaded=loaded, progress=attempt.progress)


def run_search_job(config: Any, loaded: Any, attempt: Attempt) -> Any:
    from adapruner.search.run import run_search
    from worker.store import LeaseStore

    # SQL is the record of truth: the trials' rows and the job's search_state column, no local file.
    store = LeaseStore(attempt.factory, job_id=attempt.job_id, token=attempt.token, job=config)
    return run_search(
        config,
        out=attempt.out,
        store=store,
        loaded=loaded,
        consume=True,  # a model of job:<id> is this attempt's own: pruned in place, never copied
        progress=attempt.progress,
        cache_dir=stats_cache(attempt.settings),
        executor=executor_for(attempt, config),  # search.parallel > 1: its trials on the worker pool
    )


def run_trial_job(config: TrialSpec, loaded: Any, attempt: Attempt) -> TrialOutcome:
    """One trial of a search (a ``search_trial`` job), on the search's context kept in this process."""
    from adapruner.search.executor import TrialTask
    from adapruner.search.run import run_one

    job = search_of(attempt.factory, config, attempt.settings)
    context = trial_context(config.search, job, attempt.settings, lambda j: load_job_model(j, attempt.settings))
    return TrialOutcome(run_one(context, TrialTask.from_dict(config.task)))


def report_summary(outcome: Any) -> dict[str, Any]:
    return summary(outcome.report)


@dataclass(frozen=True)
class JobKind:
    """A job kind: its config class (the job row's ``spec``), the function that runs an attempt at it
    (``run(config, loaded, attempt)`` -> an outcome), what of the outcome the job row keeps (``result``) and
    whether the job's folder is published as its artifacts."""

    config: type[BaseModel]
    run: Callable[[Any, Any, Attempt], Any]
    result: Callable[[Any], dict[str, Any]] = report_summary
    publishes: bool = True


#: Every job kind the worker runs, one entry each; the configs are the service's (``service.jobs.JOB_SPECS``),
#: but for a search's trials, which only a search's driver submits (``worker.trials``).
JOB_KINDS: dict[str, JobKind] = {
    "prune": JobKind(JOB_SPECS["prune"], run_prune_job),
    "search": JobKind(JOB_SPECS["search"], run_search_job),
    TRIAL_KIND: JobKind(TrialSpec, run_trial_job, result=TrialOutcome.result, publishes=False),
}


def job_kind(kind: str) -> JobKind:
    """The registered job kind ``kind``; an unknown one is a :class:`UserError` listing the valid kinds."""
    if kind not in JOB_KINDS:
        raise UserError(f"kind: unknown job kind {kind!r}; valid: {', '.join(JOB_KINDS)}")
    return JOB_KINDS[kind]


def progress_writer(factory, job_id: str, token: str) -> Callable[[str, int, int], None]:
    """A progress callback that writes ``{stage, done, total}`` through the lease, at most once per
    ``PROGRESS_EVERY_S`` (the last step of a stage always)."""
    last = {"t": 0.0}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last["t"] < PROGRESS_EVERY_S:
            return
        last["t"] = now
        with transaction(factory) as session:
            lease.progress(session, job_id=job_id, token=token, data={"stage": stage, "done": done, "total": total})

    return progress


_FACTORIES: dict[tuple[int, str], Any] = {}  # a trial host runs many attempts: one engine per process and database


def _factory(db_url: str):
    """This process's session factory of ``db_url`` (keyed by pid: a forked child never uses its parent's
    connections)."""
    key = (os.getpid(), db_url)
    if key not in _FACTORIES:
        _FACTORIES[key] = make_sessionmaker(make_engine(db_url))
    return _FACTORIES[key]


def run_attempt(job_id: str, token: str, settings: Settings) -> int:
    """Run one attempt through the job kind's runner; returns the process exit code."""
    factory = _factory(settings.db_url)
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        kind, spec, owner_id = job.kind, job.spec, job.owner_id
    out = settings.artifacts / job_id
    if kind != TRIAL_KIND:  # a trial writes no files
        out.mkdir(parents=True, exist_ok=True)
    attempt = Attempt(factory, job_id, token, settings, out, progress_writer(factory, job_id, token))
    try:
        config, loaded = checked_job(factory, kind, spec, owner_id, settings)
        outcome = job_kind(kind).run(config, loaded, attempt)
        status, error, result = JobStatus.succeeded, None, job_kind(kind).result(outcome)
    except lease.OwnershipLost:
        return EXIT_LEASE_LOST
    except (UserError, ValidationError) as exc:
        status, error, result = JobStatus.failed, user_error(exc, settings), None
    except Exception as exc:  # a bug or a broken model: recorded with its traceback, not retried
        tail = "".join(traceback.format_exception(exc)[-3:])
        status, error, result = JobStatus.failed, f"{type(exc).__name__}: {exc}\n{tail}", None
    try:
        publish = status == JobStatus.succeeded and job_kind(kind).publishes
        rows = artifact_rows(job_id, settings) if publish else []
        with transaction(factory) as session:
            lease.finish(session, job_id=job_id, token=token, status=status, error=error, result=result)
            if publish:
                session.execute(delete(Artifact).where(Artifact.job_id == job_id))
                session.add_all(rows)
    except lease.OwnershipLost:
        return EXIT_LEASE_LOST
    return 0


def _become_child() -> None:
    signal_when_parent_dies()
    os.setsid()  # terminal signals go to the worker, which decides what the job does
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _attempt(job_id: str, token: str, settings: Settings) -> int:
    """Run one attempt (confined: in an empty working directory); its exit code."""
    with tempfile.TemporaryDirectory(prefix="adapruner-attempt-") as empty:
        if settings.confine:  # a relative name (a hub id) must never find a folder of the worker's directory
            absolute = {"home": settings.home.resolve(), "artifacts_dir": settings.artifacts.resolve()}
            settings = settings.model_copy(update=absolute)
            os.chdir(empty)
        code = run_attempt(job_id, token, settings)
        os.chdir("/")
    sys.stdout.flush()
    return code


def child_main(job_id: str, token: str, settings_json: str) -> None:
    """Entry point of the forked child."""
    _become_child()
    os._exit(_attempt(job_id, token, Settings.model_validate_json(settings_json)))


def host_main(conn, settings_json: str) -> None:
    """Entry point of a worker's :class:`~worker.trials.TrialHost`: run each ``(job_id, token)`` received on
    ``conn`` as an attempt and send back its exit code, until the worker closes the pipe."""
    _become_child()
    settings = Settings.model_validate_json(settings_json)
    while True:
        try:
            job_id, token = conn.recv()
        except EOFError:
            os._exit(0)
        try:
            code = _attempt(job_id, token, settings)
        except Exception:  # noqa: BLE001 (run_attempt records the job's errors; this is a bug of its own)
            log.exception("trial host: attempt at %s crashed", job_id)
            code = 1
        conn.send(code)
