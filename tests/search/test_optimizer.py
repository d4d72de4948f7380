"""Tests for the ask/tell Bayesian optimizer (fast settings: 2 restarts, 32 raw samples)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from adapruner.errors import UserError
from adapruner.search.optimizer import BayesOptimizer, Dim

MIXED = [
    Dim("x", "float", -2, 2),
    Dim("y", "float", -2, 2),
    Dim("k", "int", 0, 4),
    Dim("c", "choice", choices=("a", "b", "c")),
]
QUADRATIC = [Dim("x", "float", -2, 2), Dim("y", "float", -2, 2), Dim("colour", "choice", choices=("red", "blue"))]
FAST = {"acq_restarts": 2, "raw_samples": 32}
NOISE_SD = 0.02


def quadratic(params: dict, rng: random.Random | None = None) -> float:
    """A bowl with its minimum 0 at (0.5, -0.3); ``colour`` and ``k`` barely matter; optional noise."""
    value = (params["x"] - 0.5) ** 2 + (params["y"] + 0.3) ** 2 + 0.01 * params.get("k", 0)
    return value + (rng.gauss(0.0, NOISE_SD) if rng else 0.0)


def run(optimizer: BayesOptimizer, n: int, *, rng: random.Random | None = None, noise: float | None = 1e-4) -> None:
    for _ in range(n):
        trial = optimizer.ask()
        optimizer.tell(trial.index, value=quadratic(trial.params, rng), noise=noise)


def test_initial_design_is_sobol_distinct_and_within_bounds():
    optimizer = BayesOptimizer(MIXED, seed=1, n_init=6, **FAST)
    trials = [optimizer.ask() for _ in range(6)]
    assert [t.index for t in trials] == list(range(6))
    assert all(t.generator == "sobol" and t.status == "pending" for t in trials)
    assert len({(t.params["x"], t.params["y"]) for t in trials}) == 6
    for t in trials:
        assert -2 <= t.params["x"] <= 2 and -2 <= t.params["y"] <= 2
        assert isinstance(t.params["x"], float)
        assert isinstance(t.params["k"], int) and 0 <= t.params["k"] <= 4
        assert t.params["c"] in ("a", "b", "c")
    # Point k of the design depends on the seed and k only.
    again = BayesOptimizer(MIXED, seed=1, n_init=6, **FAST)
    assert [again.ask().params for _ in range(6)] == [t.params for t in trials]
    assert BayesOptimizer(MIXED, seed=2, **FAST).ask().params != trials[0].params


def test_the_gp_improves_on_the_sobol_design_of_a_noisy_quadratic():
    rng = random.Random(0)
    optimizer = BayesOptimizer(QUADRATIC, seed=3, n_init=6, **FAST)
    run(optimizer, 6, rng=rng, noise=NOISE_SD**2)
    sobol_best = min(t.value for t in optimizer.trials())
    run(optimizer, 8, rng=rng, noise=NOISE_SD**2)
    gp = [t for t in optimizer.trials() if t.generator == "gp"]
    assert len(gp) == 8
    assert min(t.value for t in gp) < sobol_best - 0.05


def test_unknown_noise_uses_an_inferred_noise_gp():
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=4, **FAST)
    run(optimizer, 6, rng=random.Random(1), noise=None)
    assert [t.generator for t in optimizer.trials()][4:] == ["gp", "gp"]
    ((mean, std),) = optimizer.posterior([optimizer.trials()[0].params])
    assert std > 0 and abs(mean - optimizer.trials()[0].value) < 1.0


@pytest.mark.parametrize("stop_after", [3, 7], ids=["sobol-phase", "gp-phase"])
def test_a_restored_state_gives_the_same_next_suggestion(stop_after):
    straight = BayesOptimizer(MIXED, seed=4, n_init=5, **FAST)
    run(straight, stop_after, rng=random.Random(2))
    pending = straight.ask()  # an asked-but-not-told trial is part of the state too
    state = json.loads(json.dumps(straight.state_dict(), allow_nan=False))
    restored = BayesOptimizer.from_state(state)
    assert restored.trials() == straight.trials() and restored.trials()[-1].params == pending.params
    a, b = straight.ask(), restored.ask()
    assert (a.index, a.params, a.generator) == (b.index, b.params, b.generator)
    if stop_after == 7:
        assert a.generator == "gp"


def test_ask_leaves_the_global_rng_alone():
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=3, **FAST)
    run(optimizer, 4)
    before = torch.random.get_rng_state()
    optimizer.ask()
    assert torch.equal(before, torch.random.get_rng_state())


def test_failed_trials_are_recorded_and_bad_tells_raise():
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=3, **FAST)
    first, second = optimizer.ask(), optimizer.ask()
    optimizer.tell(first.index, value=float("nan"))
    optimizer.tell(second.index, value=1.0, failed=True)
    assert [t.status for t in optimizer.trials()] == ["failed", "failed"]
    assert optimizer.trials()[0].value is None
    with pytest.raises(ValueError, match="trial 0 was already told"):
        optimizer.tell(0, value=1.0)
    with pytest.raises(ValueError, match="trial 5 was never asked"):
        optimizer.tell(5, value=1.0)
    with pytest.raises(ValueError, match="trial -1 was never asked"):
        optimizer.tell(-1, value=1.0)
    run(optimizer, 5)  # the GP takes the failed trials at the worst value and goes on
    assert optimizer.trials()[-1].generator == "gp"
    json.dumps(optimizer.state_dict(), allow_nan=False)


def test_a_fidelity_outside_0_1_is_refused():
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=5, **FAST)
    trial = optimizer.ask()
    with pytest.raises(ValueError, match="fidelity"):
        optimizer.tell(trial.index, value=1.0, fidelity=0.0)


def test_pending_trials_are_not_proposed_twice():
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=3, **FAST)
    run(optimizer, 3)
    a, b = optimizer.ask(), optimizer.ask()
    assert a.generator == b.generator == "gp"
    assert a.params != b.params


def test_a_space_of_choices_only():
    dims = [Dim("a", "choice", choices=("p", "q", "r")), Dim("b", "choice", choices=("s", "t"))]
    optimizer = BayesOptimizer(dims, seed=0, n_init=3, **FAST)
    for _ in range(5):
        trial = optimizer.ask()
        optimizer.tell(trial.index, value=float(trial.params["a"] == "p") + 0.1 * (trial.params["b"] == "t"))
    assert optimizer.trials()[-1].generator == "gp"
    assert optimizer.ask().params["a"] in ("p", "q", "r")


def test_invalid_spaces():
    with pytest.raises(ValueError, match="no free dimension"):
        BayesOptimizer([])
    with pytest.raises(ValueError, match="duplicate"):
        BayesOptimizer([Dim("x", "float"), Dim("x", "int", 0, 3)])
    with pytest.raises(ValueError, match="no choices"):
        Dim("c", "choice")


def test_a_failing_gp_step_falls_back_to_sobol(monkeypatch):
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=2, **FAST)
    run(optimizer, 2)

    def broken(index: int) -> list[float]:
        raise RuntimeError("cholesky failed")

    monkeypatch.setattr(optimizer, "_acquire", broken)
    with pytest.warns(RuntimeWarning, match="GP step for trial 2 failed"):
        trial = optimizer.ask()
    assert trial.generator == "sobol-fallback"
    design = BayesOptimizer(MIXED, seed=0, n_init=3, **FAST)
    assert trial.params == [design.ask() for _ in range(3)][2].params  # the next point of the design


def test_many_choice_combinations_are_sampled_deterministically():
    dims = [Dim(f"c{i}", "choice", choices=("a", "b", "c")) for i in range(4)] + [Dim("x", "float")]
    optimizer = BayesOptimizer(dims, seed=0, **FAST)
    combos = optimizer._choice_combinations(list(range(4)), 9)
    assert len(combos) == 32 == len(set(combos))
    assert all(all(v in (0.0, 1.0, 2.0) for v in c) for c in combos)
    assert combos == optimizer._choice_combinations(list(range(4)), 9)
    assert combos != optimizer._choice_combinations(list(range(4)), 10)


def test_one_batched_run_over_the_choice_combinations_proposes_what_botorch_mixed_does(monkeypatch):
    """_optimize_mixed is a faster optimize_acqf_mixed, not another optimiser: the same proposals."""
    from botorch.optim import optimize_acqf_mixed

    import adapruner.search.optimizer as module

    def proposals() -> list[dict]:
        optimizer = BayesOptimizer(MIXED, seed=5, n_init=5, **FAST)
        run(optimizer, 5)
        return [t.params for t in (optimizer.ask(), optimizer.ask())]  # the second with the first pending

    batched = proposals()
    assert all(t["c"] in ("a", "b", "c") for t in batched)
    monkeypatch.setattr(
        module,
        "_optimize_mixed",
        lambda acq, fixed, **search: optimize_acqf_mixed(acq, fixed_features_list=fixed, **search)[0],
    )
    for got, expected in zip(batched, proposals(), strict=True):
        assert {k: v for k, v in got.items() if k not in ("x", "y")} == {
            k: v for k, v in expected.items() if k not in ("x", "y")
        }
        assert (got["x"], got["y"]) == pytest.approx((expected["x"], expected["y"]), abs=1e-6)


def two_objectives(params: dict, rng: random.Random | None = None) -> list[float]:
    """The noisy quadratic against a cost that falls as ``x`` grows: a trade-off along ``x``."""
    return [quadratic(params, rng), math.exp(-params["x"])]


def run2(optimizer: BayesOptimizer, n: int, *, rng: random.Random | None = None) -> None:
    for _ in range(n):
        trial = optimizer.ask()
        optimizer.tell(trial.index, value=two_objectives(trial.params, rng), noise=NOISE_SD**2)


def test_pareto_is_the_non_dominated_full_fidelity_set():
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=8, n_objectives=2, **FAST)
    told = [([1.0, 5.0], 1.0), ([2.0, 2.0], 1.0), ([3.0, 1.0], 1.0), ([2.5, 2.5], 1.0), ([0.5, 0.5], 0.25)]
    told += [([2.0, 2.0], 1.0)]  # a tie with trial 1: neither dominates the other
    for values, fidelity in told:
        optimizer.tell(optimizer.ask().index, value=values, noise=1e-4, fidelity=fidelity)
    optimizer.tell(optimizer.ask().index, value=None, failed=True)
    front = optimizer.pareto()
    assert [t.index for t in front] == [0, 1, 5, 2]  # by first objective; 3 is dominated by 1, 4 stopped early
    points = [(t.value, *t.secondary) for t in front]
    for t in optimizer.trials():
        if t.status == "completed" and t.fidelity == 1 and t not in front:
            mine = (t.value, *t.secondary)
            assert any(all(a <= b for a, b in zip(p, mine, strict=True)) for p in points)
    with pytest.raises(ValueError, match="expected 2 objective value"):
        optimizer.tell(optimizer.ask().index, value=1.0)


def test_two_objectives_use_the_hypervolume_acquisition_and_spread_the_front():
    rng = random.Random(0)
    optimizer = BayesOptimizer(QUADRATIC, seed=5, n_init=5, n_objectives=2, **FAST)
    run2(optimizer, 9, rng=rng)
    assert [t.generator for t in optimizer.trials()][5:] == ["gp"] * 4
    assert all(len(t.secondary) == 1 for t in optimizer.trials())
    front = optimizer.pareto()
    assert len(front) >= 2  # a trade-off, not a single point
    costs = [t.secondary[0] for t in front]
    assert costs == sorted(costs, reverse=True)  # along the front, better quality costs more


@pytest.mark.parametrize("stop_after", [3, 7], ids=["sobol-phase", "gp-phase"])
def test_a_restored_two_objective_state_gives_the_same_next_suggestion(stop_after):
    straight = BayesOptimizer(MIXED, seed=4, n_init=5, n_objectives=2, **FAST)
    run2(straight, stop_after, rng=random.Random(2))
    straight.ask()  # pending
    state = json.loads(json.dumps(straight.state_dict(), allow_nan=False))
    restored = BayesOptimizer.from_state(state)
    assert restored.trials() == straight.trials() and restored.settings.n_objectives == 2
    a, b = straight.ask(), restored.ask()
    assert (a.index, a.params, a.generator) == (b.index, b.params, b.generator)
    if stop_after == 7:
        assert a.generator == "gp"


def test_a_state_of_another_version_is_a_user_error():
    optimizer = BayesOptimizer(MIXED, seed=0, n_init=3, **FAST)
    run(optimizer, 2)
    state = optimizer.state_dict() | {"version": 1}
    with pytest.raises(UserError, match="optimizer state: version 1, this adapruner reads 2"):
        BayesOptimizer.from_state(state)


def test_relevance_ranks_the_dimension_the_objective_depends_on_first():
    """The inverse ARD lengthscales of the GP: a dimension the objective ignores gets a small share."""
    opt = BayesOptimizer([Dim("a", "float"), Dim("b", "float")], n_init=6, acq_restarts=2, raw_samples=16)
    with pytest.raises(ValueError):
        opt.relevance()
    for _ in range(10):
        trial = opt.ask()
        opt.tell(trial.index, value=10 * (trial.params["a"] - 0.3) ** 2 + 0.01 * trial.params["b"])
    relevance = opt.relevance()
    assert relevance["a"] > 4 * relevance["b"] and sum(relevance.values()) == pytest.approx(1.0)


def test_an_infeasible_trial_is_a_constraint_not_a_bad_value():
    """Out of memory: not fitted as the worst value (a plain failure is), and the acquisition is lowered
    around its point only."""
    from adapruner.search.optimizer import INFEASIBLE_PENALTY, _AvoidInfeasible

    optimizer = BayesOptimizer(QUADRATIC, seed=0, n_init=4, **FAST)
    run(optimizer, 4)
    oom, plain = optimizer.ask(), optimizer.ask()
    optimizer.tell(oom.index, value=None, failed=True, infeasible=True)
    optimizer.tell(plain.index, value=None, failed=True)
    x, y, _ = optimizer._training_data()
    fitted = [t.index for t in optimizer._fit_trials()]
    assert oom.index not in fitted and plain.index in fitted and len(x) == len(y) == 5
    assert float(y[fitted.index(plain.index)]) == -max(t.value for t in optimizer.trials() if t.value is not None)
    restored = BayesOptimizer.from_state(json.loads(json.dumps(optimizer.state_dict())))
    assert [t.infeasible for t in restored.trials()] == [False] * 4 + [True, False]

    class Flat(torch.nn.Module):
        model = None

        def forward(self, X):  # noqa: N803
            return torch.zeros(X.shape[0], dtype=X.dtype)

    point = torch.tensor([optimizer._encode(oom.params)], dtype=torch.float64)
    upper = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    avoid = _AvoidInfeasible(Flat(), point, scale=upper)
    at = torch.cat([point, torch.ones(1, 1, dtype=torch.float64)], -1)[:, None]  # [1, q=1, d + 1]
    far = at.clone()
    far[..., 0] = 1.0 - far[..., 0].round()  # the other end of x
    assert float(avoid(at)) == pytest.approx(-INFEASIBLE_PENALTY)
    assert float(avoid(far)) > -1e-3 * INFEASIBLE_PENALTY
    trial = optimizer.ask()  # the GP still proposes with infeasible points to avoid
    assert trial.generator == "gp"


def test_relevance_shares_sum_to_one_within_each_kind_of_dimension():
    """Choice dimensions (categorical kernel) and numeric ones (RBF) are normalised apart."""
    dims = [Dim("a", "float"), Dim("b", "float"), Dim("c", "choice", choices=("x", "y"))]
    opt = BayesOptimizer(dims, n_init=6, acq_restarts=2, raw_samples=16)
    for _ in range(8):
        trial = opt.ask()
        opt.tell(trial.index, value=10 * (trial.params["a"] - 0.3) ** 2 + (0.5 if trial.params["c"] == "x" else 0.0))
    relevance = opt.relevance()
    assert relevance["c"] == pytest.approx(1.0) and relevance["a"] + relevance["b"] == pytest.approx(1.0)
