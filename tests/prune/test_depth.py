"""Depth pruning: the block criteria (Shortened LLaMA's PPL and Taylor+, ShortGPT's Block Influence),
the combined depth + width plan, and the pruned model's surgery, reload and generation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError

from adapruner.adapters import get_adapter
from adapruner.artifacts import load_pruned, save_pruned
from adapruner.catalog import BLOCK_CRITERIA
from adapruner.config import CalibrationConfig, DataSource, PruneConfig, PruneJob
from adapruner.evaluate import count_parameters
from adapruner.models import LoadedModel
from adapruner.pipeline import prune_copy
from adapruner.prune import LayerShape, PlanError, blocks_to_remove, plan_widths
from adapruner.prune.depth import (
    BlockScores,
    TaylorPlusCriterion,
    block_scores,
    choose_blocks,
    fixed_batch,
    mean_loss,
)
from tests.conftest import tiny_llama

# SmolLM2-135M's shapes (tests/prune/test_plan.py), with the parameters of a whole block.
BLOCK = 3 * 294_912 + 1536 * 1728 + 2 * 576
SMOL = [LayerShape(heads=3, head_params=294_912, channels=1536, channel_params=1728, block_params=BLOCK)] * 30
SMOL_PARAMS = 30 * BLOCK + 576


def make_identity(model: torch.nn.Module, layer: int) -> None:
    """Zero every unit of ``layer``: both residual branches then write zero, so the block is the identity."""
    adapter = get_adapter(model)
    for kind in ("heads", "channels"):
        group = adapter.unit_group(layer, kind)
        adapter.zero_units(group, torch.arange(group.n_units))


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(0, 96, (6, 24), generator=torch.Generator().manual_seed(3))


# ---- criteria --------------------------------------------------------------------------------------
def test_registry_lists_the_three_criteria_and_refuses_others():
    assert BLOCK_CRITERIA.names() == ["ppl", "taylor_plus", "block_influence"]
    with pytest.raises(ValidationError, match="(?s)block_criterion.*valid: ppl, taylor_plus, block_influence"):
        PruneConfig(block_criterion="angular")


def test_identity_block_has_zero_block_influence_and_is_the_least_influential(batch):
    model = tiny_llama(layers=4)
    make_identity(model, 2)
    scores = block_scores(get_adapter(model), batch, criterion="block_influence")
    assert scores.shape == (4,)
    assert abs(float(scores[2])) < 1e-6
    assert all(float(scores[i]) > 1e-3 for i in (0, 1, 3))
    assert choose_blocks(scores, 1, candidates=range(4)) == [2]


def test_ppl_criterion_is_the_perplexity_of_really_removing_the_block(batch):
    model = tiny_llama(layers=4)
    make_identity(model, 1)
    scores = block_scores(get_adapter(model), batch, criterion="ppl", batch_size=4)
    dense = math.exp(mean_loss(model, batch))
    for block in range(4):
        removed = copy.deepcopy(model)
        get_adapter(removed).remove_blocks([block])
        assert float(scores[block]) == pytest.approx(math.exp(mean_loss(removed, batch)), rel=1e-5)
    # Skipping the identity block changes nothing: the smallest removal impact of all blocks.
    impact = (scores - dense).abs()
    assert float(impact[1]) < 1e-4 * dense
    assert int(impact.argmin()) == 1


def test_taylor_plus_equals_the_hand_computed_block_sum(batch):
    model = tiny_llama(layers=3)
    scores = block_scores(get_adapter(model), batch, criterion="taylor_plus", batch_size=4)
    reference = copy.deepcopy(model)
    for start in range(0, batch.shape[0], 4):  # sum over samples of each sample's mean loss
        ids = batch[start : start + 4]
        (reference(ids, labels=ids).loss * ids.shape[0]).backward()
    expected = [
        sum(float((p.detach().double() * p.grad.double()).abs().sum()) for p in layer.parameters())
        for layer in reference.model.layers
    ]
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=0)
    assert all(p.grad is None for p in model.parameters())  # the scored model is left clean


def test_taylor_plus_of_an_identity_block_is_zero(batch):
    model = tiny_llama(layers=3)
    make_identity(model, 1)
    scores = TaylorPlusCriterion().raw(get_adapter(model), batch)
    assert float(scores[1]) == 0.0 and float(scores[0]) > 0 and float(scores[2]) > 0


def test_taylor_plus_keeps_the_first_four_and_last_two_blocks(batch):
    scores = block_scores(get_adapter(tiny_llama(layers=8)), batch, criterion="taylor_plus")
    assert torch.isinf(scores[[0, 1, 2, 3, 6, 7]]).all()
    assert torch.isfinite(scores[[4, 5]]).all()


def test_choose_blocks_takes_the_lowest_candidates():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.05, 0.9])
    assert choose_blocks(scores, 2, candidates=range(5)) == [0, 3]
    assert choose_blocks(scores, 2, candidates=[1, 2, 4]) == [1, 2]
    with pytest.raises(ValueError):
        choose_blocks(scores, 4, candidates=[1, 2, 4])


def test_block_scores_are_computed_once_per_criterion(batch):
    model = tiny_llama(layers=3)
    calls = []

    def make_batch():
        calls.append(1)
        return batch

    cached = BlockScores(get_adapter(model), make_batch)
    first = cached("block_influence")
    assert cached("block_influence") is first and len(calls) == 1
    assert fixed_batch(torch.arange(40).reshape(10, 4), 4)[:, 0].tolist() == [0, 12, 24, 36]


# ---- plan ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.35])
@pytest.mark.parametrize("depth_share", [0.25, 0.5, 1.0])
def test_depth_and_width_plan_meets_the_ratio(ratio, depth_share):
    config = PruneConfig(ratio=ratio, depth_share=depth_share)
    n = blocks_to_remove(SMOL, params_before=SMOL_PARAMS, config=config)
    target = ratio * SMOL_PARAMS
    assert abs(n * BLOCK - depth_share * target) <= BLOCK / 2 + 0.01 * target
    drop = list(range(30 - n, 30))
    plan = plan_widths(SMOL, params_before=SMOL_PARAMS, config=config, drop=drop)
    assert plan.drop == tuple(drop)
    width_removed = sum(
        (s.heads - k["heads"]) * s.head_params + (s.channels - k["channels"]) * s.channel_params
        for s, k in zip(SMOL, plan.keep, strict=True)
    )
    assert plan.params_removed == n * BLOCK + width_removed
    assert abs(plan.ratio_achieved - ratio) <= 0.01 * ratio
    assert all(plan.keep[i] == {"heads": 3, "channels": 1536} for i in drop)  # dropped blocks: no width budget


def test_more_depth_share_removes_more_blocks():
    counts = [
        blocks_to_remove(SMOL, params_before=SMOL_PARAMS, config=PruneConfig(ratio=0.3, depth_share=share))
        for share in (0.0, 0.3, 0.6, 1.0)
    ]
    assert counts[0] == 0 and counts == sorted(counts) and counts[-1] > counts[1]


def test_depth_share_that_needs_every_block_names_the_field():
    with pytest.raises(PlanError, match="prune.depth_share"):
        blocks_to_remove(
            SMOL,
            params_before=SMOL_PARAMS,
            config=PruneConfig(ratio=0.5, depth_share=1.0, allocation="protected", protect_first=12, protect_last=12),
        )


# ---- end to end: prune_copy, reload, generation --------------------------------------------------------
@pytest.fixture
def loaded(tiny_tokenizer, tmp_path):
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=6)
    return LoadedModel(model, tiny_tokenizer, "tiny")


@pytest.fixture
def calibration(tmp_path) -> CalibrationConfig:
    text = tmp_path / "calib.txt"
    text.write_text("\n\n".join(f"calibration paragraph {i} about pruning whole blocks." * 4 for i in range(40)))
    return CalibrationConfig(sources=(DataSource(kind="file", name=str(text)),), samples=8, seq_len=32)


@pytest.mark.parametrize("criterion", BLOCK_CRITERIA.names())
def test_prune_copy_removes_blocks_and_widths_and_meets_the_ratio(loaded, calibration, criterion):
    config = PruneConfig(ratio=0.3, depth_share=0.5, block_criterion=criterion, channel_multiple=1)
    job = PruneJob(calibration=calibration, prune=config)
    before = count_parameters(loaded.model, non_embedding=True)
    model, facts = prune_copy(loaded, job)
    assert len(facts["blocks_removed"]) == 1
    assert model.config.num_hidden_layers == get_adapter(model).n_layers == 5
    assert loaded.model.config.num_hidden_layers == 6  # the loaded model stays dense
    achieved = 1 - count_parameters(model, non_embedding=True) / before
    assert abs(achieved - 0.3) <= 0.01 * 0.3
    assert any(w["channels"] < 48 for w in facts["widths"])  # the rest of the budget came from width


def test_depth_pruned_model_reloads_with_identical_logits_and_generates(loaded, calibration, tmp_path, batch):
    job = PruneJob(calibration=calibration, prune=PruneConfig(ratio=0.35, depth_share=0.6, channel_multiple=1))
    model, facts = prune_copy(loaded, job)
    assert len(facts["blocks_removed"]) >= 1
    save_pruned(model, loaded.tokenizer, tmp_path / "out")
    reloaded, _ = load_pruned(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(reloaded(batch).logits, model(batch).logits)
    out = reloaded.generate(batch[:1, :5], max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        full = reloaded(out[:, :-1]).logits[:, -1].argmax(-1)
    assert out.shape == (1, 11) and torch.equal(full, out[:, -1])


# ---- search: the depth share and the block criterion as searched dimensions ---------------------------
def test_search_space_decodes_depth_and_prune_recipe_removes_blocks(loaded, calibration):
    from adapruner.config import Range, SearchSpace
    from adapruner.search.cache import load_pools
    from adapruner.search.run import prune_recipe
    from adapruner.search.space import decode, dims

    assert "depth_share" not in [d.name for d in dims(SearchSpace())]  # fixed at 0 by default
    space = SearchSpace(
        sources=calibration.sources,
        pool_size=4,
        seq_lens=(16,),
        samples=Range(low=2, high=4),
        metrics=("wanda", "l2"),
        depth_share=Range(low=0.3, high=0.8),
        block_criteria=("ppl", "block_influence"),
    )
    names = [d.name for d in dims(space)]
    assert "depth_share" in names and "block_criterion" in names
    recipe = decode(space, {"depth_share": 0.7, "block_criterion": "ppl"})
    config = recipe.prune_config(ratio=0.3, targets=("heads", "channels"))
    assert (config.depth_share, config.block_criterion) == (0.7, "ppl")
    adapter = get_adapter(loaded.model)
    pools = load_pools(adapter, loaded.tokenizer, space.sources, pool_size=4, seq_lens=(16,), seed=0, cache_dir=None)
    blocks = BlockScores(adapter, lambda: fixed_batch(pools[16].tokens))
    model, _ = prune_recipe(loaded, pools, recipe, ratio=0.3, targets=("heads", "channels"), seed=0, blocks=blocks)
    before = count_parameters(loaded.model, non_embedding=True)
    assert get_adapter(model).n_layers < loaded.model.config.num_hidden_layers == 6
    assert abs(1 - count_parameters(model, non_embedding=True) / before - 0.3) <= 0.01 * 0.3
    assert torch.isfinite(blocks("ppl")).all()
