"""A worker started with ``--parent`` (as ``serve --with-worker`` starts them) whose parent dies hands its
job back and exits: no orphan keeps taking jobs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.models import JobStatus
from service.settings import settings_env
from tests.service.test_serve import alive, children, kill_leftovers, wait_for
from tests.worker.cluster import ROOT, search_request

pytestmark = pytest.mark.slow

LAUNCHER = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-m", "worker", "--parent", str(os.getpid())])
time.sleep(600)
"""


def test_a_worker_whose_parent_dies_hands_its_job_back_and_exits(cluster, tiny_model_dir, job_texts):
    job_id = cluster.submit(search_request(tiny_model_dir, job_texts, trials=10_000, budget_s=120))
    env = os.environ | settings_env(cluster.settings) | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = cluster.logs / "worker-0.log"
    with open(log, "w") as out:
        parent = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=ROOT, env=env, stdout=out, stderr=out)
    worker: list[int] = []
    try:
        wait_for(lambda: bool(children(parent.pid)), timeout=30, what="the worker", log=log)
        worker = children(parent.pid)
        cluster.wait(lambda: len(cluster.trials(job_id)) >= 1, timeout=180, what="a first trial")
        parent.kill()  # kill -9: no cleanup of its own
        parent.wait()
        grace = cluster.settings.grace_s + cluster.settings.heartbeat_s
        wait_for(lambda: not alive(worker[0]), timeout=grace + 10, what="the orphaned worker to exit", log=log)
        job = cluster.job(job_id)
        assert job.status == JobStatus.queued and job.worker_id is None, (job.status, job.error)
        assert "stopped" in log.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
        kill_leftovers(worker)
