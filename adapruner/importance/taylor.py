"""Gradient metrics of the LLM-Pruner family (Ma et al., 2023, arXiv 2305.11627).

The loss change from removing weights W is approximated by a Taylor expansion around W:
``dL ~= -g.W + 1/2 W.H.W`` with g = dL/dW summed over calibration samples and H approximated by the
diagonal empirical Fisher F = sum_s g_s^2.
"""

from __future__ import annotations

import torch

from adapruner.adapters.base import CoupledSlice, slice_weight
from adapruner.importance.base import Importance
from adapruner.stats import Statistics


class TaylorImportance(Importance):
    """Element-wise first order: sum over the unit's weights of |W * g| (LLM-Pruner 'param_first')."""

    needs = frozenset({"grad"})

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        return (weight.float() * stats.grad[slice_.module]).abs()


class SecondOrderTaylorImportance(Importance):
    """Element-wise first plus second order: |W*g - 1/2 * W^2 * F| (LLM-Pruner 'param_mix')."""

    needs = frozenset({"grad", "fisher"})

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        w = weight.float()
        return (w * stats.grad[slice_.module] - 0.5 * w.square() * stats.fisher[slice_.module]).abs()


class VectorTaylorImportance(Importance):
    """Vector-wise first order: |sum over the unit's weights of W * g| per slice (LLM-Pruner
    'vectorize'): the first-order loss change of removing the unit's whole weight vector at once."""

    needs = frozenset({"grad"})

    def slice_scores(self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics) -> torch.Tensor:
        product = weight.float() * stats.grad[slice_.module]
        return slice_weight(product, slice_, n_units).sum((1, 2)).abs()
