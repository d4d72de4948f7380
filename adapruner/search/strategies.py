"""The search strategies besides the GP, their construction from a search job, and warm starts.

Every strategy is a :class:`~adapruner.search.optimizer.Strategy` (the same ask/tell keyed by trial index
and JSON state as :class:`~adapruner.search.optimizer.BayesOptimizer`), named in
``adapruner.catalog.STRATEGIES``. All of them start with the same scrambled Sobol design (the first
``n_init`` trials, shortened by the prior observations where the strategy uses them), so that they differ
only in what follows:

* ``random``: Sobol points throughout (quasi-random search); prior observations are ignored.
* ``tpe``: optuna's Tree-structured Parzen Estimator (multivariate, constant liar for pending trials) on
  a study rebuilt from the trials and priors at every ``ask`` (seeded by the trial index), so the state
  is the trials alone.
* ``evolution``: regularized evolution (Real et al., AAAI 2019; the per-layer width search of
  DarwinLM): a tournament among the most recent ``population`` completed trials and priors (by the first
  objective), its winner mutated in about one dimension (a Gaussian step in the unit cube, a new choice).

A warm start (``search.warm_start``) reads the completed trials of earlier searches of the same model from
their output folders and tells them as priors (:func:`warm_start`).
"""

from __future__ import annotations

import json
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapruner.catalog import STRATEGIES
from adapruner.config import SearchJob
from adapruner.errors import UserError
from adapruner.search.optimizer import _SEED_STRIDE, Dim, Strategy, Trial, Value
from adapruner.search.records import SECOND_FIELD, SearchState, TrialRecord
from adapruner.search.space import dims
from adapruner.search.store import STATE_NAME

REPORT_NAME = "report.json"


class WarmStartError(UserError):
    """A ``search.warm_start`` folder that cannot be used: missing, of another model, or without trials."""


@dataclass
class DesignSettings:
    seed: int = 0
    n_init: int = 8
    n_objectives: int = 1


@dataclass
class EvolutionSettings:
    seed: int = 0
    n_init: int = 8
    n_objectives: int = 1
    population: int = 16  # the most recent completed trials (and priors) that compete
    tournament: int = 4  # contestants per proposal
    sigma: float = 0.15  # mutation step in the unit cube


class _Designed(Strategy):
    """A strategy whose first ``n_init`` trials (less the priors it uses) are the Sobol design."""

    def __init__(self, dims: list[Dim], settings: Any) -> None:
        super().__init__(dims, settings)
        if settings.n_init < 1 or settings.n_objectives < 1:
            raise ValueError(f"need n_init >= 1 and n_objectives >= 1, got {settings.n_init}, {settings.n_objectives}")

    @classmethod
    def from_search(cls, dims: list[Dim], search: Any, *, n_objectives: int) -> Strategy:
        """The strategy of a search's ``SearchConfig``."""
        return cls(dims, seed=search.seed, n_init=search.n_init, n_objectives=n_objectives)

    def _in_design(self, index: int) -> bool:
        priors = len(self._priors) if self.uses_priors else 0
        return index + priors < self.settings.n_init

    def _completed(self) -> list[Trial]:
        """The completed priors (when used) and trials, oldest first."""
        told = (self._priors if self.uses_priors else []) + self._trials
        return [t for t in told if t.status == "completed"]


class RandomStrategy(_Designed):
    """Quasi-random search: point ``index`` of the scrambled Sobol sequence; priors are ignored."""

    name = "random"
    uses_priors = False

    def __init__(self, dims: list[Dim], *, seed: int = 0, n_init: int = 8, n_objectives: int = 1) -> None:
        super().__init__(dims, DesignSettings(int(seed), int(n_init), int(n_objectives)))

    def _propose(self, index: int) -> tuple[dict[str, Value], str]:
        return self._decode(self._sobol(index)), "sobol"


class TpeStrategy(_Designed):
    """optuna's TPE after the Sobol design; failed trials are FAIL (TPE leaves them out), pending ones RUNNING."""

    name = "tpe"

    def __init__(self, dims: list[Dim], *, seed: int = 0, n_init: int = 8, n_objectives: int = 1) -> None:
        super().__init__(dims, DesignSettings(int(seed), int(n_init), int(n_objectives)))

    def _propose(self, index: int) -> tuple[dict[str, Value], str]:
        if self._in_design(index) or not self._completed():
            return self._decode(self._sobol(index)), "sobol"
        import optuna
        from optuna.exceptions import ExperimentalWarning

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = {d.name: _distribution(d) for d in self.dims}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # multivariate and constant_liar
            sampler = optuna.samplers.TPESampler(
                seed=self.settings.seed * _SEED_STRIDE + index,
                n_startup_trials=0,
                multivariate=True,
                constant_liar=True,
            )
            study = optuna.create_study(directions=["minimize"] * self.settings.n_objectives, sampler=sampler)
            for trial in self._priors + self._trials:
                study.add_trial(_frozen(trial, distributions))
            asked = study.ask(distributions)
        return {d.name: _native(d, asked.params[d.name]) for d in self.dims}, "tpe"


def _distribution(dim: Dim) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.kind == "choice":
        return CategoricalDistribution(dim.choices)
    if dim.kind == "int":
        return IntDistribution(math.ceil(dim.low), math.floor(dim.high))
    return FloatDistribution(dim.low, dim.high)


def _native(dim: Dim, value: Any) -> Value:
    return str(value) if dim.kind == "choice" else int(value) if dim.kind == "int" else float(value)


def _frozen(trial: Trial, distributions: dict[str, Any]) -> Any:
    """``trial`` as an optuna trial: COMPLETE with its objectives, FAIL, or RUNNING while pending."""
    from optuna.trial import TrialState, create_trial

    params = {name: trial.params[name] for name in distributions}
    if trial.status == "completed":
        values = [trial.value, *trial.secondary]
        return create_trial(state=TrialState.COMPLETE, params=params, distributions=distributions, values=values)
    state = TrialState.RUNNING if trial.status == "pending" else TrialState.FAIL
    return create_trial(state=state, params=params, distributions=distributions)


class EvolutionStrategy(_Designed):
    """Regularized evolution after the Sobol design: the best of ``tournament`` random members of the
    ``population`` most recent completed trials and priors (by the first objective) is mutated."""

    name = "evolution"

    def __init__(
        self,
        dims: list[Dim],
        *,
        seed: int = 0,
        n_init: int = 8,
        n_objectives: int = 1,
        population: int = 16,
        tournament: int = 4,
        sigma: float = 0.15,
    ) -> None:
        settings = EvolutionSettings(
            int(seed), int(n_init), int(n_objectives), int(population), int(tournament), float(sigma)
        )
        super().__init__(dims, settings)
        if population < 2 or tournament < 1 or not sigma > 0:
            raise ValueError(f"need population >= 2, tournament >= 1, sigma > 0: {population}, {tournament}, {sigma}")

    def _propose(self, index: int) -> tuple[dict[str, Value], str]:
        members = self._completed()[-self.settings.population :]
        if self._in_design(index) or len(members) < 2:
            return self._decode(self._sobol(index)), "sobol"
        rng = random.Random(self.settings.seed * _SEED_STRIDE + index)
        contestants = rng.sample(members, min(self.settings.tournament, len(members)))
        parent = min(contestants, key=lambda t: (t.value, t.index))
        return self._decode(self._mutate(self._encode(parent.params), rng)), "evolution"

    def _mutate(self, x: list[float], rng: random.Random) -> list[float]:
        """Each coordinate mutated with probability 1/d (at least one): a float/int by a Gaussian step
        (reflected into [0, 1]), a choice to another of its choices."""
        d = len(self.dims)
        chosen = {rng.randrange(d)} | {i for i in range(d) if rng.random() < 1 / d}
        out = list(x)
        for i in sorted(chosen):
            dim = self.dims[i]
            if dim.kind == "choice":
                others = [c for c in range(len(dim.choices)) if c != round(x[i])]
                out[i] = float(rng.choice(others)) if others else x[i]
            else:
                u = x[i] + rng.gauss(0.0, self.settings.sigma)
                u = abs(u) if u < 0 else 2.0 - u if u > 1 else u
                out[i] = min(max(u, 0.0), 1.0)
        return out


# ---- construction and warm start -------------------------------------------------------------------
def n_objectives(job: SearchJob) -> int:
    return 1 if job.search.second_objective is None else 2


def make_strategy(job: SearchJob) -> Strategy:
    """The strategy ``job.search.strategy`` over the free dimensions of ``job.space``, warm-started from
    ``job.search.warm_start``."""
    cls = STRATEGIES.get(job.search.strategy)
    strategy = cls.from_search(dims(job.space), job.search, n_objectives=n_objectives(job))
    if job.search.warm_start:
        warm_start(strategy, job)
    return strategy


def strategy_from_state(state: dict[str, Any]) -> Strategy:
    """The strategy a saved state belongs to (a state without ``strategy`` is the GP's), restored."""
    return STRATEGIES.get(state.get("strategy", "gp")).from_state(state)


def warm_start(strategy: Strategy, job: SearchJob) -> int:
    """Tell ``strategy`` the completed trials of the earlier searches in ``job.search.warm_start`` as
    priors; the number told. Trials whose parameters do not fit this search's space (a dimension missing
    or outside its range) are left out. A folder of another model is refused (:class:`WarmStartError`).
    A strategy that ignores priors (random search) gets none, with a warning."""
    if not strategy.uses_priors:
        warnings.warn(f"search.warm_start: the {strategy.name!r} strategy ignores prior trials", stacklevel=2)
        return 0
    told = 0
    for folder in job.search.warm_start:
        source, records = read_trials(folder)
        if source != job.model.source:
            raise WarmStartError(
                f"search.warm_start: {folder} is a search of model {source!r}, this search prunes {job.model.source!r}"
            )
        for record in records:
            values = _values(job, record)
            if values is not None:
                told += strategy.tell_prior(
                    record.params, value=values, noise=record.noise, fidelity=record.fidelity or 1.0
                )
    return told


def read_trials(folder: str | Path) -> tuple[str, list[TrialRecord]]:
    """The model source and the trial records of an earlier search's output folder: its
    ``search_state.json`` (also of an unfinished search), else its ``report.json``."""
    path = Path(folder)
    if (path / STATE_NAME).is_file():
        state = SearchState.from_dict(json.loads((path / STATE_NAME).read_text()))
        return state.job.model.source, state.trials()
    if (path / REPORT_NAME).is_file():
        report = json.loads((path / REPORT_NAME).read_text())
        if "trials" not in report:
            raise WarmStartError(f"search.warm_start: {path / REPORT_NAME} is not the report of a search")
        source = report.get("config", {}).get("model", {}).get("source", report.get("source"))
        return source, [TrialRecord.from_dict(r) for r in report["trials"]]
    raise WarmStartError(f"search.warm_start: {path} holds neither {STATE_NAME} nor {REPORT_NAME}")


def _values(job: SearchJob, record: TrialRecord) -> list[float] | None:
    """The objectives of a completed ``record`` as this search measures them (the second, when there is
    one, as a logarithm), or None when it did not complete or lacks the second."""
    if record.status != "completed" or record.value is None:
        return None
    kind = job.search.second_objective
    if kind is None:
        return [record.value]
    second = getattr(record, SECOND_FIELD[kind])
    return None if not second or second <= 0 else [record.value, math.log(second)]
