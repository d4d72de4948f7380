from __future__ import annotations

import torch

from adapruner.compensate.base import refit_kept_columns
from adapruner.compensate.obs import obs_update
from adapruner.compensate.reformation import least_squares_weight


def _problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 12, generator=generator, dtype=torch.float64)
    x[:, 3] = x[:, 1] + 0.1 * x[:, 3]  # correlated inputs: what compensation exploits
    w = torch.randn(5, 12, generator=generator, dtype=torch.float64)
    keep = torch.tensor([0, 2, 3, 5, 6, 7, 9, 11])
    return x, w, keep


def test_reformation_is_the_least_squares_fit_of_the_dense_output():
    x, w, keep = _problem()
    fitted = least_squares_weight(w, x.t() @ x, keep, damping=0.0)
    reference = torch.linalg.lstsq(x[:, keep], x @ w.t()).solution.t()
    torch.testing.assert_close(fitted, reference)


def test_damped_reformation_never_raises_the_error():
    x, w, keep = _problem(1)
    error = lambda wk: float((x @ w.t() - x[:, keep] @ wk.t()).square().sum())  # noqa: E731
    for damping in (1e-3, 1.0, 100.0):
        assert error(least_squares_weight(w, x.t() @ x, keep, damping=damping)) <= error(w[:, keep])


def test_structured_obs_without_damping_is_the_least_squares_optimum():
    """Removing whole columns with the OBS update is the exact least-squares solution (SparseGPT's
    column loop reaches it for whole columns); damping only regularises it."""
    x, w, keep = _problem(2)
    torch.testing.assert_close(
        obs_update(w, x.t() @ x, keep, damping=0.0), least_squares_weight(w, x.t() @ x, keep, damping=0.0)
    )


def test_obs_is_sparsegpts_update_with_the_damped_inverse_hessian():
    """The kept-block solve equals the OBS formula written with ``Hinv`` (damping and a dead input
    included), the form SparseGPT uses."""
    x, w, keep = _problem(3)
    x[:, 4] = 0.0  # a dead input, dropped
    x[:, 5] = 0.0  # and one kept
    cov = x.t() @ x
    for damping in (0.0, 0.01, 1.0):
        h = cov.clone()
        dead = h.diagonal() == 0
        h.diagonal()[dead] = 1.0
        h.diagonal().add_(damping * h.diagonal().mean())
        h_inv = torch.linalg.inv(h)
        drop = torch.tensor([i for i in range(12) if i not in keep.tolist()])
        reference = (w - w[:, drop] @ torch.linalg.solve(h_inv[drop][:, drop], h_inv[drop]))[:, keep]
        torch.testing.assert_close(obs_update(w, cov, keep, damping=damping), reference)


def test_refit_solves_by_lu_where_the_kept_block_is_not_positive_definite():
    x, w, keep = _problem(4)
    cov = x.t() @ x
    drop = torch.tensor([i for i in range(12) if i not in keep.tolist()])
    for diagonal in (cov.diagonal()[keep] + 1.0, -cov.diagonal()[keep]):  # Cholesky, then the LU fallback
        a = cov[keep][:, keep].clone()
        a.diagonal().copy_(diagonal)
        expected = w[:, keep] + (torch.linalg.inv(a) @ cov[keep][:, drop] @ w[:, drop].t()).t()
        torch.testing.assert_close(refit_kept_columns(w, cov, keep, kept_diagonal=diagonal), expected)
