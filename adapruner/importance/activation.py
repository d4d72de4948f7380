"""Activation-aware metrics that need one forward pass over the calibration data."""

from __future__ import annotations

import torch

from adapruner.adapters.base import CoupledSlice
from adapruner.importance.base import MOMENTS, Importance
from adapruner.stats import Statistics


class WandaImportance(Importance):
    """Structured Wanda (Sun et al., 2023, arXiv 2306.11695): |W_ij| * ||X_j||_2 summed over each unit's
    weights, with X_j the j-th input channel of the weight's module over all calibration tokens."""

    needs = frozenset({"act"})
    pooled_from = MOMENTS

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        return weight.float().abs() * stats.act_norm(slice_.module)[None, :]


class FlapImportance(Importance):
    """FLAP fluctuation metric (An et al., 2023, arXiv 2312.11983): for an input channel j of the output
    projection (o_proj for heads, down_proj for channels), Var(X_j) * ||W[:, j]||^2, summed over the
    unit's channels. Producer slices are not scored: FLAP measures how much the removed channels'
    contribution fluctuates around the mean that its bias compensation would restore."""

    needs = frozenset({"act"})
    pooled_from = MOMENTS

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor | None:
        if slice_.dim != 1:
            return None
        return weight.float().square() * stats.act_var(slice_.module)[None, :]
