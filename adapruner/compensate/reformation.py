"""Reformation of the remaining weights (Shen et al., "Search for Efficient Large Language Models",
NeurIPS 2024, arXiv 2409.17372).

After the input columns J of an output projection are removed, the kept columns K are re-fitted so that
the projection reproduces its dense output on the calibration tokens:

    W_K' = argmin ||X W^T - X_K W_K'^T||_F^2 + lam ||W_K' - W_K||_F^2
         = (W H[:, K] + lam W_K) (H_KK + lam I)^{-1},      H = X^T X.

The proximal term (``lam = damping * mean diag H``) keeps the solve well conditioned and guarantees the
error is never above that of the unchanged kept weights (the paper's ADMM iterations converge to the
same least-squares optimum under the mask constraint).
"""

from __future__ import annotations

import torch
from torch import nn

from adapruner.compensate.base import Compensator, PrunedInput, refit_kept_columns, set_weight_, solve_inputs
from adapruner.stats import Statistics


def least_squares_weight(
    dense_weight: torch.Tensor, cov: torch.Tensor, keep: torch.Tensor, *, damping: float
) -> torch.Tensor:
    """The re-fitted kept columns ``[out, k]`` from ``dense_weight: [out, d_in]``, ``cov: [d_in, d_in]``
    (sum over tokens of x x^T) and ``keep: [k]``: :func:`~adapruner.compensate.base.refit_kept_columns`
    with ``lam`` added to the kept block's diagonal."""
    kept = cov.diagonal().to(dense_weight.dtype)[keep.to(cov.device)]
    lam = damping * kept.mean().clamp_min(1e-12)
    return refit_kept_columns(dense_weight, cov, keep, kept_diagonal=kept + lam)


class ReformationCompensator(Compensator):
    """Least-squares re-fit of every pruned projection's kept columns."""

    needs = frozenset({"cov"})
    default_damping = 1e-3

    def update(self, linear: nn.Linear, target: PrunedInput, stats: Statistics) -> None:
        weight, cov = solve_inputs(linear, target, stats.cov[target.module])
        set_weight_(linear, least_squares_weight(weight, cov, target.keep, damping=self.damping))
