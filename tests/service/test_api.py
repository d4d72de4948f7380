from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service import crud, queue
from service.db import make_engine, make_sessionmaker, transaction
from service.main import create_app
from service.models import Artifact, Event, Job, JobStatus


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def new_key(app, *, name="alice", admin=False) -> dict[str, str]:
    with transaction(app.state.sessions) as session:
        _, plain = crud.create_api_key(session, name=name, admin=admin)
    return {"Authorization": f"Bearer {plain}"}


def prune_request(**spec) -> dict:
    return {"kind": "prune", "spec": {"model": {"source": "tiny-model-folder"}, **spec}}


def count_jobs(app) -> int:
    with transaction(app.state.sessions) as session:
        return session.scalar(select(func.count()).select_from(Job))


def stream_job_ids(app) -> list[str]:
    keys = queue.Keys(app.state.settings.redis_prefix)
    return [fields["job_id"] for _, fields in app.state.redis.xrange(keys.stream)]


def test_submit_records_then_enqueues_only_the_id(app, client):
    auth = new_key(app)
    response = client.post("/v1/jobs", json=prune_request(prune={"ratio": 0.3}), headers=auth)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["spec"]["prune"]["ratio"] == 0.3
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    entries = app.state.redis.xrange(queue.Keys(app.state.settings.redis_prefix).stream)
    assert [fields for _, fields in entries] == [{"job_id": job["id"]}]
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (prune_request(prune={"ratio": 1.5}), ["body", "prune", "spec", "prune", "ratio"], "less than 1"),
        (prune_request(importance={"mix": {"nope": 1}}), ["body", "prune", "spec", "importance", "mix"], "valid:"),
        (
            {"kind": "search", "spec": {"space": {"metrics": []}}},
            ["body", "search", "spec", "space", "metrics"],
            "at least",
        ),
        ({"kind": "search", "spec": {"space": {"sources": [{"kind": "builtin", "name": "nope"}]}}}, None, "valid:"),
        (prune_request(typo=1), ["body", "prune", "spec", "typo"], "Extra inputs"),
        ({"kind": "dance"}, ["body"], "kind"),
        ({"kind": "search", "spec": {"search": {"trials": 10_000}}}, ["body", "spec", "search", "trials"], "at most"),
    ],
)
def test_a_bad_spec_is_422_naming_the_field_and_writes_nothing(app, client, body, loc, words):
    response = client.post("/v1/jobs", json=body, headers=new_key(app))
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(words in e["msg"] or words in json.dumps(e) for e in errors), errors
    if loc is not None:
        assert any(e["loc"][: len(loc)] == loc for e in errors), errors
    assert count_jobs(app) == 0 and stream_job_ids(app) == []


def test_a_key_is_required_and_sees_only_its_own_jobs(app, client, settings):
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer apk_wrong"}).status_code == 401
    alice, bob, admin = new_key(app), new_key(app, name="bob"), new_key(app, name="ops", admin=True)
    job_id = client.post("/v1/jobs", json=prune_request(), headers=alice).json()["id"]
    folder = settings.artifacts / job_id
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    with transaction(app.state.sessions) as session:
        session.add(Artifact(job_id=job_id, path="report.json", size=2))
    for path in ("", "/trials", "/artifacts", "/artifacts/report.json", "/events"):
        assert client.get(f"/v1/jobs/{job_id}{path}", headers=bob).status_code == 404, path
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert client.get("/v1/jobs", headers=bob).json()["total"] == 0
    assert client.get("/v1/jobs", headers=alice).json()["total"] == 1
    assert client.get(f"/v1/jobs/{job_id}/artifacts/report.json", headers=alice).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=admin).status_code == 200


def test_list_filters_by_status_and_paginates(app, client):
    auth = new_key(app)
    ids = [client.post("/v1/jobs", json=prune_request(), headers=auth).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth)
    page = client.get("/v1/jobs", params={"status": "queued", "limit": 2, "offset": 1}, headers=auth).json()
    assert page["total"] == 4 and len(page["items"]) == 2
    assert {j["status"] for j in page["items"]} == {"queued"}
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}, headers=auth).json()
    assert [j["id"] for j in cancelled["items"]] == [ids[0]]
    assert client.get("/v1/jobs", params={"status": "bogus"}, headers=auth).status_code == 422
    last = client.get("/v1/jobs", params={"offset": 2**63 - 1}, headers=auth).json()
    assert last["total"] == 5 and last["items"] == []
    for name in ("offset", "limit"):  # past a 64-bit SQL integer: 422 naming the parameter, not a 500
        refused = client.get("/v1/jobs", params={name: 2**63}, headers=auth)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", name]
    refused = client.get(f"/v1/jobs/{ids[1]}/events", params={"after": 2**63}, headers=auth)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "after"]


def test_cancel_a_queued_job_then_retry_it(app, client):
    auth = new_key(app)
    job_id = client.post("/v1/jobs", json=prune_request(), headers=auth).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/retry", headers=auth).status_code == 409  # queued: nothing to retry
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 409
    retried = client.post(f"/v1/jobs/{job_id}/retry", headers=auth)
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    assert stream_job_ids(app) == [job_id, job_id]
    with transaction(app.state.sessions) as session:
        states = [e.data["status"] for e in session.scalars(select(Event).order_by(Event.id)) if e.kind == "state"]
    assert states == ["queued", "cancelled", "queued"]


def test_idempotency_key_returns_the_same_job_and_refuses_another_spec(app, client):
    auth = new_key(app) | {"Idempotency-Key": "build-42"}
    first = client.post("/v1/jobs", json=prune_request(), headers=auth)
    again = client.post("/v1/jobs", json=prune_request(), headers=auth)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert client.post("/v1/jobs", json=prune_request(prune={"ratio": 0.5}), headers=auth).status_code == 409
    assert count_jobs(app) == 1 and len(stream_job_ids(app)) == 1


def test_artifact_download_streams_recorded_files_only(app, client, settings):
    auth = new_key(app)
    job_id = client.post("/v1/jobs", json=prune_request(), headers=auth).json()["id"]
    folder = settings.artifacts / job_id
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 300_000)
    (folder / "unlisted.txt").write_text("not recorded")
    (settings.artifacts / "secret.txt").write_text("outside the job folder")
    with transaction(app.state.sessions) as session:
        session.add(Artifact(job_id=job_id, path="model.safetensors", size=300_000))
    listing = client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()
    assert listing == [
        {"path": "model.safetensors", "size": 300_000, "url": f"/v1/jobs/{job_id}/artifacts/model.safetensors"}
    ]
    got = client.get(listing[0]["url"], headers=auth)
    assert got.status_code == 200 and got.content == b"x" * 300_000
    for bad in ("unlisted.txt", "../secret.txt", "..%2Fsecret.txt", "%2E%2E/secret.txt", "/etc/passwd"):
        assert client.get(f"/v1/jobs/{job_id}/artifacts/{bad}", headers=auth).status_code == 404, bad


def test_catalog_lists_every_registry_and_the_job_schemas(client):
    body = client.get("/v1/catalog").json()
    from adapruner.catalog import ADAPTERS, METRICS

    assert [e["name"] for e in body["plugins"]["metrics"]] == METRICS.names()
    assert [e["name"] for e in body["plugins"]["adapters"]] == ADAPTERS.names()
    assert set(body["job_kinds"]) == {"prune", "search"}
    assert "space" in body["schemas"]["search"]["properties"]


def test_health_and_readiness(app, client, settings):
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    assert client.get("/readyz").json()["checks"] == {"database": "ok", "redis": "ok"}
    broken = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    with TestClient(broken) as c:
        response = c.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["redis"].startswith("error")


def test_request_bodies_over_the_limit_are_refused(app, client):
    auth = new_key(app)
    big = prune_request() | {"padding": "x" * 1_100_000}
    assert (
        client.post(
            "/v1/jobs", content=json.dumps(big), headers=auth | {"content-type": "application/json"}
        ).status_code
        == 413
    )

    def chunks():
        yield b'{"kind": "prune", "x": "'
        for _ in range(20):
            yield b"y" * 100_000
        yield b'"}'

    assert (
        client.post("/v1/jobs", content=chunks(), headers=auth | {"content-type": "application/json"}).status_code
        == 413
    )
    assert count_jobs(app) == 0


def test_a_job_committed_while_redis_is_down_is_still_accepted(settings):
    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    with TestClient(app) as c:
        response = c.post("/v1/jobs", json=prune_request(), headers=new_key(app))
    assert response.status_code == 202
    with transaction(make_sessionmaker(make_engine(settings.db_url))) as session:
        assert session.get(Job, response.json()["id"]).status == JobStatus.queued  # the reconciler publishes it


def test_cors_origins_are_configurable(settings):
    app = create_app(settings.model_copy(update={"cors_origins": ("https://dash.example",)}))
    with TestClient(app) as c:
        allowed = c.get("/healthz", headers={"Origin": "https://dash.example"})
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    assert "access-control-allow-origin" not in other.headers


def test_the_dashboard_sign_in_cookie_authenticates_reads_and_the_event_stream_but_not_writes(app, client):
    auth = new_key(app)
    job_id = client.post("/v1/jobs", json=prune_request(), headers=auth).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200  # ended: the stream ends
    assert client.post("/web/session", headers={"Authorization": "Bearer apk_wrong"}).status_code == 401
    assert "adapruner_key" not in client.cookies
    signed = client.post("/web/session", headers=auth)
    assert signed.status_code == 200 and signed.json() == {"name": "alice"}
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    # No header from here on: the browser's EventSource and download links send only the cookie.
    assert client.get("/v1/jobs").json()["total"] == 1
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    assert "event: state" in text and "cancelled" in text and text.rstrip().endswith("event: end\ndata: {}")
    # A cross-site form could send the cookie too: requests that change something need the header.
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 401
    assert client.post("/v1/jobs", json=prune_request()).status_code == 401
    assert client.delete("/web/session").status_code == 204
    assert client.get("/v1/jobs").status_code == 401


@pytest.mark.parametrize("other", [{"deadline_s": 60}, {"max_attempts": 1}, {"spec": {"prune": {"ratio": 0.5}}}])
def test_an_idempotency_key_replayed_with_another_body_is_409_naming_what_differs(app, client, other):
    auth = new_key(app) | {"Idempotency-Key": "deploy-7"}
    first = client.post("/v1/jobs", json=prune_request(), headers=auth)
    assert first.status_code == 202
    replayed = client.post("/v1/jobs", json=prune_request() | other, headers=auth)
    assert replayed.status_code == 409, replayed.text
    assert next(iter(other)) in replayed.json()["detail"]
    assert client.post("/v1/jobs", json=prune_request(), headers=auth).json()["id"] == first.json()["id"]
    assert count_jobs(app) == 1
