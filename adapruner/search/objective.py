"""The search objective: log perplexity on validation text, read chunk by chunk so that a trial that
is clearly worse than the incumbent stops early."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adapruner.calibration import token_stream
from adapruner.config import DataSource
from adapruner.errors import UserError
from adapruner.evaluate import perplexity


@dataclass(frozen=True)
class Validation:
    """Validation text as equal chunks, interleaved across domains (chunk i of every domain, then
    chunk i + 1, ...) so that any prefix of the chunks covers every domain."""

    chunks: tuple[torch.Tensor, ...]  # each [chunk_tokens]
    domains: tuple[str, ...]  # the domain of each chunk
    seq_len: int

    @property
    def tokens(self) -> int:
        return sum(c.numel() for c in self.chunks)


def validation_chunks(
    tokenizer,
    sources: Sequence[DataSource],
    *,
    tokens_per_domain: int,
    chunk_tokens: int,
    seq_len: int,
    skip_tokens: int = 0,
) -> Validation:
    """Cut each source's validation text (``skip_tokens`` on) into chunks of ``chunk_tokens``."""
    per_domain = []
    for source in sources:
        stream = token_stream(tokenizer, source, "evaluation", max_tokens=skip_tokens + tokens_per_domain)
        stream = stream[skip_tokens:]
        n = stream.numel() // chunk_tokens
        if n == 0:
            raise UserError(
                f"search.validation: {source.label()} has {stream.numel()} tokens (after {skip_tokens}); "
                f"lower search.chunk_tokens ({chunk_tokens})"
            )
        per_domain.append([(source.label(), stream[i * chunk_tokens : (i + 1) * chunk_tokens]) for i in range(n)])
    chunks, domains = [], []
    for i in range(max(len(d) for d in per_domain)):
        for domain in per_domain:
            if i < len(domain):
                domains.append(domain[i][0])
                chunks.append(domain[i][1])
    return Validation(tuple(chunks), tuple(domains), seq_len)


@dataclass(frozen=True)
class Observation:
    """A trial's measured objective: mean NLL per token over the chunks read."""

    value: float
    noise: float  # variance of ``value`` (squared standard error)
    fidelity: float  # share of the chunks read
    chunk_nlls: tuple[float, ...]
    stopped_early: bool


def _sem2(values: Sequence[float]) -> float:
    return statistics.variance(values) / len(values) if len(values) > 1 else float("inf")


def observe(
    model,
    validation: Validation,
    *,
    reference: Sequence[float],
    incumbent: Sequence[float] | None = None,
    reject_z: float = 2.0,
    min_fraction: float = 0.25,
) -> Observation:
    """Read the chunks in order; stop when, on the chunks read so far, this model is worse than the
    ``incumbent`` (its per-chunk NLLs) by more than ``reject_z`` standard errors of the paired
    difference. The value of a stopped trial is the incumbent's full mean plus the mean difference.

    The noise is the squared standard error of the per-chunk *loss increase* over ``reference`` (the
    dense model's chunk NLLs): chunks differ in difficulty for every model alike, so that part is not
    noise when trials are compared on the same chunks."""
    nlls: list[float] = []
    n = len(validation.chunks)
    min_chunks = max(2, math.ceil(min_fraction * n))
    for i, chunk in enumerate(validation.chunks):
        nll = perplexity(model, chunk, seq_len=validation.seq_len).nll
        if not math.isfinite(nll):
            raise FloatingPointError(f"validation NLL is {nll} on chunk {i}")
        nlls.append(nll)
        if incumbent is None or len(nlls) < min_chunks or len(nlls) == n:
            continue
        diffs = [a - b for a, b in zip(nlls, incumbent, strict=False)]
        mean_diff = statistics.fmean(diffs)
        if mean_diff - reject_z * math.sqrt(_sem2(diffs)) > 0:
            return Observation(statistics.fmean(incumbent) + mean_diff, _sem2(diffs), len(nlls) / n, tuple(nlls), True)
    increase = [a - b for a, b in zip(nlls, reference, strict=True)]
    return Observation(statistics.fmean(nlls), _sem2(increase), 1.0, tuple(nlls), False)
