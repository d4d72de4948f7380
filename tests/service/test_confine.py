"""Confinement at submit: a job reads only models and data its key may read (issue 18)."""

from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from service import crud
from service.db import transaction
from service.main import create_app
from service.models import Job, JobStatus


@pytest.fixture
def shared(tmp_path):
    """One folder that is both allowed root and parent of the artifacts (an operator's easy mistake)."""
    folder = tmp_path / "shared"
    (folder / "data").mkdir(parents=True)
    (folder / "models").mkdir()
    return folder


def confined_app(settings, shared, **overrides):
    roots = (str(shared),)
    update = {"artifacts_dir": shared / "artifacts", "model_roots": roots, "data_roots": roots} | overrides
    return create_app(settings.model_copy(update=update))


@pytest.fixture
def app(settings, shared):
    return confined_app(settings, shared)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def new_key(app, name: str) -> tuple[int, dict[str, str]]:
    with transaction(app.state.sessions) as session:
        key, plain = crud.create_api_key(session, name=name)
        return key.id, {"Authorization": f"Bearer {plain}"}


def finished_job(app, client, auth) -> str:
    """A job of the key ``auth``, marked succeeded, with a model and text files in its artifact folder."""
    response = client.post(
        "/v1/jobs", json={"kind": "prune", "spec": {"model": {"source": "smollm2-135m"}}}, headers=auth
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    with transaction(app.state.sessions) as session:
        session.get(Job, job_id).status = JobStatus.succeeded
    folder = app.state.settings.artifacts / job_id
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "data.txt", "data.jsonl"):
        (folder / name).write_text("{}")
    return job_id


def file_source(path) -> dict:
    return {"kind": "file", "name": str(path)}


def hf_json(path) -> dict:
    return {"kind": "hf", "name": "json", "data_files": str(path)}


# (kind, the spec that names ``target``, the refused field's location inside the spec)
FIELDS = [
    ("prune", lambda t: {"model": {"source": str(t.parent)}}, ["model", "source"]),
    ("prune", lambda t: {"calibration": {"sources": [file_source(t)]}}, ["calibration", "sources", 0, "name"]),
    ("prune", lambda t: {"calibration": {"sources": [hf_json(t)]}}, ["calibration", "sources", 0, "data_files"]),
    ("prune", lambda t: {"evaluate": {"texts": [file_source(t)]}}, ["evaluate", "texts", 0, "name"]),
    ("prune", lambda t: {"recover": {"source": file_source(t)}}, ["recover", "source", "name"]),
    ("search", lambda t: {"model": {"source": str(t.parent)}}, ["model", "source"]),
    ("search", lambda t: {"space": {"sources": [file_source(t)]}}, ["space", "sources", 0, "name"]),
    ("search", lambda t: {"search": {"validation": [file_source(t)]}}, ["search", "validation", 0, "name"]),
    ("search", lambda t: {"evaluate": {"texts": [file_source(t)]}}, ["evaluate", "texts", 0, "name"]),
    ("search", lambda t: {"recover": {"source": file_source(t)}}, ["recover", "source", "name"]),
    ("search", lambda t: {"search": {"warm_start": [str(t.parent)]}}, ["search", "warm_start", 0]),
]


@pytest.mark.parametrize(("kind", "spec", "loc"), FIELDS)
def test_key_b_cannot_reach_key_a_artifacts_through_any_job_field(app, client, shared, kind, spec, loc):
    _, alice = new_key(app, "alice")
    _, bob = new_key(app, "bob")
    job_id = finished_job(app, client, alice)
    target = app.state.settings.artifacts / job_id / "data.txt"
    refused = client.post("/v1/jobs", json={"kind": kind, "spec": spec(target)}, headers=bob)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "spec", *loc]
    assert str(app.state.settings.artifacts) not in refused.text
    # the same field naming a file of the allowed folder outside the artifacts is accepted
    allowed = client.post(
        "/v1/jobs", json={"kind": kind, "spec": spec(shared / "models" / "m" / "data.txt")}, headers=bob
    )
    assert allowed.status_code == 202, allowed.text


def test_job_reference_works_for_the_own_key_and_reads_like_a_missing_job_for_another(app, client):
    _, alice = new_key(app, "alice")
    _, bob = new_key(app, "bob")
    job_id = finished_job(app, client, alice)
    body = {"kind": "prune", "spec": {"model": {"source": f"job:{job_id}"}}}
    assert client.post("/v1/jobs", json=body, headers=alice).status_code == 202
    foreign = client.post("/v1/jobs", json=body, headers=bob)
    missing = client.post(
        "/v1/jobs", json={"kind": "prune", "spec": {"model": {"source": "job:" + "0" * 32}}}, headers=bob
    )
    assert foreign.status_code == missing.status_code == 422
    assert foreign.json() == missing.json()
    assert foreign.json()["detail"][0]["loc"] == ["body", "spec", "model", "source"]
    queued = client.post("/v1/jobs", json={"kind": "prune"}, headers=alice).json()["id"]  # not finished: not usable
    body = {"kind": "search", "spec": {"model": {"source": f"job:{queued}"}}}
    assert client.post("/v1/jobs", json=body, headers=alice).json() == missing.json()


def test_a_symlink_inside_an_allowed_folder_that_points_outside_is_refused(app, client, shared, tmp_path):
    _, auth = new_key(app, "alice")
    outside = tmp_path / "outside"
    (outside / "model").mkdir(parents=True)
    (outside / "secret.txt").write_text("not for jobs")
    os.symlink(outside / "secret.txt", shared / "data" / "link.txt")
    os.symlink(outside / "model", shared / "models" / "link")
    data = {"kind": "prune", "spec": {"calibration": {"sources": [file_source(shared / "data" / "link.txt")]}}}
    model = {"kind": "prune", "spec": {"model": {"source": str(shared / "models" / "link")}}}
    for body in (data, model):
        response = client.post("/v1/jobs", json=body, headers=auth)
        assert response.status_code == 422, response.text
    (shared / "data" / "real.txt").write_text("text")
    os.symlink(shared / "data" / "real.txt", shared / "data" / "inner.txt")  # a link that stays inside is fine
    body = {"kind": "prune", "spec": {"calibration": {"sources": [file_source(shared / "data" / "inner.txt")]}}}
    assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202


def test_a_refused_path_reads_the_same_whether_it_exists_or_not(app, client, tmp_path):
    _, auth = new_key(app, "alice")
    (tmp_path / "outside" / "model").mkdir(parents=True)
    (tmp_path / "outside" / "real.txt").write_text("exists")
    real, missing = tmp_path / "outside" / "real.txt", tmp_path / "outside" / "missing.txt"
    for build, paths in (
        (lambda p: {"model": {"source": str(p)}}, (tmp_path / "outside" / "model", missing, "/etc", "/nonexistent")),
        (lambda p: {"calibration": {"sources": [file_source(p)]}}, (real, missing)),
        (lambda p: {"evaluate": {"texts": [hf_json(p)]}}, (real, missing, "/etc/passwd", "/nonexistent")),
    ):
        answers = [client.post("/v1/jobs", json={"kind": "prune", "spec": build(p)}, headers=auth) for p in paths]
        assert {a.status_code for a in answers} == {422}
        assert len({a.text for a in answers}) == 1, [a.text for a in answers]
        assert "outside" not in answers[0].text and "/etc" not in answers[0].text


def test_relative_paths_and_parent_references_are_refused(app, client, shared):
    _, auth = new_key(app, "alice")
    for name in ("data/a.txt", "./a.txt", "~/a.txt", str(shared / "data" / ".." / ".." / "a.txt")):
        body = {"kind": "prune", "spec": {"calibration": {"sources": [file_source(name)]}}}
        assert client.post("/v1/jobs", json=body, headers=auth).status_code == 422, name
    for source in ("../model", "./model", "~/model", "a/b/c", "x.gguf"):
        body = {"kind": "prune", "spec": {"model": {"source": source}}}
        assert client.post("/v1/jobs", json=body, headers=auth).status_code == 422, source
    body = {"kind": "prune", "spec": {"model": {"source": "org/name", "gguf_file": "../../etc/x.gguf"}}}
    refused = client.post("/v1/jobs", json=body, headers=auth)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "spec", "model", "gguf_file"]


def test_remote_urls_hub_models_and_hf_datasets_follow_the_settings(settings, shared):
    url = {"kind": "hf", "name": "json", "data_files": "https://example.com/data.jsonl"}
    cases = [  # the spec, the setting that allows it, the refused field
        ({"calibration": {"sources": [url]}}, "allow_remote_data", ["calibration", "sources", 0, "data_files"]),
        (
            {"evaluate": {"texts": [{"kind": "hf", "name": "org/corpus"}]}},
            "allow_hf_datasets",
            ["evaluate", "texts", 0, "kind"],
        ),
        ({"evaluate": {"zero_shot": ["piqa"]}}, "allow_hf_datasets", ["evaluate", "zero_shot", 0]),
        ({"model": {"source": "org/model"}}, "allow_hub_models", ["model", "source"]),
    ]
    opened = {"allow_remote_data": True, "allow_hf_datasets": True, "allow_hub_models": True}
    for flag in sorted({c[1] for c in cases}):
        for allowed in (False, True):
            app = confined_app(settings, shared, **(opened | {flag: allowed}))
            with TestClient(app) as client:
                _, auth = new_key(app, f"{flag}-{allowed}")
                for spec, which, loc in cases:
                    response = client.post("/v1/jobs", json={"kind": "prune", "spec": spec}, headers=auth)
                    expected = 422 if which == flag and not allowed else 202
                    assert response.status_code == expected, (flag, allowed, response.text)
                    if expected == 422:
                        assert response.json()["detail"][0]["loc"] == ["body", "spec", *loc]


def test_the_default_service_is_confined_and_open_mode_is_explicit(settings, tmp_path):
    (tmp_path / "mine.txt").write_text("text")
    body = {"kind": "prune", "spec": {"calibration": {"sources": [file_source(tmp_path / "mine.txt")]}}}
    for confine, expected in ((True, 422), (False, 202)):
        app = create_app(settings.model_copy(update={"confine": confine, "model_roots": (), "data_roots": ()}))
        with TestClient(app) as client:
            _, auth = new_key(app, "alice")
            assert client.post("/v1/jobs", json=body, headers=auth).status_code == expected
    from service.settings import Settings

    assert Settings().confine and Settings().model_roots == () and not Settings().allow_remote_data


def test_the_api_alias_list_is_the_loader_s():
    from adapruner.catalog import MODEL_ALIASES
    from adapruner.models.loading import ALIASES

    assert set(MODEL_ALIASES) == set(ALIASES)


def test_an_allowed_folder_given_through_a_link_accepts_paths_under_either_name(settings, tmp_path):
    (tmp_path / "real" / "data").mkdir(parents=True)
    os.symlink(tmp_path / "real", tmp_path / "alias")
    app = create_app(settings.model_copy(update={"data_roots": (str(tmp_path / "alias"),)}))
    with TestClient(app) as client:
        _, auth = new_key(app, "alice")
        for folder in ("alias", "real"):
            path = tmp_path / folder / "data" / "a.txt"
            body = {"kind": "prune", "spec": {"calibration": {"sources": [file_source(path)]}}}
            assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202, folder


def test_the_api_checks_sources_and_costs_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, service.main, service.admission; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
