"""FLAP bias compensation (An et al., AAAI 2024, arXiv 2312.11983).

Removing input columns J of an output projection removes ``x_J W_J^T`` from every token's output. FLAP
adds back its mean over the calibration tokens as a bias, ``b = W_J mean(x_J)``, so only the fluctuation
around the mean is lost (the fluctuation metric, ``adapruner.importance.activation.FlapImportance``,
scores exactly that residual). The bias lives on o_proj / down_proj, which LLaMA-style configs create
without one; :func:`adapruner.artifacts.save_pruned` records such biases in the manifest and
:func:`adapruner.artifacts.load_pruned` recreates them.
"""

from __future__ import annotations

import torch
from torch import nn

from adapruner.compensate.base import Compensator, PrunedInput
from adapruner.stats import Statistics


def flap_bias(dense_weight: torch.Tensor, mean: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """The bias ``[out]`` that restores the removed columns' mean contribution: ``W[:, J] @ mean[J]``
    (``dense_weight: [out, d_in]``, ``mean: [d_in]`` mean input over calibration tokens, ``drop: [j]``)."""
    return dense_weight.double()[:, drop] @ mean.double()[drop]


def error_with_bias(
    dense_weight: torch.Tensor,
    keep: torch.Tensor,
    bias: torch.Tensor,
    *,
    cov: torch.Tensor,
    total: torch.Tensor,
    n: int,
) -> float:
    """Squared reconstruction error over ``n`` tokens when the kept columns are unchanged and ``bias``
    (``[out]``) is added: ``||X_J W_J^T - 1 b^T||_F^2`` from ``cov: [d_in, d_in]`` (sum of x x^T) and
    ``total: [d_in]`` (sum of x)."""
    drop = torch.ones(dense_weight.shape[1], dtype=torch.bool)
    drop[keep] = False
    w = dense_weight.double()[:, drop]
    c = cov.double()[drop][:, drop]
    removed = float(torch.einsum("oi,ij,oj->", w, c, w))
    cross = float(bias.double() @ (w @ total.double()[drop]))
    return removed - 2 * cross + n * float(bias.double().square().sum())


class BiasCompensator(Compensator):
    """Add ``W_J mean(x_J)`` to the projection's bias (creating a zero bias where there is none)."""

    needs = frozenset({"act"})

    def update(self, linear: nn.Linear, target: PrunedInput, stats: Statistics) -> None:
        mean = stats.act_sum[target.module].cpu() / stats.n_tokens
        bias = flap_bias(target.dense_weight, mean, target.drop)
        if linear.bias is None:
            linear.bias = nn.Parameter(
                torch.zeros(linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device),
                requires_grad=linear.weight.requires_grad,
            )
        linear.bias.add_(bias.to(linear.bias.dtype).to(linear.bias.device))
