from __future__ import annotations

import json

import pytest

from adapruner.search.optimizer import BayesOptimizer, Dim

DIMS = [
    Dim("x", "float", -2, 2),
    Dim("y", "float", -2, 2),
    Dim("k", "int", 0, 4),
    Dim("c", "choice", choices=("a", "b")),
]
FAST = {"acq_restarts": 2, "raw_samples": 32}


def objective(params) -> float:
    return (params["x"] - 0.5) ** 2 + (params["y"] + 0.3) ** 2 + 0.01 * params["k"]


def run(optimizer: BayesOptimizer, n: int) -> None:
    for _ in range(n):
        trial = optimizer.ask()
        optimizer.tell(trial.index, value=objective(trial.params), noise=1e-4)


def test_initial_design_is_sobol_within_bounds():
    optimizer = BayesOptimizer(DIMS, seed=1, n_init=5, **FAST)
    trials = [optimizer.ask() for _ in range(5)]
    assert [t.index for t in trials] == list(range(5))
    assert all(t.generator == "sobol" for t in trials)
    assert len({(t.params["x"], t.params["y"]) for t in trials}) == 5
    for t in trials:
        assert -2 <= t.params["x"] <= 2 and isinstance(t.params["k"], int) and 0 <= t.params["k"] <= 4
        assert t.params["c"] in ("a", "b")


def test_the_gp_improves_on_the_initial_design():
    optimizer = BayesOptimizer(DIMS, seed=0, n_init=6, **FAST)
    run(optimizer, 6)
    sobol_best = min(t.value for t in optimizer.trials())
    run(optimizer, 6)
    gp = [t for t in optimizer.trials() if t.generator == "gp"]
    assert len(gp) == 6
    assert min(t.value for t in gp) < sobol_best
    assert optimizer.best().value < sobol_best


@pytest.mark.parametrize("stop_after", [3, 7])
def test_restored_state_gives_the_same_next_suggestion(stop_after):
    straight = BayesOptimizer(DIMS, seed=4, n_init=5, **FAST)
    run(straight, stop_after)
    restored = BayesOptimizer.from_state(json.loads(json.dumps(straight.state_dict())))
    assert restored.ask().params == straight.ask().params


def test_failed_trials_and_bad_tells():
    optimizer = BayesOptimizer(DIMS, seed=0, n_init=3, **FAST)
    first = optimizer.ask()
    optimizer.tell(first.index, value=float("nan"))
    assert optimizer.trials()[0].status == "failed"
    with pytest.raises(ValueError, match="trial 0 was already told"):
        optimizer.tell(0, value=1.0)
    with pytest.raises(ValueError, match="trial 5 was never asked"):
        optimizer.tell(5, value=1.0)
    run(optimizer, 4)  # the GP takes the failed trial as the worst value and goes on
    assert optimizer.trials()[-1].generator == "gp"


def test_best_ignores_early_stopped_trials():
    optimizer = BayesOptimizer(DIMS, seed=0, n_init=4, **FAST)
    for value, fidelity in [(3.0, 1.0), (0.1, 0.25), (2.0, 1.0), (2.5, 1.0)]:
        trial = optimizer.ask()
        optimizer.tell(trial.index, value=value, noise=1e-4, fidelity=fidelity)
    assert optimizer.best().fidelity == 1.0
    assert optimizer.best().index == 2


def test_pending_trials_are_not_proposed_twice():
    optimizer = BayesOptimizer(DIMS, seed=0, n_init=3, **FAST)
    run(optimizer, 3)
    a, b = optimizer.ask(), optimizer.ask()
    assert a.params != b.params


def test_no_free_dimension_is_an_error():
    with pytest.raises(ValueError, match="no free dimension"):
        BayesOptimizer([])
