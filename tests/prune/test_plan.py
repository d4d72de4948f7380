from __future__ import annotations

import pytest

from adapruner.config import PruneConfig
from adapruner.prune import LayerShape, PlanError, plan_widths, spread

# SmolLM2-135M: 30 layers, 3 KV groups of (3 query heads x 64) over hidden 576, 1536 SwiGLU channels.
SMOL = [LayerShape(heads=3, head_params=294_912, channels=1536, channel_params=1728)] * 30
SMOL_PARAMS = 30 * (3 * 294_912 + 1536 * 1728 + 2 * 576) + 576


def removed(plan, shapes=SMOL):
    return sum(
        (s.heads - k["heads"]) * s.head_params + (s.channels - k["channels"]) * s.channel_params
        for s, k in zip(shapes, plan.keep, strict=True)
    )


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.2, 0.35, 0.5])
@pytest.mark.parametrize("targets", [("heads", "channels"), ("channels",)])
def test_ratio_is_met_within_one_percent(ratio, targets):
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=ratio, targets=targets))
    assert plan.params_removed == removed(plan)
    assert abs(plan.ratio_achieved - ratio) <= 0.01 * ratio
    assert all(k["heads"] >= 1 and k["channels"] >= 8 for k in plan.keep)
    assert all(k["channels"] % 8 == 0 for k in plan.keep)
    if targets == ("channels",):
        assert all(k["heads"] == 3 for k in plan.keep)


def test_ratio_zero_keeps_everything():
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.0))
    assert plan.params_removed == 0
    assert all(k == {"heads": 3, "channels": 1536} for k in plan.keep)


def test_uniform_allocation_is_even_across_layers():
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.2, targets=("channels",)))
    widths = {k["channels"] for k in plan.keep}
    assert max(widths) - min(widths) <= 8


def test_protected_layers_stay_whole():
    config = PruneConfig(ratio=0.2, allocation="protected", protect_first=4, protect_last=2)
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=config)
    for i in [0, 1, 2, 3, 28, 29]:
        assert plan.keep[i] == {"heads": 3, "channels": 1536}
    assert all(plan.keep[i]["channels"] < 1536 for i in range(4, 28))
    assert abs(plan.ratio_achieved - 0.2) <= 0.002


def test_attention_share_moves_the_budget():
    none = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.2, attn_share=0.0, targets=("heads", "channels")))
    half = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.2, attn_share=0.5, targets=("heads", "channels")))
    assert all(k["heads"] == 3 for k in none.keep)
    heads_removed = sum(3 - k["heads"] for k in half.keep) * 294_912
    assert abs(heads_removed - 0.5 * half.target_removed) <= 294_912
    assert abs(half.ratio_achieved - 0.2) <= 0.002


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_attn_gamma_sets_mlp_sparsity_to_gamma_times_attention_sparsity(gamma):
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.2, attn_gamma=gamma, targets=("heads", "channels")))
    attn_sparsity = sum(3 - k["heads"] for k in plan.keep) / (3 * 30)
    mlp_sparsity = sum(1536 - k["channels"] for k in plan.keep) / (1536 * 30)
    # Whole KV groups are coarse (90 in all): the ratio holds to within one group of attention.
    assert mlp_sparsity / (attn_sparsity + 1 / 90) <= gamma <= mlp_sparsity / (attn_sparsity - 1 / 90)
    assert abs(plan.ratio_achieved - 0.2) <= 0.002
    if gamma == 1.0:
        assert plan.keep == plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.2, targets=("heads", "channels"))).keep


def test_attn_gamma_and_attn_share_are_exclusive():
    with pytest.raises(ValueError, match="attn_gamma: attn_share sets the attention/MLP split too"):
        PruneConfig(attn_share=0.1, attn_gamma=3.0)


def test_unreachable_target_names_the_field():
    with pytest.raises(PlanError, match="prune.ratio"):
        plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.5, targets=("heads",)))
    with pytest.raises(PlanError, match="protect_first"):
        plan_widths(
            SMOL,
            params_before=SMOL_PARAMS,
            config=PruneConfig(ratio=0.2, allocation="protected", protect_first=20, protect_last=10),
        )


def test_spread():
    assert spread(7, 3) == [2, 3, 2] or sorted(spread(7, 3)) == [2, 2, 3]
    assert sum(spread(13, 30)) == 13 and max(spread(13, 30)) == 1
    assert spread(0, 4) == [0, 0, 0, 0]


@pytest.mark.parametrize("slope", [-0.8, 0.5])
def test_depth_slope_tilts_the_budget_and_still_meets_the_target(slope):
    plan = plan_widths(
        SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.2, targets=("channels",), depth_slope=slope)
    )
    first, last = plan.keep[0]["channels"], plan.keep[-1]["channels"]
    assert (last < first) if slope > 0 else (first < last)
    assert abs(plan.ratio_achieved - 0.2) <= 0.002


def test_weighted_spread_is_proportional():
    assert spread(10, 3, weights=[1, 1, 3]) == [2, 2, 6]
    assert sum(spread(7, 4, weights=[0.1, 0.2, 0.3, 0.4])) == 7


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.35])
def test_uniform_keeps_one_width_in_every_layer(ratio):
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=ratio, uniform=True))
    assert len({(k["heads"], k["channels"]) for k in plan.keep}) == 1
    step = 30 * 8 * 1728  # one chunk of 8 channels in every layer
    assert abs(plan.params_removed - plan.target_removed) <= max(0.01 * plan.target_removed, step / 2)
    free = plan_widths(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=ratio))
    assert len({(k["heads"], k["channels"]) for k in free.keep}) > 1  # what uniform changes


def test_uniform_honours_the_channel_multiple():
    config = PruneConfig(ratio=0.2, uniform=True, channel_multiple=64)
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=config)
    assert {k["channels"] % 64 for k in plan.keep} == {0} and len({k["channels"] for k in plan.keep}) == 1


def test_uniform_refuses_allocations_that_vary_by_layer():
    with pytest.raises(ValueError, match="uniform: one width for every layer needs allocation 'uniform' and depth_slope 0"):
        PruneConfig(ratio=0.2, uniform=True, depth_slope=0.5)
    with pytest.raises(ValueError, match="got allocation 'protected'"):
        PruneConfig(ratio=0.2, uniform=True, allocation="protected")


# The tiny test LLaMA (tests/conftest.py): 3 layers, 2 KV groups of 2 x 8 query dims over hidden 32, 48 channels.
TINY = [LayerShape(heads=2, head_params=32 * 8 * 2 * 2 + 32 * 8 * 2, channels=48, channel_params=3 * 32)] * 3
TINY_PARAMS = 3 * (2 * TINY[0].head_params + 48 * 3 * 32 + 2 * 32) + 32


@pytest.mark.parametrize("targets", [("heads", "channels"), ("heads",)])
def test_a_ratio_between_reachable_steps_names_the_rounding_and_ratios_that_work(targets):
    import re

    with pytest.raises(PlanError) as raised:
        plan_widths(TINY, params_before=TINY_PARAMS, config=PruneConfig(ratio=0.15, targets=targets))
    message = str(raised.value)
    assert "at most" not in message and "KV groups" in message
    assert ("channel_multiple=8" in message) == ("channels" in targets)
    named = re.search(r"use prune.ratio ([\d.]+(?: or [\d.]+)?)", message).group(1)
    suggested = [float(r) for r in named.split(" or ")]
    assert len(suggested) == 2 and suggested[0] < 0.15 < suggested[1]
    for ratio in suggested:  # each one it names does work
        plan = plan_widths(TINY, params_before=TINY_PARAMS, config=PruneConfig(ratio=ratio, targets=targets))
        assert abs(plan.ratio_achieved - ratio) <= 0.01 * ratio


def test_a_ratio_past_what_the_targets_hold_names_the_true_maximum():
    with pytest.raises(PlanError, match=r"at most 0\.198 of the parameters") as raised:
        plan_widths(TINY, params_before=TINY_PARAMS, config=PruneConfig(ratio=0.25, targets=("heads",)))
    assert "lower prune.ratio" in str(raised.value)
    plan = plan_widths(TINY, params_before=TINY_PARAMS, config=PruneConfig(ratio=0.198, targets=("heads",)))
    assert all(k["heads"] == 1 for k in plan.keep)  # the maximum: every layer down to min_kv_groups
