"""Structured OBS update of the remaining input columns (the Optimal Brain Surgeon step that SparseGPT,
Frantar & Alistarh 2023, arXiv 2301.00774, applies weight by weight; here for whole removed columns, as
a compensator that can follow Wanda or any other metric).

For a linear layer the layer-wise loss ``||X W^T - X W'^T||_F^2`` has Hessian ``H = 2 X^T X`` (the same for
every output row). Removing the input columns J and updating the rest optimally gives, with
``Hinv = (H + delta I)^{-1}`` (SparseGPT's ``percdamp`` dampening, ``delta = damping * mean diag H``):

    dW = -W[:, J] (Hinv[J, J])^{-1} Hinv[J, :],     W' = (W + dW)[:, K].

Removing all of J at once is what SparseGPT's column-by-column loop gives for whole columns in exact
arithmetic; the dampening is what distinguishes it from the proximal least squares of ``reformation``.
"""

from __future__ import annotations

import torch
from torch import nn

from adapruner.compensate.base import Compensator, PrunedInput, damped, set_weight_, solve_inputs
from adapruner.stats import Statistics


def obs_update(dense_weight: torch.Tensor, cov: torch.Tensor, keep: torch.Tensor, *, damping: float) -> torch.Tensor:
    """The updated kept columns ``[out, k]`` (``dense_weight: [out, d_in]``, ``cov: [d_in, d_in]`` sum of
    x x^T over calibration tokens, ``keep: [k]``)."""
    w = dense_weight
    keep = keep.to(w.device)
    drop = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
    drop[keep] = False
    if not drop.any():
        return w[:, keep]
    h_inv = torch.cholesky_inverse(torch.linalg.cholesky(damped(cov, damping)))
    step = torch.linalg.solve(h_inv[drop][:, drop], h_inv[drop])  # [j, d_in]
    return (w - w[:, drop] @ step)[:, keep]


class ObsCompensator(Compensator):
    """SparseGPT-style OBS update of every pruned projection's kept columns."""

    needs = frozenset({"cov"})
    default_damping = 0.01

    def update(self, linear: nn.Linear, target: PrunedInput, stats: Statistics) -> None:
        weight, cov = solve_inputs(linear, target, stats.cov[target.module])
        set_weight_(linear, obs_update(weight, cov, target.keep, damping=self.damping))
