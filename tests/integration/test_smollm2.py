"""End to end on the real SmolLM2-135M (LLaMA architecture, 30 layers, 9 query / 3 KV heads)."""

from __future__ import annotations

import pytest
import torch

from adapruner.artifacts import load_pruned, save_pruned
from adapruner.config import CalibrationConfig, EvalConfig, ImportanceConfig, PruneConfig, PruneJob
from adapruner.pipeline import eval_texts, evaluate_model, prune_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVAL = EvalConfig(max_tokens=2048, seq_len=512, speed=False)  # 4 windows per text: taylor vs random is ~10x


def job(metric: str) -> PruneJob:
    return PruneJob(
        calibration=CalibrationConfig(samples=16, seq_len=256),
        importance=ImportanceConfig(mix={metric: 1.0}),
        prune=PruneConfig(ratio=0.2),
        evaluate=EVAL,
    )


@pytest.fixture(scope="module")
def texts(smollm2):
    return eval_texts(smollm2.tokenizer, EVAL)


@pytest.fixture(scope="module")
def pruned(smollm2):
    model, facts = prune_copy(smollm2, job("taylor"))
    return model, facts


@pytest.fixture(scope="module")
def pruned_eval(pruned, texts):
    return evaluate_model(pruned[0], texts, EVAL)


def test_ratio_within_one_percent_and_really_smaller(smollm2, pruned, pruned_eval, texts):
    model, facts = pruned
    dense = evaluate_model(smollm2.model, texts, EVAL)
    after = pruned_eval
    ratio = 1 - after["non_embedding_params"] / dense["non_embedding_params"]
    assert abs(ratio - 0.2) <= 0.01 * 0.2
    assert after["flops_per_token"] < 0.85 * dense["flops_per_token"]
    assert all(w["heads"] >= 1 for w in facts["widths"])
    # GQA stays exact: every layer keeps whole KV groups with their 3 query heads.
    for layer in model.model.layers:
        attn = layer.self_attn
        assert attn.q_proj.out_features == 3 * attn.k_proj.out_features == attn.o_proj.in_features


def test_generation_still_runs(smollm2, pruned):
    model, _ = pruned
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8


def test_reload_gives_identical_logits(smollm2, pruned, tmp_path):
    model, _ = pruned
    save_pruned(model, smollm2.tokenizer, tmp_path)
    reloaded, tokenizer = load_pruned(tmp_path)
    ids = tokenizer("Pruning keeps the model useful.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_taylor_perplexity_is_finite_and_beats_random(smollm2, pruned_eval, texts):
    random_model, _ = prune_copy(smollm2, job("random"))
    ours = pruned_eval["perplexity"]
    floor = evaluate_model(random_model, texts, EVAL)["perplexity"]
    for label in texts:
        assert torch.isfinite(torch.tensor(ours[label]))
        assert ours[label] <= floor[label], (label, ours[label], floor[label])
