"""A trial prunes the loaded model in place and restores it exactly: one model in memory per search."""

from __future__ import annotations

import gc

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.config import SearchJob
from adapruner.evaluate import count_parameters
from adapruner.models import LoadedModel, release_memory
from adapruner.prune.depth import BlockScores, fixed_batch
from adapruner.search.cache import load_pools, pool_tokens
from adapruner.search.space import decode
from adapruner.search.trial import trial_model
from tests.conftest import tiny_llama, tiny_search_spec
from tests.prune.test_step import assert_same, dense_state

COMPENSATORS = ["none", "bias", "obs", "reformation", "numerical"]


@pytest.fixture
def job(job_texts) -> SearchJob:
    space = {"compensators": COMPENSATORS, "depth_share": {"low": 0.0, "high": 0.9}}
    return SearchJob.model_validate(tiny_search_spec(job_texts, model="tiny", trials=3, space=space))


@pytest.fixture
def loaded(tiny_tokenizer):
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=256, attention_bias=True)
    return LoadedModel(model, tiny_tokenizer, "tiny")


@pytest.fixture
def pools(job, loaded):
    adapter = get_adapter(loaded.model)
    return load_pools(adapter, loaded.tokenizer, job.space.sources, pool_size=4, seq_lens=(16,), seed=0, cache_dir=None)


def trial(loaded, pools, job, params, **kwargs):
    blocks = BlockScores(get_adapter(loaded.model), lambda: fixed_batch(pools[16].tokens))
    recipe = decode(job.space, params)
    return trial_model(loaded, pools, recipe, ratio=0.5, targets=job.targets, seed=0, blocks=blocks, **kwargs)


def down_proj_output(model, tokens: torch.Tensor, name: str = "model.layers.0.mlp.down_proj") -> torch.Tensor:
    """The output ``[batch, seq, hidden]`` of module ``name`` (the first MLP's down projection) on ``tokens``."""
    seen = []
    handle = model.get_submodule(name).register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(tokens)
    handle.remove()
    return seen[0]


def live_tensor_bytes() -> int:
    """Bytes of the distinct storages of every tensor the interpreter holds."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type != "meta":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("method", COMPENSATORS)
@pytest.mark.parametrize("depth_share", [0.0, 0.9], ids=["width", "depth"])
def test_after_a_trial_the_model_is_the_dense_one_bit_for_bit(loaded, pools, job, method, depth_share):
    before = dense_state(loaded.model)
    dense_params = count_parameters(loaded.model, non_embedding=True)
    with trial(loaded, pools, job, {"compensate": method, "depth_share": depth_share}) as pruned:
        assert pruned.model is loaded.model
        assert count_parameters(pruned.model, non_embedding=True) < dense_params
        assert bool(pruned.plan.drop) == (depth_share > 0)
        assert pruned.model.config.num_hidden_layers == 4 - len(pruned.plan.drop)
        assert pruned.sample_ids and set(pruned.sample_ids) <= set(pools[16].sample_ids)
    assert_same(loaded.model, before)


def test_during_a_trial_only_one_model_exists(loaded, pools, job):
    model_type = type(loaded.model)
    dense_bytes = sum(p.nbytes for p in loaded.model.parameters())
    dense_ids = {id(p) for p in loaded.model.parameters()}
    baseline = live_tensor_bytes()  # collects garbage first
    # Other models may be alive (a session fixture's): the trial must add none.
    models_before = {id(o) for o in gc.get_objects() if type(o) is model_type}
    with trial(loaded, pools, job, {"compensate": "obs"}) as pruned:
        gc.collect()
        models_during = {id(o) for o in gc.get_objects() if type(o) is model_type}
        assert id(loaded.model) in models_during <= models_before
        # New tensors are the sliced weights (and compensation's bias), nothing else: the dense weights
        # are not copied, the unsliced ones (embeddings, norms, head) are the dense Parameters themselves.
        new_bytes = sum(p.nbytes for p in pruned.model.parameters() if id(p) not in dense_ids)
        assert pruned.model.get_input_embeddings().weight.data_ptr() in {
            p.data_ptr() for p in loaded.model.parameters()
        }
        assert live_tensor_bytes() - baseline <= new_bytes < dense_bytes
    assert live_tensor_bytes() == baseline


class SimulatedOOM(torch.OutOfMemoryError):
    pass


@pytest.mark.parametrize("where", ["compensation", "evaluation"])
def test_out_of_memory_inside_a_trial_restores_and_frees(loaded, pools, job, monkeypatch, where):
    before = dense_state(loaded.model)
    baseline = live_tensor_bytes()
    if where == "compensation":  # after surgery: the model is half pruned when it fails

        def fail(*args, **kwargs):
            raise SimulatedOOM("CUDA out of memory (simulated)")

        monkeypatch.setattr("adapruner.compensate.obs.obs_update", fail)
    caught = False
    try:
        with trial(loaded, pools, job, {"compensate": "obs", "depth_share": 0.9}) as pruned:
            assert pruned.model.config.num_hidden_layers < 4
            raise SimulatedOOM("CUDA out of memory (simulated)")
    except torch.OutOfMemoryError:
        caught = True
    assert caught
    release_memory()
    assert_same(loaded.model, before)
    assert live_tensor_bytes() == baseline


def test_keep_leaves_the_pick_pruned_and_frees_the_dense_weights(loaded, pools, job):
    baseline = live_tensor_bytes()
    with trial(loaded, pools, job, {"compensate": "bias", "depth_share": 0.9}, keep=True) as pruned:
        inside = {name: t.clone() for name, t in pruned.model.state_dict().items()}
        layers = pruned.model.config.num_hidden_layers
    after = loaded.model.state_dict()
    assert layers < 4 and loaded.model.config.num_hidden_layers == layers
    assert after.keys() == inside.keys() and all(torch.equal(after[k], inside[k]) for k in inside)
    del inside, after
    assert live_tensor_bytes() < baseline  # the replaced dense tensors are gone


def test_a_trial_compensation_lowers_the_output_error(loaded, pools, job):
    """The trial's compensator fits the dense statistics of the trial's own samples: on those tokens the
    first MLP's output is closer to the dense one than without compensation (no heads are pruned here,
    so that layer's kept inputs are the dense ones)."""
    errors = {}
    for method in ("none", "reformation"):
        recipe = decode(job.space, {"compensate": method})
        assert recipe.attn_share == 0
        with trial_model(loaded, pools, recipe, ratio=0.25, targets=job.targets, seed=0) as pruned:
            tokens = pool_tokens(pools[16], pruned.sample_ids)
            output = down_proj_output(pruned.model, tokens)
        dense = down_proj_output(loaded.model, tokens)  # restored after the trial
        errors[method] = float((output - dense).square().sum())
    assert errors["reformation"] < errors["none"]
