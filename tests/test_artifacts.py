from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from adapruner.adapters import get_adapter
from adapruner.artifacts import load_pruned, read_manifest, save_pruned
from adapruner.errors import UserError
from adapruner.models import load_model
from tests.conftest import tiny_llama


def _prune(model, keep_of):
    adapter = get_adapter(model)
    for group in adapter.groups():
        adapter.remove_units(group, torch.arange(group.n_units)[: keep_of(group)])
    return adapter


def test_non_uniform_widths_reload_with_identical_logits(tmp_path, tiny_batch, tiny_tokenizer):
    model = tiny_llama(layers=4)
    _prune(model, lambda g: g.n_units - (g.layer % 2))  # odd layers lose a unit
    save_pruned(model, tiny_tokenizer, tmp_path, job={"note": "test"})
    manifest = read_manifest(tmp_path)
    assert not manifest["uniform"] and manifest["job"] == {"note": "test"}
    reloaded, tokenizer = load_pruned(tmp_path)
    assert tokenizer is not None and tokenizer("abc").input_ids == tiny_tokenizer("abc").input_ids
    with torch.no_grad():
        assert torch.equal(reloaded(tiny_batch).logits, model(tiny_batch).logits)
    assert get_adapter(reloaded).widths() == manifest["widths"]
    # The folder is also a model source for every command.
    assert torch.equal(load_model(str(tmp_path), device="cpu").model(tiny_batch).logits, reloaded(tiny_batch).logits)


def test_uniform_widths_load_in_stock_transformers(tmp_path, tiny_batch):
    model = tiny_llama(tie_word_embeddings=True)
    _prune(model, lambda g: g.n_units - 1)
    save_pruned(model, None, tmp_path)
    assert read_manifest(tmp_path)["uniform"]
    stock = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(stock(tiny_batch).logits, model(tiny_batch).logits)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_key_value_heads"] == 1 and config["intermediate_size"] == 47


def test_saved_weights_are_really_smaller(tmp_path):
    dense, pruned = tiny_llama(), tiny_llama()
    _prune(pruned, lambda g: g.n_units // 2)
    save_pruned(dense, None, tmp_path / "dense")
    save_pruned(pruned, None, tmp_path / "pruned")
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.safetensors"))  # noqa: E731
    assert size(tmp_path / "pruned") < 0.8 * size(tmp_path / "dense")


def test_not_an_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an adapruner artifact"):
        load_pruned(tmp_path)


def test_a_folder_that_is_no_artifact_is_a_user_error(tmp_path):
    """What the CLI prints as one line and the worker records as the job's failure."""
    with pytest.raises(UserError, match="not an adapruner artifact"):
        read_manifest(tmp_path)
    (tmp_path / "adapruner.json").write_text("{")
    with pytest.raises(UserError, match="adapruner.json: not valid JSON"):
        read_manifest(tmp_path)


def test_sharded_artifact_reloads_on_the_meta_device_shard_by_shard(tmp_path, tiny_batch, monkeypatch):
    """Sharded safetensors on save; the reload builds no dense weights (meta device) and reads one shard
    at a time, with identical logits (tied embeddings, uneven widths, an added bias)."""
    from adapruner import artifacts

    model = tiny_llama(layers=4, tie_word_embeddings=True)
    adapter = _prune(model, lambda g: g.n_units - (g.layer % 2))
    down = adapter.linear("model.layers.1.mlp.down_proj")
    down.bias = torch.nn.Parameter(torch.randn(down.out_features))
    monkeypatch.setattr(artifacts, "SHARD_SIZE", 20_000)  # bytes: several shards for the tiny model
    save_pruned(model, None, tmp_path)
    shards = sorted(tmp_path.glob("*.safetensors"))
    assert len(shards) >= 3 and (tmp_path / "model.safetensors.index.json").is_file()

    built, read = [], []
    real_from_config, real_load = AutoModelForCausalLM.from_config, artifacts.load_file

    def from_config(*args, **kwargs):
        dense = real_from_config(*args, **kwargs)
        built.append({p.device.type for p in dense.parameters()})
        return dense

    def load_file(file, **kwargs):
        read.append(file)
        return real_load(file, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", from_config)
    monkeypatch.setattr(artifacts, "load_file", load_file)
    reloaded, _ = load_pruned(tmp_path)
    assert built == [{"meta"}] and read == shards
    assert not any(p.is_meta for p in reloaded.parameters())
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tiny_batch).logits, model(tiny_batch).logits, rtol=0, atol=0)
