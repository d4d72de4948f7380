from __future__ import annotations

import shutil
import socket

import pytest
from fastapi.testclient import TestClient

from service import crud
from service.db import transaction
from service.main import create_app
from tests.worker.cluster import prune_request

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(monkeypatch):
    """A local S3-compatible server (moto) with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="artifacts")
    yield url
    server.stop()


def test_s3_store_publishes_from_the_worker_and_streams_to_the_api(cluster, s3, tiny_model_dir, job_texts):
    import boto3

    store = {"artifact_store": "s3", "s3_bucket": "artifacts", "s3_endpoint_url": s3}
    cluster.settings = cluster.settings.model_copy(update=store)
    job_id = cluster.submit(prune_request(tiny_model_dir, job_texts))
    cluster.start_worker()
    assert cluster.wait_status(job_id, "succeeded", "failed", timeout=120).status.value == "succeeded"
    local = cluster.settings.artifacts / job_id
    expected = (local / "report.json").read_bytes()
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="artifacts")["Contents"]}
    assert f"adapruner/{job_id}/report.json" in keys and f"adapruner/{job_id}/model.safetensors" in keys
    shutil.rmtree(local)  # the API host has no copy: it must read the object store
    app = create_app(cluster.settings)
    with transaction(app.state.sessions) as session:
        _, key = crud.create_api_key(session, name="s3", admin=True)
    with TestClient(app) as api:
        auth = {"Authorization": f"Bearer {key}"}
        got = api.get(f"/v1/jobs/{job_id}/artifacts/report.json", headers=auth)
        assert got.status_code == 200 and got.content == expected
        assert api.get(f"/v1/jobs/{job_id}/artifacts/nope.json", headers=auth).status_code == 404


def test_a_job_starts_from_an_earlier_job_s_objects_when_this_host_has_no_copy(cluster, s3, tiny_model_dir, job_texts):
    from tests.worker.test_confine import with_spec

    store = {"artifact_store": "s3", "s3_bucket": "artifacts", "s3_endpoint_url": s3}
    cluster.settings = cluster.settings.model_copy(update=store)
    cluster.start_worker()
    first = cluster.wait_status(cluster.submit(prune_request(tiny_model_dir, job_texts)), "succeeded", "failed")
    assert first.status.value == "succeeded", first.error
    shutil.rmtree(cluster.settings.artifacts / first.id)  # the worker must fetch the objects
    again = with_spec(prune_request(tiny_model_dir, job_texts), model__source=f"job:{first.id}", prune__ratio=0.0)
    job = cluster.wait_status(cluster.submit(again), "succeeded", "failed")
    assert job.status.value == "succeeded", job.error
    assert job.result["params_before"] == first.result["params_after"]
    assert (cluster.settings.home / "cache" / "jobs" / first.id / "adapruner.json").is_file()
