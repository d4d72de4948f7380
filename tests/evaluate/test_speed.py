from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.config import EvalConfig
from adapruner.evaluate import measure_generation
from adapruner.pipeline import evaluate_model
from adapruner.report import build_report, summary_rows
from tests.conftest import tiny_llama


def test_generation_timings_are_consistent():
    model = tiny_llama()
    one = measure_generation(model, batch=1, prompt_len=16, new_tokens=8, repeats=2)
    many = measure_generation(model, batch=4, prompt_len=16, new_tokens=8, repeats=2)
    assert one.per_token_s > 0 and one.prefill_s > 0 and one.device == "cpu"
    assert one.tokens_per_s == pytest.approx(1 / one.per_token_s)
    assert many.tokens_per_s == pytest.approx(4 / many.per_token_s)
    with pytest.raises(ValueError, match="new_tokens must be at least 2"):
        measure_generation(model, new_tokens=1)


def test_generation_uses_the_kv_cache():
    """After the prefill every timed step reads one new token and gets the cache the last step returned
    (checked on the calls themselves: a timing comparison would be at the mercy of the machine's load)."""
    model = tiny_llama()
    calls = []

    def record(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        calls.append((ids.shape[1], None if cache is None else cache.get_seq_length()))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        measure_generation(model, prompt_len=16, new_tokens=6, warmup=0, repeats=1)
    finally:
        handle.remove()
    assert calls == [(16, None), *((1, 16 + step) for step in range(5))]


def test_report_has_generation_latency_for_dense_and_pruned():
    config = EvalConfig(texts=(), speed_batch=2, speed_seq_len=16, gen_prompt_len=16, gen_new_tokens=4, gen_batch=3)
    dense = tiny_llama()
    pruned = tiny_llama()
    adapter = get_adapter(pruned)
    for group in adapter.groups():
        adapter.remove_units(group, torch.arange(group.n_units // 2))
    results = {name: evaluate_model(m, {}, config) for name, m in (("dense", dense), ("pruned", pruned))}
    for result in results.values():
        assert set(result["generation"]) == {"batch1", "batched"}
        assert result["generation"]["batch1"]["batch"] == 1 and result["generation"]["batched"]["batch"] == 3
        assert result["generation"]["batch1"]["per_token_s"] > 0
    report = build_report(
        source="tiny",
        ratio_target=0.5,
        config={},
        dense=results["dense"],
        pruned=results["pruned"],
        facts={},
        timings={},
    )
    assert report["generation_speedup"]["batch1"] > 0
    assert any(row[0].startswith("ms/new token, batch 1") for row in summary_rows(report))
    assert "generation" not in evaluate_model(dense, {}, config.model_copy(update={"speed": False}))
