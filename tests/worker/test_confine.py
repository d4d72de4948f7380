"""The worker checks where a job's model and data come from again, before it reads anything: a row written
to SQL without the API is refused too, and ``job:<id>`` starts from the artifacts of the key's own job."""

from __future__ import annotations

import os
import shutil

from service import crud, queue
from service.db import transaction
from service.jobs import PruneRequest
from tests.worker.cluster import prune_request


def submit_as(cluster, owner_id: int, request: PruneRequest) -> str:
    """A job row written straight to SQL (no API check) and queued."""
    with transaction(cluster.sessions) as session:
        job = crud.create_job(session, owner_id=owner_id, request=request, settings=cluster.settings)
    queue.enqueue(cluster.redis, cluster.keys, job.id)
    return job.id


def with_spec(request: PruneRequest, **changes) -> PruneRequest:
    spec = request.spec.model_dump(mode="json")
    for path, value in changes.items():
        *parents, name = path.split("__")
        node = spec
        for part in parents:
            node = node[part]
        node[name] = value
    return PruneRequest.model_validate({"kind": "prune", "spec": spec})


def test_the_worker_refuses_what_the_api_would_and_resolves_the_own_job(cluster, tiny_model_dir, job_texts, tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    data.mkdir()
    (models / "empty").mkdir(parents=True)
    texts = {name: str(shutil.copy(job_texts[name], data)) for name in ("a", "test")}
    os.symlink(job_texts["b"], data / "link.txt")  # inside the data root, pointing outside it
    roots = {"model_roots": (str(tiny_model_dir), str(models), str(cluster.settings.artifacts))}
    cluster.settings = cluster.settings.model_copy(update=roots | {"data_roots": (str(data),)})
    with transaction(cluster.sessions) as session:
        alice, bob = (crud.create_api_key(session, name=n)[0].id for n in ("alice", "bob"))
    base = prune_request(tiny_model_dir, texts)
    cluster.start_worker()
    first = cluster.wait_status(submit_as(cluster, alice, base), "succeeded", "failed")
    assert first.status.value == "succeeded", first.error

    reuse = with_spec(base, model__source=f"job:{first.id}", prune__ratio=0.0)
    refused = {
        "foreign job": (submit_as(cluster, bob, reuse), "model.source"),
        "artifact path": (
            submit_as(cluster, bob, with_spec(base, model__source=str(cluster.settings.artifacts / first.id))),
            "model.source",
        ),
        "symlink escape": (
            submit_as(
                cluster, alice, with_spec(base, calibration__sources=[{"kind": "file", "name": str(data / "link.txt")}])
            ),
            "calibration.sources.0.name",
        ),
    }
    own = submit_as(cluster, alice, reuse)
    unloadable = [
        submit_as(cluster, alice, with_spec(base, model__source=str(models / n))) for n in ("empty", "missing")
    ]

    again = cluster.wait_status(own, "succeeded", "failed")
    assert again.status.value == "succeeded", again.error
    assert again.result["params_before"] == first.result["params_after"]  # it started from the pruned model
    for what, (job_id, field) in refused.items():
        job = cluster.wait_status(job_id, "succeeded", "failed")
        assert job.status.value == "failed" and job.error.startswith(f"SourceRefused: {field}:"), (what, job.error)
        assert str(tmp_path) not in job.error and str(cluster.settings.artifacts) not in job.error
    errors = [cluster.wait_status(job_id, "succeeded", "failed").error for job_id in unloadable]
    assert errors[0] == errors[1] and "ModelLoadError" in errors[0], errors  # no hint of which folder exists
    assert str(models) not in errors[0]
