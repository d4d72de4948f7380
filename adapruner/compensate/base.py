"""The compensation stage: which output projections lost input columns, and the compensator base class.

Pruning a unit removes input columns of its output projection (o_proj for a KV group, down_proj for an
MLP channel). A compensator reads the calibration statistics of that projection's *dense* input (collected
before pruning: the mean for FLAP's bias, the covariance ``X^T X`` for least squares, OBS and Newton) and
updates the kept weights (or adds a bias) in place. Any compensator can follow any metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from adapruner.adapters.base import ModelAdapter, _keep_mask
from adapruner.catalog import COMPENSATORS
from adapruner.prune.apply import top_units
from adapruner.prune.plan import Plan
from adapruner.stats import Statistics

# Compensation solves run in float32 on the device of the weight they update (float64 on the CPU was
# minutes per trial at 8B); the damping keeps the systems well conditioned at this precision.
SOLVE_DTYPE = torch.float32


@dataclass(frozen=True)
class PrunedInput:
    """One output projection whose input columns are pruned.

    ``keep: [k]`` ascending indices of the kept input columns of the dense projection; ``dense_weight:
    [out, d_in]`` its weight before pruning; ``unit_size`` input columns per unit (a KV group's
    ``n_rep * head_dim`` or 1 for a channel), so that ``keep`` is a union of whole units.
    """

    module: str
    keep: torch.Tensor
    dense_weight: torch.Tensor
    unit_size: int

    @property
    def drop(self) -> torch.Tensor:
        """``[d_in - k]`` ascending indices of the removed input columns."""
        mask = torch.ones(self.dense_weight.shape[1], dtype=torch.bool)
        mask[self.keep] = False
        return mask.nonzero().squeeze(1)


def pruned_inputs(
    adapter: ModelAdapter,
    scores: Mapping[tuple[int, str], torch.Tensor],
    plan: Plan,
    *,
    layers: Iterable[int] | None = None,
) -> list[PrunedInput]:
    """The projections that :func:`adapruner.prune.apply_plan` will shrink in ``layers`` (default: all),
    read from the *dense* model (call before their surgery; the same ``top_units`` choice). Blocks the
    plan removes whole are skipped. Each dense weight is copied in :data:`SOLVE_DTYPE` where it lives."""
    targets = []
    for layer in range(len(plan.keep)) if layers is None else layers:
        if layer in plan.drop:
            continue
        for kind, keep in plan.keep[layer].items():
            group = adapter.unit_group(layer, kind)
            if keep >= group.n_units:
                continue
            consumer = group.consumer()
            linear = adapter.linear(consumer.module)
            mask = _keep_mask(linear.in_features, [consumer], top_units(scores[group.key], keep), group.n_units)
            targets.append(
                PrunedInput(
                    module=consumer.module,
                    keep=mask.nonzero().squeeze(1),
                    dense_weight=linear.weight.detach().to(SOLVE_DTYPE, copy=True),
                    unit_size=consumer.unit_size,
                )
            )
    return targets


def output_error(dense_weight: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor, cov: torch.Tensor) -> float:
    """``||X W_dense^T - X_K W^T||_F^2`` over the calibration tokens from the input covariance ``cov:
    [d_in, d_in]`` (``weight: [out, k]`` the kept columns' weight after any update). A bias ``b`` adds
    ``2 b^T sum(e) + T ||b||^2``; see :func:`adapruner.compensate.bias.error_with_bias`."""
    w = dense_weight.double()
    delta = torch.zeros_like(w)
    delta[:, keep] = weight.double()
    diff = w - delta
    return float(torch.einsum("oi,ij,oj->", diff, cov.double(), diff))


class Compensator:
    """Base class of every compensator; registered by name in ``adapruner.catalog.COMPENSATORS``.

    ``needs`` names the statistics of the dense model it reads (``act`` for means, ``cov`` for the input
    covariance of the output projections). ``damping`` is relative to the mean diagonal of the
    covariance; ``None`` takes the method's default.
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    default_damping: ClassVar[float] = 0.0

    def __init__(self, *, damping: float | None = None) -> None:
        self.damping = self.default_damping if damping is None else damping

    def __call__(self, adapter: ModelAdapter, targets: Sequence[PrunedInput], stats: Statistics) -> None:
        """Update every pruned projection of ``adapter`` (the pruned model) in place."""
        with torch.no_grad():
            for target in targets:
                self.update(adapter.linear(target.module), target, stats)

    def update(self, linear: nn.Linear, target: PrunedInput, stats: Statistics) -> None:
        raise NotImplementedError


class NoCompensation(Compensator):
    """Leave the remaining weights as they are."""

    def __call__(self, adapter: ModelAdapter, targets: Sequence[PrunedInput], stats: Statistics) -> None:
        return None


def build_compensator(name: str, *, damping: float | None = None) -> Compensator:
    return COMPENSATORS.get(name)(damping=damping)


def solve_inputs(linear: nn.Linear, target: PrunedInput, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dense_weight [out, d_in], cov [d_in, d_in])`` of ``target`` in :data:`SOLVE_DTYPE` on the device
    of ``linear.weight``."""
    device = linear.weight.device
    return target.dense_weight.to(device, SOLVE_DTYPE), cov.to(device, SOLVE_DTYPE)


def set_weight_(linear: nn.Linear, weight: torch.Tensor) -> None:
    """Replace ``linear.weight`` values (same shape), keeping its dtype and device."""
    linear.weight.copy_(weight.to(linear.weight.dtype))


def refit_kept_columns(
    dense_weight: torch.Tensor, cov: torch.Tensor, keep: torch.Tensor, *, kept_diagonal: torch.Tensor
) -> torch.Tensor:
    """``W_K + W_J H_JK A^{-1}``: the kept columns ``[out, k]`` of ``dense_weight: [out, d_in]`` re-fitted
    to its dense output, where ``H = cov: [d_in, d_in]`` (sum of x x^T over calibration tokens), ``K =
    keep: [k]``, ``J`` the other columns and ``A`` is ``H_KK`` with its diagonal replaced by
    ``kept_diagonal: [k]`` (the caller's damping: OBS and reformation differ only there).

    This equals the proximal least squares ``(W H[:, K] + lam W_K)(H_KK + lam I)^{-1}`` for ``A = H_KK + lam
    I``, and OBS's ``(W - W_J Hinv_JJ^{-1} Hinv_J:)[:, K]`` for ``A`` the damped ``H``'s kept block. One
    Cholesky factorisation of ``A`` (``k^3 / 3`` flops; an LU solve where rounding leaves ``A`` not
    positive definite); the blocks are indexed straight from ``H`` (no
    ``[k, d_in]`` rows in between). In the dtype of ``dense_weight``."""
    w = dense_weight
    keep = keep.to(w.device)
    drop_mask = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
    drop_mask[keep] = False
    if not drop_mask.any():
        return w[:, keep]
    drop = drop_mask.nonzero().squeeze(1)
    h = cov.to(w.dtype)
    a, h_kj = h[keep[:, None], keep], h[keep[:, None], drop]  # [k, k], [k, j]
    a.diagonal().copy_(kept_diagonal.to(a.device, a.dtype))
    rhs = h_kj @ w[:, drop].t()  # [k, out]
    factor, info = torch.linalg.cholesky_ex(a)
    if info.item() == 0:
        return w[:, keep] + torch.cholesky_solve(rhs, factor).t()
    # not positive definite in this precision (few calibration tokens, little damping): an LU solve
    return w[:, keep] + torch.linalg.solve(a, rhs).t()


def damped_diagonal(diagonal: torch.Tensor, damping: float) -> torch.Tensor:
    """The diagonal ``[d_in]`` of ``cov + damping * mean(diag cov) * I`` for ``diagonal = diag(cov)``; dead
    inputs (zero variance) get a unit diagonal first, as SparseGPT does, so that the matrix is invertible."""
    d = torch.where(diagonal == 0, torch.ones_like(diagonal), diagonal)
    return d + damping * d.mean()
