"""Newton compensation (Shen et al., "Numerical Pruning for Efficient Autoregressive Models", AAAI 2025,
arXiv 2412.12441).

The paper scores units with Newton's method on relaxed unit masks
(:mod:`adapruner.importance.numerical`); its compensation re-optimises the masks of the units that stay,
so that they absorb the removed units' contribution, and folds them into the weights. With one scale
``s_u`` per kept unit (``[k_units]``) the damped reconstruction objective

    f(s) = ||X W^T - X_K diag(s) W_K^T||_F^2 + lam ||s - 1||^2

is quadratic; one Newton step from ``s = 1`` reaches its minimum:
``s = 1 - (G_KK + lam I)^{-1} (G_KK 1 - c)``, with ``G`` the unit Gram matrix of the kept units and
``c_u = sum_{c in u} (W_K^T W H)_{cc}`` block-summed. It changes one number per unit (cheaper and more
conservative than ``reformation``) and never raises the error (``s = 1`` is feasible).
"""

from __future__ import annotations

import torch
from torch import nn

from adapruner.compensate.base import Compensator, PrunedInput, solve_inputs
from adapruner.importance.numerical import unit_gram
from adapruner.stats import Statistics


def newton_scales(
    dense_weight: torch.Tensor, cov: torch.Tensor, keep: torch.Tensor, *, unit_size: int, damping: float
) -> torch.Tensor:
    """Scales ``[k // unit_size]`` of the kept units (``dense_weight: [out, d_in]``, ``cov: [d_in, d_in]``,
    ``keep: [k]`` whole units, ascending)."""
    w, h = dense_weight, cov.to(dense_weight.dtype)
    keep = keep.to(w.device)
    n = len(keep) // unit_size
    w_k = w[:, keep]
    gram = unit_gram(w_k, h[keep][:, keep], n_units=n, unit_size=unit_size)  # [n, n]
    target = ((w_k.t() @ w) * h[keep]).sum(1).reshape(n, unit_size).sum(1)  # [n]
    lam = damping * gram.diagonal().mean().clamp_min(1e-30)
    ones = torch.ones(n, dtype=gram.dtype, device=gram.device)
    hessian = gram + lam * torch.eye(n, dtype=gram.dtype, device=gram.device)
    return ones - torch.linalg.solve(hessian, gram @ ones - target)


class NewtonCompensator(Compensator):
    """Rescale each kept unit's columns of the output projection by its Newton-optimal mask value."""

    needs = frozenset({"cov"})
    default_damping = 1e-3

    def update(self, linear: nn.Linear, target: PrunedInput, stats: Statistics) -> None:
        weight, cov = solve_inputs(linear, target, stats.cov[target.module])
        scales = newton_scales(weight, cov, target.keep, unit_size=target.unit_size, damping=self.damping)
        per_column = scales.repeat_interleave(target.unit_size).to(linear.weight.dtype)
        linear.weight.mul_(per_column[None, :])
