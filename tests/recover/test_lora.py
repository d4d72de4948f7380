from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from adapruner.adapters import get_adapter
from adapruner.artifacts import load_pruned, save_pruned
from adapruner.config import DataSource, RecoverConfig
from adapruner.recover import recover_model, train_causal_lm
from adapruner.recover.base import RecoveryError, training_windows
from adapruner.recover.lora import LoraRecovery
from tests.conftest import tiny_llama

SOURCE = DataSource(kind="builtin", name="gnu-standards")


def pruned_tiny(vocab_size: int) -> nn.Module:
    """A tiny LLaMA with different widths per layer (odd layers lose a KV group and a channel)."""
    model = tiny_llama(vocab_size=vocab_size, layers=4)
    adapter = get_adapter(model)
    for group in adapter.groups():
        adapter.remove_units(group, torch.arange(group.n_units)[: group.n_units - (group.layer % 2)])
    return model


def lora_config(**overrides) -> RecoverConfig:
    values = dict(method="lora", source=SOURCE, steps=6, batch_size=2, seq_len=32, learning_rate=1e-2)
    values.update(overrides)
    return RecoverConfig(**values, heldout_tokens=256)


def test_merged_adapters_give_the_adapted_models_logits(tiny_tokenizer):
    model = pruned_tiny(len(tiny_tokenizer))
    config = lora_config()
    wrapped = LoraRecovery().wrap(copy.deepcopy(model), config)
    base = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert base and all("lora_" in n for n in base)  # only the adapters train
    train_causal_lm(wrapped, training_windows(tiny_tokenizer, config), steps=6, batch_size=2, learning_rate=1e-2)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        adapted = wrapped(ids).logits
        merged = LoraRecovery().unwrap(wrapped)
        assert not any("lora" in name for name, _ in merged.named_modules())
        assert torch.allclose(merged(ids).logits, adapted, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-4)  # training changed it


def test_merged_artifact_reloads_with_identical_logits(tmp_path, tiny_tokenizer):
    model = pruned_tiny(len(tiny_tokenizer))
    widths = get_adapter(model).widths()
    recovered, result = recover_model(model, tiny_tokenizer, lora_config())
    assert type(recovered).__name__ == "LlamaForCausalLM" and get_adapter(recovered).widths() == widths
    assert len(result.loss_curve) == result.steps == 6 and result.trainable_params > 0
    save_pruned(recovered, tiny_tokenizer, tmp_path)
    reloaded, _ = load_pruned(tmp_path)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, recovered(ids).logits)


def test_unknown_target_module_names_the_present_ones(tiny_tokenizer):
    with pytest.raises(RecoveryError, match="recover.target_modules: c_attn not in the model; linear modules: "):
        recover_model(pruned_tiny(len(tiny_tokenizer)), tiny_tokenizer, lora_config(target_modules=("c_attn",)))


def test_recovery_leaves_the_callers_random_state(tiny_tokenizer):
    model = pruned_tiny(len(tiny_tokenizer))  # seeds the global generator itself
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    recover_model(model, tiny_tokenizer, lora_config(steps=1))
    assert torch.equal(torch.rand(3), expected)
