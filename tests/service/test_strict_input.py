"""Hostile input never reaches a 500: NaN, Infinity, NUL and lone surrogates are refused with a 422 naming
where they were (body field, header, path, query), on SQLite and PostgreSQL, and nothing is written."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.test_api import count_jobs, new_key, stream_job_ids

JSON = {"content-type": "application/json"}


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ('{"kind": "prune", "spec": {"prune": {"ratio": NaN}}}', ["spec", "prune", "ratio"], "finite"),
        ('{"kind": "prune", "spec": {"prune": {"ratio": Infinity}}}', ["spec", "prune", "ratio"], "finite"),
        ('{"kind": "prune", "deadline_s": -Infinity}', ["deadline_s"], "finite"),
        (
            '{"kind": "search", "spec": {"space": {"ratio": {"low": NaN, "high": 0.3}}}}',
            ["spec", "space", "ratio", "low"],
            "finite",
        ),
        ('{"kind": "prune", "spec": {"model": {"source": "a\\u0000b"}}}', ["spec", "model", "source"], "NUL"),
        ('{"kind": "prune", "spec": {"model": {"source": "a\\ud800b"}}}', ["spec", "model", "source"], "surrogate"),
        ('{"kind": "prune", "spec": {"x\\u0000": 1}}', ["spec"], "NUL"),
        ('{"kind": "prune", "spec": {"extra": [1, {"deep": NaN}]}}', ["spec", "extra", 1, "deep"], "finite"),
    ],
)
def test_non_finite_numbers_and_unstorable_text_in_the_body_are_422_naming_the_field(app, client, body, loc, words):
    for headers in (JSON, {}):  # FastAPI reads a body without a content type as JSON too
        response = client.post("/v1/jobs", content=body, headers=new_key(app) | headers)
        assert response.status_code == 422, response.text
        error = response.json()["detail"][0]
        assert error["loc"][: len(loc) + 1] == ["body", *loc] and words in error["msg"], error
    assert count_jobs(app) == 0 and stream_job_ids(app) == []


def test_a_body_that_is_not_utf8_is_422(app, client):
    response = client.post("/v1/jobs", content=b'{"kind": "prune\xff"}', headers=new_key(app) | JSON)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize("name", ["Idempotency-Key", "Authorization", "X-Api-Key"])
def test_a_nul_in_a_header_is_422_naming_the_header(app, client, name):
    headers = new_key(app) | {name: "build\x0042"}
    response = client.post("/v1/jobs", json={"kind": "prune"}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["header", name.lower()]
    assert count_jobs(app) == 0


def test_a_nul_in_the_path_or_query_is_422(app, client):
    auth = new_key(app)
    job_id = client.post("/v1/jobs", json={"kind": "prune"}, headers=auth).json()["id"]
    for path in (f"/v1/jobs/{job_id}/artifacts/model%00.safetensors", "/v1/jobs/a%00b", "/static/app%00.js"):
        response = client.get(path, headers=auth)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path"], (path, response.text)
    response = client.get("/v1/jobs", params={"status": "queued\x00"}, headers=auth)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "status"]


def test_ordinary_unicode_is_accepted(app, client):
    source = {"kind": "builtin", "name": "pydoc", "field": "texte-日本語-😀"}
    body = {"kind": "prune", "spec": {"calibration": {"sources": [source]}}}
    response = client.post("/v1/jobs", json=body, headers=new_key(app) | {"Idempotency-Key": "ok-1"})
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["calibration"]["sources"][0]["field"] == "texte-日本語-😀"


@pytest.mark.parametrize("depth", [900, 100_000])
def test_a_deeply_nested_body_is_refused_without_a_server_error(app, client, depth):
    body = '{"kind": "prune", "spec": ' + "[" * depth + "]" * depth + "}"
    response = client.post("/v1/jobs", content=body, headers=new_key(app) | JSON)
    assert response.status_code == 422, response.text[:300]
    assert count_jobs(app) == 0
