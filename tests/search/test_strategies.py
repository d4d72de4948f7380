"""The contract every registered search strategy keeps: the ask/tell keyed by trial index, failed and
infeasible tells, the state round trip and a short search on the tiny model."""

from __future__ import annotations

import json
import math

import pytest

from adapruner.catalog import STRATEGIES
from adapruner.config import SearchConfig, SearchJob
from adapruner.models import LoadedModel
from adapruner.registry import UnknownNameError
from adapruner.search.optimizer import BayesOptimizer, Dim
from adapruner.search.run import run_search
from adapruner.search.strategies import make_strategy, strategy_from_state
from tests.conftest import tiny_llama, tiny_search_spec

DIMS = [
    Dim("x", "float", low=-1.0, high=2.0),
    Dim("n", "int", low=2, high=9),
    Dim("kind", "choice", choices=("a", "b", "c")),
]


def objective(params: dict) -> float:
    return (params["x"] - 0.5) ** 2 + 0.1 * params["n"] + (0.0 if params["kind"] == "b" else 0.3)


def build(name: str, *, seed: int = 0, n_objectives: int = 1):
    search = SearchConfig(strategy=name, seed=seed, n_init=3, acq_restarts=1, raw_samples=8)
    return STRATEGIES.get(name).from_search(DIMS, search, n_objectives=n_objectives)


def inside(params: dict) -> bool:
    return (
        set(params) == {"x", "n", "kind"}
        and -1.0 <= params["x"] <= 2.0
        and isinstance(params["n"], int)
        and 2 <= params["n"] <= 9
        and params["kind"] in ("a", "b", "c")
    )


def run_trials(strategy, count: int, *, fail: tuple[int, ...] = (), infeasible: tuple[int, ...] = ()) -> None:
    for _ in range(count):
        trial = strategy.ask()
        if trial.index in fail:
            strategy.tell(trial.index, value=None, failed=True)
        elif trial.index in infeasible:
            strategy.tell(trial.index, value=None, failed=True, infeasible=True)
        else:
            strategy.tell(trial.index, value=objective(trial.params), noise=1e-4)


NAMES = STRATEGIES.names()


def test_the_registry_lists_the_strategies_and_the_config_refuses_others():
    assert NAMES[0] == "gp" and {"random", "tpe", "evolution"} <= set(NAMES)
    assert SearchConfig().strategy == "gp"
    with pytest.raises(ValueError, match="unknown search strategy 'annealing'; valid: gp, random, tpe, evolution"):
        SearchConfig(strategy="annealing")
    with pytest.raises(UnknownNameError):
        strategy_from_state({"version": 2, "strategy": "annealing"})


@pytest.mark.parametrize("name", NAMES)
def test_ask_proposes_inside_the_space_and_tell_is_keyed_by_index(name):
    strategy = build(name)
    assert strategy.name == name
    first, second = strategy.ask(), strategy.ask()  # two pending at once
    assert (first.index, second.index) == (0, 1)
    strategy.tell(1, value=objective(second.params))
    strategy.tell(0, value=objective(first.params))
    run_trials(strategy, 3, fail=(2,), infeasible=(3,))
    trials = strategy.trials()
    assert [t.index for t in trials] == list(range(5))
    assert all(inside(t.params) for t in trials)
    assert [t.status for t in trials].count("failed") == 2 and trials[3].infeasible and not trials[2].infeasible
    assert any(t.generator not in ("sobol",) for t in trials) or name == "random"
    with pytest.raises(ValueError, match="already told"):
        strategy.tell(0, value=1.0)
    with pytest.raises(ValueError, match="never asked"):
        strategy.tell(5, value=1.0)
    best = min((t for t in trials if t.status == "completed"), key=lambda t: t.value)
    assert strategy.pareto() == [best]
    mean, _ = strategy.posterior([best.params])[0]
    assert math.isfinite(mean)


@pytest.mark.parametrize("name", NAMES)
def test_the_state_round_trip_gives_the_same_next_proposals(name):
    straight = build(name, seed=5)
    run_trials(straight, 4, fail=(2,))
    saved = json.loads(json.dumps(straight.state_dict()))
    restored = strategy_from_state(saved)
    assert type(restored) is type(straight)
    pending = straight.ask()  # a pending trial in the state too
    restored_pending = restored.ask()
    assert restored_pending.params == pending.params
    for strategy in (straight, restored):
        strategy.tell(pending.index, value=objective(pending.params))
    assert straight.ask().params == restored.ask().params


@pytest.mark.parametrize("name", NAMES)
def test_two_objectives_are_told_as_a_vector(name):
    strategy = build(name, n_objectives=2)
    for _ in range(4):
        trial = strategy.ask()
        strategy.tell(trial.index, value=[objective(trial.params), float(trial.params["n"])])
    assert strategy.pareto() and all(inside(t.params) for t in strategy.trials())
    with pytest.raises(ValueError, match="expected 2 objective"):
        strategy.tell(strategy.ask().index, value=1.0)


@pytest.mark.parametrize("name", NAMES)
def test_priors_are_observations_not_trials(name):
    strategy = build(name)
    assert strategy.tell_prior({"x": 0.5, "n": 2, "kind": "b", "other": 1}, value=[0.2])
    assert not strategy.tell_prior({"x": 5.0, "n": 2, "kind": "b"}, value=[0.2])  # outside the space
    assert not strategy.tell_prior({"x": 0.5, "kind": "b"}, value=[0.2])  # a dimension missing
    assert [p.index for p in strategy.priors()] == [-1]
    run_trials(strategy, 3)
    assert [t.index for t in strategy.trials()] == [0, 1, 2]
    restored = strategy_from_state(json.loads(json.dumps(strategy.state_dict())))
    assert restored.priors() == strategy.priors()
    assert restored.ask().params == strategy.ask().params


def test_the_gp_state_of_an_older_adapruner_without_a_strategy_is_the_gps():
    strategy = build("gp")
    run_trials(strategy, 2)
    state = strategy.state_dict()
    del state["strategy"]
    assert isinstance(strategy_from_state(state), BayesOptimizer)
    with pytest.raises(ValueError, match="strategy 'gp', not of 'tpe'"):
        STRATEGIES.get("tpe").from_state(state)


def test_make_strategy_reads_the_job(texts_job):
    job = texts_job(search={"strategy": "evolution", "seed": 4})
    strategy = make_strategy(job)
    assert strategy.name == "evolution" and strategy.settings.seed == 4 and strategy.settings.n_init == 2


@pytest.fixture
def texts_job(job_texts):
    def make(**kwargs) -> SearchJob:
        return SearchJob.model_validate(tiny_search_spec(job_texts, model="tiny", trials=4, **kwargs))

    return make


@pytest.mark.parametrize("name", NAMES)
def test_a_short_search_completes_with_every_strategy(name, tmp_path, texts_job, tiny_tokenizer):
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64)
    loaded = LoadedModel(model, tiny_tokenizer, "tiny")
    job = texts_job(search={"strategy": name})
    report = run_search(job, out=tmp_path / "run", loaded=loaded, cache_dir=tmp_path / "cache").report
    assert [r["index"] for r in report["trials"]] == [0, 1, 2, 3]
    assert all(r["status"] == "completed" for r in report["trials"])
    assert report["best"]["index"] in {0, 1, 2, 3}
    state = json.loads((tmp_path / "run" / "search_state.json").read_text())
    assert state["optimizer"]["strategy"] == name


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_of_pending_trials_is_distinct_deterministic_and_resumes(name):
    """Parallel trials (issue 21 item 1): several asked past the initial design stay pending together,
    each a distinct point with its own index, the same for the same seed, and a state saved with all of
    them pending gives the same next proposal once they are told in any order."""
    runs = [build(name, seed=3) for _ in range(2)]
    for strategy in runs:
        run_trials(strategy, 4, fail=(1,))
    batches = [[strategy.ask() for _ in range(3)] for strategy in runs]
    assert [t.index for t in batches[0]] == [4, 5, 6]
    assert [t.params for t in batches[0]] == [t.params for t in batches[1]]
    assert len({json.dumps(t.params, sort_keys=True) for t in batches[0]}) == 3
    restored = strategy_from_state(json.loads(json.dumps(runs[0].state_dict())))
    assert [t.status for t in restored.trials()][4:] == ["pending"] * 3
    for strategy in (runs[0], restored):
        for trial in reversed(batches[0]):
            strategy.tell(trial.index, value=objective(trial.params))
    assert runs[0].ask().params == restored.ask().params


@pytest.mark.parametrize("name", NAMES)
def test_an_enqueued_point_is_asked_first_also_after_a_state_round_trip(name):
    """``enqueue`` makes the next asks return known points (the search starts from the fixed recipe this
    way), in order, before any proposal; the queue survives the saved state; a point outside the space is
    refused with the dimensions it breaks."""
    first, second = {"x": 0.5, "n": 3, "kind": "b"}, {"x": -1.0, "n": 9, "kind": "a"}
    strategy = build(name)
    strategy.enqueue(first)
    strategy.enqueue(second)
    trial = strategy.ask()
    assert (trial.index, trial.params, trial.generator) == (0, first, "enqueued")
    strategy.tell(0, value=objective(first), noise=1e-4)
    resumed = strategy_from_state(json.loads(json.dumps(strategy.state_dict())))
    trial = resumed.ask()
    assert (trial.index, trial.params, trial.generator) == (1, second, "enqueued")
    resumed.tell(1, value=objective(second), noise=1e-4)
    proposed = resumed.ask()
    assert proposed.index == 2 and proposed.generator != "enqueued" and inside(proposed.params)
    with pytest.raises(ValueError, match=r"\['x'\]"):
        resumed.enqueue({"x": 5.0, "n": 3, "kind": "b"})
