"""Job size limits: a server maximum per field and an estimated cost per job, checked at submit and shown in
the catalog (issue 18)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from adapruner.config import PruneJob, SearchJob
from service import crud
from service.db import transaction
from service.jobs import JOB_SPECS
from service.limits import FIELD_LIMITS, job_cost
from service.main import create_app


def client_for(settings, **overrides):
    app = create_app(settings.model_copy(update=overrides))
    with transaction(app.state.sessions) as session:
        _, plain = crud.create_api_key(session, name="alice")
    return app, {"Authorization": f"Bearer {plain}"}


def nested(path: str, value) -> dict:
    out: dict = {}
    node = out
    *parents, name = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value
    return out


def over(kind: str, path: str, limit: int) -> dict:
    """A spec whose field ``path`` is just over ``limit`` (and otherwise valid)."""
    value: object = limit + 1
    if path == "space.samples":
        return {"space": {"samples": {"low": 1, "high": value}, "pool_size": value}}
    if path == "space.seq_lens":
        value = [value]
    spec = nested(path, value)
    if path.startswith("recover."):
        spec["recover"]["method"] = "lora"
    return spec


CASES = [(kind, path) for kind, fields in FIELD_LIMITS.items() for path, _ in fields if path != "search.trials"]


@pytest.mark.parametrize(("kind", "path"), CASES)
def test_each_bounded_field_over_its_maximum_is_422_naming_it(settings, kind, path):
    limit = dict(FIELD_LIMITS[kind])[path]
    maximum = getattr(settings, limit)
    app, auth = client_for(settings, max_job_cost=10**30)  # the field maximum, not the cost, refuses it
    with TestClient(app) as client:
        refused = client.post("/v1/jobs", json={"kind": kind, "spec": over(kind, path, maximum)}, headers=auth)
        assert refused.status_code == 422, refused.text
        error = refused.json()["detail"][0]
        assert error["loc"] == ["body", "spec", *path.split(".")] and f"{maximum:,}" in error["msg"]
        at_limit = over(kind, path, maximum - 1)
        assert client.post("/v1/jobs", json={"kind": kind, "spec": at_limit}, headers=auth).status_code == 202


def test_a_job_over_the_cost_limit_is_422_naming_the_cost_and_the_limit(settings):
    app, auth = client_for(settings, max_job_cost=200_000)
    spec = {"calibration": {"samples": 64, "seq_len": 1024}}  # 3 x 64 x 1,024 = 196,608 for calibration alone
    with TestClient(app) as client:
        refused = client.post("/v1/jobs", json={"kind": "prune", "spec": spec}, headers=auth)
        assert refused.status_code == 422, refused.text
        error = refused.json()["detail"][0]
        assert error["loc"] == ["body", "spec"]
        assert "estimated cost" in error["msg"] and "token-passes" in error["msg"] and "200,000" in error["msg"]
        assert "calibration 196,608" in error["msg"]
        small = {"calibration": {"samples": 8, "seq_len": 128}, "evaluate": {"max_tokens": 1024}}
        assert client.post("/v1/jobs", json={"kind": "prune", "spec": small}, headers=auth).status_code == 202
        hostile = {"space": {"pool_size": 1000, "samples": {"low": 1, "high": 8}}, "search": {"trials": 500}}
        assert client.post("/v1/jobs", json={"kind": "search", "spec": hostile}, headers=auth).status_code == 422


def test_the_cost_formula_on_hand_counted_jobs():
    text = [{"kind": "builtin", "name": "jargon"}]
    prune = PruneJob.model_validate(
        {
            "calibration": {"samples": 10, "seq_len": 100},
            "evaluate": {"texts": text, "seq_len": 100, "stride": 50, "max_tokens": 1000, "speed": False},
            "recover": {"method": "lora", "steps": 10, "batch_size": 2, "seq_len": 50, "heldout_tokens": 100},
        }
    )
    # calibration 3 x 10 x 100; evaluation 2 models x 1 text x 1,000 tokens x 100/50 windows per token;
    # recovery 3 x 10 x 2 x 50 trained + 2 x 100 held out
    assert job_cost(prune).parts == {"calibration": 3000, "evaluation": 4000, "recovery": 3200}
    search = SearchJob.model_validate(
        {
            "space": {"pool_size": 4, "seq_lens": [16, 32], "samples": {"low": 1, "high": 8}},
            "search": {"trials": 5, "top_k": 2, "validation_tokens": 100},
            "evaluate": {"texts": [{"kind": "builtin", "name": "pydoc", "split": "test"}], "speed": False},
        }
    )
    # pool 3 x 4 x 3 sources x (16 + 32); trials (5 + dense) x 2 domains x 100 + confirm 2 x 4 x 200
    parts = job_cost(search).parts
    assert parts["pool"] == 1728 and parts["trials"] == 2800 and parts["recovery"] == 0


def test_the_catalog_shows_every_limit_by_kind_and_spec_path(settings):
    app, _ = client_for(settings, max_calibration_samples=77, max_job_cost=12345)
    with TestClient(app) as client:
        limits = client.get("/v1/catalog").json()["limits"]
    assert limits["prune"]["calibration.samples"] == 77 and limits["search"]["space.samples"] == 77
    assert limits["prune"]["cost"] == limits["search"]["cost"] == 12345
    assert limits["search"]["search.trials"] == settings.max_trials
    for kind, fields in limits.items():
        for path in set(fields) - {"cost"}:  # every path names a field of the kind's spec
            model: type[BaseModel] = JOB_SPECS[kind]
            for part in path.split("."):
                assert part in model.model_fields, (kind, path)
                annotation = model.model_fields[part].annotation
                model = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)), None)
