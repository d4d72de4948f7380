"""Memory bounds of the statistics passes: gradients are reduced as autograd produces them and freed,
and only the backward passes that the chosen metrics read are run."""

from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.search.cache import collect_pool_stats, pool_passes, unit_statistics
from adapruner.stats import NEEDS, collect_statistics, unit_modules
from tests.conftest import tiny_llama
from tests.search.test_cache import make_samples


class GradWatch:
    """Counts, each time autograd finishes a unit weight's gradient, how many parameters hold a ``.grad``.

    Its hooks are registered before the statistics pass's own, so they see the new gradient and every
    one still alive; ``backward_calls`` counts the backward passes."""

    def __init__(self, adapter, monkeypatch):
        self.model = adapter.model
        self.peak = 0
        self.seen = 0
        self.backward_calls = 0
        self.handles = [
            adapter.linear(name).weight.register_post_accumulate_grad_hook(self._count)
            for name in unit_modules(adapter)
        ]
        original = torch.autograd.backward

        def counted(*args, **kwargs):
            self.backward_calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "backward", counted)

    def _count(self, _param) -> None:
        self.seen += 1
        self.peak = max(self.peak, sum(p.grad is not None for p in self.model.parameters()))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.fixture
def watched(monkeypatch):
    adapter = get_adapter(tiny_llama())
    watch = GradWatch(adapter, monkeypatch)
    yield adapter, watch
    watch.close()


def test_statistics_hold_one_gradient_at_a_time_and_keep_none(watched):
    adapter, watch = watched
    batch = torch.randint(0, 96, (3, 16), generator=torch.Generator().manual_seed(0))
    stats = collect_statistics(adapter, batch, needs=NEEDS, batch_size=2)
    assert watch.seen >= 2 * 3 * len(unit_modules(adapter))  # every sample's loss and output gradients
    assert watch.peak == 1
    assert all(p.grad is None for p in adapter.model.parameters())
    assert set(stats.grad) == set(stats.fisher) == set(stats.out_grad) == set(unit_modules(adapter))


@pytest.mark.parametrize(
    ("needs", "passes_per_chunk"), [({"act"}, 0), ({"grad"}, 1), ({"grad", "fisher"}, 1), ({"out_grad"}, 1)]
)
def test_statistics_run_only_the_backward_passes_they_need(watched, needs, passes_per_chunk):
    adapter, watch = watched
    batch = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(0))
    stats = collect_statistics(adapter, batch, needs=needs, batch_size=2)
    chunks = 4 if "fisher" in needs else 2  # the Fisher takes one backward per sample
    assert watch.backward_calls == passes_per_chunk * chunks
    assert bool(stats.out_grad) == ("out_grad" in needs)
    assert bool(stats.grad) == ("grad" in needs)


@pytest.mark.parametrize("passes", [(), ("loss",), ("output",), ("loss", "output")])
def test_pool_reduces_each_gradient_as_it_comes(watched, passes):
    adapter, watch = watched
    samples = make_samples(3)
    full = collect_pool_stats(get_adapter(tiny_llama()), samples)  # another copy of the same weights
    watch.backward_calls = 0
    pool = collect_pool_stats(adapter, samples, passes=passes)
    assert watch.backward_calls == len(passes) * len(samples)
    assert watch.peak <= 1
    assert all(p.grad is None for p in adapter.model.parameters())
    kept = {"loss": {"taylor_abs", "taylor_vec", "taylor2_abs"}, "output": {"nirvana_abs"}}
    expected = {"act_sq", "act_sum"}.union(*(kept[p] for p in passes))
    assert set(pool.tensors) == expected
    for key in expected:  # the statistics a pass gives do not depend on the other passes
        torch.testing.assert_close(pool.tensors[key], full.tensors[key])
    assert set(full.tensors) >= set(unit_statistics())


def test_pool_passes_follow_the_searched_metrics():
    assert pool_passes(["wanda", "flap", "l2"]) == ()
    assert pool_passes(["taylor", "wanda"]) == ("loss",)
    assert pool_passes(["nirvana"]) == ("output",)
    assert pool_passes(["taylor2", "nirvana", "bip"]) == ("loss", "output")


def test_a_pool_without_a_pass_refuses_the_metrics_that_need_it():
    from adapruner.search.cache import pooled_scores

    adapter = get_adapter(tiny_llama())
    samples = make_samples(2)
    pool = collect_pool_stats(adapter, samples, passes=())
    ids = [s.id for s in samples]
    kwargs = dict(aggregation="sum", normalization="mean", kinds=("heads", "channels"))
    assert pooled_scores(adapter, pool, ids, mix={"wanda": 1.0}, **kwargs)  # forward statistics suffice
    with pytest.raises(ValueError, match="'taylor': this pool was built without its loss backward pass"):
        pooled_scores(adapter, pool, ids, mix={"taylor": 1.0}, **kwargs)


@pytest.mark.parametrize("metric", ["taylor", "taylor2", "taylor_vector", "nirvana"])
def test_prune_scores_gradient_metrics_from_per_sample_unit_terms_as_the_pool_does(metric):
    """``prune``'s statistics of a gradient metric are the per-unit terms of each sample's gradients, summed
    (nothing weight-shaped is kept), and give the same scores as a search's pool of those samples."""
    from adapruner.calibration import stack
    from adapruner.importance import score_groups
    from adapruner.importance.base import build_metric, unit_statistics_of
    from adapruner.search.cache import pooled_scores

    adapter = get_adapter(tiny_llama())
    samples = make_samples(3)
    stats = collect_statistics(adapter, stack(samples), needs=set(), unit_terms=unit_statistics_of([metric]))
    assert not stats.grad and not stats.fisher and not stats.out_grad
    assert set(stats.unit_sums) == {build_metric(metric).pooled_from}
    exact = score_groups(adapter, adapter.groups(), stats, mix={metric: 1.0}, normalization="none")
    pool = collect_pool_stats(adapter, samples, passes=pool_passes([metric]))
    pooled = pooled_scores(
        adapter,
        pool,
        [s.id for s in samples],
        mix={metric: 1.0},
        aggregation="sum",
        normalization="none",
        kinds=("heads", "channels"),
    )
    for key in exact:
        torch.testing.assert_close(pooled[key], exact[key], rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in adapter.model.parameters())
