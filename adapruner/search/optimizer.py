"""Bayesian optimisation with an ask/tell API keyed by trial index (the shape of Ax's ``Client``).

:class:`Strategy` holds what every search strategy shares (trials by index, tell, prior observations,
the Pareto front, the JSON state); :class:`BayesOptimizer` is the GP strategy (``search.strategy="gp"``,
the default); the others are in :mod:`adapruner.search.strategies`, all named in
``adapruner.catalog.STRATEGIES``.

Built on BoTorch/GPyTorch: a scrambled Sobol design for the first ``n_init`` trials, then a GP
(``SingleTaskGP``; ``MixedSingleTaskGP`` when there are categorical dimensions) with the log noisy
expected improvement acquisition (``qLogNoisyExpectedImprovement``). The whole state is plain JSON,
and restoring it gives the same next suggestion as an uninterrupted run with the same seed.

With ``n_objectives > 1`` every trial is told a vector of objectives (all minimised); each gets its own
GP (a ``ModelListGP``) and the acquisition is the log noisy expected hypervolume improvement
(``qLogNoisyExpectedHypervolumeImprovement``, Daulton et al., NeurIPS 2021; Ament et al., NeurIPS
2023) over a reference point just beyond the worst observed value of each objective; :meth:`pareto`
gives the non-dominated trials.

Conventions:

* The objective is *minimised* (the GP models ``-value``, since BoTorch maximises).
* Every parameter is encoded to the unit cube: float/int -> ``(x - low) / (high - low)`` (ints are
  rounded on decode); a choice -> its index, a categorical GP input.
* One extra input carries the trial's fidelity (1 = a full evaluation, < 1 = stopped early on a
  prefix of the validation text). New suggestions, pending trials and the NEI baseline are all taken
  at fidelity 1, so the GP extrapolates early-stopped trials to a full evaluation.
* Failed trials enter the GP at fidelity 1 with the *worst* observed value (and the largest observed
  noise, when noise is known), so that the search moves away from them instead of proposing them again.
* Only the first objective has a fidelity and a known noise: the other objectives (cheap,
  measured in full on every trial, such as latency or parameter count) enter at fidelity 1 with noise
  inferred by their GP.
* Every random step is seeded from ``(seed, trial index)`` (or the fitted data, for the GP fit) inside
  ``torch.random.fork_rng()``: the global RNG is left untouched and ``ask()`` is reproducible, in
  the same process or after ``from_state(json.loads(json.dumps(state_dict())))``. GP steps run on
  one CPU thread (tiny matrices: threads only cost, and results then do not depend on core count).
* GP steps that raise a numerical error (fit or acquisition) fall back to the next Sobol point
  (``generator="sobol-fallback"``) with a ``RuntimeWarning``.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from adapruner.errors import UserError

Value = float | int | str
STATE_VERSION = 2  # 2: n_objectives and Trial.secondary
MAX_CHOICE_COMBINATIONS = 32
# L-BFGS iterations of a GP fit: the mixed kernel converges slowly in the last digits (~600 function
# evaluations); 200 iterations reach the optimum's marginal likelihood to ~1e-2 at a third of the cost.
FIT_MAXITER = 200
_SEED_STRIDE = 100_003
_DTYPE = torch.float64

logger = logging.getLogger(__name__)
# An infeasible (out-of-memory) point lowers the log-acquisition by this much at the point itself,
# falling off over this distance in the unit cube of the searched dimensions.
INFEASIBLE_PENALTY = 50.0
INFEASIBLE_RADIUS = 0.1
_BOTORCH_RETRY = re.compile(r"Optimization failed (in `gen_candidates|on the second try)")


@dataclass(frozen=True)
class Dim:
    """One searched parameter: a float or int in ``[low, high]`` (inclusive), or one of ``choices``."""

    name: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))  # a list would break hashing
        if self.kind not in ("float", "int", "choice"):
            raise ValueError(f"dimension {self.name!r}: unknown kind {self.kind!r}")
        if self.kind == "choice":
            if not self.choices:
                raise ValueError(f"choice dimension {self.name!r} has no choices")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"choice dimension {self.name!r} has duplicate choices {self.choices}")
        elif not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"dimension {self.name!r}: bad bounds [{self.low}, {self.high}]")

    def decode(self, u: float) -> Value:
        """Encoded coordinate (unit cube; a choice's index for ``choice``) -> parameter value."""
        if self.kind == "choice":
            return self.choices[min(max(round(u), 0), len(self.choices) - 1)]
        value = self.low + min(max(u, 0.0), 1.0) * (self.high - self.low)
        if self.kind == "int":
            return int(min(max(round(value), math.ceil(self.low)), math.floor(self.high)))
        return float(value)

    def contains(self, value: Value) -> bool:
        """Whether ``value`` is one of this dimension's values (a choice, or a number within its bounds)."""
        if self.kind == "choice":
            return str(value) in self.choices
        return isinstance(value, int | float) and self.low <= float(value) <= self.high

    def encode(self, value: Value) -> float:
        """Parameter value -> encoded coordinate (the inverse of :meth:`decode`)."""
        if self.kind == "choice":
            return float(self.choices.index(str(value)))
        span = self.high - self.low
        return 0.0 if span == 0 else (float(value) - self.low) / span


@dataclass
class Trial:
    """One suggested point and, once told, its outcome."""

    index: int
    params: dict[str, Value]
    status: Literal["pending", "completed", "failed"] = "pending"
    value: float | None = None  # (first) objective, minimised
    secondary: list[float] = field(default_factory=list)  # the other objectives, minimised
    noise: float | None = None  # observation variance (sem**2); None when unknown
    fidelity: float = 1.0  # 1.0 = full evaluation; < 1 = early-stopped on a prefix
    generator: str = ""  # "sobol", "gp", "sobol-fallback", "tpe", "evolution", "prior" or "enqueued"
    infeasible: bool = False  # failed for a resource (out of memory), not for its quality: a constraint


@dataclass
class _Settings:
    seed: int = 0
    n_init: int = 8
    acq_restarts: int = 8
    raw_samples: int = 256
    max_fit_points: int = 200
    n_objectives: int = 1


# Numerical failures of a GP fit or of the acquisition optimisation: these fall back to a Sobol point.
# Programming errors (TypeError, AttributeError, ...) propagate.
def _numerical_errors() -> tuple[type[BaseException], ...]:
    from botorch.exceptions.errors import BotorchError, ModelFittingError

    return (RuntimeError, ValueError, ArithmeticError, BotorchError, ModelFittingError)


@contextmanager
def _quiet_botorch() -> Iterator[None]:
    """Send BoTorch's routine warnings to the debug log; re-emit every other warning unchanged.

    Routine on a small, noisy search: ``InputDataWarning`` (choice indices lie outside the unit cube;
    few data), ``OptimizationWarning`` and BoTorch's "Optimization failed in ``gen_candidates_scipy``
    ... Trying again" / "... on the second try" ``RuntimeWarning`` (L-BFGS stopped early, typically
    an abnormal line search on a flat log-EI surface; BoTorch retries, then keeps the best point found),
    ``BadInitialCandidatesWarning`` (a flat acquisition on the raw samples) and GPyTorch's
    ``NumericalWarning`` (jitter added to a Cholesky factorisation).
    """
    from botorch.exceptions.warnings import BadInitialCandidatesWarning, InputDataWarning, OptimizationWarning
    from linear_operator.utils.warnings import NumericalWarning

    routine = (InputDataWarning, OptimizationWarning, BadInitialCandidatesWarning, NumericalWarning)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:  # also when the step raised: its warnings may explain why
        for w in caught:
            retry = issubclass(w.category, RuntimeWarning) and _BOTORCH_RETRY.match(str(w.message)) is not None
            if issubclass(w.category, routine) or retry:
                logger.debug("%s: %s", w.category.__name__, w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


@contextmanager
def _gp_step(seed: int) -> Iterator[None]:
    """The context of every GP computation: seeded, single-threaded, global RNG untouched, with
    gradients on and BoTorch's routine warnings quiet.

    The matrices are tiny (at most ``max_fit_points`` rows), so intra-op threads only add
    synchronisation cost (10x slower on a busy machine), and one thread makes the floating-point
    reductions, hence the suggestions, independent of the machine's core count.
    """
    threads = torch.get_num_threads()
    try:
        # The GP runs on the CPU; fitting and acquisition optimisation need gradients even when the
        # caller is inside ``torch.no_grad()``.
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), _quiet_botorch():
            torch.set_num_threads(1)
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


class Strategy:
    """What every search strategy shares: ``ask()`` a trial (indices 0, 1, 2, ...), ``tell()`` its outcome,
    prior observations of earlier searches (:meth:`tell_prior`: no trials, in no budget), the Pareto
    front and a JSON state (``state_dict`` / ``from_state``: the same next proposals after a round trip).

    A subclass proposes (:meth:`_propose`) from the trials and priors so far, every random step seeded
    from ``(settings.seed, trial index)``; its ``settings`` dataclass holds its constructor's keywords
    (``seed`` and ``n_objectives`` among them). Without a model of the objective, :meth:`posterior` is the
    observed value and :meth:`relevance` is None.
    """

    name = ""  # its STRATEGIES name
    uses_priors = True  # whether prior observations change its proposals

    def __init__(self, dims: Sequence[Dim], settings: Any) -> None:
        if not dims:
            raise UserError("space: the search space has no free dimension; fix fewer parameters")
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate dimension names in {names}")
        self.dims = tuple(dims)
        self.settings = settings
        self._trials: list[Trial] = []
        self._priors: list[Trial] = []  # indices -1, -2, ...: completed trials of earlier searches
        self._queued: list[dict[str, Value]] = []  # parameters the next asks return, first first

    # ---- ask / tell ------------------------------------------------------------------------------
    def _propose(self, index: int) -> tuple[dict[str, Value], str]:
        """The parameters of trial ``index`` and the name of what proposed them."""
        raise NotImplementedError

    def enqueue(self, params: dict[str, Value]) -> None:
        """Make a later :meth:`ask` return ``params`` (in the order enqueued, before any proposal): a known
        good point evaluated as an ordinary trial, such as the fixed recipe a search starts from.

        Raises:
            ValueError: ``params`` lack one of this space's dimensions or hold a value outside it.
        """
        outside = [d.name for d in self.dims if d.name not in params or not d.contains(params[d.name])]
        if outside:
            raise ValueError(f"enqueued parameters lack or exceed the dimensions {outside}")
        self._queued.append({d.name: params[d.name] for d in self.dims})

    def ask(self) -> Trial:
        """The next trial to evaluate (indices 0, 1, 2, ...): an enqueued point first, else a proposal;
        it stays pending until told."""
        index = len(self._trials)
        params, generator = (self._queued.pop(0), "enqueued") if self._queued else self._propose(index)
        trial = Trial(index, params, generator=generator)
        self._trials.append(trial)
        return trial

    def tell(
        self,
        index: int,
        *,
        value: float | Sequence[float] | None,
        noise: float | None = None,
        fidelity: float = 1.0,
        failed: bool = False,
        infeasible: bool = False,
    ) -> None:
        """Record the outcome of trial ``index``.

        ``value`` is the objective, or with several objectives the sequence of all of them (the first
        is the one ``noise`` and ``fidelity`` describe). ``failed=True``, ``value=None`` or any
        non-finite value record the trial as failed. ``infeasible=True`` records a failure that says
        nothing about the objective (the trial did not fit in memory): the GP is not fitted on it (a
        failed trial otherwise counts as the worst value seen) and the acquisition is steered away from
        its point (:class:`_AvoidInfeasible`). ``noise`` is the observation variance of the first
        objective (a non-finite or negative one is treated as unknown). ``fidelity`` must be in ``(0, 1]``.

        Raises:
            ValueError: the trial was never asked or was already told, the fidelity is out of range, or
                ``value`` does not have one entry per objective.
        """
        if not 0 <= index < len(self._trials):
            raise ValueError(f"trial {index} was never asked")
        trial = self._trials[index]
        if trial.status != "pending":
            raise ValueError(f"trial {index} was already told ({trial.status})")
        if not (math.isfinite(fidelity) and 0.0 < fidelity <= 1.0):
            raise ValueError(f"trial {index}: fidelity must be in (0, 1], got {fidelity}")
        values = None if value is None else [float(v) for v in ([value] if isinstance(value, int | float) else value)]
        if values is not None and len(values) != self.settings.n_objectives:
            raise ValueError(
                f"trial {index}: expected {self.settings.n_objectives} objective value(s), got {len(values)}"
            )
        trial.fidelity = float(fidelity)
        if infeasible or failed or values is None or not all(math.isfinite(v) for v in values):
            trial.status, trial.infeasible = "failed", bool(infeasible)
            return
        trial.status, trial.value, trial.secondary = "completed", values[0], values[1:]
        trial.noise = float(noise) if noise is not None and math.isfinite(noise) and noise >= 0 else None

    def trials(self) -> list[Trial]:
        """All trials so far, in index order (a new list; the trials themselves are live)."""
        return list(self._trials)

    def pareto(self) -> list[Trial]:
        """The completed full-fidelity trials that no other one dominates on the observed objectives
        (all minimised; a dominates b when it is no worse in every objective and better in one), by
        first objective. With one objective: the trials with the lowest value."""
        full = [t for t in self._trials if t.status == "completed" and t.fidelity >= 1.0]
        points = {t.index: (t.value, *t.secondary) for t in full}

        def dominated(a: Trial) -> bool:
            pa = points[a.index]
            return any(
                all(x <= y for x, y in zip(pb, pa, strict=True)) and pb != pa
                for b, pb in ((b, points[b.index]) for b in full)
                if b is not a
            )

        return sorted((t for t in full if not dominated(t)), key=lambda t: (t.value, t.index))

    def tell_prior(
        self, params: dict[str, Value], *, value: Sequence[float], noise: float | None = None, fidelity: float = 1.0
    ) -> bool:
        """Add a completed trial of an earlier search as an observation (index -1, -2, ...; never asked, in
        no trial budget). ``value`` has one entry per objective. Returns False (and adds nothing) when
        ``params`` lack one of this space's dimensions or hold a value outside it, or the value is not finite.
        """
        values = [float(v) for v in value]
        if len(values) != self.settings.n_objectives or not all(math.isfinite(v) for v in values):
            return False
        if not all(d.name in params and d.contains(params[d.name]) for d in self.dims):
            return False
        known = {d.name: params[d.name] for d in self.dims}
        noise = float(noise) if noise is not None and math.isfinite(noise) and noise >= 0 else None
        fidelity = float(fidelity) if 0.0 < fidelity <= 1.0 else 1.0
        trial = Trial(-len(self._priors) - 1, known, "completed", values[0], values[1:], noise, fidelity, "prior")
        self._priors.append(trial)
        return True

    def priors(self) -> list[Trial]:
        """The prior observations, in the order told."""
        return list(self._priors)

    def posterior(self, params_list: Sequence[dict[str, Value]]) -> list[tuple[float, float]]:
        """``(mean, std)`` of the first objective at each parameter set: here the last completed trial's
        value with those parameters (std from its noise; nan where none), as no model is fitted.

        Raises:
            ValueError: no trial is complete.
        """
        done = [t for t in self._trials if t.status == "completed"]
        if not done:
            raise ValueError("no completed trial")
        seen = {_key(t.params): (t.value, math.sqrt(t.noise) if t.noise else 0.0) for t in done}
        return [seen.get(_key(p), (math.nan, math.nan)) for p in params_list]

    def relevance(self) -> dict[str, float] | None:
        """How much each dimension moves the objective: None, as no model is fitted."""
        return None

    # ---- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the strategy, dims, settings (with the seed), all trials and the
        priors (JSON-serialisable)."""
        state = {
            "version": STATE_VERSION,
            "dims": [asdict(d) | {"choices": list(d.choices)} for d in self.dims],
            "settings": asdict(self.settings),
            "trials": [asdict(t) | {"params": dict(t.params)} for t in self._trials],
            "strategy": self.name,
        }
        if self._priors:
            state["priors"] = [asdict(t) | {"params": dict(t.params)} for t in self._priors]
        if self._queued:
            state["queued"] = [dict(params) for params in self._queued]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Strategy:
        """Rebuild a strategy from :meth:`state_dict` (also after a JSON round trip; a state without
        ``strategy`` is the GP's)."""
        version, name = state.get("version"), state.get("strategy", "gp")
        if version != STATE_VERSION:
            raise UserError(f"optimizer state: version {version!r}, this adapruner reads {STATE_VERSION}")
        if name != cls.name:
            raise UserError(f"optimizer state: the state of strategy {name!r}, not of {cls.name!r}")
        dims = [Dim(**(d | {"choices": tuple(d["choices"])})) for d in state["dims"]]
        optimizer = cls(dims, **state["settings"])
        optimizer._trials = [Trial(**(t | {"params": dict(t["params"])})) for t in state["trials"]]
        optimizer._priors = [Trial(**(t | {"params": dict(t["params"])})) for t in state.get("priors", ())]
        optimizer._queued = [dict(params) for params in state.get("queued", ())]
        if [t.index for t in optimizer._trials] != list(range(len(optimizer._trials))):
            raise UserError("optimizer state: trial indices must be 0, 1, 2, ... in order")
        return optimizer

    # ---- encoding --------------------------------------------------------------------------------
    def _encode(self, params: dict[str, Value]) -> list[float]:
        return [d.encode(params[d.name]) for d in self.dims]

    def _decode(self, x: Sequence[float]) -> dict[str, Value]:
        return {d.name: d.decode(float(u)) for d, u in zip(self.dims, x, strict=True)}

    def _sobol(self, index: int) -> list[float]:
        """Point ``index`` of the scrambled Sobol sequence, encoded (a choice's coordinate -> its index)."""
        engine = torch.quasirandom.SobolEngine(len(self.dims), scramble=True, seed=self.settings.seed)
        if index:
            engine.fast_forward(index)
        u = engine.draw(1, dtype=_DTYPE)[0].tolist()
        return [
            float(min(int(v * len(d.choices)), len(d.choices) - 1)) if d.kind == "choice" else v
            for d, v in zip(self.dims, u, strict=True)
        ]


class BayesOptimizer(Strategy):
    """``ask()`` a trial, evaluate it, ``tell()`` its value; ``state_dict()`` saves everything.

    Args:
        dims: The searched parameters (at least one; names must be unique).
        seed: Seeds the Sobol design and every random step of the GP phase.
        n_init: Number of Sobol trials before the GP takes over.
        acq_restarts: Multistart restarts of the acquisition optimisation.
        raw_samples: Raw samples used to pick the acquisition starting points.
        max_fit_points: At most this many told trials are fitted (the best quarter plus the most recent).
        n_objectives: Number of objectives told per trial (1: log noisy EI; more: log noisy EHVI).
    """

    name = "gp"

    def __init__(
        self,
        dims: Sequence[Dim],
        *,
        seed: int = 0,
        n_init: int = 8,
        acq_restarts: int = 8,
        raw_samples: int = 256,
        max_fit_points: int = 200,
        n_objectives: int = 1,
    ) -> None:
        settings = _Settings(
            int(seed), int(n_init), int(acq_restarts), int(raw_samples), int(max_fit_points), int(n_objectives)
        )
        super().__init__(dims, settings)
        if n_init < 1 or acq_restarts < 1 or raw_samples < 1 or max_fit_points < 2 or n_objectives < 1:
            raise ValueError(
                "need n_init >= 1, acq_restarts >= 1, raw_samples >= 1, max_fit_points >= 2 and n_objectives >= 1,"
                f" got {n_init}, {acq_restarts}, {raw_samples}, {max_fit_points}, {n_objectives}"
            )
        self._fit_key: tuple[tuple[int, str], ...] | None = None
        self._fit_models: list[Any] = []

    @classmethod
    def from_search(cls, dims: Sequence[Dim], search: Any, *, n_objectives: int) -> BayesOptimizer:
        """The GP of a search's ``SearchConfig``."""
        return cls(
            dims,
            seed=search.seed,
            n_init=search.n_init,
            acq_restarts=search.acq_restarts,
            raw_samples=search.raw_samples,
            n_objectives=n_objectives,
        )

    def _propose(self, index: int) -> tuple[dict[str, Value], str]:
        """A Sobol point for the design (shortened by the completed priors), then the GP's."""
        priors = len(self._priors)
        n_completed = priors + sum(1 for t in self._trials if t.status == "completed")
        if index + priors < self.settings.n_init or n_completed < 2:
            x, generator = self._sobol(index), "sobol"
        else:
            try:
                x, generator = self._acquire(index), "gp"
            except _numerical_errors() as error:
                warnings.warn(
                    f"GP step for trial {index} failed ({type(error).__name__}: {error}); using a Sobol point",
                    RuntimeWarning,
                    stacklevel=3,
                )
                x, generator = self._sobol(index), "sobol-fallback"
        return self._decode(x), generator

    def posterior(self, params_list: Sequence[dict[str, Value]]) -> list[tuple[float, float]]:
        """``(mean, std)`` of the (latent, noise-free) first objective at each parameter set, at fidelity 1.

        Defined from one completed trial on (with a single one the fit is degenerate: a flat mean).

        Raises:
            ValueError: no trial is complete.
        """
        if not params_list:
            return []
        model = self._models()[0]
        x = torch.tensor([self._encode(p) + [1.0] for p in params_list], dtype=_DTYPE)
        with _gp_step(self.settings.seed), torch.no_grad():
            post = model.posterior(x)
            mean = (-post.mean).reshape(-1).tolist()  # the GP models -value
            std = post.variance.clamp_min(0.0).sqrt().reshape(-1).tolist()
        return list(zip(mean, std, strict=True))

    def relevance(self) -> dict[str, float] | None:
        """How much each dimension moves the GP of the first objective: the inverse of its fitted kernel
        lengthscale (ARD; a choice's from the categorical kernel; the smallest where a dimension is in
        several kernels). The two kernels measure distance differently, so the shares are normalised to sum
        to 1 within each kind: over the float/int dimensions, and over the choice dimensions. Not the
        fidelity input. Fits the GP if needed; ``None`` when the fit fails numerically.

        Raises:
            ValueError: no trial is complete.
        """
        if not any(t.status == "completed" for t in self._trials):
            raise ValueError("no completed trial to fit the GP on")
        try:
            model = self._models()[0]
        except _numerical_errors():
            return None
        inverse = [0.0] * len(self.dims)
        for kernel in model.covar_module.modules():
            if not getattr(kernel, "has_lengthscale", False):
                continue
            active = kernel.active_dims.tolist() if kernel.active_dims is not None else range(len(self.dims) + 1)
            for dim, scale in zip(active, kernel.lengthscale.detach().reshape(-1).tolist(), strict=True):
                if dim < len(self.dims):
                    inverse[dim] = max(inverse[dim], 1.0 / scale)
        out = {}
        for choice in (False, True):
            group = [(d, v) for d, v in zip(self.dims, inverse, strict=True) if (d.kind == "choice") == choice]
            total = sum(v for _, v in group)
            out |= {d.name: (v / total if total > 0 else 1 / len(group)) for d, v in group}
        return {d.name: out[d.name] for d in self.dims}

    def _cat_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.dims) if d.kind == "choice"]

    # ---- GP --------------------------------------------------------------------------------------
    def _fit_trials(self) -> list[Trial]:
        """The told trials the GP is fitted on: all but the infeasible ones, or the best quarter plus the
        most recent."""
        told = [t for t in self._priors + self._trials if t.status != "pending" and not t.infeasible]
        cap = self.settings.max_fit_points
        if len(told) <= cap:
            return told
        completed = sorted((t for t in told if t.status == "completed"), key=lambda t: (t.value, t.index))
        keep = {t.index for t in completed[: cap // 4]}
        for t in reversed(told):
            if len(keep) >= cap:
                break
            keep.add(t.index)
        return [t for t in told if t.index in keep]

    def _training_data(self, objective: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``X`` (encoded params + fidelity), ``Y = -value`` and ``Yvar`` (None if any noise is unknown) of
        objective number ``objective`` (the others: fidelity 1 and unknown noise)."""
        told = self._fit_trials()
        done = [t for t in told if t.status == "completed"]
        if not done:
            raise ValueError("no completed trial to fit the GP on")

        def observed(t: Trial) -> float:
            return t.value if objective == 0 else t.secondary[objective - 1]

        worst = max(observed(t) for t in done)
        x = torch.tensor(
            [
                self._encode(t.params) + [t.fidelity if t.status == "completed" and objective == 0 else 1.0]
                for t in told
            ],
            dtype=_DTYPE,
        )
        y = torch.tensor([[-(observed(t) if t.status == "completed" else worst)] for t in told], dtype=_DTYPE)
        if objective:
            return x, y, None
        noises = [t.noise for t in done]
        if any(n is None for n in noises):
            return x, y, None
        # A floor relative to the spread of Y keeps the fixed-noise kernel matrix well conditioned.
        floor = max(1e-12, 1e-6 * float(y.var())) if len(y) > 1 else 1e-12
        largest = max(noises)
        yvar = torch.tensor([[t.noise if t.status == "completed" else largest] for t in told], dtype=_DTYPE)
        return x, y, yvar.clamp_min(floor)

    def _models(self) -> list[Any]:
        """One GP per objective on the told trials, fitted once per data set (seeded by it, hence
        reproducible)."""
        key = tuple((t.index, t.status) for t in self._fit_trials())
        if self._fit_key == key:
            return self._fit_models
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import MixedSingleTaskGP, SingleTaskGP
        from botorch.models.transforms import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood

        cat_dims = self._cat_dims()
        models = []
        for objective in range(self.settings.n_objectives):
            x, y, yvar = self._training_data(objective)
            # Seeded by the last fitted trial (and the objective).
            with _gp_step(self.settings.seed * _SEED_STRIDE + key[-1][0] + objective * 7919):
                if cat_dims:
                    model = MixedSingleTaskGP(
                        x, y, cat_dims=cat_dims, train_Yvar=yvar, outcome_transform=Standardize(m=1)
                    )
                else:
                    model = SingleTaskGP(x, y, train_Yvar=yvar, outcome_transform=Standardize(m=1))
                fit_gpytorch_mll(
                    ExactMarginalLogLikelihood(model.likelihood, model),
                    optimizer_kwargs={"options": {"maxiter": FIT_MAXITER}},
                )
            model.eval()
            models.append(model)
        self._fit_key, self._fit_models = key, models
        return models

    def _acquisition(self, models: list[Any], baseline: torch.Tensor, x_pending: torch.Tensor | None) -> Any:
        """qLogNEI of ``-value`` with one objective; qLogNEHVI of ``-values`` over a ``ModelListGP`` with
        several, the reference point 10% of each objective's observed range beyond its worst value."""
        if len(models) == 1:
            from botorch.acquisition.logei import qLogNoisyExpectedImprovement

            return qLogNoisyExpectedImprovement(
                models[0], X_baseline=baseline, X_pending=x_pending, prune_baseline=True
            )
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.models import ModelListGP

        ys = torch.cat([self._training_data(i)[1] for i in range(len(models))], dim=-1)  # maximised: -values
        low, high = ys.min(0).values, ys.max(0).values
        span = torch.where(high > low, high - low, low.abs().clamp_min(1e-3))
        return qLogNoisyExpectedHypervolumeImprovement(
            ModelListGP(*models),
            ref_point=(low - 0.1 * span).tolist(),
            X_baseline=baseline,
            X_pending=x_pending,
            prune_baseline=True,
        )

    def _acquire(self, index: int) -> list[float]:
        """Maximise the acquisition at fidelity 1 with the pending trials as ``X_pending``."""
        from botorch.optim import optimize_acqf

        models = self._models()
        x_train, _, _ = self._training_data()
        baseline = x_train.clone()
        baseline[:, -1] = 1.0  # the incumbent is judged at full fidelity
        pending = [t for t in self._trials if t.status == "pending"]
        x_pending = torch.tensor([self._encode(t.params) + [1.0] for t in pending], dtype=_DTYPE) if pending else None
        d = len(self.dims)
        upper = [float(len(dim.choices) - 1) if dim.kind == "choice" else 1.0 for dim in self.dims] + [1.0]
        bounds = torch.tensor([[0.0] * (d + 1), upper], dtype=_DTYPE)
        cat_dims = self._cat_dims()
        fidelity = {d: 1.0}
        with _gp_step(self.settings.seed * _SEED_STRIDE + index):
            acq = self._acquisition(models, baseline, x_pending)
            avoid = [self._encode(t.params) for t in self._trials if t.infeasible]
            if avoid:
                acq = _AvoidInfeasible(acq, torch.tensor(avoid, dtype=_DTYPE), scale=torch.tensor(upper[:d]))
            search = {
                "bounds": bounds,
                "q": 1,
                "num_restarts": self.settings.acq_restarts,
                "raw_samples": self.settings.raw_samples,
            }
            if not cat_dims:
                candidate, _ = optimize_acqf(acq, fixed_features=fidelity, **search)
            else:
                combos = self._choice_combinations(cat_dims, index)
                fixed = [dict(zip(cat_dims, c, strict=True)) | fidelity for c in combos]
                if len(cat_dims) == d:  # nothing continuous to optimise: score every combination
                    grid = torch.tensor([[f[i] for i in range(d + 1)] for f in fixed], dtype=_DTYPE)
                    with torch.no_grad():
                        scores = acq(grid.unsqueeze(-2))
                    candidate = grid[int(torch.argmax(scores))]
                else:
                    candidate = _optimize_mixed(acq, fixed, **search)
        x = candidate.reshape(-1)[:d].tolist()
        if not all(math.isfinite(v) for v in x):
            raise ValueError(f"the acquisition optimisation returned a non-finite point {x}")
        return [float(round(v)) if dim.kind == "choice" else v for dim, v in zip(self.dims, x, strict=True)]

    def _choice_combinations(self, cat_dims: list[int], index: int) -> list[tuple[float, ...]]:
        """All choice combinations, or a deterministic sample of ``MAX_CHOICE_COMBINATIONS`` of them."""
        sizes = [len(self.dims[i].choices) for i in cat_dims]
        total = math.prod(sizes)
        if total <= MAX_CHOICE_COMBINATIONS:
            return [tuple(map(float, c)) for c in itertools.product(*(range(n) for n in sizes))]
        rng = random.Random(self.settings.seed * _SEED_STRIDE + index)
        picks = sorted(rng.sample(range(total), MAX_CHOICE_COMBINATIONS))
        combos = []
        for flat in picks:  # mixed-radix decode of a flat combination number
            combo = []
            for n in reversed(sizes):
                flat, r = divmod(flat, n)
                combo.append(float(r))
            combos.append(tuple(reversed(combo)))
        return combos


def _optimize_mixed(acq: Any, fixed: list[dict[int, float]], *, bounds, q: int, num_restarts: int, raw_samples: int):
    """The acquisition's maximum over every choice combination in ``fixed`` (``{column: value}`` each,
    the same columns): BoTorch's ``optimize_acqf_mixed`` in one batched L-BFGS run instead of one run per
    combination. The starting points are drawn per combination as it draws them, in the same order, and
    each restart's L-BFGS is independent, so the proposal is the same (up to rounding) at a fraction of
    the acquisition evaluations, the cost of a proposal (Python overhead, not arithmetic).

    ``bounds: [2, d]``; returns ``[q, d]``."""
    from botorch.optim import optimize_acqf
    from botorch.optim.initializers import gen_batch_initial_conditions

    starts = torch.cat(
        [
            gen_batch_initial_conditions(
                acq, bounds, q=q, num_restarts=num_restarts, raw_samples=raw_samples, fixed_features=f, options={}
            )
            for f in fixed
        ]
    )  # [len(fixed) * num_restarts, q, d]
    per_start = {  # each column's value per start: [starts, q]
        column: torch.tensor([f[column] for f in fixed], dtype=starts.dtype)
        .repeat_interleave(num_restarts)
        .unsqueeze(-1)
        .expand(-1, q)
        for column in fixed[0]
    }
    candidate, _ = optimize_acqf(
        acq,
        bounds,
        q=q,
        num_restarts=len(starts),
        batch_initial_conditions=starts,
        fixed_features=per_start,
        options={"batch_limit": len(starts)},
    )
    return candidate


def _key(params: dict[str, Value]) -> str:
    return repr(sorted(params.items()))


class _AvoidInfeasible(torch.nn.Module):
    """The acquisition minus a Gaussian bump of height :data:`INFEASIBLE_PENALTY` (log-acquisition
    units) at every infeasible point, so that the optimiser is steered away from recipes that did not
    fit without the GP learning them as bad values. Distances are over the searched dimensions scaled to
    the unit cube (choice indices divided by their range), bump width :data:`INFEASIBLE_RADIUS`.

    ``points: [m, d]`` encoded infeasible parameters; ``scale: [d]`` each dimension's upper bound.
    """

    def __init__(self, acq: Any, points: torch.Tensor, *, scale: torch.Tensor) -> None:
        super().__init__()
        self.acq = acq
        self.model = acq.model
        self.register_buffer("points", points / scale.clamp_min(1.0))
        self.register_buffer("scale", scale.clamp_min(1.0))

    def forward(self, X: torch.Tensor) -> torch.Tensor:  # noqa: N803 (BoTorch's name)
        """``X: [batch, q, d + 1]`` (the last column the fidelity) -> ``[batch]``."""
        x = X[..., : self.points.shape[1]] / self.scale  # [batch, q, d]
        dist2 = (x.unsqueeze(-2) - self.points).square().sum(-1)  # [batch, q, m]
        bump = torch.exp(-dist2 / (2 * INFEASIBLE_RADIUS**2)).sum(-1).amax(-1)  # [batch]
        return self.acq(X) - INFEASIBLE_PENALTY * bump
