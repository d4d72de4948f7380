"""A short LoRA on the real SmolLM2-135M after pruning: held-out PPL of the recovery source does not rise."""

from __future__ import annotations

import pytest

from adapruner.config import CalibrationConfig, DataSource, PruneConfig, PruneJob, RecoverConfig
from adapruner.pipeline import prune_copy
from adapruner.recover import recover_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_lora_lowers_held_out_perplexity(smollm2):
    job = PruneJob(calibration=CalibrationConfig(samples=8, seq_len=128), prune=PruneConfig(ratio=0.2))
    pruned, _ = prune_copy(smollm2, job)
    config = RecoverConfig(
        method="lora",
        source=DataSource(kind="builtin", name="pydoc"),
        steps=6,
        batch_size=2,
        seq_len=128,
        learning_rate=5e-4,
        heldout_tokens=1024,
    )
    _, result = recover_model(pruned, smollm2.tokenizer, config)
    assert result.heldout == "builtin:pydoc:validation"
    assert result.heldout_ppl_after <= result.heldout_ppl_before
