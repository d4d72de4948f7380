"""Gradient metrics of the LLM-Pruner family (Ma et al., 2023, arXiv 2305.11627).

The loss change from removing weights W is approximated by a Taylor expansion around W:
``dL ~= -g.W + 1/2 W.H.W`` with g = dL/dW summed over calibration samples and H approximated by the
diagonal empirical Fisher F = sum_s g_s^2.

``prune`` and a search's pool both score these metrics from each sample's gradient, reduced to the unit
terms as autograd produces it (no weight-sized gradient sum is kept, issue 17): exact for
``taylor_vector`` (|sum_s sum W g_s| = |sum W * sum_s g_s|); for ``taylor`` and ``taylor2`` the per-sample
saliencies are added, sum_s |W g_s|, which bounds |W sum_s g_s| from above (the triangle inequality).
``collect_statistics(needs={"grad"})`` still gives the weight-shaped sums (tests compare the two).
"""

from __future__ import annotations

import torch

from adapruner.adapters.base import CoupledSlice
from adapruner.importance.base import Importance
from adapruner.stats import Statistics


class TaylorImportance(Importance):
    """Element-wise first order: sum over the unit's weights of |W * g| (LLM-Pruner 'param_first')."""

    needs = frozenset({"grad"})
    pooled_from = "taylor_abs"

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        return (weight.float() * stats.grad[slice_.module]).abs()


class SecondOrderTaylorImportance(Importance):
    """Element-wise first plus second order: |W*g - 1/2 * W^2 * F| (LLM-Pruner 'param_mix')."""

    needs = frozenset({"grad", "fisher"})
    pooled_from = "taylor2_abs"

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        w = weight.float()
        return (w * stats.grad[slice_.module] - 0.5 * w.square() * stats.fisher[slice_.module]).abs()


class VectorTaylorImportance(Importance):
    """Vector-wise first order: |sum over the unit's weights of W * g| per slice (LLM-Pruner
    'vectorize'): the first-order loss change of removing the unit's whole weight vector at once."""

    needs = frozenset({"grad"})
    pooled_from = "taylor_vec"

    def element(self, weight: torch.Tensor, slice_: CoupledSlice, stats: Statistics) -> torch.Tensor:
        return weight.float() * stats.grad[slice_.module]

    def finish(self, terms: torch.Tensor) -> torch.Tensor:
        return terms.abs()
