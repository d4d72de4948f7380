"""What a search varies (:class:`SearchSpace`) and its budget and objective (:class:`SearchConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from adapruner.catalog import BLOCK_CRITERIA, COMPENSATORS, METRICS, STRATEGIES
from adapruner.config.data import DataSource
from adapruner.config.stages import DEFAULT_CHANNEL_MULTIPLE
from adapruner.config.values import StrictModel

#: The search confirms its top trials on this many times ``search.validation_tokens`` per domain.
CONFIRM_TOKENS_FACTOR = 4


class Range(StrictModel):
    """A searched interval; ``low == high`` fixes the dimension."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def _fixed(value: float) -> Range:
    return Range(low=value, high=value)


def _default_search_sources() -> tuple[DataSource, ...]:
    return tuple(DataSource(kind="builtin", name=n) for n in ("pydoc", "jargon", "gnu-standards"))


def _default_validation_sources() -> tuple[DataSource, ...]:
    return tuple(DataSource(kind="builtin", name=n, split="validation") for n in ("jargon", "gnu-standards"))




class SearchSpace(StrictModel):
    """The joint space searched per trial. Every dimension can be fixed (one choice, or a Range with
    ``low == high``) or restricted.

    Calibration: a weight per source in ``sources`` (normalised to a mix; fixed when one source),
    how many samples (``samples``) and which of the candidate pool (``subset_seeds`` seeded subsets).
    Metric: a weight per metric in ``metrics`` (normalised to a simplex), ``aggregations``,
    ``normalizations``. Allocation: ``attn_share``, ``depth_slope``, ``protect_first``/``protect_last``.
    Compensation: ``compensators`` (names from ``COMPENSATORS``; a categorical dimension when more than one).
    Depth: ``depth_share`` (share of the budget removed as whole blocks; fixed at 0 by default) and
    ``block_criteria`` (names from ``BLOCK_CRITERIA``; a categorical dimension when more than one).

    ``seq_lens``: the calibration window lengths to choose from (a categorical dimension when more than
    one). Every choice has its own pool of statistics,
    so the warm-up costs about ``sum(seq_lens) / seq_lens[0]`` times that of the first alone; the default
    is one length. ``ratio``: a searched pruning ratio (``None``: the job's ``ratio``), only with a second
    objective (quality alone always prefers the lowest ratio); required for ``second_objective="params"``,
    since at a fixed ratio the parameter count barely moves.
    """

    sources: tuple[DataSource, ...] = Field(
        default_factory=_default_search_sources, min_length=1, description="candidate calibration sources"
    )
    samples: Range = Field(
        default_factory=lambda: Range(low=8, high=32), description="calibration samples per trial (a searched range)"
    )
    seq_lens: tuple[int, ...] = Field(default=(256,), min_length=1, description="calibration window lengths")
    pool_size: int = Field(default=32, ge=1, description="candidate calibration samples per source")
    subset_seeds: int = Field(default=8, ge=1, description="number of seeded subsets of the pool to choose from")
    metrics: tuple[str, ...] = Field(
        default=("bip", "taylor", "taylor_vector", "wanda", "flap", "l2"), description="metrics the search mixes"
    )
    aggregations: tuple[Literal["sum", "mean", "max", "prod"], ...] = ("sum",)
    normalizations: tuple[Literal["none", "mean", "max", "l2", "zscore", "rank"], ...] = ("mean", "rank")
    attn_share: Range = Field(default_factory=lambda: Range(low=0.0, high=0.3))
    depth_slope: Range = Field(default_factory=lambda: Range(low=-1.0, high=1.0))
    protect_first: Range = Field(default_factory=lambda: _fixed(0))
    protect_last: Range = Field(default_factory=lambda: _fixed(0))
    compensators: tuple[str, ...] = Field(
        default=("none", "obs"), description="compensators to choose from (a search dimension when more than one)"
    )
    ratio: Range | None = Field(default=None, description="searched pruning ratio; None = the job's ratio")
    depth_share: Range = Field(default_factory=lambda: _fixed(0))
    block_criteria: tuple[str, ...] = ("block_influence",)
    channel_multiple: int = Field(default=DEFAULT_CHANNEL_MULTIPLE, ge=1, description="kept channels: a multiple of this")
    uniform: bool = Field(default=False, description="every layer keeps the same widths (depth_slope fixed at 0)")

    @model_validator(mode="before")
    @classmethod
    def _uniform_slope(cls, data):
        if isinstance(data, dict) and data.get("uniform") and "depth_slope" not in data:
            data = data | {"depth_slope": {"low": 0.0, "high": 0.0}}
        return data

    @field_validator("block_criteria")
    @classmethod
    def _check_block_criteria(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("name at least one block criterion")
        for name in names:
            BLOCK_CRITERIA.check(name)
        return tuple(dict.fromkeys(names))

    @field_validator("seq_lens")
    @classmethod
    def _check_seq_lens(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 8 for v in values):
            raise ValueError(f"every calibration window needs >= 8 tokens, got {list(values)}")
        return tuple(dict.fromkeys(values))

    @field_validator("compensators")
    @classmethod
    def _check_compensators(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("name at least one compensator (none for no compensation)")
        for name in names:
            COMPENSATORS.check(name)
        return tuple(dict.fromkeys(names))

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        if not metrics:
            raise ValueError("name at least one metric")
        for name in metrics:
            METRICS.check(name)
        return tuple(dict.fromkeys(metrics))

    @field_validator("aggregations", "normalizations")
    @classmethod
    def _non_empty(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if not values:
            raise ValueError("name at least one choice")
        return tuple(dict.fromkeys(values))

    @model_validator(mode="after")
    def _check_ranges(self) -> SearchSpace:
        if self.samples.low < 1 or self.samples.high > self.pool_size * len(self.sources):
            raise ValueError(
                f"samples: {self.samples.low:g}..{self.samples.high:g} must lie in 1..pool_size x sources "
                f"= {self.pool_size * len(self.sources)}"
            )
        for name in ("attn_share", "depth_share"):
            r = getattr(self, name)
            if r.low < 0 or r.high > 1:
                raise ValueError(f"{name}: must lie in 0..1")
        if self.depth_slope.low < -1 or self.depth_slope.high > 1:
            raise ValueError("depth_slope: must lie in -1..1")
        if self.protect_first.low < 0 or self.protect_last.low < 0:
            raise ValueError("protect_first/protect_last: must be >= 0")
        if self.uniform and (self.depth_slope != _fixed(0) or self.protect_first.high or self.protect_last.high):
            raise ValueError("uniform: one width for every layer needs depth_slope and protect_first/last fixed at 0")
        if self.ratio is not None and not (0 < self.ratio.low and self.ratio.high < 1):
            raise ValueError(f"ratio: {self.ratio.low:g}..{self.ratio.high:g} must lie strictly between 0 and 1")
        return self


class SearchConfig(StrictModel):
    """Budget and objective of a search.

    The objective is the log perplexity (mean NLL per token) of the pruned model on ``validation``
    text, read in ``chunk_tokens`` chunks interleaved across domains; a trial whose running estimate is
    clearly worse than the incumbent (``reject_z`` standard errors) stops after ``min_fraction`` of the
    chunks. ``validation`` must never be the text the final report uses (``evaluate.texts``).

    ``second_objective`` adds a second objective to minimise and makes the search multi-objective (log
    noisy expected hypervolume improvement; the report gets the Pareto front): ``latency`` is the
    median forward latency of the pruned model on ``latency_batch`` x ``latency_seq_len`` random tokens
    (``latency_repeats`` timed passes after one warm-up, measured the same way in every trial);
    ``params`` is its non-embedding parameter count (needs a searched ``space.ratio``). Both enter the
    GP as logarithms. A trial then stops early only against a full trial that is no worse in the second
    objective. The artifact is the best-quality trial whose second objective is at most
    ``second_cap`` (seconds or parameters; ``None``: no cap; the fastest or smallest trial when no trial
    meets it).

    ``strategy`` names the optimiser (``adapruner.catalog.STRATEGIES``: ``gp``, ``random``, ``tpe``,
    ``evolution``). ``warm_start``: the completed trials of earlier searches of the same model (another
    ratio, other texts) are told to it first as prior observations (not trials: outside ``trials``); the
    GP fits them and starts its acquisition sooner, TPE and evolution draw on them, random search ignores them.
    """

    trials: int = Field(default=30, ge=1, le=10_000, description="trials in all")
    strategy: str = Field(default="gp", description="the optimiser proposing the trials (a STRATEGIES name)")
    n_init: int = Field(default=8, ge=1, description="quasi-random trials before the GP (or TPE, evolution)")
    warm_start: tuple[str, ...] = Field(
        default=(),
        max_length=8,
        description="earlier search output folders of the same model (search_state.json or report.json) whose"
        " completed trials the optimiser starts from, as prior observations outside the trial budget",
    )
    time_budget_s: float | None = Field(
        default=None,
        gt=0,
        description="start no trial once the trials and the optimiser's proposals have taken this many seconds"
        " (summed over resumed runs; warm-up and the final evaluation not counted)",
    )
    patience: int | None = Field(default=None, ge=1, description="stop after this many trials without improvement")
    parallel: int = Field(
        default=1,
        ge=1,
        le=64,
        description="trials run at once, at most (local worker processes in the CLI and the library, free workers"
        " of the pool in the service); 1 runs them one after another in the search's own process",
    )
    fixed_recipe: bool = Field(
        default=True,
        description="start from prune's default recipe (the first trial, where the space can express it) and report"
        " that recipe beside the result, pruned on the same calibration sources and read on the same test texts",
    )
    seed: int = Field(default=0, description="seed of the quasi-random trials and the optimiser")
    validation: tuple[DataSource, ...] = Field(
        default_factory=_default_validation_sources, min_length=1, description="validation text the search optimises"
    )
    validation_tokens: int = Field(default=8192, ge=64, description="tokens per validation domain")
    chunk_tokens: int = Field(default=1024, ge=32, description="validation chunk (early-stop step)")
    eval_seq_len: int = Field(default=512, ge=8)
    early_reject: bool = Field(default=True, description="stop a clearly worse trial early")
    reject_z: float = Field(default=2.0, gt=0)
    min_fraction: float = Field(default=0.25, gt=0, le=1)
    top_k: int = Field(default=3, ge=1, description="best trials re-evaluated on more validation text")
    acq_restarts: int = Field(default=8, ge=1)
    raw_samples: int = Field(default=256, ge=4)
    second_objective: Literal["latency", "params"] | None = Field(
        default=None,
        description="also minimise forward latency or non-embedding params; the report gets the Pareto front",
    )
    second_cap: float | None = Field(default=None, gt=0, description="cap on the second objective for the artifact")
    latency_batch: int = Field(default=1, ge=1)
    latency_seq_len: int = Field(default=256, ge=8)
    latency_repeats: int = Field(default=5, ge=1)

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, name: str) -> str:
        return STRATEGIES.check(name)

    @model_validator(mode="after")
    def _cap_needs_objective(self) -> SearchConfig:
        if self.second_cap is not None and self.second_objective is None:
            raise ValueError("second_cap: set second_objective (latency or params) too, or drop the cap")
        return self
