from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapruner.config import DataSource, ImportanceConfig, PruneConfig, PruneJob


def test_job_round_trips_through_json():
    job = PruneJob(importance=ImportanceConfig(mix={"taylor": 0.7, "wanda": 0.3}), prune=PruneConfig(ratio=0.35))
    assert PruneJob.model_validate_json(job.model_dump_json()) == job


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"prune": {"ratio": 1.2}}, "prune.ratio"),
        ({"prune": {"ratio": 0.2, "targets": []}}, "prune.targets"),
        ({"importance": {"mix": {"magic": 1.0}}}, "importance.mix"),
        ({"importance": {"mix": {}}}, "importance.mix"),
        ({"importance": {"mix": {"l1": -1.0}}}, "importance.mix"),
        ({"calibration": {"samples": 0}}, "calibration.samples"),
        ({"calibration": {"sources": [{"kind": "builtin", "name": "wiki"}]}}, "calibration.sources"),
        ({"prune": {"ratoi": 0.2}}, "prune.ratoi"),
    ],
)
def test_bad_fields_are_named(payload, field):
    with pytest.raises(ValidationError) as info:
        PruneJob.model_validate(payload)
    locations = {".".join(str(p) for p in e["loc"] if not isinstance(p, int)) for e in info.value.errors()}
    assert any(loc.startswith(field) for loc in locations), locations


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(ValidationError, match="valid: random, l1, l2, taylor"):
        ImportanceConfig(mix={"magic": 1.0})


def test_report_text_must_not_be_calibration_text():
    with pytest.raises(ValidationError, match="held-out"):
        PruneJob.model_validate(
            {
                "calibration": {"sources": [{"kind": "file", "name": "a.txt"}]},
                "evaluate": {"texts": [{"kind": "file", "name": "a.txt"}]},
            }
        )
    # Different partitions of one corpus are fine: train for calibration, test for the report.
    PruneJob.model_validate({"evaluate": {"texts": [{"kind": "builtin", "name": "pydoc"}]}})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pydoc", DataSource(kind="builtin", name="pydoc")),
        ("builtin:jargon:validation", DataSource(kind="builtin", name="jargon", split="validation")),
        ("notes.txt", DataSource(kind="file", name="notes.txt")),
        ("file:/data/a.jsonl:test", DataSource(kind="file", name="/data/a.jsonl", split="test")),
        (
            "hf:wikitext:wikitext-2-raw-v1:test",
            DataSource(kind="hf", name="wikitext", config="wikitext-2-raw-v1", split="test"),
        ),
        ("hf:allenai/c4:en:validation:text", DataSource(kind="hf", name="allenai/c4", config="en", split="validation")),
    ],
)
def test_data_source_shorthand(spec, expected):
    assert DataSource.parse(spec) == expected


@pytest.mark.parametrize("spec", ["ftp:thing", "notes.pdf", "builtin:wiki", "hf:a:b:c:d:e"])
def test_bad_data_source_shorthand(spec):
    with pytest.raises(ValueError):
        DataSource.parse(spec)


@pytest.mark.parametrize(
    ("data", "loc", "words"),
    [
        ({"prune": {"ratio": float("nan")}}, ("prune", "ratio"), "finite"),
        ({"prune": {"attn_gamma": float("inf")}}, ("prune", "attn_gamma"), "finite"),
        ({"model": {"source": "a\x00b"}}, ("model", "source"), "NUL"),
        ({"calibration": {"sources": [{"kind": "file", "name": "x\x00.txt"}]}}, ("calibration", "sources", 0), "NUL"),
        ({"importance": {"mix": {"taylor\x00": 1.0}}}, ("importance", "mix"), "NUL"),
    ],
)
def test_configs_refuse_non_finite_numbers_and_unstorable_text(data, loc, words):
    with pytest.raises(ValidationError) as raised:
        PruneJob.model_validate(data)
    error = raised.value.errors()[0]
    assert error["loc"][: len(loc)] == loc and words in error["msg"], error
