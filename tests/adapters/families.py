"""Tiny random models of every supported family, built offline from transformers' config classes.

Shapes follow tests/conftest.py's tiny LLaMA: hidden 32, 4 query heads of head_dim 8 over 2 KV groups
(GQA) or 4 (MHA), 48 MLP channels, 3 layers. Each family keeps its own peculiarities on (biases, q/k
norms, sliding-window layers, softcapping, fused projections, tied embeddings).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers

from tests.conftest import tiny_llama

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=128,
)


def perturb_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Random init leaves norm weights constant; perturb them so tests see per-channel differences."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(0.3 * torch.randn_like(param))
    return model.eval()


def build(family: str, *, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random ``<Family>ForCausalLM``; ``overrides`` are config fields."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**(COMMON | FAMILY_OVERRIDES.get(family, {}) | overrides))
    return perturb_norms(getattr(transformers, model_cls)(config))


FAMILIES = {
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
}

FAMILY_OVERRIDES: dict[str, dict] = {
    # A window shorter than the test batch, so that the sliding layers really differ from global ones.
    "mistral": dict(sliding_window=6, tie_word_embeddings=False),
    "qwen2": dict(use_sliding_window=True, sliding_window=6, max_window_layers=1),
    "qwen3": dict(attention_bias=True),
    "gemma": dict(tie_word_embeddings=True),
    "gemma2": dict(
        sliding_window=6,
        query_pre_attn_scalar=8,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    ),
    "gemma3_text": dict(
        sliding_window=6,
        query_pre_attn_scalar=8,
        final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    ),
    "phi3": dict(pad_token_id=0, bos_token_id=1, eos_token_id=1, tie_word_embeddings=False),
}

CASES: dict[str, Callable[[], torch.nn.Module]] = {
    "llama-gqa": lambda: tiny_llama(gqa=True),
    "llama-mha": lambda: tiny_llama(gqa=False),
    "llama-bias": lambda: tiny_llama(gqa=True, attention_bias=True, mlp_bias=True),
    **{family: (lambda family=family: build(family)) for family in FAMILIES},
    "phi3-mha": lambda: build("phi3", num_key_value_heads=4),
    "qwen3-mha": lambda: build("qwen3", num_key_value_heads=4),
}
