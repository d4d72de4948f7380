"""Seeded calibration windows: stable ids, seeding, per-source counts and errors."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch

from adapruner.calibration import Sample, sample_windows, stack, token_stream
from adapruner.config import CalibrationConfig, DataSource
from tests.calibration.conftest import VOCAB

WORDS_PER_FILE = 20_000  # 10 blocks: about 16,000 train tokens


def make_source(folder: Path, name: str, *, seed: int, n_words: int = WORDS_PER_FILE) -> DataSource:
    rng = random.Random(seed)
    stream = [rng.choice(VOCAB) for _ in range(n_words)]
    paragraphs = [" ".join(stream[i : i + 50]) for i in range(0, n_words, 50)]
    path = folder / name
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return DataSource(kind="file", name=str(path), split="train")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataSource, DataSource]:
    folder = tmp_path_factory.mktemp("corpora")
    return make_source(folder, "a.txt", seed=1), make_source(folder, "b.txt", seed=2)


def config(*sources: DataSource, samples: int = 8, seq_len: int = 32, seed: int = 0) -> CalibrationConfig:
    return CalibrationConfig(sources=sources, samples=samples, seq_len=seq_len, seed=seed)


def test_windows_shape_ids_and_content(tokenizer, sources) -> None:
    source = sources[0]
    samples = sample_windows(tokenizer, config(source, samples=8, seq_len=32))
    stream = token_stream(tokenizer, source, "calibration")
    assert len(samples) == 8
    assert len({sample.id for sample in samples}) == 8
    for sample in samples:
        assert isinstance(sample, Sample)
        assert sample.source == source.label()
        match = re.fullmatch(re.escape(source.label()) + r"@(\d+)\+32", sample.id)
        assert match, sample.id
        offset = int(match.group(1))
        assert offset % 32 == 0 and offset + 32 <= stream.numel()
        assert sample.input_ids.dtype == torch.long and sample.input_ids.shape == (32,)
        assert torch.equal(sample.input_ids, stream[offset : offset + 32])
    batch = stack(samples)
    assert batch.shape == (8, 32) and batch.dtype == torch.long
    assert torch.equal(batch[3], samples[3].input_ids)


def test_same_seed_same_samples_different_seed_different(tokenizer, sources) -> None:
    first = sample_windows(tokenizer, config(*sources, seed=7))
    second = sample_windows(tokenizer, config(*sources, seed=7))
    assert [s.id for s in first] == [s.id for s in second]
    assert torch.equal(stack(first), stack(second))
    other = sample_windows(tokenizer, config(*sources, seed=8))
    assert [s.id for s in other] != [s.id for s in first]
    assert not torch.equal(stack(other), stack(first))


def test_counts_split_over_sources_with_remainder_first(tokenizer, sources) -> None:
    samples = sample_windows(tokenizer, config(*sources, samples=5))
    labels = [sample.source for sample in samples]
    assert labels == [sources[0].label()] * 3 + [sources[1].label()] * 2


def test_a_source_samples_do_not_depend_on_other_sources(tokenizer, sources) -> None:
    a, b = sources
    together = sample_windows(tokenizer, config(a, b, samples=6, seed=3))
    alone = sample_windows(tokenizer, config(b, samples=3, seed=3))
    assert [s.id for s in together if s.source == b.label()] == [s.id for s in alone]


def test_too_few_windows_names_the_fields(tokenizer, tmp_path: Path) -> None:
    source = make_source(tmp_path, "small.txt", seed=3, n_words=6_000)  # 3 blocks: one in train
    stream = token_stream(tokenizer, source, "calibration")
    available = stream.numel() // 256
    with pytest.raises(ValueError, match=rf"calibration.samples / calibration.seq_len: .*{available} windows of 256"):
        sample_windows(tokenizer, config(source, samples=available + 1, seq_len=256))
    assert len(sample_windows(tokenizer, config(source, samples=available, seq_len=256))) == available


def test_duplicate_sources_are_rejected(tokenizer, sources) -> None:
    with pytest.raises(ValueError, match="listed more than once"):
        sample_windows(tokenizer, config(sources[0], sources[0]))


def test_default_builtin_source(tokenizer) -> None:
    cfg = CalibrationConfig(samples=4, seq_len=64, seed=0)  # builtin:pydoc, train partition
    samples = sample_windows(tokenizer, cfg)
    assert [s.id for s in samples] == [s.id for s in sample_windows(tokenizer, cfg)]
    assert all(s.id.startswith("builtin:pydoc@") and s.id.endswith("+64") for s in samples)
    assert stack(samples).shape == (4, 64)


def test_stack_rejects_empty_and_ragged() -> None:
    with pytest.raises(ValueError, match="no samples"):
        stack([])
    ragged = [
        Sample("a@0+2", "a", torch.zeros(2, dtype=torch.long)),
        Sample("a@2+3", "a", torch.zeros(3, dtype=torch.long)),
    ]
    with pytest.raises(ValueError, match="different lengths"):
        stack(ragged)


def test_samples_compare_by_id() -> None:
    one = Sample("a@0+2", "a", torch.tensor([1, 2]))
    same = Sample("a@0+2", "a", torch.tensor([1, 2]))
    assert one == same and hash(one) == hash(same)
