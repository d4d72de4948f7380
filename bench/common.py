"""Helpers shared by the benchmarks: a fixed recipe on the search's pool, a fixed prune job, the search's
validation text and the geometric mean of perplexities."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

from adapruner.config import (
    DEFAULT_CHANNEL_MULTIPLE,
    CalibrationConfig,
    CompensateConfig,
    DataSource,
    EvalConfig,
    ImportanceConfig,
    PruneConfig,
    PruneJob,
    SearchConfig,
)
from adapruner.search.objective import Validation, validation_chunks
from adapruner.search.space import Recipe


def fixed_recipe(
    source_weights: dict[str, float], metric: str, *, samples: int, seq_len: int, compensate: str = "none"
) -> Recipe:
    """A fixed choice on a search's candidate pool: one metric, calibration samples drawn from the pool's
    sources in proportion to ``source_weights`` (source label -> weight), the same ratio from attention
    and MLP, uniform over the layers."""
    return Recipe(
        source_weights=source_weights,
        samples=samples,
        subset_seed=0,
        mix={metric: 1.0},
        aggregation="sum",
        normalization="mean",
        attn_share=None,
        depth_slope=0.0,
        protect_first=0,
        protect_last=0,
        compensate=compensate,
        seq_len=seq_len,
        ratio=None,
        depth_share=0.0,
        block_criterion="block_influence",
        channel_multiple=DEFAULT_CHANNEL_MULTIPLE,
        uniform=False,
    )


def fixed_prune_job(
    *,
    metric: str,
    ratio: float,
    targets: tuple[str, ...],
    samples: int,
    seq_len: int,
    evaluate: EvalConfig,
    compensate: str = "none",
    allocation: str = "uniform",
    sources: tuple[DataSource, ...] | None = None,
    model: Any = None,
    **prune: Any,
) -> PruneJob:
    """``adapruner prune`` with one metric: ``samples`` x ``seq_len`` calibration tokens (from ``sources``,
    default the prune job's), ``allocation`` over ``targets`` (more PruneConfig fields in ``prune``)."""
    calibration = {"samples": samples, "seq_len": seq_len} | ({"sources": sources} if sources else {})
    return PruneJob(
        **({"model": model} if model is not None else {}),
        calibration=CalibrationConfig(**calibration),
        importance=ImportanceConfig(mix={metric: 1.0}),
        prune=PruneConfig(ratio=ratio, targets=targets, allocation=allocation, **prune),
        compensate=CompensateConfig(method=compensate),
        evaluate=evaluate,
    )


def search_validation(tokenizer: Any, search: SearchConfig) -> Validation:
    """The validation chunks a search with ``search`` optimises (as its warm-up reads them)."""
    return validation_chunks(
        tokenizer,
        search.validation,
        tokens_per_domain=search.validation_tokens,
        chunk_tokens=search.chunk_tokens,
        seq_len=search.eval_seq_len,
    )


def geo_mean(values: Iterable[float]) -> float:
    """The geometric mean (of perplexities: the exponential of the mean log)."""
    return math.exp(statistics.fmean(math.log(v) for v in values))
