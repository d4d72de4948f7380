"""Numerical Pruning (Shen et al., AAAI 2025, arXiv 2412.12441): Newton's-method scores.

Each unit of a group gets a relaxed mask value ``m_u`` that scales its input columns of the output
projection (o_proj for attention, down_proj for the MLP, scored separately as in the paper). The
reconstruction error of the projection's output on the calibration tokens is a quadratic in the masks,

    E(m) = ||X W^T - X diag(m) W^T||_F^2 = (1 - m)^T G (1 - m),

with the unit Gram matrix ``G_uv = sum_{c in u, c' in v} (W^T W)_{cc'} (X^T X)_{cc'}`` (its Hessian is 2G).
A unit's score is the error left after removing it (``m_u = 0``) and taking the Newton step on the other
masks (exact for a quadratic, so they reach their optimum): the Schur complement

    S_u = min_{m_-u} E(m | m_u = 0) = 1 / [(G + lam I)^{-1}]_uu,

``lam = damping * mean(diag G)`` keeping it finite for exactly redundant units. Units that the others can
stand in for (correlated contributions) score low and are pruned first; for uncorrelated units
``S_u = G_uu + lam``, the diagonal (FLAP/Wanda-like) contribution. The same Newton step is the
``numerical`` compensator (:mod:`adapruner.compensate.numerical`).

Without the full input covariance (a search's pool keeps the input moments only, ``pooled_from =
MOMENTS``) the Gram matrix is taken on the covariance's diagonal (:meth:`Statistics.input_cov
<adapruner.stats.Statistics.input_cov>`), ``G_uu = sum_{c in u} ||W[:, c]||^2 sum_t x_c^2``: correlations
between units are then ignored.
"""

from __future__ import annotations

import torch

from adapruner.adapters.base import CoupledSlice
from adapruner.importance.base import MOMENTS, Importance, consumer_columns
from adapruner.stats import Statistics

DAMPING = 0.01


def unit_gram(weight: torch.Tensor, cov: torch.Tensor, *, n_units: int, unit_size: int) -> torch.Tensor:
    """``G: [n_units, n_units]`` from ``weight: [out, n_units * unit_size]`` and ``cov: [n_units *
    unit_size, n_units * unit_size]`` (sum over tokens of x x^T of those columns) or its diagonal ``[n_units
    * unit_size]`` (then ``G`` is diagonal: correlations ignored)."""
    w = weight.double()
    if cov.dim() == 1:
        diag = w.square().sum(0) * cov.double()
        return torch.diag(diag.reshape(n_units, unit_size).sum(1))
    full = (w.t() @ w) * cov.double()
    return full.reshape(n_units, unit_size, n_units, unit_size).sum((1, 3))


def newton_scores(gram: torch.Tensor, *, damping: float = DAMPING) -> torch.Tensor:
    """``[n]`` reconstruction error left when each unit is removed and the other masks take their
    Newton-optimal values: ``1 / diag((G + lam I)^{-1})`` for ``gram: [n, n]``."""
    gram = gram.double()
    lam = damping * gram.diagonal().mean().clamp_min(1e-30)
    hessian = gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return 1 / torch.cholesky_inverse(torch.linalg.cholesky(hessian)).diagonal()


class NumericalImportance(Importance):
    """Newton score of each unit on its output projection (higher = keep)."""

    needs = frozenset({"cov"})
    pooled_from = MOMENTS  # approximate: the diagonal of the covariance

    def slice_scores(
        self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics
    ) -> torch.Tensor | None:
        columns = consumer_columns(weight, slice_, n_units)
        if columns is None:
            return None
        cov = stats.input_cov(slice_.module, slice_.offset, columns.shape[1]).to(columns.device)
        return newton_scores(unit_gram(columns, cov, n_units=n_units, unit_size=slice_.unit_size))
