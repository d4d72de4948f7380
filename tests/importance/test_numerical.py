from __future__ import annotations

import torch

from adapruner.adapters import get_adapter
from adapruner.importance import build_metric
from adapruner.importance.numerical import newton_scores, unit_gram
from adapruner.stats import Statistics, collect_statistics
from tests.conftest import tiny_llama


def test_unit_gram_gives_the_masked_reconstruction_error():
    """(1 - m)^T G (1 - m) = ||X W^T - X diag(m) W^T||_F^2 for unit masks m (units of 3 columns)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 12, generator=generator, dtype=torch.float64)
    w = torch.randn(7, 12, generator=generator, dtype=torch.float64)
    m = torch.rand(4, generator=generator, dtype=torch.float64)
    gram = unit_gram(w, x.t() @ x, n_units=4, unit_size=3)
    direct = (x @ w.t() - (x * m.repeat_interleave(3)) @ w.t()).square().sum()
    torch.testing.assert_close((1 - m) @ gram @ (1 - m), direct)


def test_newton_score_is_the_error_left_after_the_others_are_reoptimised():
    """S_u = min over the other masks of E(m) with m_u = 0: the Schur complement of G + lam I."""
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    gram = a @ a.t()  # rank 4: some units are linear combinations of others
    scores = newton_scores(gram, damping=0.01)
    h = gram + 0.01 * gram.diagonal().mean() * torch.eye(6, dtype=torch.float64)
    for u in range(6):
        rest = [v for v in range(6) if v != u]
        # d = 1 - m with d_u = 1; the optimal d_rest solves H_rest,rest d_rest = -H_rest,u
        d_rest = torch.linalg.solve(h[rest][:, rest], -h[rest, u])
        d = torch.zeros(6, dtype=torch.float64)
        d[u], d[rest] = 1.0, d_rest
        torch.testing.assert_close(scores[u], d @ h @ d)


def test_newton_scores_see_redundant_units():
    """Two units that duplicate each other can stand in for one another: Newton's scores rank them far
    below an independent unit with the same individual contribution (a diagonal metric ties all three)."""
    gram = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    s = newton_scores(gram)
    torch.testing.assert_close(s[0], s[1])
    assert s[0] < 0.05 * s[2]
    # Uncorrelated units: S_u = G_uu + lam, the order of their own contributions.
    diag = torch.diag(torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(newton_scores(diag), diag.diagonal() + 0.01 * diag.diagonal().mean())


def test_numerical_scores_from_pooled_moments_use_the_diagonal(tiny_batch):
    """Without the covariance (the search's pooled statistics) the Gram matrix is its diagonal."""
    adapter = get_adapter(tiny_llama())
    full = collect_statistics(adapter, tiny_batch, needs={"act", "cov"})
    diagonal_only = Statistics(
        n_tokens=full.n_tokens, n_samples=full.n_samples, act_sq=full.act_sq, act_sum=full.act_sum
    )
    diag_cov = Statistics(cov={k: torch.diag(v.diagonal()) for k, v in full.cov.items()})
    metric = build_metric("numerical")
    for group in adapter.groups(["channels"]):  # one column per unit: the Gram diagonal is exact
        torch.testing.assert_close(metric(adapter, group, diagonal_only), metric(adapter, group, diag_cov))
        assert not torch.allclose(metric(adapter, group, full), metric(adapter, group, diagonal_only))
