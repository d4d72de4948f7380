from __future__ import annotations

import torch

from adapruner.compensate.numerical import newton_scales


def test_newton_scales_minimise_the_reconstruction_error():
    """One Newton step is the minimum of the quadratic: the gradient vanishes there and the error is
    below that of the unchanged weights (scales 1)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=generator, dtype=torch.float64)
    x[:, 4:6] += x[:, 0:2]  # units 0 and 2 correlated: the kept one can absorb the removed one
    w = torch.randn(6, 12, generator=generator, dtype=torch.float64)
    keep = torch.tensor([2, 3, 4, 5, 8, 9, 10, 11])  # units of size 2: 1, 2, 4, 5 kept; 0, 3 removed
    scales = newton_scales(w, x.t() @ x, keep, unit_size=2, damping=0.0).requires_grad_(True)

    def error(s):
        return (x @ w.t() - x[:, keep] @ (w[:, keep] * s.repeat_interleave(2)[None, :]).t()).square().sum()

    (gradient,) = torch.autograd.grad(error(scales), scales)
    assert gradient.abs().max() < 1e-6 * error(scales).item()
    assert error(scales.detach()) < error(torch.ones(4, dtype=torch.float64))
