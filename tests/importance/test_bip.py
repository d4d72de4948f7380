from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.importance import build_metric, metric_needs
from adapruner.importance.bip import spectral_norms
from adapruner.stats import collect_statistics
from tests.conftest import tiny_llama


def _output_change(adapter, group, batch: torch.Tensor) -> torch.Tensor:
    """``[n_units]`` Frobenius norm over the batch's tokens of the change in the sub-block output (o_proj
    or down_proj) when each unit alone is zeroed, measured by running the model."""
    consumer = group.consumer()
    linear = adapter.linear(consumer.module)
    seen = []
    handle = linear.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    original = {s.module: adapter.linear(s.module).weight.detach().clone() for s in group.slices}
    changes = []
    with torch.no_grad():
        adapter.model(batch)
        dense = seen.pop()
        for unit in range(group.n_units):
            adapter.zero_units(group, torch.tensor([unit]))
            adapter.model(batch)
            changes.append((seen.pop() - dense).double().norm())
            for name, weight in original.items():
                adapter.linear(name).weight.copy_(weight)
    handle.remove()
    return torch.stack(changes)


def test_bip_bounds_the_block_output_change_and_is_exact_for_channels(tiny_model, tiny_batch):
    """The Lipschitz bound of LLM-BIP: ||X_u W_u^T||_F <= ||W_u||_2 ||X_u||_F, with equality for one
    column (an MLP channel). Zeroing one unit changes only its own contribution to the sub-block output."""
    adapter = get_adapter(tiny_model)
    stats = collect_statistics(adapter, tiny_batch, needs=metric_needs(["bip"]))
    metric = build_metric("bip")
    for layer in range(adapter.n_layers):
        heads = adapter.unit_group(layer, "heads")
        channels = adapter.unit_group(layer, "channels")
        head_bound = metric(adapter, heads, stats)
        assert (head_bound >= _output_change(adapter, heads, tiny_batch) * (1 - 1e-5)).all()
        torch.testing.assert_close(
            metric(adapter, channels, stats), _output_change(adapter, channels, tiny_batch), rtol=1e-4, atol=1e-7
        )


def test_bip_needs_one_forward_pass_only():
    assert metric_needs(["bip"]) == {"act"}


def test_bip_spectral_bound_is_tighter_than_the_frobenius_one(tiny_batch):
    adapter = get_adapter(tiny_llama())
    stats = collect_statistics(adapter, tiny_batch, needs={"act"})
    group = adapter.unit_group(0, "heads")
    o_proj = adapter.linear(group.consumer().module).weight.detach()
    size = group.consumer().unit_size
    act = stats.act_sq[group.consumer().module].reshape(group.n_units, size).sum(1).sqrt()
    frobenius = o_proj.reshape(o_proj.shape[0], group.n_units, size).norm(dim=(0, 2)) * act
    bound = build_metric("bip")(adapter, group, stats)
    assert (bound <= frobenius.double() + 1e-6).all() and (bound < frobenius.double()).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_spectral_norms_are_each_units_largest_singular_value(dtype):
    weight = torch.randn(48, 4 * 6, generator=torch.Generator().manual_seed(5)).to(dtype)
    weight[:, 6:12] *= 30.0  # one unit far larger than the others
    blocks = weight.float().t().reshape(4, 6, 48)
    expected = torch.linalg.matrix_norm(blocks, ord=2)
    torch.testing.assert_close(spectral_norms(weight, n_units=4, unit_size=6), expected, rtol=1e-5, atol=1e-6)
