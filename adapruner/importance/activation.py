"""Activation-aware metrics that need one forward pass over the calibration data."""

from __future__ import annotations

import torch

from adapruner.adapters.base import CoupledSlice
from adapruner.importance.base import MOMENTS, Importance, weighted_unit_totals
from adapruner.stats import Statistics


class WandaImportance(Importance):
    """Structured Wanda (Sun et al., 2023, arXiv 2306.11695): |W_ij| * ||X_j||_2 summed over each unit's
    weights, with X_j the j-th input channel of the weight's module over all calibration tokens."""

    needs = frozenset({"act"})
    pooled_from = MOMENTS

    def unit_terms(self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics) -> torch.Tensor:
        norm = stats.act_norm(slice_.module)
        return weighted_unit_totals(weight, slice_, n_units, power=1, column_weights=norm)


class FlapImportance(Importance):
    """FLAP fluctuation metric (An et al., 2023, arXiv 2312.11983): for an input channel j of the output
    projection (o_proj for heads, down_proj for channels), Var(X_j) * ||W[:, j]||^2, summed over the
    unit's channels. Producer slices are not scored: FLAP measures how much the removed channels'
    contribution fluctuates around the mean that its bias compensation would restore."""

    needs = frozenset({"act"})
    pooled_from = MOMENTS

    def unit_terms(
        self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics
    ) -> torch.Tensor | None:
        if slice_.dim != 1:
            return None
        var = stats.act_var(slice_.module)
        return weighted_unit_totals(weight, slice_, n_units, power=2, column_weights=var)
