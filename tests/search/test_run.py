from __future__ import annotations

import json

import pytest
import torch

from adapruner.artifacts import load_pruned
from adapruner.config import SearchJob
from adapruner.models import LoadedModel
from adapruner.search import run as search_run
from adapruner.search.run import SearchStateError, run_search
from tests.conftest import tiny_llama


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    words = {
        "a": "the model prunes heads and channels of every layer",
        "b": "calibration data moves the result of structured pruning",
        "val": "validation text chooses among the trials of the search",
        "test": "held out test text is read once for the final report",
    }
    paths = {}
    for name, sentence in words.items():
        path = folder / f"{name}.txt"
        path.write_text("\n\n".join(f"{sentence} {i}." * 3 for i in range(40)))
        paths[name] = str(path)
    return paths


def make_job(texts, *, trials: int = 3) -> SearchJob:
    return SearchJob.model_validate(
        {
            "model": {"source": "tiny"},
            "ratio": 0.25,
            "space": {
                "sources": [{"kind": "file", "name": texts["a"]}, {"kind": "file", "name": texts["b"]}],
                "pool_size": 4,
                "seq_len": 16,
                "samples": {"low": 2, "high": 6},
                "subset_seeds": 4,
                "metrics": ["taylor", "wanda", "l2"],
            },
            "search": {
                "trials": trials,
                "n_init": 2,
                "acq_restarts": 2,
                "raw_samples": 16,
                "validation": [{"kind": "file", "name": texts["val"]}],
                "validation_tokens": 256,
                "chunk_tokens": 64,
                "eval_seq_len": 32,
                "top_k": 2,
            },
            "evaluate": {
                "texts": [{"kind": "file", "name": texts["test"]}],
                "seq_len": 32,
                "max_tokens": 256,
                "speed": False,
            },
        }
    )


@pytest.fixture
def loaded(tiny_tokenizer):
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64)
    return LoadedModel(model, tiny_tokenizer, "tiny")


def test_a_short_search_runs_end_to_end(tmp_path, texts, loaded):
    seen = []
    outcome = run_search(
        make_job(texts), out=tmp_path / "run", loaded=loaded, cache_dir=tmp_path / "cache", on_trial=seen.append
    )
    report = outcome.report
    assert [r["index"] for r in report["trials"]] == [0, 1, 2] == [r["index"] for r in seen]
    assert all(r["status"] == "completed" for r in report["trials"])
    assert report["best"]["index"] in {0, 1, 2}
    assert abs(report["ratio_achieved"] - 0.25) <= 0.01 * 0.25
    assert len(report["validation_vs_test"]) == 2
    assert report["trial_cost"]["mean_trial_vs_pass"] > 0
    label = f"file:{texts['test']}"
    assert report["pruned"]["perplexity"][label] > 0
    model, _ = load_pruned(tmp_path / "run")
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, outcome.model(ids).logits)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["best"] == report["best"]


def test_resume_continues_after_the_last_finished_trial(tmp_path, texts, loaded):
    job = make_job(texts, trials=3)  # trials 0-1 from the Sobol design, trial 2 from the GP
    straight = run_search(job, out=tmp_path / "straight", loaded=loaded, cache_dir=tmp_path / "cache").report
    assert (
        run_search(job, out=tmp_path / "resumed", loaded=loaded, cache_dir=tmp_path / "cache", max_new_trials=2) is None
    )
    state = json.loads((tmp_path / "resumed" / "search_state.json").read_text())
    assert sorted(state["records"]) == ["0", "1"]
    resumed = run_search(job, out=tmp_path / "resumed", loaded=loaded, cache_dir=tmp_path / "cache").report
    assert [r["params"] for r in resumed["trials"]] == [r["params"] for r in straight["trials"]]
    assert [r["value"] for r in resumed["trials"]] == pytest.approx([r["value"] for r in straight["trials"]])
    assert resumed["best"]["index"] == straight["best"]["index"]


def test_a_different_job_in_the_same_folder_is_refused(tmp_path, texts, loaded):
    run_search(make_job(texts, trials=1), out=tmp_path, loaded=loaded, cache_dir=None, max_new_trials=1)
    with pytest.raises(SearchStateError, match="different search"):
        run_search(make_job(texts, trials=2), out=tmp_path, loaded=loaded, cache_dir=None)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, texts, loaded, monkeypatch):
    real = search_run.prune_recipe
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("NaN scores")
        return real(*args, **kwargs)

    monkeypatch.setattr(search_run, "prune_recipe", flaky)
    report = run_search(make_job(texts), out=tmp_path, loaded=loaded, cache_dir=None).report
    statuses = [r["status"] for r in report["trials"]]
    assert statuses == ["completed", "failed", "completed"]
    assert "NaN scores" in report["trials"][1]["error"]
