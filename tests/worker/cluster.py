"""Workers as real subprocesses against the machine's PostgreSQL and Redis, running small CPU jobs
(shared by the worker and service tests and by bench/queue.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from service import crud, queue
from service.db import make_engine, make_sessionmaker, transaction
from service.jobs import SearchRequest
from service.models import Job, Trial
from service.settings import Settings, settings_env
from tests.conftest import tiny_search_spec

ROOT = Path(__file__).resolve().parents[2]


def search_request(
    model_dir: Path, texts: dict[str, str], *, trials: int, budget_s: float | None = None, **options
) -> SearchRequest:
    """A search on a tiny random LLaMA (``tests.conftest.tiny_search_spec``). ``budget_s``: stop after this
    many seconds of searching instead (with ``trials`` out of reach), for a job that must run a while whatever
    the machine's speed."""
    search = None if budget_s is None else {"time_budget_s": budget_s}
    spec = tiny_search_spec(texts, model=str(model_dir), trials=trials, top_k=1, search=search)
    return SearchRequest.model_validate({"kind": "search", "spec": spec} | options)


class Cluster:
    """One test's database, Redis namespace and worker subprocesses."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.keys = queue.Keys(settings.redis_prefix)
        self.sessions = make_sessionmaker(make_engine(settings.db_url))
        self.redis = queue.connect(settings.redis_url)
        self.logs = logs
        self.workers: list[subprocess.Popen] = []

    def start_worker(self, **overrides) -> subprocess.Popen:
        settings = self.settings.model_copy(update=overrides)
        env = os.environ | settings_env(settings) | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        log = open(self.logs / f"worker-{len(self.workers)}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.workers.append(proc)
        return proc

    def submit(self, request, *, enqueue: bool = True) -> str:
        with transaction(self.sessions) as session:
            job = crud.create_job(session, owner_id=None, request=request, settings=self.settings)
        if enqueue:
            queue.enqueue(self.redis, self.keys, job.id)
        return job.id

    def job(self, job_id: str) -> Job:
        with transaction(self.sessions) as session:
            return session.get(Job, job_id)

    def trials(self, job_id: str) -> list[Trial]:
        with transaction(self.sessions) as session:
            return list(session.scalars(select(Trial).where(Trial.job_id == job_id).order_by(Trial.trial_index)))

    def wait(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.log_tail()}")

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 120) -> Job:
        self.wait(lambda: self.job(job_id).status.value in statuses, timeout=timeout, what=f"{job_id} in {statuses}")
        return self.job(job_id)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()


def prune_request(model_dir: Path, texts: dict[str, str]):
    """A prune job on a tiny random LLaMA: about 0.2 s of work on the CPU."""
    from service.jobs import PruneRequest

    return PruneRequest.model_validate(
        {
            "kind": "prune",
            "spec": {
                "model": {"source": str(model_dir)},
                "calibration": {"sources": [{"kind": "file", "name": texts["a"]}], "samples": 4, "seq_len": 32},
                "importance": {"mix": {"l2": 1}},
                "prune": {"ratio": 0.2},
                "evaluate": {
                    "texts": [{"kind": "file", "name": texts["test"]}],
                    "seq_len": 32,
                    "max_tokens": 128,
                    "speed": False,
                },
            },
        }
    )


class PrivateRedis:
    """A redis-server of our own on a free port, which a test may stop and restart empty."""

    def __init__(self, folder: Path) -> None:
        import shutil
        import socket

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed: `apt-get install redis-server`", pytrace=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
