"""A service job with an export stage: the worker writes the GGUF file and the service lists it for download."""

from __future__ import annotations

import pytest

from service.jobs import PruneRequest
from service.models import JobStatus
from tests.export.conftest import save_bpe_model
from tests.worker.cluster import prune_request

pytestmark = pytest.mark.slow


def test_a_prune_job_with_an_export_stage_lists_the_gguf_file(cluster, tmp_path, job_texts):
    from sqlalchemy import select

    from service.db import transaction
    from service.models import Artifact

    model_dir = save_bpe_model(tmp_path / "bpe-llama")
    payload = prune_request(model_dir, job_texts).model_dump(mode="json")
    payload["spec"]["export"] = {"formats": ["gguf"], "type": "q8_0"}
    job_id = cluster.submit(PruneRequest.model_validate(payload))
    cluster.start_worker()
    job = cluster.wait_status(job_id, "succeeded", "failed", timeout=180)
    assert job.status == JobStatus.succeeded, job.error
    with transaction(cluster.sessions) as session:
        rows = {a.path: a.size for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}
    assert rows["model-q8_0.gguf"] > 0 and "report.json" in rows
    assert (cluster.settings.artifacts / job_id / "model-q8_0.gguf").read_bytes()[:4] == b"GGUF"
