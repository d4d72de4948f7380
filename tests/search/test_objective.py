from __future__ import annotations

import statistics

import pytest
import torch

from adapruner.search.objective import Validation, observe, validation_chunks
from tests.conftest import tiny_llama


def make_validation(n_chunks: int = 8, chunk: int = 24) -> Validation:
    generator = torch.Generator().manual_seed(0)
    chunks = tuple(torch.randint(0, 96, (chunk,), generator=generator) for _ in range(n_chunks))
    return Validation(chunks, tuple("ab"[i % 2] for i in range(n_chunks)), seq_len=16)


def test_without_incumbent_every_chunk_is_read():
    validation = make_validation()
    obs = observe(tiny_llama(), validation, reference=[0.0] * 8)
    assert obs.fidelity == 1.0 and not obs.stopped_early and len(obs.chunk_nlls) == 8
    assert obs.value == pytest.approx(statistics.fmean(obs.chunk_nlls))
    assert 0 < obs.noise < 1


def test_a_clearly_worse_trial_stops_early_and_is_scored_against_the_incumbent():
    validation = make_validation()
    good = observe(tiny_llama(), validation, reference=[0.0] * 8)
    bad_model = tiny_llama()
    with torch.no_grad():
        bad_model.lm_head.weight.mul_(40)  # confidently wrong: much higher NLL on every chunk
    bad = observe(bad_model, validation, reference=[0.0] * 8, incumbent=good.chunk_nlls, min_fraction=0.25)
    assert bad.stopped_early and bad.fidelity == 2 / 8
    diffs = [a - b for a, b in zip(bad.chunk_nlls, good.chunk_nlls, strict=False)]
    assert bad.value == pytest.approx(statistics.fmean(good.chunk_nlls) + statistics.fmean(diffs))
    assert bad.value > good.value


def test_a_similar_trial_is_read_to_the_end():
    validation = make_validation()
    first = observe(tiny_llama(seed=0), validation, reference=[0.0] * 8)
    again = observe(tiny_llama(seed=0), validation, reference=[0.0] * 8, incumbent=first.chunk_nlls)
    assert not again.stopped_early and again.value == pytest.approx(first.value)


def test_chunks_interleave_domains(tiny_tokenizer, tmp_path):
    from adapruner.config import DataSource

    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.txt"
        path.write_text(f"text of domain {name}. " * 200)
        files.append(DataSource(kind="file", name=str(path)))
    validation = validation_chunks(tiny_tokenizer, files, tokens_per_domain=100, chunk_tokens=30, seq_len=16)
    assert validation.domains[:4] == (files[0].label(), files[1].label()) * 2
    assert all(c.numel() == 30 for c in validation.chunks) and len(validation.chunks) == 6
    with pytest.raises(ValueError, match="search.chunk_tokens"):
        validation_chunks(tiny_tokenizer, files, tokens_per_domain=10, chunk_tokens=30, seq_len=16)
