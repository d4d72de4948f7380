from __future__ import annotations

import torch

from adapruner.adapters import get_adapter
from adapruner.config import PruneConfig
from adapruner.evaluate import count_parameters
from adapruner.prune import apply_plan, layer_shapes, plan_widths, top_units


def test_top_units_keeps_the_best_in_order():
    scores = torch.tensor([0.1, 5.0, 0.3, 5.0, 2.0])
    assert top_units(scores, 3).tolist() == [1, 3, 4]
    assert top_units(scores, 0).tolist() == []


def test_apply_plan_removes_the_lowest_scored_units(tiny_model, tiny_batch):
    adapter = get_adapter(tiny_model)
    before = count_parameters(tiny_model, non_embedding=True)
    plan = plan_widths(layer_shapes(adapter), params_before=before, config=PruneConfig(ratio=0.3, channel_multiple=1))
    # Score channel c of every layer as c, heads likewise: the highest indices must survive.
    scores = {g.key: torch.arange(g.n_units, dtype=torch.float64) for g in adapter.groups()}
    expected_down = [
        adapter.layers[i].mlp.down_proj.weight[:, -k["channels"] :].detach().clone() for i, k in enumerate(plan.keep)
    ]
    apply_plan(adapter, scores, plan)
    assert adapter.widths() == list(plan.keep)
    for layer, expected in enumerate(expected_down):
        assert torch.equal(adapter.layers[layer].mlp.down_proj.weight, expected)
    after = count_parameters(tiny_model, non_embedding=True)
    assert before - after == plan.params_removed
    assert abs(plan.ratio_achieved - 0.3) <= 0.01 * 0.3
    with torch.no_grad():
        assert torch.isfinite(tiny_model(tiny_batch).logits).all()
