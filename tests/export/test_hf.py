"""hf export: a stock from_pretrained folder with the pruned model's logits; per-layer widths refused."""

from __future__ import annotations

import pytest
import torch

from adapruner.artifacts import load_pruned, save_pruned
from adapruner.export import ExportError, export_model
from adapruner.models.loading import MANIFEST_NAME
from tests.export.conftest import pruned_tiny


def logits(model, vocab: int) -> torch.Tensor:
    ids = torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("bias", [False, True], ids=["plain", "flap-bias"])
def test_stock_from_pretrained_reproduces_the_pruned_model(tmp_path, bpe_tokenizer, bias):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    artifact = save_pruned(pruned_tiny(bpe_tokenizer, per_layer=False, drop=(2,), bias=bias), bpe_tokenizer, tmp_path / "a")
    result = export_model(artifact, "hf", tmp_path / "hf", "f32")
    assert not (result.path / MANIFEST_NAME).exists()
    stock = AutoModelForCausalLM.from_pretrained(result.path).eval()
    model, _ = load_pruned(artifact)
    torch.testing.assert_close(logits(stock, len(bpe_tokenizer)), logits(model, len(bpe_tokenizer)))
    assert stock.config.num_hidden_layers == 3 and stock.config.intermediate_size == 40
    assert AutoTokenizer.from_pretrained(result.path)("layer").input_ids == bpe_tokenizer("layer").input_ids
    assert (stock.config.attention_bias, stock.config.mlp_bias) == (bias, bias)


def test_type_sets_the_saved_dtype(artifacts, tmp_path):
    from transformers import AutoModelForCausalLM

    path = export_model(artifacts["uniform"], "hf", tmp_path / "hf", "bf16").path
    assert AutoModelForCausalLM.from_pretrained(path).model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_per_layer_widths_are_refused_naming_the_layers_and_the_option(artifacts, tmp_path):
    with pytest.raises(ExportError) as info:
        export_model(artifacts["per_layer"], "hf", tmp_path / "hf")
    message = str(info.value)
    assert "\n" not in message and "layers 1 (heads 2, kv 1, ffn 40), 2 (heads 4, kv 2, ffn 24)" in message
    assert "--uniform" in message and not (tmp_path / "hf").exists()


def test_q8_0_is_gguf_only(artifacts, tmp_path):
    with pytest.raises(ExportError, match="the hf format writes f32, f16, bf16"):
        export_model(artifacts["uniform"], "hf", tmp_path / "hf", "q8_0")
