"""A metric defined in one place (a class here, registered in ``METRICS`` for the test) works in ``prune``
and in ``search``: the search's pool collects its per-unit statistic because the metric declares it."""

from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.adapters.base import CoupledSlice
from adapruner.calibration import stack
from adapruner.catalog import METRICS
from adapruner.config import PruneJob, SearchJob
from adapruner.errors import UserError
from adapruner.importance import Importance, metric_needs, score_groups
from adapruner.models import LoadedModel
from adapruner.stats import Statistics, collect_statistics
from tests.conftest import tiny_llama, tiny_search_spec
from tests.search.test_cache import make_samples

KINDS = ("heads", "channels")


class ToyImportance(Importance):
    """|g| * W^2 summed over each unit's weights, pooled from its own per-sample unit terms."""

    needs = frozenset({"grad"})
    pooled_from = "toy_terms"
    calls = 0

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        type(self).calls += 1
        return weight.float().square() * stats.grad[slice_.module].abs()


class ExactOnlyImportance(ToyImportance):
    """The same formula, declared as needing exact statistics."""

    pooled_from = None


@pytest.fixture
def toy(monkeypatch):
    """Registers ``toy`` and ``exact_only`` for the test; the registry is restored afterwards."""
    monkeypatch.setattr(METRICS, "_entries", dict(METRICS._entries))
    METRICS.add("toy", f"{__name__}:ToyImportance", "test metric: |g| * W^2")
    METRICS.add("exact_only", f"{__name__}:ExactOnlyImportance", "test metric without a pooled statistic")
    ToyImportance.calls = 0
    return "toy"


def _records(report) -> list[dict]:
    return [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in report["trials"]]


def test_toy_metric_prunes(toy, tiny_tokenizer):
    from adapruner.pipeline import run_prune

    job = PruneJob.model_validate(
        {
            "model": {"source": "tiny", "device": "cpu", "dtype": "float32"},
            "calibration": {"sources": [{"kind": "builtin", "name": "jargon"}], "samples": 2, "seq_len": 16},
            "importance": {"mix": {toy: 1.0}},
            "prune": {"ratio": 0.25, "targets": list(KINDS)},
            "evaluate": {
                "texts": [{"kind": "builtin", "name": "pydoc"}],
                "seq_len": 16,
                "max_tokens": 64,
                "speed": False,
            },
        }
    )
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=2, intermediate_size=64)
    dense = get_adapter(model).widths()
    outcome = run_prune(job, loaded=LoadedModel(model, tiny_tokenizer, "tiny"))
    assert ToyImportance.calls > 0
    assert outcome.report["widths"] != [dict(w) for w in dense]


def test_toy_metric_is_pooled_from_what_it_declares(toy):
    from adapruner.search.cache import collect_pool_stats, pool_passes, pooled_scores

    assert pool_passes([toy, "wanda"]) == ("loss",)
    adapter = get_adapter(tiny_llama())
    samples = make_samples(3)
    pool = collect_pool_stats(adapter, samples, passes=pool_passes([toy]))
    assert "toy_terms" in pool.tensors
    kwargs = dict(mix={toy: 1.0}, aggregation="sum", normalization="none", kinds=KINDS)
    pooled = pooled_scores(adapter, pool, [s.id for s in samples], **kwargs)
    # Per-sample unit terms are added: the pooled score is the sum of the samples' own scores.
    singles = []
    for sample in samples:
        stats = collect_statistics(adapter, stack([sample]), needs=metric_needs([toy]))
        singles.append(score_groups(adapter, adapter.groups(), stats, mix={toy: 1.0}, normalization="none"))
    for key in pooled:
        torch.testing.assert_close(pooled[key], sum(single[key] for single in singles), rtol=1e-4, atol=1e-7)
    one = pooled_scores(adapter, pool, [samples[1].id], **kwargs)
    for key in one:
        torch.testing.assert_close(one[key], singles[1][key], rtol=1e-5, atol=1e-8)


def test_toy_metric_is_searched(toy, tmp_path, job_texts, tiny_tokenizer):
    from adapruner.search.run import run_search

    spec = tiny_search_spec(job_texts, model="tiny", trials=2, space={"metrics": [toy, "wanda"]})
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64)
    loaded = LoadedModel(model, tiny_tokenizer, "tiny")
    job = SearchJob.model_validate(spec)
    outcome = run_search(job, out=tmp_path / "run", loaded=loaded, cache_dir=tmp_path / "cache")
    records = _records(outcome.report)
    assert [r["status"] for r in records] == ["completed"] * 2
    assert set(records[0]["recipe"]["mix"]) == {toy, "wanda"}
    assert ToyImportance.calls > 0
    saved = [torch.load(path, weights_only=True) for path in (tmp_path / "cache").rglob("*.pt")]
    assert saved and all("toy_terms" in s["tensors"] for s in saved)


def test_a_metric_without_a_pooled_statistic_is_refused(toy):
    from adapruner.search.cache import check_poolable, pool_passes

    check_poolable((toy, "wanda", "l2", "random"))
    with pytest.raises(UserError, match="'exact_only' cannot be combined from cached statistics"):
        check_poolable(("exact_only",))
    assert pool_passes(["exact_only"]) == ()


def test_the_registry_is_restored_after_a_test():
    assert "toy" not in METRICS and "exact_only" not in METRICS
