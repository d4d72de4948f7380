from __future__ import annotations

import torch

from adapruner.compensate import build_compensator
from adapruner.compensate.bias import error_with_bias, flap_bias


def test_flap_bias_is_the_best_constant_and_lowers_the_error(pruned_tiny):
    """FLAP's bias W_J mean(x_J) is the least-squares optimal constant replacement of the removed
    columns' output, so it lowers the error and removes its mean (gradient of the error in b is zero)."""
    stats = pruned_tiny.stats
    for t in pruned_tiny.targets:
        mean = stats.act_sum[t.module] / stats.n_tokens
        bias = flap_bias(t.dense_weight, mean, t.drop)
        kw = dict(cov=stats.cov[t.module], total=stats.act_sum[t.module], n=stats.n_tokens)
        none = error_with_bias(t.dense_weight, t.keep, torch.zeros_like(bias), **kw)
        with_bias = error_with_bias(t.dense_weight, t.keep, bias, **kw)
        assert with_bias < none
        for scale in (0.9, 1.1):
            assert with_bias <= error_with_bias(t.dense_weight, t.keep, scale * bias, **kw)


def test_bias_compensation_adds_output_biases(pruned_tiny):
    model = pruned_tiny.pruned.model
    batch = pruned_tiny.batch
    with torch.no_grad():
        before = model(batch).logits
    build_compensator("bias")(pruned_tiny.pruned, pruned_tiny.targets, pruned_tiny.stats)
    for t in pruned_tiny.targets:
        assert pruned_tiny.pruned.linear(t.module).bias is not None
    with torch.no_grad():
        assert not torch.allclose(model(batch).logits, before)
