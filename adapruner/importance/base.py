"""Importance as a callable over a group of coupled units, and the weighted mix of metrics.

A metric turns one :class:`~adapruner.adapters.base.UnitGroup` into one score per unit (higher = keep).
Most metrics are element-wise: they score every weight of every coupled slice, sum each unit's part of
each slice, and aggregate the slices (sum, mean, max or prod). Scores are normalised per group before
they are mixed, so that metrics with different scales can be weighted against each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar

import torch

from adapruner.adapters.base import CoupledSlice, ModelAdapter, UnitGroup
from adapruner.catalog import METRICS
from adapruner.stats import Statistics

EPS = 1e-12


def aggregate(per_slice: torch.Tensor, how: str) -> torch.Tensor:
    """Combine per-slice scores ``[n_slices, n_units]`` into ``[n_units]``."""
    if how == "sum":
        return per_slice.sum(0)
    if how == "mean":
        return per_slice.mean(0)
    if how == "max":
        return per_slice.max(0).values
    if how == "prod":
        return per_slice.prod(0)
    raise ValueError(f"unknown aggregation {how!r}; valid: sum, mean, max, prod")


def normalize(scores: torch.Tensor, how: str) -> torch.Tensor:
    """Make ``scores`` (``[n_units]``, one group) comparable across metrics and layers.

    ``mean``/``max``/``l2`` divide by that statistic (scale-free, keeps ratios); ``zscore`` centres and
    scales; ``rank`` maps to evenly spaced values in (0, 1]; ``none`` keeps raw scores.
    """
    scores = scores.double()
    if how == "none":
        return scores
    if how == "mean":
        return scores / scores.abs().mean().clamp_min(EPS)
    if how == "max":
        return scores / scores.abs().max().clamp_min(EPS)
    if how == "l2":
        return scores / scores.norm().clamp_min(EPS)
    if how == "zscore":
        if scores.numel() < 2:
            return torch.zeros_like(scores)
        return (scores - scores.mean()) / scores.std().clamp_min(EPS)
    if how == "rank":
        ranks = torch.empty_like(scores)
        ranks[scores.argsort(stable=True)] = torch.arange(1, scores.numel() + 1, dtype=scores.dtype)
        return ranks / scores.numel()
    raise ValueError(f"unknown normalization {how!r}; valid: none, mean, max, l2, zscore, rank")


#: ``Importance.pooled_from`` of a metric that a search's pool rebuilds from the per-sample input moments
#: (``act_sq``, ``act_sum`` of every unit module), summed over the chosen samples.
MOMENTS = "act"


class Importance:
    """Base class of every metric; registered by name in ``adapruner.catalog.METRICS``.

    ``needs`` names the statistics the metric reads (:data:`adapruner.stats.NEEDS`). ``pooled_from`` names
    the per-sample statistic from which a search's pool (:mod:`adapruner.search.cache`) combines the metric
    over any subset of its samples:

    - :data:`MOMENTS`: the input moments (exact for the metrics that read only ``act``);
    - any other name: a per-unit statistic, the metric's own :meth:`unit_terms` of one sample's gradients
      (per slice and unit), summed over the samples and then :meth:`finish`-ed. Exact for terms linear in
      the gradient; for ``|.|`` of it, per-sample saliencies are added instead of per-sample gradients;
    - ``None``: only exact statistics (the metric cannot be searched). Data-free metrics need nothing.
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    pooled_from: ClassVar[str | None] = None

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def __call__(
        self, adapter: ModelAdapter, group: UnitGroup, stats: Statistics, *, aggregation: str = "sum"
    ) -> torch.Tensor:
        """Scores ``[group.n_units]`` (float64, on CPU)."""
        per_slice = [
            self.slice_scores(adapter.linear(s.module).weight.detach(), s, group.n_units, stats) for s in group.slices
        ]
        scored = [p.double().cpu() for p in per_slice if p is not None]
        return aggregate(torch.stack(scored), aggregation)

    def slice_scores(
        self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics
    ) -> torch.Tensor | None:
        """``[n_units]`` scores from one coupled slice, or ``None`` when the metric ignores it: the finished
        unit terms, which pooled statistics hold already summed over their samples (``stats.unit_sums``)."""
        pooled = stats.unit_sums.get(self.pooled_from)
        terms = pooled[slice_] if pooled is not None else self.unit_terms(weight, slice_, n_units, stats)
        return None if terms is None else self.finish(terms)

    def unit_terms(
        self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics
    ) -> torch.Tensor | None:
        """``[n_units]`` the sum of the element scores over each unit's weights of the slice, or ``None``."""
        element = self.element(weight, slice_, stats)
        if element is None:
            return None
        return unit_totals(element, slice_, n_units)

    def finish(self, terms: torch.Tensor) -> torch.Tensor:
        """A slice's scores ``[n_units]`` from its unit terms (summed over samples when pooled)."""
        return terms

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor | None:
        """Weight-shaped element scores (``[out, in]``), or ``None`` to ignore this slice."""
        raise NotImplementedError


def unit_totals(values: torch.Tensor, slice_: CoupledSlice, n_units: int) -> torch.Tensor:
    """``[n_units]``: each unit's sum of the weight-shaped ``values`` (``[out, in]``) over its rows
    (``slice_.dim == 0``) or columns (``dim == 1``) of the slice, reduced along the other dimension first
    (no transposed copy)."""
    span = values.narrow(slice_.dim, slice_.offset, n_units * slice_.unit_size)
    return _by_unit(span.sum(1 - slice_.dim), slice_, n_units)


def weighted_unit_totals(
    weight: torch.Tensor,
    slice_: CoupledSlice,
    n_units: int,
    *,
    power: int,
    column_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[n_units]`` float32: each unit's sum over its weights of ``|W_ij| ** power * c_j`` (``weight: [out,
    in]``, ``c = column_weights [in]``, ones when None), by :func:`power_sums` over the slice."""
    span = weight.narrow(slice_.dim, slice_.offset, n_units * slice_.unit_size)
    c = column_weights
    if c is not None and slice_.dim == 1:
        c = c.narrow(0, slice_.offset, span.shape[1])
    return _by_unit(power_sums(span, power=power, dim=slice_.dim, column_weights=c), slice_, n_units)


def power_sums(
    weight: torch.Tensor, *, power: int, dim: int, column_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``[weight.shape[dim]]`` float32: ``sum_j |W_ij| ** power * c_j`` per row (``dim == 0``) or
    ``c_j * sum_i |W_ij| ** power`` per column (``dim == 1``); ``power`` 1 or 2, ``c: [in]`` (ones when None).

    ``weight: [out, in]`` in any float dtype is read a block of rows at a time in float32 (no weight-sized
    float32 copy): rows take a matrix-vector product with ``c``, columns their sums times ``c``."""
    c = None if column_weights is None else column_weights.to(device=weight.device, dtype=torch.float32)
    blocks = _powered_blocks(weight, power)
    if dim == 0:
        return torch.cat([block.sum(1) if c is None else block @ c for block in blocks])
    sums = torch.zeros(weight.shape[1], dtype=torch.float32, device=weight.device)
    for block in blocks:
        sums += block.sum(0)
    return sums if c is None else sums * c


_BLOCK_ELEMENTS = 1 << 22  # float32 elements of one block of rows (16 MiB)


def _powered_blocks(weight: torch.Tensor, power: int) -> Iterator[torch.Tensor]:
    """``|rows| ** power`` in float32 for each block of rows of ``weight: [out, in]``: one reused buffer,
    valid until the next block (each block read once: copy, then power in place)."""
    if power not in (1, 2):
        raise ValueError(f"power must be 1 or 2, not {power}")
    rows_per_block = max(1, _BLOCK_ELEMENTS // max(1, weight.shape[1]))
    buffer = torch.empty(min(rows_per_block, weight.shape[0]), weight.shape[1], device=weight.device)
    for rows in weight.split(rows_per_block):
        block = buffer[: rows.shape[0]]
        block.copy_(rows)
        yield block.abs_() if power == 1 else block.square_()


def _by_unit(per_index: torch.Tensor, slice_: CoupledSlice, n_units: int) -> torch.Tensor:
    """``[n_units]`` sums of a vector over the slice's indices (``[n_units * unit_size]``), unit by unit."""
    return per_index.reshape(n_units, slice_.unit_size).sum(1)


def consumer_columns(weight: torch.Tensor, slice_: CoupledSlice, n_units: int) -> torch.Tensor | None:
    """The units' input columns of a consumer (output projection) slice, ``[out, n_units * unit_size]``,
    or ``None`` for a producer slice (metrics scored on the output projection only)."""
    if slice_.dim != 1:
        return None
    return weight.narrow(1, slice_.offset, n_units * slice_.unit_size)


def per_unit(metric: Importance | type[Importance]) -> bool:
    """Whether ``metric`` is scored from a per-unit statistic of its own (not the moments, not exact only)."""
    return metric.pooled_from not in (None, MOMENTS)


def unit_statistics_of(names: Iterable[str]) -> dict[str, Importance]:
    """``{statistic: metric}`` for the named metrics scored from per-unit terms of each sample's gradients
    (their ``pooled_from``): what ``prune`` reduces their gradients to as autograd produces them."""
    metrics = (build_metric(name) for name in names)
    return {metric.pooled_from: metric for metric in metrics if per_unit(metric)}


def build_metric(name: str, *, seed: int = 0) -> Importance:
    return METRICS.get(name)(seed=seed)


def metric_needs(names: Mapping[str, float] | list[str]) -> set[str]:
    """The statistics that the named metrics read."""
    return set().union(*(METRICS.get(name).needs for name in names))


def score_groups(
    adapter: ModelAdapter,
    groups: list[UnitGroup],
    stats: Statistics,
    *,
    mix: Mapping[str, float],
    aggregation: str = "sum",
    normalization: str = "mean",
    seed: int = 0,
) -> dict[tuple[int, str], torch.Tensor]:
    """The weighted metric mix for every group: ``{(layer, kind): scores [n_units]}``.

    ``score = sum_m w_m * normalize(metric_m(group))`` with the weights summing to one.
    """
    total = sum(mix.values())
    metrics = {name: (build_metric(name, seed=seed), weight / total) for name, weight in mix.items() if weight > 0}
    scores = {}
    for group in groups:
        combined = torch.zeros(group.n_units, dtype=torch.float64)
        for metric, weight in metrics.values():
            raw = metric(adapter, group, stats, aggregation=aggregation)
            if not torch.isfinite(raw).all():
                raise FloatingPointError(
                    f"metric {type(metric).__name__} gave non-finite scores in layer {group.layer}"
                )
            combined += weight * normalize(raw, normalization)
        scores[group.key] = combined
    return scores
