from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.calibration import Sample, stack
from adapruner.importance import score_groups
from adapruner.search import cache
from adapruner.search.cache import PoolStats, choose_samples, collect_pool_stats, model_fingerprint, pooled_scores
from adapruner.stats import collect_statistics
from tests.conftest import tiny_llama

KINDS = ("heads", "channels")


def make_samples(n: int, *, source: str = "s", seed: int = 0) -> list[Sample]:
    generator = torch.Generator().manual_seed(seed)
    return [Sample(f"{source}@{i * 16}+16", source, torch.randint(0, 96, (16,), generator=generator)) for i in range(n)]


@pytest.fixture(scope="module")
def pool_setup():
    model = tiny_llama()
    adapter = get_adapter(model)
    samples = make_samples(5)
    return adapter, samples, collect_pool_stats(adapter, samples)


@pytest.mark.parametrize("metric", ["wanda", "flap", "taylor_vector", "l2", "random"])
def test_pooled_scores_are_exact_where_documented(pool_setup, metric):
    adapter, samples, pool = pool_setup
    subset = samples[1:4]
    exact_stats = collect_statistics(adapter, stack(subset), needs={"act", "grad"}, batch_size=1)
    exact = score_groups(adapter, adapter.groups(), exact_stats, mix={metric: 1.0}, seed=3)
    pooled = pooled_scores(
        adapter,
        pool,
        [s.id for s in subset],
        mix={metric: 1.0},
        aggregation="sum",
        normalization="mean",
        kinds=KINDS,
        seed=3,
    )
    assert pooled.keys() == exact.keys()
    for key in exact:
        torch.testing.assert_close(pooled[key], exact[key], rtol=1e-4, atol=1e-6)


def test_pooled_taylor_adds_per_sample_saliencies(pool_setup):
    """sum_s |W g_s| >= |W sum_s g_s|, element by element: the documented approximation."""
    adapter, samples, pool = pool_setup
    exact_stats = collect_statistics(adapter, stack(samples), needs={"grad"}, batch_size=1)
    exact = score_groups(adapter, adapter.groups(), exact_stats, mix={"taylor": 1.0}, normalization="none")
    pooled = pooled_scores(
        adapter,
        pool,
        [s.id for s in samples],
        mix={"taylor": 1.0},
        aggregation="sum",
        normalization="none",
        kinds=KINDS,
    )
    for key in exact:
        assert (pooled[key] >= exact[key] * (1 - 1e-5)).all()
    # With one sample the two agree exactly.
    one = samples[:1]
    exact_stats = collect_statistics(adapter, stack(one), needs={"grad"}, batch_size=1)
    exact = score_groups(adapter, adapter.groups(), exact_stats, mix={"taylor": 1.0}, normalization="none")
    pooled = pooled_scores(
        adapter, pool, [one[0].id], mix={"taylor": 1.0}, aggregation="sum", normalization="none", kinds=KINDS
    )
    for key in exact:
        torch.testing.assert_close(pooled[key], exact[key], rtol=1e-4, atol=1e-7)


def test_collecting_leaves_the_model_unchanged(pool_setup):
    adapter, _, _ = pool_setup
    assert all(p.grad is None and p.requires_grad for p in adapter.model.parameters())


def test_choose_samples_follows_the_weights_and_the_seed():
    parts = [
        PoolStats([s.id for s in make_samples(6, source=src)], [src] * 6, 16, {"x": torch.zeros(6, 1)})
        for src in ("a", "b")
    ]
    pool = PoolStats.concat(parts)
    chosen = choose_samples(pool, weights={"a": 0.75, "b": 0.25}, n=8, subset_seed=1)
    assert sum(i.startswith("a@") for i in chosen) == 6 and len(chosen) == 8 == len(set(chosen))
    assert chosen == choose_samples(pool, weights={"a": 0.75, "b": 0.25}, n=8, subset_seed=1)
    assert set(chosen) != set(choose_samples(pool, weights={"a": 0.5, "b": 0.5}, n=8, subset_seed=1))
    other = choose_samples(pool, weights={"a": 0.5, "b": 0.5}, n=4, subset_seed=2)
    assert other != choose_samples(pool, weights={"a": 0.5, "b": 0.5}, n=4, subset_seed=3)
    # A source that cannot supply its share hands the rest to the others.
    assert len(choose_samples(pool, weights={"a": 1.0, "b": 0.0}, n=9, subset_seed=0)) == 9


def test_pool_is_cached_on_disk(tmp_path, monkeypatch, tiny_tokenizer):
    from adapruner.config import DataSource

    text = tmp_path / "calib.txt"
    text.write_text("\n\n".join(f"paragraph {i} of calibration text." * 4 for i in range(50)))
    model = tiny_llama(vocab_size=len(tiny_tokenizer))
    adapter = get_adapter(model)
    source = DataSource(kind="file", name=str(text))
    kwargs = dict(pool_size=3, seq_len=16, seed=0, cache_dir=tmp_path / "cache")
    first = cache.load_pool(adapter, tiny_tokenizer, [source], **kwargs)
    monkeypatch.setattr(cache, "collect_pool_stats", lambda *a, **k: pytest.fail("recomputed"))
    second = cache.load_pool(adapter, tiny_tokenizer, [source], **kwargs)
    assert first.sample_ids == second.sample_ids and len(first.sample_ids) == 3
    for key in first.tensors:
        assert torch.equal(first.tensors[key], second.tensors[key])
    files = list((tmp_path / "cache").rglob("*.pt"))
    assert len(files) == 1 and files[0].parent.name == model_fingerprint(model)


def test_fingerprint_changes_with_the_weights():
    model = tiny_llama()
    before = model_fingerprint(model)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1
    assert model_fingerprint(model) != before
    assert model_fingerprint(tiny_llama()) == before


def _pooled(adapter, pool, ids, metric, normalization="none"):
    return pooled_scores(
        adapter, pool, ids, mix={metric: 1.0}, aggregation="sum", normalization=normalization, kinds=KINDS
    )


def test_pooled_bip_is_exact(pool_setup):
    adapter, samples, pool = pool_setup
    subset = samples[1:4]
    stats = collect_statistics(adapter, stack(subset), needs={"act"})
    exact = score_groups(adapter, adapter.groups(), stats, mix={"bip": 1.0}, normalization="none")
    pooled = _pooled(adapter, pool, [s.id for s in subset], "bip")
    for key in exact:
        torch.testing.assert_close(pooled[key], exact[key], rtol=1e-4, atol=1e-7)


def test_pooled_nirvana_adds_per_sample_saliencies(pool_setup):
    """Like taylor: sum_s |W f_s| >= |W sum_s f_s| (the documented approximation), equal for one sample."""
    adapter, samples, pool = pool_setup
    stats = collect_statistics(adapter, stack(samples), needs={"out_grad"}, batch_size=1)
    exact = score_groups(adapter, adapter.groups(), stats, mix={"nirvana": 1.0}, normalization="none")
    pooled = _pooled(adapter, pool, [s.id for s in samples], "nirvana")
    for key in exact:
        assert (pooled[key] >= exact[key] * (1 - 1e-5)).all()
        assert (pooled[key] > exact[key] * (1 + 1e-4)).any()
    one = samples[:1]
    stats = collect_statistics(adapter, stack(one), needs={"out_grad"})
    exact = score_groups(adapter, adapter.groups(), stats, mix={"nirvana": 1.0}, normalization="none")
    pooled = _pooled(adapter, pool, [one[0].id], "nirvana")
    for key in exact:
        torch.testing.assert_close(pooled[key], exact[key], rtol=1e-4, atol=1e-7)


def test_pooled_numerical_is_newton_on_the_diagonal_covariance(pool_setup):
    adapter, samples, pool = pool_setup
    stats = collect_statistics(adapter, stack(samples), needs={"act"})  # no covariance: its diagonal only
    exact = score_groups(adapter, adapter.groups(), stats, mix={"numerical": 1.0}, normalization="none")
    pooled = _pooled(adapter, pool, [s.id for s in samples], "numerical")
    for key in exact:
        torch.testing.assert_close(pooled[key], exact[key], rtol=1e-4, atol=1e-7)


def test_pool_keeps_the_token_ids(pool_setup):
    _, samples, pool = pool_setup
    ids = [samples[3].id, samples[0].id]
    assert torch.equal(cache.pool_tokens(pool, ids), torch.stack([samples[3].input_ids, samples[0].input_ids]))


def test_pooled_scores_refuse_non_finite_statistics(pool_setup):
    """The pooled path runs the same score_groups as a prune, its non-finite check included."""
    adapter, samples, pool = pool_setup
    broken = PoolStats(
        pool.sample_ids,
        pool.sources,
        pool.tokens_per_sample,
        pool.tensors | {"taylor_abs": torch.full_like(pool.tensors["taylor_abs"], float("nan"))},
        pool.tokens,
    )
    ids = [s.id for s in samples]
    with pytest.raises(FloatingPointError, match="non-finite scores"):
        _pooled(adapter, broken, ids, "taylor")
