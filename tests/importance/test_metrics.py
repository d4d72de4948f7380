from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter, slice_weight
from adapruner.catalog import METRICS
from adapruner.importance import aggregate, build_metric, metric_needs, normalize, score_groups
from adapruner.stats import NEEDS, collect_statistics
from tests.conftest import tiny_llama


@pytest.fixture
def setup(tiny_model, tiny_batch):
    adapter = get_adapter(tiny_model)
    stats = collect_statistics(adapter, tiny_batch, needs=set(NEEDS))
    return adapter, stats, tiny_batch


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_scores_every_unit(setup, name):
    adapter, stats, _ = setup
    metric = build_metric(name, seed=3)
    for group in adapter.groups():
        scores = metric(adapter, group, stats)
        assert scores.shape == (group.n_units,)
        assert torch.isfinite(scores).all()
        assert (scores >= 0).all()
        assert scores.std() > 0  # distinguishes units


def test_l1_matches_hand_count(setup):
    adapter, stats, _ = setup
    group = adapter.unit_group(1, "channels")
    mlp = adapter.layers[1].mlp
    expected = mlp.gate_proj.weight.abs().sum(1) + mlp.up_proj.weight.abs().sum(1) + mlp.down_proj.weight.abs().sum(0)
    torch.testing.assert_close(build_metric("l1")(adapter, group, stats).float(), expected.detach())


def test_l2_of_a_head_group_sums_its_query_heads(setup):
    adapter, stats, _ = setup
    attn = adapter.layers[0].self_attn
    group = adapter.unit_group(0, "heads")
    d, rep = attn.head_dim, attn.num_key_value_groups
    g = 1
    rows = slice(g * rep * d, (g + 1) * rep * d)
    expected = (
        attn.q_proj.weight[rows].square().sum()
        + attn.k_proj.weight[g * d : (g + 1) * d].square().sum()
        + attn.v_proj.weight[g * d : (g + 1) * d].square().sum()
        + attn.o_proj.weight[:, rows].square().sum()
    )
    torch.testing.assert_close(build_metric("l2")(adapter, group, stats)[g].float(), expected.detach())


def test_vector_taylor_is_the_derivative_of_the_loss_along_the_unit(tiny_batch):
    """|sum W*g| over one slice is |dL/d alpha| when the unit's weights in that slice are scaled by alpha."""
    model = tiny_llama()
    adapter = get_adapter(model)
    stats = collect_statistics(adapter, tiny_batch[:1], needs={"grad"})
    group = adapter.unit_group(2, "channels")
    down = adapter.layers[2].mlp.down_proj
    unit = 5
    alpha = torch.ones((), requires_grad=True)
    original = down.weight.detach().clone()
    scale = torch.ones_like(original)
    scale[:, unit] = 0
    down.weight = torch.nn.Parameter(original)  # a fresh leaf
    weight = original * scale + original * (1 - scale) * alpha
    del down.weight
    down.weight = weight
    loss = model(tiny_batch[:1], labels=tiny_batch[:1]).loss
    (dl_dalpha,) = torch.autograd.grad(loss, alpha)
    consumer = group.consumer()
    product = original * stats.grad[consumer.module]
    per_unit = slice_weight(product, consumer, group.n_units).sum((1, 2))
    torch.testing.assert_close(per_unit[unit], dl_dalpha, rtol=1e-4, atol=1e-7)


def test_taylor_statistics_are_the_autograd_gradients(tiny_batch):
    model = tiny_llama()
    adapter = get_adapter(model)
    stats = collect_statistics(adapter, tiny_batch, needs={"grad", "fisher"})
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # the model is left as it was
    name = "model.layers.0.mlp.up_proj"
    grads = []
    for row in tiny_batch:
        model.zero_grad()
        model(row[None], labels=row[None]).loss.backward()
        grads.append(adapter.linear(name).weight.grad.clone())
    torch.testing.assert_close(stats.grad[name], sum(grads))
    torch.testing.assert_close(stats.fisher[name], sum(g.square() for g in grads))


def test_taylor2_adds_the_fisher_term(setup):
    adapter, stats, _ = setup
    group = adapter.unit_group(0, "channels")
    up = adapter.layers[0].mlp.up_proj.weight.detach()
    name = "model.layers.0.mlp.up_proj"
    first = build_metric("taylor").element(up, group.slices[1], stats)
    mixed = build_metric("taylor2").element(up, group.slices[1], stats)
    expected = (up * stats.grad[name] - 0.5 * up.square() * stats.fisher[name]).abs()
    torch.testing.assert_close(mixed, expected)
    assert not torch.allclose(first, mixed)


def _inputs_of(model, module, batch):
    seen = []
    handle = module.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().reshape(-1, args[0].shape[-1]))
    )
    with torch.no_grad():
        model(batch)
    handle.remove()
    return torch.cat(seen)


def test_wanda_is_weight_times_input_norm(setup):
    adapter, stats, batch = setup
    down = adapter.layers[1].mlp.down_proj
    gate = adapter.layers[1].mlp.gate_proj
    x_down = _inputs_of(adapter.model, down, batch)
    x_gate = _inputs_of(adapter.model, gate, batch)
    up = adapter.layers[1].mlp.up_proj
    expected = (
        (gate.weight.abs() * x_gate.norm(dim=0)).sum(1)
        + (up.weight.abs() * x_gate.norm(dim=0)).sum(1)
        + (down.weight.abs() * x_down.norm(dim=0)).sum(0)
    )
    got = build_metric("wanda")(adapter, adapter.unit_group(1, "channels"), stats)
    torch.testing.assert_close(got.float(), expected.detach(), rtol=1e-4, atol=1e-6)


def test_flap_is_input_variance_times_column_norm(setup):
    adapter, stats, batch = setup
    o_proj = adapter.layers[2].self_attn.o_proj
    x = _inputs_of(adapter.model, o_proj, batch)
    per_channel = x.var(dim=0, unbiased=False) * o_proj.weight.square().sum(0)
    group = adapter.unit_group(2, "heads")
    width = group.consumer().unit_size
    expected = per_channel.reshape(group.n_units, width).sum(1)
    got = build_metric("flap")(adapter, group, stats)
    torch.testing.assert_close(got.float(), expected.detach(), rtol=1e-4, atol=1e-6)


def test_random_is_seeded(setup):
    adapter, stats, _ = setup
    group = adapter.unit_group(0, "channels")
    a = build_metric("random", seed=1)(adapter, group, stats)
    assert torch.equal(a, build_metric("random", seed=1)(adapter, group, stats))
    assert not torch.equal(a, build_metric("random", seed=2)(adapter, group, stats))


def test_aggregations():
    per_slice = torch.tensor([[1.0, 2.0], [3.0, 0.5]])
    assert aggregate(per_slice, "sum").tolist() == [4.0, 2.5]
    assert aggregate(per_slice, "mean").tolist() == [2.0, 1.25]
    assert aggregate(per_slice, "max").tolist() == [3.0, 2.0]
    assert aggregate(per_slice, "prod").tolist() == [3.0, 1.0]
    with pytest.raises(ValueError, match="valid: sum, mean, max, prod"):
        aggregate(per_slice, "median")


@pytest.mark.parametrize("how", ["mean", "max", "l2", "zscore", "rank"])
def test_normalization_is_scale_free_and_keeps_order(how):
    scores = torch.tensor([3.0, 1.0, 2.0, 8.0])
    normed = normalize(scores, how)
    torch.testing.assert_close(normed, normalize(scores * 1000, how))
    assert normed.argsort().tolist() == scores.argsort().tolist()


def test_mix_is_a_weighted_sum_of_normalised_metrics(setup):
    adapter, stats, _ = setup
    groups = adapter.groups()
    l1 = score_groups(adapter, groups, stats, mix={"l1": 1.0})
    wanda = score_groups(adapter, groups, stats, mix={"wanda": 1.0})
    mixed = score_groups(adapter, groups, stats, mix={"l1": 3.0, "wanda": 1.0})
    for key in mixed:
        torch.testing.assert_close(mixed[key], 0.75 * l1[key] + 0.25 * wanda[key])
    # Normalised per group: layers with larger raw scores do not dominate a mix.
    assert all(abs(v.mean().item() - 1) < 1e-9 for v in l1.values())


def test_non_finite_scores_are_an_error(setup):
    adapter, stats, _ = setup
    name = "model.layers.0.mlp.up_proj"
    stats.grad[name][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="layer 0"):
        score_groups(adapter, adapter.groups(), stats, mix={"taylor": 1.0})


def test_metric_needs():
    assert metric_needs(["l1", "random"]) == set()
    assert metric_needs({"taylor2": 1, "flap": 1}) == {"grad", "fisher", "act"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "column-weighted"])
def test_weighted_unit_totals_sum_the_element_scores_of_each_unit(monkeypatch, dtype, dim, power, weighted):
    """Each unit's sum of |W_ij| ** power * c_j, computed block by block (here blocks of a few rows, as for a
    large weight) without an element tensor, equals the sum of the element-wise scores over the unit's part of
    the weight, for units along rows or columns placed at an offset inside the weight (a fused projection)."""
    from adapruner.adapters.base import CoupledSlice
    from adapruner.importance import base

    monkeypatch.setattr(base, "_BLOCK_ELEMENTS", 40)  # 40 // 12 columns: blocks of 3 rows
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(10, 12, generator=generator).to(dtype)
    columns = torch.rand(12, generator=generator) if weighted else None
    slice_ = CoupledSlice(module="m", dim=dim, unit_size=2, offset=2)
    element = weight.float().abs() ** power * (1 if columns is None else columns[None, :])
    expected = slice_weight(element, slice_, 3).sum((1, 2))
    got = base.weighted_unit_totals(weight, slice_, 3, power=power, column_weights=columns)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
