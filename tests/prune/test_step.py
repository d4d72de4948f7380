"""The one pruning step (plan -> surgery and compensation, layer by layer) and the snapshot that undoes it exactly."""

from __future__ import annotations

import weakref

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.catalog import COMPENSATORS
from adapruner.compensate import build_compensator, pruned_inputs
from adapruner.compensate.obs import ObsCompensator
from adapruner.config import PruneConfig
from adapruner.evaluate import count_parameters
from adapruner.importance import score_groups
from adapruner.prune import apply_plan, remove_planned_blocks
from adapruner.prune.depth import block_scores
from adapruner.prune.step import DenseSnapshot, prune_step
from adapruner.stats import collect_statistics
from tests.conftest import tiny_llama

BATCH = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(0))


def dense_state(model: torch.nn.Module) -> dict:
    """Everything a restore must give back: weights, module and parameter objects, shapes, config."""
    return {
        "weights": {name: t.clone() for name, t in model.state_dict().items()},
        "modules": [(name, id(m)) for name, m in model.named_modules()],
        "params": [(name, id(p)) for name, p in model.named_parameters()],
        "features": [
            (name, m.in_features, m.out_features) for name, m in model.named_modules() if hasattr(m, "in_features")
        ],
        "layer_idx": [layer.self_attn.layer_idx for layer in model.model.layers],
        "config": model.config.to_dict(),
    }


def assert_same(model: torch.nn.Module, before: dict) -> None:
    after = dense_state(model)
    assert after["weights"].keys() == before["weights"].keys()
    for name, tensor in before["weights"].items():
        assert torch.equal(after["weights"][name], tensor), name
    assert {k: v for k, v in after.items() if k != "weights"} == {k: v for k, v in before.items() if k != "weights"}


def step(model, *, method: str, config: PruneConfig, snapshot: DenseSnapshot | None = None, calibration=None, **kwargs):
    adapter = get_adapter(model)
    compensator = kwargs.pop("compensator", None) or build_compensator(method)
    collected = collect_statistics(adapter, BATCH, needs={"act"})
    scores = score_groups(adapter, adapter.groups(), collected, mix={"wanda": 1.0})
    return prune_step(
        adapter,
        scores,
        config=config,
        params_before=count_parameters(model, non_embedding=True),
        compensator=compensator,
        calibration=calibration or (lambda: BATCH),
        block_scores=lambda criterion: block_scores(adapter, BATCH, criterion=criterion),
        snapshot=snapshot,
        **kwargs,
    )


@pytest.mark.parametrize("method", COMPENSATORS.names())
@pytest.mark.parametrize("depth_share", [0.0, 0.6], ids=["width", "depth"])
def test_snapshot_restores_the_dense_model_exactly(method, depth_share):
    model = tiny_llama(layers=4, attention_bias=True)  # o_proj has a bias: surgery keeps it, FLAP adds to it
    before = dense_state(model)
    snapshot = DenseSnapshot(model)
    config = PruneConfig(ratio=0.5, depth_share=depth_share, channel_multiple=1)
    plan = step(model, method=method, config=config, snapshot=snapshot)
    assert bool(plan.drop) == (depth_share > 0)
    assert count_parameters(model, non_embedding=True) < count_parameters(tiny_llama(layers=4, attention_bias=True))
    snapshot.restore()
    assert_same(model, before)
    fresh = tiny_llama(layers=4, attention_bias=True)
    with torch.no_grad():
        torch.testing.assert_close(model(BATCH).logits, fresh(BATCH).logits, rtol=0, atol=0)


def test_a_tensor_updated_in_place_is_restored_only_when_protected():
    """FLAP's bias is added in place to o_proj's existing bias (a Parameter surgery did not replace): the
    step saves it through the snapshot; a snapshot the step did not see cannot restore it."""
    config = PruneConfig(ratio=0.3, channel_multiple=1, targets=("heads", "channels"))
    unseen = tiny_llama(layers=3, attention_bias=True)
    bias = unseen.model.layers[0].self_attn.o_proj.bias
    dense_bias = bias.detach().clone()
    snapshot = DenseSnapshot(unseen)
    step(unseen, method="bias", config=config)  # no snapshot passed: nothing protected
    assert unseen.model.layers[0].self_attn.o_proj.bias is bias and not torch.equal(bias, dense_bias)
    snapshot.restore()
    assert not torch.equal(unseen.model.layers[0].self_attn.o_proj.bias, dense_bias)

    seen = tiny_llama(layers=3, attention_bias=True)
    before = dense_state(seen)
    snapshot = DenseSnapshot(seen)
    step(seen, method="bias", config=config, snapshot=snapshot)
    snapshot.restore()
    assert_same(seen, before)


def test_calibration_is_read_only_when_the_compensator_needs_statistics():
    def refuse():
        raise AssertionError("calibration read for a compensator that needs no statistics")

    model = tiny_llama(layers=3)
    step(model, method="none", config=PruneConfig(ratio=0.3, channel_multiple=1), calibration=refuse)
    calls = []
    other = tiny_llama(layers=3)
    step(
        other,
        method="obs",
        config=PruneConfig(ratio=0.3, channel_multiple=1),
        calibration=lambda: calls.append(1) or BATCH,
    )
    assert calls == [1]


@pytest.mark.parametrize("method", ["bias", "obs", "reformation", "numerical"])
@pytest.mark.parametrize("depth_share", [0.0, 0.6], ids=["width", "depth"])
def test_layer_by_layer_compensation_equals_one_whole_model_statistics_pass(method, depth_share):
    """The step's compensation (one layer's statistics at a time, surgery in between) gives the weights of
    compensating every projection from one whole-model pass of the dense model's statistics."""
    config = PruneConfig(ratio=0.4, depth_share=depth_share, channel_multiple=1, targets=("heads", "channels"))
    model = tiny_llama(layers=4, attention_bias=True)
    plan = step(model, method=method, config=config)

    reference = tiny_llama(layers=4, attention_bias=True)
    adapter = get_adapter(reference)
    stats = collect_statistics(adapter, BATCH, needs={"act", "cov"})
    scores = score_groups(adapter, adapter.groups(), stats, mix={"wanda": 1.0})
    targets = pruned_inputs(adapter, scores, plan)
    apply_plan(adapter, scores, plan, drop_blocks=False)
    build_compensator(method)(adapter, targets, stats)
    remove_planned_blocks(adapter, plan)

    assert bool(plan.drop) == (depth_share > 0) and targets
    got, want = model.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_compensation_holds_one_layers_statistics_at_a_time():
    """Each layer's statistics hold only that layer's pruned projections and are freed before the next
    layer's are collected (no whole-model covariance alive)."""
    seen: list[tuple[int, list[str], list[str], bool]] = []
    previous: list[weakref.ref] = []

    class Recording(ObsCompensator):
        def __call__(self, adapter, targets, stats):
            layers = {int(t.module.split(".")[2]) for t in targets}
            freed = all(ref() is None for ref in previous)
            seen.append((len(layers), sorted(stats.cov), sorted(t.module for t in targets), freed))
            previous.append(weakref.ref(stats.cov[targets[0].module]))
            super().__call__(adapter, targets, stats)

    model = tiny_llama(layers=4)
    config = PruneConfig(ratio=0.4, channel_multiple=1, targets=("heads", "channels"))
    step(model, method="obs", config=config, compensator=Recording())
    assert len(seen) == 4
    for index, (n_layers, cov, pruned, freed) in enumerate(seen):
        assert n_layers == 1 and freed and cov == pruned, index
        assert set(cov) <= {f"model.layers.{index}.mlp.down_proj", f"model.layers.{index}.self_attn.o_proj"}
    assert any(len(cov) == 2 for _, cov, _, _ in seen)


def test_blocks_go_after_compensation_and_the_stages_are_timed():
    stages = []

    class Record:
        def __init__(self, stage):
            self.stage = stage

        def __enter__(self):
            stages.append(self.stage)

        def __exit__(self, *exc):
            return False

    model = tiny_llama(layers=4)
    config = PruneConfig(ratio=0.5, depth_share=0.6, channel_multiple=1)
    plan = step(model, method="obs", config=config, timed=Record)
    assert stages == ["pruning", "compensation"]
    assert get_adapter(model).n_layers == 4 - len(plan.drop) and model.config.num_hidden_layers == 4 - len(plan.drop)
    assert len(plan.keep) == 4 and len(get_adapter(model).widths()) == 4 - len(plan.drop)


def test_during_a_trial_the_snapshot_holds_only_the_removed_entries():
    """No dense copy of a pruned weight is alive during a trial: every replaced Parameter is emptied, and
    the pruned model's tensors plus the saved removed entries are exactly the dense model's size."""
    model = tiny_llama(layers=4)
    dense = sum(p.numel() for p in model.parameters())
    originals = list(model.parameters())
    snapshot = DenseSnapshot(model)
    step(model, method="none", config=PruneConfig(ratio=0.4, channel_multiple=1), snapshot=snapshot)
    replaced = [p for p in originals if p.numel() == 0]
    assert replaced and len(replaced) == len(snapshot._slicings)
    kept = sum(p.numel() for p in model.parameters())
    dropped = sum(s.dropped.numel() for s in snapshot._slicings)
    assert kept < dense and kept + dropped == dense
    snapshot.restore()
    assert sum(p.numel() for p in model.parameters()) == dense
    with torch.no_grad():
        torch.testing.assert_close(model(BATCH).logits, tiny_llama(layers=4)(BATCH).logits, rtol=0, atol=0)


def test_restoring_frees_each_pruned_tensor_as_soon_as_it_is_undone(monkeypatch):
    """``restore`` rebuilds one dense Parameter at a time and frees that Parameter's pruned tensor and removed
    entries right away: while restoring, the dense weights rebuilt so far plus the pruned ones still to undo
    never exceed the dense model by more than the weight being rebuilt (no second, pruned model alongside)."""
    model = tiny_llama(layers=4)
    dense = sum(p.numel() for p in model.parameters())
    snapshot = DenseSnapshot(model)
    step(model, method="none", config=PruneConfig(ratio=0.4, channel_multiple=1), snapshot=snapshot)
    slicings = list(snapshot._slicings)
    held = []
    undo = type(slicings[0]).undo

    def counting_undo(slicing):
        undo(slicing)
        rebuilt = sum(s.old.numel() for s in slicings)  # 0 until undone, then the dense size
        pending = sum(s.new.numel() + s.dropped.numel() for s in slicings)  # freed once undone
        held.append(rebuilt + pending)

    monkeypatch.setattr(type(slicings[0]), "undo", counting_undo)
    sliced = sum(s.new.numel() + s.dropped.numel() for s in slicings)
    snapshot.restore()
    assert len(held) == len(slicings) > 1
    assert max(held) == sliced  # what was sliced, now rebuilt or still to undo: never both for one weight
    assert all(s.new.numel() == 0 and s.dropped.numel() == 0 for s in slicings)
    assert sum(p.numel() for p in model.parameters()) == dense
