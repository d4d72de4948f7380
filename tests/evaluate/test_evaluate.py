from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapruner.adapters import get_adapter
from adapruner.evaluate import count_parameters, forward_flops, ideal_speedup, measure_speed, perplexity, weights_bytes
from adapruner.evaluate.perplexity import windows
from tests.conftest import tiny_llama


def naive_nll(model, tokens, seq_len, stride):
    """A per-window loop with HF-style label masking: the reference implementation."""
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, tokens.numel(), stride):
        end = min(begin + seq_len, tokens.numel())
        target_len = end - prev_end
        ids = tokens[begin:end][None]
        labels = ids.clone()
        labels[:, :-target_len] = -100
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        shifted = labels[0, 1:]
        mask = shifted != -100
        total += F.cross_entropy(logits[mask], shifted[mask], reduction="sum").item()
        count += int(mask.sum())
        prev_end = end
        if end == tokens.numel():
            break
    return total / count, count


@pytest.mark.parametrize(("n", "seq_len", "stride"), [(64, 16, None), (64, 16, 8), (70, 16, 16), (37, 16, 5)])
def test_perplexity_matches_a_naive_loop(n, seq_len, stride):
    model = tiny_llama()
    tokens = torch.randint(0, 96, (n,), generator=torch.Generator().manual_seed(n))
    result = perplexity(model, tokens, seq_len=seq_len, stride=stride, batch_size=3)
    # The default (and largest) stride is seq_len - 1: windows share one token, none is skipped.
    nll, count = naive_nll(model, tokens, seq_len, min(stride or seq_len, seq_len - 1))
    assert result.tokens == count == n - 1
    assert result.nll == pytest.approx(nll, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(nll), rel=1e-5)


def test_windows_score_every_target_once():
    for n, seq_len, stride in [(100, 10, 3), (100, 10, 9), (11, 10, 9), (2, 10, 1)]:
        spans = windows(n, seq_len=seq_len, stride=stride)
        assert sum(new for _, _, new in spans) == n - 1
        assert all(end - begin <= seq_len and new <= end - begin - 1 for begin, end, new in spans)


def test_uniform_model_has_vocabulary_perplexity():
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.zero_()
    tokens = torch.randint(0, 96, (50,))
    assert perplexity(model, tokens, seq_len=16).ppl == pytest.approx(96, rel=1e-5)


def test_too_short_text():
    with pytest.raises(ValueError, match="seq_len"):
        perplexity(tiny_llama(), torch.tensor([3]), seq_len=8)


def test_parameter_counts_by_hand():
    model = tiny_llama()  # vocab 96, hidden 32, 4 heads (2 KV) x 8, intermediate 48, 3 layers, untied
    per_layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 48 + 2 * 32
    assert count_parameters(model, non_embedding=True) == 3 * per_layer + 32
    assert count_parameters(model, non_embedding=False) == 3 * per_layer + 32 + 2 * 96 * 32
    tied = tiny_llama(tie_word_embeddings=True)
    assert count_parameters(tied, non_embedding=False) == 3 * per_layer + 32 + 96 * 32


def test_narrower_layers_count_and_cost_less():
    model = tiny_llama()
    before_params, before_flops = count_parameters(model), forward_flops(model, seq_len=64)
    adapter = get_adapter(model)
    adapter.remove_units(adapter.unit_group(1, "channels"), torch.arange(24))
    assert count_parameters(model) == before_params - 24 * 3 * 32
    after_flops = forward_flops(model, seq_len=64)
    assert before_flops - after_flops == pytest.approx(2 * 24 * 3 * 32)
    adapter.remove_units(adapter.unit_group(0, "heads"), torch.arange(1))  # half the query width of layer 0
    assert forward_flops(model, seq_len=64) < after_flops
    assert ideal_speedup(before_flops, after_flops) > 1


def test_flops_of_a_single_linear_model():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(4, 6)
            self.head_dim = 2

    model = nn.Sequential(Attn(), nn.Linear(6, 3))
    assert forward_flops(model, seq_len=3) == 2 * 4 * 6 + 2 * 6 * 3 + 4 * 6 * 2


def test_speed_and_memory_on_cpu():
    model = tiny_llama()
    speed = measure_speed(model, batch=2, seq_len=32, repeats=2)
    assert speed.tokens_per_s > 0 and speed.latency_s > 0
    assert speed.memory_kind == "cpu_peak_rss_delta" and speed.peak_memory_bytes is not None
    assert weights_bytes(model) == 4 * count_parameters(model, non_embedding=False) + sum(
        b.numel() * 4 for b in model.buffers()
    )
