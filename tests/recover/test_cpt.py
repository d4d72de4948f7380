from __future__ import annotations

import statistics

import torch

from adapruner.config import DataSource, RecoverConfig
from adapruner.evaluate import count_parameters, perplexity
from adapruner.recover import recover_model, train_causal_lm
from adapruner.recover.base import training_windows
from adapruner.recover.cpt import ContinuedPretraining
from tests.conftest import tiny_llama

SOURCE = DataSource(kind="builtin", name="gnu-standards")


def test_continued_pretraining_lowers_the_training_loss(tiny_tokenizer):
    config = RecoverConfig(method="cpt", source=SOURCE, steps=40, batch_size=4, seq_len=32, learning_rate=3e-3)
    model = tiny_llama(vocab_size=len(tiny_tokenizer))
    windows = training_windows(tiny_tokenizer, config)
    before = perplexity(model, windows.reshape(-1), seq_len=32).nll
    wrapped = ContinuedPretraining().wrap(model, config)
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == count_parameters(
        model, non_embedding=False
    )  # every parameter trains, embeddings included
    losses = train_causal_lm(wrapped, windows, steps=40, batch_size=4, learning_rate=3e-3, warmup_steps=4)
    assert len(losses) == 40
    assert statistics.fmean(losses[-5:]) < statistics.fmean(losses[:5]) - 0.1
    assert perplexity(wrapped, windows.reshape(-1), seq_len=32).nll < before
    assert not wrapped.training


def test_recover_model_records_held_out_perplexity_before_and_after(tiny_tokenizer):
    config = RecoverConfig(
        method="cpt", source=SOURCE, steps=30, batch_size=4, seq_len=32, learning_rate=3e-3, heldout_tokens=1024
    )
    model = tiny_llama(vocab_size=len(tiny_tokenizer))
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    progress: list[tuple[str, int, int]] = []
    losses: list[tuple[int, float]] = []
    recovered, result = recover_model(
        model,
        tiny_tokenizer,
        config,
        progress=lambda *args: progress.append(args),
        on_loss=lambda step, loss: losses.append((step, loss)),
    )
    assert result.heldout == "builtin:gnu-standards:validation"
    assert result.heldout_ppl_after < result.heldout_ppl_before  # random init: the corpus is learnable
    assert progress[-1] == ("recovery", 30, 30) and [s for s, _ in losses] == list(range(1, 31))
    assert [loss for _, loss in losses] == result.loss_curve
    assert {name: p.requires_grad for name, p in recovered.named_parameters()} == flags
    assert torch.isfinite(torch.tensor(result.loss_curve)).all()
