from __future__ import annotations

import pytest
import torch

from adapruner.artifacts import load_pruned, read_manifest, save_pruned
from adapruner.catalog import COMPENSATORS
from adapruner.compensate import build_compensator, output_error
from adapruner.errors import UserError
from tests.compensate.conftest import prune_tiny


def _inputs(adapter, module: str, batch: torch.Tensor) -> torch.Tensor:
    """``[tokens, d_in]`` the inputs of ``module`` when ``batch`` runs through the adapter's model."""
    seen = []
    handle = adapter.linear(module).register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        adapter.model(batch)
    handle.remove()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in seen])


def test_pruned_inputs_are_the_columns_apply_plan_keeps(pruned_tiny):
    for target in pruned_tiny.targets:
        weight = pruned_tiny.pruned.linear(target.module).weight
        assert torch.equal(weight, target.dense_weight[:, target.keep])
        assert len(target.keep) % target.unit_size == 0 and len(target.drop) > 0
        assert len(target.keep) + len(target.drop) == target.dense_weight.shape[1]
    assert {t.module.rsplit(".", 1)[1] for t in pruned_tiny.targets} == {"o_proj", "down_proj"}


def test_output_error_is_the_reconstruction_error_on_calibration_tokens(pruned_tiny):
    """The covariance form equals ||X W^T - X_K W_K^T||^2 computed on the real inputs."""
    for target in pruned_tiny.targets:
        x = _inputs(pruned_tiny.dense, target.module, pruned_tiny.batch).double()
        w = target.dense_weight.double()
        direct = (x @ w.t() - x[:, target.keep] @ w[:, target.keep].t()).square().sum()
        cov = pruned_tiny.stats.cov[target.module]
        assert output_error(target.dense_weight, w[:, target.keep], target.keep, cov) == pytest.approx(
            float(direct), rel=1e-4
        )


@pytest.mark.parametrize("method", [m for m in COMPENSATORS.names() if m not in ("none", "bias")])
def test_weight_compensators_lower_the_layer_output_error(pruned_tiny, method):
    """Least squares, OBS and Newton rescaling each reconstruct every pruned projection's dense output on
    the calibration data better than leaving the kept weights unchanged."""
    before = {
        t.module: output_error(t.dense_weight, t.dense_weight[:, t.keep], t.keep, pruned_tiny.stats.cov[t.module])
        for t in pruned_tiny.targets
    }
    build_compensator(method)(pruned_tiny.pruned, pruned_tiny.targets, pruned_tiny.stats)
    for t in pruned_tiny.targets:
        after = output_error(
            t.dense_weight, pruned_tiny.pruned.linear(t.module).weight.detach(), t.keep, pruned_tiny.stats.cov[t.module]
        )
        assert after < before[t.module]


def test_none_changes_nothing(pruned_tiny):
    state = {k: v.clone() for k, v in pruned_tiny.pruned.model.state_dict().items()}
    build_compensator("none")(pruned_tiny.pruned, pruned_tiny.targets, pruned_tiny.stats)
    assert all(torch.equal(v, state[k]) for k, v in pruned_tiny.pruned.model.state_dict().items())


@pytest.mark.parametrize("method", COMPENSATORS.names())
def test_every_compensator_leaves_the_model_saveable_and_loadable(tmp_path, method):
    pruned = prune_tiny()
    build_compensator(method)(pruned.pruned, pruned.targets, pruned.stats)
    model = pruned.pruned.model
    save_pruned(model, None, tmp_path)
    manifest = read_manifest(tmp_path)
    assert bool(manifest["biases"]) == (method == "bias")
    reloaded, _ = load_pruned(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pruned.batch).logits, model(pruned.batch).logits, rtol=0, atol=0)


def test_unknown_compensator_lists_the_valid_ones():
    with pytest.raises(UserError, match="reformation"):
        build_compensator("nope")
