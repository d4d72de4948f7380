"""Tiny artifacts to export: a random LLaMA with a byte-level BPE tokenizer, pruned uniformly, per layer,
with removed blocks and with FLAP-style output biases."""

from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.artifacts import save_pruned
from tests.conftest import tiny_llama

TEXT = "the model prunes heads and channels of every layer; 12 calibration texts move 345 results.\n" * 20


def make_bpe_tokenizer():
    """A GPT-2 style byte-level BPE tokenizer (about 300 ids) trained offline on a short text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    return fast


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return make_bpe_tokenizer()


def save_bpe_model(folder):
    """A tiny random 4-layer LLaMA with the byte-level BPE tokenizer (GGUF needs one), as a user's model folder."""
    tokenizer = make_bpe_tokenizer()
    tiny_llama(vocab_size=len(tokenizer), layers=4).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pruned_tiny(tokenizer, *, per_layer: bool, drop: tuple[int, ...] = (), bias: bool = False, seed: int = 0):
    """A 4-layer tiny LLaMA (GQA: 2 KV groups of 2 heads, 48 channels) with its units removed: uniformly
    (1 KV group, 40 channels everywhere) or per layer; ``drop`` removes blocks; ``bias`` adds output biases."""
    model = tiny_llama(vocab_size=len(tokenizer), layers=4, seed=seed)
    adapter = get_adapter(model)
    widths = [(1, 40)] * 4 if not per_layer else [(2, 48), (1, 40), (2, 24), (1, 32)]
    generator = torch.Generator().manual_seed(seed)
    for layer, (kv, channels) in enumerate(widths):
        for kind, keep in (("heads", kv), ("channels", channels)):
            group = adapter.unit_group(layer, kind)
            adapter.remove_units(group, torch.randperm(group.n_units, generator=generator)[:keep])
    if bias:
        for layer in adapter.layers:
            for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
                linear.bias = torch.nn.Parameter(0.1 * torch.randn(linear.out_features, generator=generator))
    adapter.remove_blocks(drop)
    return model


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, bpe_tokenizer):
    """Saved artifact folders by name: uniform, per_layer, dropped (a removed block), bias."""
    specs = {
        "uniform": dict(per_layer=False),
        "per_layer": dict(per_layer=True),
        "dropped": dict(per_layer=False, drop=(1,)),
        "bias": dict(per_layer=True, bias=True),
    }
    root = tmp_path_factory.mktemp("artifacts")
    return {name: save_pruned(pruned_tiny(bpe_tokenizer, **spec), bpe_tokenizer, root / name) for name, spec in specs.items()}
