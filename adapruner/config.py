"""Typed configs for every stage, shared by the CLI, the API schema and the job row.

This module must not import torch: the API process validates job specs with it.
Every model forbids unknown fields, so a typo is an error that names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapruner.catalog import BUILTIN_CORPORA, METRICS

Split = Literal["train", "validation", "test"]
PARTITION_SPLITS: tuple[str, ...] = ("train", "validation", "test")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(StrictModel):
    """Where text comes from.

    ``kind``:
      - ``builtin``: a corpus installed with Python or Debian (``name`` from ``BUILTIN_CORPORA``);
      - ``file``: a local ``.txt`` (one document per blank-line separated block) or ``.jsonl`` file;
      - ``hf``: a Hugging Face dataset (``name``, ``config``, ``split``, ``field``; ``data_files`` for
        generic loaders such as ``json``).

    ``split`` for builtin and file sources picks a deterministic partition (train 80%, validation 10%,
    test 10% of fixed-size blocks) so calibration, search validation and the final report never share
    text; ``None`` means the role's default (calibration: train; evaluation: test for builtin corpora,
    the whole file for files). For ``hf`` it is the dataset split name (default ``train``).
    """

    kind: Literal["builtin", "file", "hf"]
    name: str = Field(min_length=1)
    config: str | None = None
    split: str | None = None
    field: str = "text"
    data_files: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DataSource:
        if self.kind == "builtin":
            BUILTIN_CORPORA.check(self.name)
        if self.kind in ("builtin", "file") and self.split not in (None, *PARTITION_SPLITS):
            raise ValueError(f"split {self.split!r} is not one of {', '.join(PARTITION_SPLITS)}")
        if self.kind == "file":
            suffix = Path(self.name).suffix
            if suffix not in (".txt", ".jsonl", ".json", ".md"):
                raise ValueError(f"file {self.name!r}: use a .txt, .md or .jsonl file")
        return self

    @classmethod
    def parse(cls, spec: str) -> DataSource:
        """Parse the CLI shorthand.

        ``pydoc`` / ``builtin:pydoc[:split]``; ``file:PATH[:split]`` or a path ending in .txt/.jsonl;
        ``hf:NAME[:CONFIG[:SPLIT[:FIELD]]]``.
        """
        kind, sep, rest = spec.partition(":")
        if not sep:
            if spec in BUILTIN_CORPORA:
                return cls(kind="builtin", name=spec)
            return cls(kind="file", name=spec)
        if kind == "hf":
            parts = rest.split(":")
            if len(parts) > 4:
                raise ValueError(f"data source {spec!r}: use hf:NAME[:CONFIG[:SPLIT[:FIELD]]]")
            name, config, split, field = (parts + [""] * 4)[:4]
            return cls(kind="hf", name=name, config=config or None, split=split or None, field=field or "text")
        if kind in ("builtin", "file"):
            name, split = rest, None
            head, colon, tail = rest.rpartition(":")
            if colon and tail in PARTITION_SPLITS:
                name, split = head, tail
            return cls(kind=kind, name=name, split=split)
        if len(kind) == 1 and sep:  # a Windows drive letter: C:\path
            return cls(kind="file", name=spec)
        raise ValueError(f"data source {spec!r}: kind must be builtin, file or hf")

    def resolved_split(self, role: Literal["calibration", "evaluation"]) -> str:
        """The split actually read: builtin corpora default to train (calibration) or test (evaluation),
        files to ``all`` (the whole file), HF datasets to ``train``."""
        if self.split:
            return self.split
        if self.kind == "builtin":
            return "train" if role == "calibration" else "test"
        return "all" if self.kind == "file" else "train"

    def label(self) -> str:
        """A short stable name, used in sample ids and reports."""
        base = f"{self.kind}:{self.name}"
        if self.config:
            base += f":{self.config}"
        return base + (f":{self.split}" if self.split else "")


def text_key(source: DataSource, role: Literal["calibration", "evaluation"]) -> tuple:
    """What identifies the text a source reads in a role: two equal keys read the same text."""
    return source.kind, source.name, source.config, source.resolved_split(role)


def _default_calibration_sources() -> tuple[DataSource, ...]:
    return (DataSource(kind="builtin", name="pydoc"),)


def _default_eval_sources() -> tuple[DataSource, ...]:
    return (DataSource(kind="builtin", name="jargon"), DataSource(kind="builtin", name="gnu-standards"))


class ModelSpec(StrictModel):
    """A model: hub id, local folder, ``.gguf`` file, or a built-in alias such as ``smollm2-135m``."""

    source: str = Field(default="smollm2-135m", min_length=1)
    gguf_file: str | None = None
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field(default="auto", description="'auto' picks cuda when present, else cpu")


class CalibrationConfig(StrictModel):
    """Seeded sampling of ``samples`` windows of ``seq_len`` tokens from the training partition."""

    sources: tuple[DataSource, ...] = Field(default_factory=_default_calibration_sources, min_length=1)
    samples: int = Field(default=32, ge=1, le=100_000)
    seq_len: int = Field(default=256, ge=8, le=131_072)
    seed: int = 0


class ImportanceConfig(StrictModel):
    """A weighted mix of registered metrics, each normalised per unit group before mixing."""

    mix: dict[str, float] = Field(default_factory=lambda: {"taylor": 1.0}, min_length=1)
    aggregation: Literal["sum", "mean", "max", "prod"] = "sum"
    normalization: Literal["none", "mean", "max", "l2", "zscore", "rank"] = "mean"
    seed: int = 0

    @field_validator("mix")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        for name, weight in mix.items():
            METRICS.check(name)
            if not weight >= 0:
                raise ValueError(f"weight of metric {name!r} must be >= 0, got {weight}")
        if sum(mix.values()) <= 0:
            raise ValueError("at least one metric weight must be > 0")
        return mix


class PruneConfig(StrictModel):
    """How many parameters to remove and where.

    ``ratio`` is the share of non-embedding parameters removed (embeddings and ``lm_head`` are never
    pruned). ``allocation='protected'`` keeps the first ``protect_first`` and last ``protect_last``
    blocks whole and takes the budget from the others (LLM-Pruner keeps the first and last blocks).
    ``attn_share`` is the share of the removed parameters taken from attention (KV groups); ``None``
    takes the same ratio from attention and MLP as far as whole KV groups allow. ``depth_slope`` tilts
    the per-layer share of the budget linearly with depth: 0 is uniform, positive prunes later layers
    more, negative earlier ones (layer weight ``1 + slope * (2 * position - 1)``, position in [0, 1]).
    """

    ratio: float = Field(default=0.2, ge=0.0, lt=1.0)
    targets: tuple[Literal["heads", "channels"], ...] = ("heads", "channels")
    allocation: Literal["uniform", "protected"] = "uniform"
    protect_first: int = Field(default=4, ge=0)
    protect_last: int = Field(default=2, ge=0)
    attn_share: float | None = Field(default=None, ge=0.0, le=1.0)
    channel_multiple: int = Field(default=8, ge=1)
    min_kv_groups: int = Field(default=1, ge=1)
    depth_slope: float = Field(default=0.0, ge=-1.0, le=1.0)

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, targets: tuple[str, ...]) -> tuple[str, ...]:
        if not targets:
            raise ValueError("name at least one of heads, channels")
        return tuple(dict.fromkeys(targets))


class EvalConfig(StrictModel):
    """Held-out perplexity (sliding window) and speed measurements."""

    texts: tuple[DataSource, ...] = Field(default_factory=_default_eval_sources)
    seq_len: int = Field(default=512, ge=8)
    stride: int | None = Field(
        default=None, ge=1, description="window step; None = seq_len - 1 (windows share one token)"
    )
    max_tokens: int = Field(default=16_384, ge=16)
    batch_size: int = Field(default=4, ge=1)
    speed: bool = True
    speed_batch: int = Field(default=4, ge=1)
    speed_seq_len: int = Field(default=256, ge=8)


class PruneJob(StrictModel):
    """Everything one ``adapruner prune`` run needs; saved with the artifact."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    importance: ImportanceConfig = Field(default_factory=ImportanceConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _no_shared_text(self) -> PruneJob:
        calib = {text_key(s, "calibration") for s in self.calibration.sources}
        for text in self.evaluate.texts:
            if text_key(text, "evaluation") in calib:
                raise ValueError(
                    f"evaluate.texts: {text.label()} is also a calibration source; report on held-out text"
                )
        return self


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


def _default_test_sources() -> tuple[DataSource, ...]:
    return tuple(DataSource(kind="builtin", name=n, split="test") for n in ("jargon", "gnu-standards"))


class SearchSpace(StrictModel):
    """The joint space searched per trial. Every dimension can be fixed (one choice, or a Range with
    ``low == high``) or restricted.

    Calibration: a weight per source in ``sources`` (normalised to a mix; fixed when one source),
    how many samples (``samples``) and which of the candidate pool (``subset_seeds`` seeded subsets).
    Metric: a weight per metric in ``metrics`` (normalised to a simplex), ``aggregations``,
    ``normalizations``. Allocation: ``attn_share``, ``depth_slope``, ``protect_first``/``protect_last``.
    """

    sources: tuple[DataSource, ...] = Field(default_factory=_default_search_sources, min_length=1)
    samples: Range = Field(default_factory=lambda: Range(low=8, high=32))
    seq_len: int = Field(default=256, ge=8)
    pool_size: int = Field(default=32, ge=1, description="candidate calibration samples per source")
    subset_seeds: int = Field(default=8, ge=1, description="number of seeded subsets of the pool to choose from")
    metrics: tuple[str, ...] = ("taylor", "taylor_vector", "wanda", "flap", "l2")
    aggregations: tuple[Literal["sum", "mean", "max", "prod"], ...] = ("sum",)
    normalizations: tuple[Literal["none", "mean", "max", "l2", "zscore", "rank"], ...] = ("mean", "rank")
    attn_share: Range = Field(default_factory=lambda: Range(low=0.0, high=0.3))
    depth_slope: Range = Field(default_factory=lambda: Range(low=-0.5, high=0.5))
    protect_first: Range = Field(default_factory=lambda: _fixed(0))
    protect_last: Range = Field(default_factory=lambda: _fixed(0))

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
        for name in ("attn_share",):
            r = getattr(self, name)
            if r.low < 0 or r.high > 1:
                raise ValueError(f"{name}: must lie in 0..1")
        if self.depth_slope.low < -1 or self.depth_slope.high > 1:
            raise ValueError("depth_slope: must lie in -1..1")
        if self.protect_first.low < 0 or self.protect_last.low < 0:
            raise ValueError("protect_first/protect_last: must be >= 0")
        return self


class SearchConfig(StrictModel):
    """Budget and objective of a search.

    The objective is the log perplexity (mean NLL per token) of the pruned model on ``validation``
    text, read in ``chunk_tokens`` chunks interleaved across domains; a trial whose running estimate is
    clearly worse than the incumbent (``reject_z`` standard errors) stops after ``min_fraction`` of the
    chunks. ``validation`` must never be the text the final report uses (``evaluate.texts``).
    """

    trials: int = Field(default=30, ge=1, le=10_000)
    n_init: int = Field(default=8, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0)
    patience: int | None = Field(default=None, ge=1, description="stop after this many trials without improvement")
    seed: int = 0
    validation: tuple[DataSource, ...] = Field(default_factory=_default_validation_sources, min_length=1)
    validation_tokens: int = Field(default=8192, ge=64, description="tokens per validation domain")
    chunk_tokens: int = Field(default=1024, ge=32)
    eval_seq_len: int = Field(default=512, ge=8)
    early_reject: bool = True
    reject_z: float = Field(default=2.0, gt=0)
    min_fraction: float = Field(default=0.25, gt=0, le=1)
    top_k: int = Field(default=3, ge=1, description="best trials re-evaluated on more validation text")
    acq_restarts: int = Field(default=8, ge=1)
    raw_samples: int = Field(default=256, ge=4)


class SearchJob(StrictModel):
    """Everything one ``adapruner search`` run needs; the worker stores it as the job row's spec."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    ratio: float = Field(default=0.2, gt=0.0, lt=1.0)
    targets: tuple[Literal["heads", "channels"], ...] = ("heads", "channels")
    space: SearchSpace = Field(default_factory=SearchSpace)
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluate: EvalConfig = Field(default_factory=lambda: EvalConfig(texts=_default_test_sources()))

    @model_validator(mode="after")
    def _held_out(self) -> SearchJob:
        chosen_on = {text_key(s, "evaluation") for s in self.search.validation}
        chosen_on |= {text_key(s, "calibration") for s in self.space.sources}
        for text in self.evaluate.texts:
            if text_key(text, "evaluation") in chosen_on:
                raise ValueError(
                    f"evaluate.texts: {text.label()} is also used to choose (calibration or validation); "
                    "report on held-out text, e.g. the test split"
                )
        return self
