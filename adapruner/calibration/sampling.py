"""Seeded sampling of calibration windows from the training partition of the calibration sources."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adapruner.calibration.sources import token_stream
from adapruner.config import CalibrationConfig
from adapruner.errors import UserError


@dataclass(frozen=True)
class Sample:
    """One calibration window.

    ``id`` is ``f"{source}@{offset}+{seq_len}"`` (``offset`` in tokens into the source's calibration
    token stream); ``input_ids`` is a LongTensor ``[seq_len]``. Equality and hashing use ``id`` and
    ``source`` only.
    """

    id: str
    source: str
    input_ids: torch.Tensor = field(compare=False)  # [seq_len]


def _counts(total: int, n_sources: int) -> list[int]:
    """``total`` split evenly over ``n_sources``, the remainder to the first ones."""
    base, extra = divmod(total, n_sources)
    return [base + (1 if i < extra else 0) for i in range(n_sources)]


def sample_windows(tokenizer: Any, config: CalibrationConfig) -> list[Sample]:
    """Draw ``config.samples`` windows of ``config.seq_len`` tokens from the calibration split.

    The count is split evenly over ``config.sources`` (remainder to the first ones). For each source the
    windows are drawn without replacement from the grid of non-overlapping windows (offsets that are
    multiples of ``seq_len``) with ``random.Random(f"{seed}:{label}")``, so a source's samples depend
    only on the seed, its label, its count and ``seq_len``. Samples come source by source, in draw order.
    """
    labels = [source.label() for source in config.sources]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UserError(f"calibration.sources: {', '.join(duplicates)} listed more than once")
    seq_len = config.seq_len
    samples: list[Sample] = []
    for source, label, count in zip(config.sources, labels, _counts(config.samples, len(config.sources)), strict=True):
        if count == 0:
            continue
        stream = token_stream(tokenizer, source, "calibration")
        available = stream.numel() // seq_len
        if available < count:
            raise UserError(
                f"calibration.samples / calibration.seq_len: {label} has {stream.numel()} tokens in its "
                f"calibration split, i.e. {available} windows of {seq_len} tokens, but {count} samples were "
                f"requested from it; lower calibration.samples or calibration.seq_len, or add sources"
            )
        rng = random.Random(f"{config.seed}:{label}")
        for window in rng.sample(range(available), count):
            offset = window * seq_len
            samples.append(
                Sample(
                    id=f"{label}@{offset}+{seq_len}",
                    source=label,
                    input_ids=stream[offset : offset + seq_len].clone(),
                )
            )
    return samples


def stack(samples: Sequence[Sample]) -> torch.Tensor:
    """Stack the samples' ``input_ids`` into a LongTensor ``[n, seq_len]``."""
    if not samples:
        raise ValueError("stack: no samples")
    lengths = {sample.input_ids.numel() for sample in samples}
    if len(lengths) > 1:
        raise ValueError(f"stack: samples have different lengths {sorted(lengths)}")
    return torch.stack([sample.input_ids.long() for sample in samples])
