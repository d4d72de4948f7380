"""Bayesian optimisation with an ask/tell API keyed by trial index (the shape of Ax's ``Client``),
on BoTorch: a quasi-random Sobol design, then a GP (mixed kernels when there are categorical
dimensions) with the log noisy expected improvement acquisition. The state is plain JSON, and
restoring it gives the same next suggestion as an uninterrupted run with the same seed.

Conventions: the objective is *minimised*; every parameter is encoded to the unit cube (choices to
their index, as categorical GP inputs); an extra input carries the trial's fidelity (1 = a full
evaluation, < 1 = stopped early on a prefix of the validation text), and new suggestions are made at
fidelity 1. Failed trials enter the GP with the worst observed value, so that the search moves away
from them instead of proposing them again.
"""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

Value = float | int | str
MAX_CHOICE_COMBINATIONS = 32


@dataclass(frozen=True)
class Dim:
    """One searched parameter: a float or int in ``[low, high]``, or one of ``choices``."""

    name: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()

    def decode(self, u: float) -> Value:
        """Unit-cube coordinate (a choice's index for ``choice``) -> parameter value."""
        if self.kind == "choice":
            return self.choices[min(int(u), len(self.choices) - 1)]
        value = self.low + min(max(u, 0.0), 1.0) * (self.high - self.low)
        return int(round(value)) if self.kind == "int" else float(value)

    def encode(self, value: Value) -> float:
        if self.kind == "choice":
            return float(self.choices.index(value))
        span = self.high - self.low
        return 0.0 if span == 0 else (float(value) - self.low) / span


@dataclass
class Trial:
    index: int
    params: dict[str, Value]
    status: Literal["pending", "completed", "failed"] = "pending"
    value: float | None = None
    noise: float | None = None
    fidelity: float = 1.0
    generator: str = ""


@dataclass
class _Settings:
    seed: int = 0
    n_init: int = 8
    acq_restarts: int = 8
    raw_samples: int = 256
    max_fit_points: int = 200


@dataclass
class _Fit:
    model: Any
    n_told: int = field(default=-1)


class BayesOptimizer:
    """``ask()`` a trial, evaluate it, ``tell()`` its value; ``state_dict()`` saves everything."""

    def __init__(
        self,
        dims: Sequence[Dim],
        *,
        seed: int = 0,
        n_init: int = 8,
        acq_restarts: int = 8,
        raw_samples: int = 256,
        max_fit_points: int = 200,
    ) -> None:
        if not dims:
            raise ValueError("the search space has no free dimension; fix fewer parameters")
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate dimension names in {names}")
        self.dims = tuple(dims)
        self.settings = _Settings(seed, n_init, acq_restarts, raw_samples, max_fit_points)
        self._trials: list[Trial] = []
        self._fit: _Fit | None = None

    # ---- ask / tell ------------------------------------------------------------------------------
    def ask(self) -> Trial:
        index = len(self._trials)
        completed = [t for t in self._trials if t.status != "pending"]
        generator = "sobol"
        if index < self.settings.n_init or len(completed) < 2:
            x = self._sobol(index)
        else:
            try:
                x = self._acquire(index)
                generator = "gp"
            except Exception as error:  # noqa: BLE001 - any numerical failure falls back to the design
                warnings.warn(f"GP step failed ({type(error).__name__}: {error}); using a Sobol point", stacklevel=2)
                x, generator = self._sobol(index), "sobol-fallback"
        trial = Trial(index, self._decode(x), generator=generator)
        self._trials.append(trial)
        return trial

    def tell(
        self,
        index: int,
        *,
        value: float | None,
        noise: float | None = None,
        fidelity: float = 1.0,
        failed: bool = False,
    ) -> None:
        if not 0 <= index < len(self._trials):
            raise ValueError(f"trial {index} was never asked")
        trial = self._trials[index]
        if trial.status != "pending":
            raise ValueError(f"trial {index} was already told ({trial.status})")
        if failed or value is None or not math.isfinite(value):
            trial.status = "failed"
            return
        trial.status, trial.value, trial.fidelity = "completed", float(value), float(fidelity)
        trial.noise = float(noise) if noise is not None and math.isfinite(noise) else None

    def trials(self) -> list[Trial]:
        return list(self._trials)

    def best(self) -> Trial | None:
        """The completed full-fidelity trial with the lowest GP posterior mean (lowest observed value
        while fewer than three trials are complete or the GP cannot be fitted)."""
        full = [t for t in self._trials if t.status == "completed" and t.fidelity >= 1.0]
        if not full:
            return None
        if len(full) >= 3:
            try:
                means = [m for m, _ in self.posterior([t.params for t in full])]
                return full[min(range(len(full)), key=means.__getitem__)]
            except Exception:  # noqa: BLE001
                pass
        return min(full, key=lambda t: t.value)

    def posterior(self, params_list: Sequence[dict[str, Value]]) -> list[tuple[float, float]]:
        """``(mean, std)`` of the objective at each parameter set (at full fidelity)."""
        model = self._model()
        x = torch.tensor([self._encode(p) + [1.0] for p in params_list], dtype=torch.float64)
        with torch.no_grad():
            posterior = model.posterior(x)
        mean = (-posterior.mean).reshape(-1).tolist()  # the GP models -value
        std = posterior.variance.clamp_min(0).sqrt().reshape(-1).tolist()
        return list(zip(mean, std, strict=True))

    # ---- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "dims": [asdict(d) | {"choices": list(d.choices)} for d in self.dims],
            "settings": asdict(self.settings),
            "trials": [asdict(t) for t in self._trials],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BayesOptimizer:
        dims = [Dim(**(d | {"choices": tuple(d["choices"])})) for d in state["dims"]]
        optimizer = cls(dims, **state["settings"])
        optimizer._trials = [Trial(**t) for t in state["trials"]]
        return optimizer

    # ---- internals -------------------------------------------------------------------------------
    def _encode(self, params: dict[str, Value]) -> list[float]:
        return [d.encode(params[d.name]) for d in self.dims]

    def _decode(self, x: Sequence[float]) -> dict[str, Value]:
        """Encoded point (unit cube; a choice's index) -> parameters."""
        return {d.name: d.decode(float(u)) for d, u in zip(self.dims, x, strict=True)}

    def _sobol(self, index: int) -> list[float]:
        engine = torch.quasirandom.SobolEngine(len(self.dims), scramble=True, seed=self.settings.seed)
        if index:
            engine.fast_forward(index)
        u = engine.draw(1, dtype=torch.float64)[0].tolist()
        # For a choice the unit coordinate picks an index.
        return [
            min(int(v * len(d.choices)), len(d.choices) - 1) if d.kind == "choice" else v
            for d, v in zip(self.dims, u, strict=True)
        ]

    def _cat_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.dims) if d.kind == "choice"]

    def _training_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        told = [t for t in self._trials if t.status != "pending"]
        done = [t for t in told if t.status == "completed"]
        if len(done) < 1:
            raise ValueError("no completed trial to fit")
        worst = max(t.value for t in done)
        told = told[-self.settings.max_fit_points :]
        x = torch.tensor([self._encode(t.params) + [t.fidelity] for t in told], dtype=torch.float64)
        y = torch.tensor([[-(t.value if t.status == "completed" else worst)] for t in told], dtype=torch.float64)
        noises = [t.noise for t in done]
        yvar = None
        if all(n is not None for n in noises):
            fallback = max(noises)
            yvar = torch.tensor([[t.noise if t.status == "completed" else fallback] for t in told], dtype=torch.float64)
            yvar = yvar.clamp_min(1e-8)
        return x, y, yvar

    def _model(self):
        n_told = sum(1 for t in self._trials if t.status != "pending")
        if self._fit is not None and self._fit.n_told == n_told:
            return self._fit.model
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import MixedSingleTaskGP, SingleTaskGP
        from botorch.models.transforms import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood

        x, y, yvar = self._training_data()
        cat_dims = self._cat_dims()
        with warnings.catch_warnings(), torch.random.fork_rng():
            torch.manual_seed(self.settings.seed * 100_003 + n_told)
            warnings.filterwarnings(
                "ignore", message=".*(not standardized|not contained to the unit cube|InputDataWarning).*"
            )
            if cat_dims:
                model = MixedSingleTaskGP(x, y, cat_dims=cat_dims, train_Yvar=yvar, outcome_transform=Standardize(m=1))
            else:
                model = SingleTaskGP(x, y, train_Yvar=yvar, outcome_transform=Standardize(m=1))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        model.eval()
        self._fit = _Fit(model, n_told)
        return model

    def _acquire(self, index: int) -> list[float]:
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.optim import optimize_acqf, optimize_acqf_mixed

        model = self._model()
        x_train, _, _ = self._training_data()
        pending = [t for t in self._trials if t.status == "pending"]
        x_pending = (
            torch.tensor([self._encode(t.params) + [1.0] for t in pending], dtype=torch.float64) if pending else None
        )
        d = len(self.dims)
        lower = [0.0] * (d + 1)
        upper = [float(len(dim.choices) - 1) if dim.kind == "choice" else 1.0 for dim in self.dims] + [1.0]
        bounds = torch.tensor([lower, upper], dtype=torch.float64)
        cat_dims = self._cat_dims()
        with warnings.catch_warnings(), torch.random.fork_rng():
            torch.manual_seed(self.settings.seed * 100_003 + index)
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            acq = qLogNoisyExpectedImprovement(model, X_baseline=x_train, X_pending=x_pending, prune_baseline=True)
            options = {"restarts": self.settings.acq_restarts, "raw": self.settings.raw_samples}
            if cat_dims:
                combos = [
                    dict(zip(cat_dims, map(float, c), strict=True))
                    for c in itertools.product(*(range(len(self.dims[i].choices)) for i in cat_dims))
                ]
                if len(combos) > MAX_CHOICE_COMBINATIONS:
                    combos = random.Random(self.settings.seed * 7 + index).sample(combos, MAX_CHOICE_COMBINATIONS)
                fixed = [c | {d: 1.0} for c in combos]
                candidate, _ = optimize_acqf_mixed(
                    acq,
                    bounds=bounds,
                    q=1,
                    num_restarts=options["restarts"],
                    raw_samples=options["raw"],
                    fixed_features_list=fixed,
                )
            else:
                candidate, _ = optimize_acqf(
                    acq,
                    bounds=bounds,
                    q=1,
                    num_restarts=options["restarts"],
                    raw_samples=options["raw"],
                    fixed_features={d: 1.0},
                )
        x = candidate.reshape(-1)[:d].tolist()
        return [round(v) if dim.kind == "choice" else v for dim, v in zip(self.dims, x, strict=True)]
