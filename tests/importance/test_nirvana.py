from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.config import PruneConfig
from adapruner.evaluate import count_parameters
from adapruner.importance import build_metric, metric_needs
from adapruner.prune import LayerShape, PlanError, layer_shapes, plan_widths
from adapruner.stats import collect_statistics, output_objective
from tests.conftest import tiny_llama


def test_out_grad_is_the_gradient_of_the_network_output(tiny_batch):
    model = tiny_llama()
    adapter = get_adapter(model)
    stats = collect_statistics(adapter, tiny_batch, needs={"out_grad"}, batch_size=1)
    name = "model.layers.1.mlp.down_proj"
    weight = adapter.linear(name).weight
    weight.requires_grad_(True)
    total = sum(output_objective(model(tiny_batch[i : i + 1]).logits) for i in range(tiny_batch.shape[0]))
    (expected,) = torch.autograd.grad(total, weight)
    torch.testing.assert_close(stats.out_grad[name], expected, rtol=1e-4, atol=1e-7)


def test_nirvana_is_the_first_order_output_change_summed_over_a_kv_group(tiny_batch):
    """S(W) = |W * dF/dW|: each weight's first-order effect on the output when it is removed, summed over
    the q rows of every query head that shares the KV head, its k and v rows and its o_proj columns."""
    adapter = get_adapter(tiny_llama(gqa=True))
    stats = collect_statistics(adapter, tiny_batch, needs=metric_needs(["nirvana"]))
    attn = adapter.layers[0].self_attn
    d, rep = attn.head_dim, attn.num_key_value_groups
    g = 1
    prefix = "model.layers.0.self_attn"

    def sal(module: str):
        return (adapter.linear(f"{prefix}.{module}").weight * stats.out_grad[f"{prefix}.{module}"]).abs()

    rows, kv = slice(g * rep * d, (g + 1) * rep * d), slice(g * d, (g + 1) * d)
    expected = (
        sal("q_proj")[rows].sum() + sal("k_proj")[kv].sum() + sal("v_proj")[kv].sum() + sal("o_proj")[:, rows].sum()
    )
    scores = build_metric("nirvana")(adapter, adapter.unit_group(0, "heads"), stats)
    assert scores.shape == (2,)
    torch.testing.assert_close(scores[g].float(), expected.detach())


def _shapes(n: int) -> list[LayerShape]:
    return [LayerShape(heads=4, head_params=100, channels=256, channel_params=10) for _ in range(n)]


def _saliency(low_layer: int, n: int = 4) -> list[dict[str, list[float]]]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        scale = 0.01 if i == low_layer else 1.0
        out.append(
            {
                "heads": (scale * (1 + torch.rand(4, generator=generator))).tolist(),
                "channels": (scale * (1 + torch.rand(256, generator=generator))).tolist(),
            }
        )
    return out


def test_nirvana_allocation_keeps_the_ratio_and_prunes_low_saliency_layers_first():
    shapes = _shapes(4)
    before = sum(s.heads * s.head_params + s.channels * s.channel_params for s in shapes)
    uniform = plan_widths(shapes, params_before=before, config=PruneConfig(ratio=0.2, targets=("heads", "channels")))
    adaptive = plan_widths(
        shapes,
        params_before=before,
        config=PruneConfig(ratio=0.2, allocation="nirvana", targets=("heads", "channels")),
        saliency=_saliency(2),
    )
    assert adaptive.params_removed == uniform.params_removed
    assert abs(adaptive.ratio_achieved - 0.2) <= 0.01 * 0.2
    assert sum(k["heads"] for k in adaptive.keep) == sum(k["heads"] for k in uniform.keep)
    # Layer 2's units score lowest, so it loses more than any other layer (down to the caps).
    lost = [s.channels - k["channels"] for s, k in zip(shapes, adaptive.keep, strict=True)]
    assert lost[2] == max(lost) and lost[2] > lost[0]
    assert adaptive.keep[2]["heads"] == 1  # min_kv_groups
    assert all(k["channels"] % 8 == 0 for k in adaptive.keep)


def test_nirvana_allocation_without_scores_is_an_error():
    shapes = _shapes(2)
    with pytest.raises(PlanError, match="nirvana"):
        plan_widths(shapes, params_before=2000, config=PruneConfig(ratio=0.2, allocation="nirvana"))


def test_nirvana_allocation_on_a_model_meets_the_ratio(tiny_batch):
    from adapruner.importance import score_groups
    from adapruner.prune import unit_saliency

    model = tiny_llama(layers=3)
    adapter = get_adapter(model)
    stats = collect_statistics(adapter, tiny_batch, needs={"out_grad"})
    raw = score_groups(adapter, adapter.groups(), stats, mix={"nirvana": 1.0}, normalization="none")
    before = count_parameters(model, non_embedding=True)
    config = PruneConfig(ratio=0.3, allocation="nirvana", channel_multiple=1)
    plan = plan_widths(layer_shapes(adapter), params_before=before, config=config, saliency=unit_saliency(raw, 3))
    assert abs(plan.ratio_achieved - 0.3) <= 0.01 * 0.3
