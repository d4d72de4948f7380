"""The fixed recipe a search reports beside its result: prune's defaults on the search's data."""

from __future__ import annotations

import copy

import pytest

from adapruner.config import CompensateConfig, ImportanceConfig, PruneConfig, SearchJob
from adapruner.models import LoadedModel
from adapruner.pipeline import eval_texts, evaluate_model, prune_loaded
from adapruner.search.baseline import fixed_baseline, fixed_prune_job
from tests.conftest import tiny_llama, tiny_search_spec
from tests.prune.test_step import assert_same, dense_state


@pytest.fixture
def job(job_texts) -> SearchJob:
    # channel_multiple 1: the tiny model's 64 channels per layer reach the ratio in whole channels
    spec = tiny_search_spec(job_texts, model="tiny", trials=2)
    return SearchJob.model_validate(spec)


def test_the_fixed_recipe_is_prunes_default_on_the_searchs_sources(job):
    prune_job = fixed_prune_job(job)
    assert prune_job.importance == ImportanceConfig()
    assert prune_job.prune == PruneConfig(ratio=job.ratio)
    assert prune_job.compensate == CompensateConfig()
    calibration = prune_job.calibration
    assert calibration.sources == job.space.sources and calibration.seq_len == job.space.seq_lens[0]
    assert prune_job.evaluate == job.evaluate


def test_the_fixed_baseline_is_pruned_in_place_and_the_model_restored(job, tiny_tokenizer):
    """It reads the same test PPL as the same prune job run on a copy of the model, and leaves the search's
    model exactly as it was (one model in memory)."""
    loaded = LoadedModel(tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64), tiny_tokenizer, "tiny")
    before = dense_state(loaded.model)
    texts = eval_texts(tiny_tokenizer, job.evaluate)
    fixed = fixed_baseline(loaded, job, texts)
    assert_same(loaded.model, before)
    copied = LoadedModel(copy.deepcopy(loaded.model), tiny_tokenizer, "tiny")
    prune_loaded(copied, fixed_prune_job(job))
    expected = evaluate_model(copied.model, texts, job.evaluate)
    assert fixed.test_ppl == expected["perplexity"]
    assert fixed.ratio_achieved == pytest.approx(job.ratio, abs=0.05)
    assert fixed.job["importance"]["mix"] == ImportanceConfig().mix


def test_a_search_starts_from_the_fixed_recipe_and_reports_it_beside_its_pick(job, tiny_tokenizer, tmp_path):
    """With bip and obs in the space, trial 0 is prune's default recipe; the report's ``fixed`` holds that
    recipe pruned on the search's sources, read on the same test texts as the search's pick (unrecovered),
    and the CLI prints the two side by side; without ``fixed_recipe`` neither happens."""
    from adapruner.cli import fixed_comparison
    from adapruner.search.run import run_search

    space = job.space.model_copy(update={"metrics": ("bip", "wanda"), "compensators": ("none", "obs")})
    spec = job.model_copy(update={"space": space, "ratio": 0.25})
    loaded = LoadedModel(tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64), tiny_tokenizer, "tiny")
    report = run_search(spec, out=tmp_path / "on", loaded=loaded, cache_dir=None).report
    first = report["trials"][0]
    assert first["recipe"]["mix"] == {"bip": 1.0, "wanda": 0.0} and first["recipe"]["compensate"] == "obs"
    assert first["recipe"]["attn_share"] == 0.0
    fixed = report["fixed"]
    pick = next(c for c in report["validation_vs_test"] if c["index"] == report["best"]["index"])
    assert fixed["search_test_ppl"] == pick["test_ppl"]
    assert fixed["error"] is None and set(fixed["test_ppl"]) == set(pick["test_ppl"])
    line = fixed_comparison(report)
    assert "bip over channels, obs" in line and f"{next(iter(fixed['test_ppl'].values())):.2f}" in line
    off = spec.model_copy(update={"search": spec.search.model_copy(update={"fixed_recipe": False})})
    report = run_search(off, out=tmp_path / "off", loaded=loaded, cache_dir=None).report
    assert "fixed" not in report and report["trials"][0]["recipe"]["mix"] != {"bip": 1.0, "wanda": 0.0}
