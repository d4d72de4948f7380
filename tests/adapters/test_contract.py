"""The contract every model adapter must pass, on tiny random configs with and without GQA.

A new architecture adds its tiny config factories to ``CASES`` (tests/adapters/families.py); nothing
else changes here.
"""

from __future__ import annotations

import copy

import pytest
import torch

from adapruner.adapters import UNIT_KINDS, get_adapter
from adapruner.artifacts import load_pruned, save_pruned
from adapruner.catalog import ADAPTERS
from tests.adapters.families import CASES
from tests.conftest import tiny_llama


@pytest.fixture(params=sorted(CASES))
def model(request):
    return CASES[request.param]()


def logits(model, batch):
    with torch.no_grad():
        return model(batch).logits


def test_every_registered_adapter_has_a_case():
    covered = {CASES[name]().config.model_type for name in CASES}
    assert covered == set(ADAPTERS.names())


def test_keeping_every_unit_changes_nothing(model, tiny_batch):
    before = logits(model, tiny_batch)
    adapter = get_adapter(model)
    for group in adapter.groups():
        adapter.remove_units(group, torch.arange(group.n_units))
    assert torch.equal(logits(model, tiny_batch), before)


@pytest.mark.parametrize("kind", UNIT_KINDS)
def test_removing_units_equals_zeroing_them(model, tiny_batch, kind):
    masked = copy.deepcopy(model)
    adapter, masked_adapter = get_adapter(model), get_adapter(masked)
    params_before = sum(p.numel() for p in model.parameters())
    removed_params = 0
    for layer in range(adapter.n_layers):
        group = adapter.unit_group(layer, kind)
        drop = torch.tensor([layer % group.n_units])  # a different unit in each layer
        keep = torch.tensor([u for u in range(group.n_units) if u not in drop.tolist()])
        masked_adapter.zero_units(group, drop)
        removed_params += adapter.params_per_unit(group)
        adapter.remove_units(group, keep)
        assert adapter.unit_group(layer, kind).n_units == group.n_units - 1
    torch.testing.assert_close(logits(model, tiny_batch), logits(masked, tiny_batch), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == params_before - removed_params


def test_removing_a_block_equals_zeroing_its_outputs(model, tiny_batch):
    masked = copy.deepcopy(model)
    masked_adapter = get_adapter(masked)
    for kind in UNIT_KINDS:  # a block whose residual branches write zero is the identity
        group = masked_adapter.unit_group(1, kind)
        masked_adapter.zero_units(group, torch.arange(group.n_units))
    adapter = get_adapter(model)
    adapter.remove_blocks([1])
    assert adapter.n_layers == model.config.num_hidden_layers == 2
    torch.testing.assert_close(logits(model, tiny_batch), logits(masked, tiny_batch), rtol=1e-5, atol=1e-5)


def test_pruned_model_generates_with_cache(model, tiny_batch):
    adapter = get_adapter(model)
    adapter.remove_blocks([0])
    for group in adapter.groups():
        adapter.remove_units(group, torch.arange(group.n_units // 2 or 1))
    out = model.generate(tiny_batch[:1, :4], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 9)
    # The cached decode must agree with a full forward over the generated text.
    full = logits(model, out[:, :-1])[:, -1].argmax(-1)
    assert torch.equal(full, out[:, -1])


def test_set_widths_matches_pruned_shapes(model):
    pruned = copy.deepcopy(model)
    adapter = get_adapter(pruned)
    for group in adapter.groups():
        adapter.remove_units(group, torch.arange(group.n_units)[group.layer % 2 :])
    fresh = get_adapter(copy.deepcopy(model))
    fresh.set_widths(adapter.widths())
    shapes = {k: v.shape for k, v in pruned.state_dict().items()}
    assert shapes == {k: v.shape for k, v in fresh.model.state_dict().items()}


def test_sync_config_reports_uniform_widths(model):
    adapter = get_adapter(model)
    for group in adapter.groups():
        adapter.remove_units(group, torch.arange(group.n_units - 1))
    assert adapter.sync_config()
    assert model.config.num_key_value_heads == adapter.widths()[0]["heads"]
    assert model.config.intermediate_size == adapter.widths()[0]["channels"]
    adapter.remove_units(adapter.unit_group(0, "channels"), torch.arange(2))
    assert not adapter.sync_config()


def test_depth_and_width_pruned_model_reloads_with_identical_logits(model, tiny_batch, tmp_path):
    adapter = get_adapter(model)
    adapter.remove_blocks([1])
    for group in adapter.groups():  # non-uniform widths: layer 0 loses one unit, layer 1 none
        adapter.remove_units(group, torch.arange(group.n_units - (1 - group.layer % 2)))
    save_pruned(model, None, tmp_path)
    reloaded, _ = load_pruned(tmp_path)
    assert get_adapter(reloaded).widths() == adapter.widths()
    assert reloaded.config.num_hidden_layers == 2
    assert torch.equal(logits(reloaded, tiny_batch), logits(model, tiny_batch))


def test_unsupported_model_type_lists_supported():
    model = tiny_llama()
    model.config.model_type = "mamba"
    with pytest.raises(ValueError, match="supported: " + ", ".join(ADAPTERS.names())):
        get_adapter(model)


def test_multimodal_gemma3_is_refused_naming_the_text_type():
    from transformers import Gemma3Config

    model = tiny_llama()
    model.config = Gemma3Config()
    with pytest.raises(ValueError, match="'gemma3' is not supported; supported: .*gemma3_text"):
        get_adapter(model)


def test_pooled_statistics_agree_with_direct_scores(model, tiny_batch):
    """The search's cached per-sample statistics give the same vector-Taylor scores as one direct pass
    (an exact identity: |sum_s W * g_s| = |W * sum_s g_s|), fused projections included."""
    from adapruner.calibration import Sample
    from adapruner.importance import score_groups
    from adapruner.search.cache import collect_pool_stats, pooled_scores
    from adapruner.stats import collect_statistics

    adapter = get_adapter(model)
    samples = [Sample(f"s@{i}", "s", row) for i, row in enumerate(tiny_batch)]
    pool = collect_pool_stats(adapter, samples)
    pooled = pooled_scores(
        adapter,
        pool,
        [s.id for s in samples],
        mix={"taylor_vector": 1.0},
        aggregation="sum",
        normalization="none",
        kinds=UNIT_KINDS,
    )
    stats = collect_statistics(adapter, tiny_batch, needs={"grad"}, batch_size=1)
    direct = score_groups(adapter, adapter.groups(), stats, mix={"taylor_vector": 1.0}, normalization="none")
    for key, scores in direct.items():
        torch.testing.assert_close(pooled[key], scores, rtol=1e-4, atol=1e-6)
