"""Typed configs for every stage, shared by the CLI, the API schema and the job row.

This module must not import torch: the API process validates job specs with it.
Every model forbids unknown fields, so a typo is an error that names the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapruner.catalog import (
    BLOCK_CRITERIA,
    BUILTIN_CORPORA,
    COMPENSATORS,
    EXPORT_FORMATS,
    METRICS,
    OFFLINE_ZERO_SHOT,
    RECOVERY,
    ZERO_SHOT_TASKS,
)

Split = Literal["train", "validation", "test"]
PARTITION_SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: The search confirms its top trials on this many times ``search.validation_tokens`` per domain.
CONFIRM_TOKENS_FACTOR = 4


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent as JSON text (a NUL character or a lone UTF-16 surrogate), or None."""
    if "\x00" in text:
        return "Input should not contain a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Input should be valid Unicode text (it has a lone surrogate)"
    return None


def value_problem(value: object, loc: list[str | int]) -> tuple[list[str | int], str] | None:
    """The first place inside ``value`` (text, a path, a number, or containers of them, e.g. parsed JSON) that
    cannot be stored or sent as JSON (NaN/Infinity, NUL, a lone surrogate), with the reason; None if none."""
    if isinstance(value, float) and not math.isfinite(value):
        return loc, "Input should be a finite number (JSON has no NaN or Infinity)"
    if isinstance(value, str | Path):
        problem = text_problem(str(value))
        return (loc, problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key) if isinstance(key, str) else None
            if problem:
                return [*loc, ascii(key)], f"field name: {problem}"
            found = value_problem(item, [*loc, key])
            if found:
                return found
    if isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = value_problem(item, [*loc, index])
            if found:
                return found
    return None


class StrictModel(BaseModel):
    """Every config: unknown fields, NaN/Infinity and text with NUL or lone surrogates are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        found = value_problem(value, [])
        if found:
            raise ValueError(found[1])
        return value


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
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="weights' dtype; 'auto' is bfloat16 on CUDA, float32 on the CPU"
    )
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


#: Kept MLP channels are a multiple of this (hardware-friendly matrix shapes) unless a job says otherwise.
DEFAULT_CHANNEL_MULTIPLE = 8


class PruneConfig(StrictModel):
    """How many parameters to remove and where.

    ``ratio`` is the share of non-embedding parameters removed (embeddings and ``lm_head`` are never
    pruned). ``allocation='protected'`` keeps the first ``protect_first`` and last ``protect_last``
    blocks whole and takes the budget from the others (LLM-Pruner keeps the first and last blocks).
    ``attn_share`` is the share of the removed parameters taken from attention (KV groups); ``None``
    takes the same ratio from attention and MLP as far as whole KV groups allow. ``attn_gamma`` is
    NIRVANA's gamma, the other way to set that split: MLP sparsity = ``attn_gamma`` x attention sparsity
    (1 is the default split; the NIRVANA paper uses 3-3.4 on Llama-3). ``depth_slope`` tilts
    the per-layer share of the budget linearly with depth: 0 is uniform, positive prunes later layers
    more, negative earlier ones (layer weight ``1 + slope * (2 * position - 1)``, position in [0, 1]).
    ``allocation='nirvana'`` (NIRVANA's adaptive sparsity allocation) keeps the attention/MLP split but
    lets the raw (unnormalised) scores decide which layers lose the units: the globally lowest-scored KV
    groups and channel chunks go first, so layers differ in how much they lose (``depth_slope`` unused).
    ``depth_share`` is the share of the removed parameters taken as whole decoder blocks (depth pruning,
    Shortened LLaMA / ShortGPT), rounded to whole blocks; the rest is removed in width. The blocks with
    the lowest ``block_criterion`` score go (a name from ``BLOCK_CRITERIA``: ``ppl``, ``taylor_plus``,
    ``block_influence``); with ``allocation='protected'`` the protected blocks are never removed.
    """

    ratio: float = Field(default=0.2, ge=0.0, lt=1.0)
    targets: tuple[Literal["heads", "channels"], ...] = ("heads", "channels")
    allocation: Literal["uniform", "protected", "nirvana"] = "uniform"
    protect_first: int = Field(default=4, ge=0)
    protect_last: int = Field(default=2, ge=0)
    attn_share: float | None = Field(default=None, ge=0.0, le=1.0)
    attn_gamma: float | None = Field(default=None, gt=0.0)
    channel_multiple: int = Field(default=DEFAULT_CHANNEL_MULTIPLE, ge=1)
    uniform: bool = Field(
        default=False,
        description="every layer keeps the same KV groups and channels (one width, as stock runtimes read)",
    )
    min_kv_groups: int = Field(default=1, ge=1)
    depth_slope: float = Field(default=0.0, ge=-1.0, le=1.0)
    depth_share: float = Field(default=0.0, ge=0.0, le=1.0)
    block_criterion: str = "block_influence"

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, targets: tuple[str, ...]) -> tuple[str, ...]:
        if not targets:
            raise ValueError("name at least one of heads, channels")
        return tuple(dict.fromkeys(targets))

    @field_validator("block_criterion")
    @classmethod
    def _check_block_criterion(cls, name: str) -> str:
        return BLOCK_CRITERIA.check(name)

    @model_validator(mode="after")
    def _one_split(self) -> PruneConfig:
        if self.attn_share is not None and self.attn_gamma is not None:
            raise ValueError("attn_gamma: attn_share sets the attention/MLP split too; set only one of them")
        if self.uniform and (self.allocation != "uniform" or self.depth_slope != 0):
            raise ValueError(
                "uniform: one width for every layer needs allocation 'uniform' and depth_slope 0 "
                f"(got allocation {self.allocation!r}, depth_slope {self.depth_slope:g})"
            )
        return self


class CompensateConfig(StrictModel):
    """Update of the remaining weights after pruning, from the dense model's calibration statistics.

    ``method``: a name from ``COMPENSATORS`` (``none``, ``bias``, ``reformation``, ``obs``,
    ``numerical``); ``damping`` is relative to the mean diagonal of the input covariance (``None``: the
    method's default).
    """

    method: str = "none"
    damping: float | None = Field(default=None, ge=0.0)

    @field_validator("method")
    @classmethod
    def _check_method(cls, method: str) -> str:
        return COMPENSATORS.check(method)


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
    gen_prompt_len: int = Field(default=128, ge=1, description="prompt tokens before timed generation")
    gen_new_tokens: int = Field(default=32, ge=1, description="new tokens generated with the KV cache")
    gen_batch: int = Field(default=8, ge=1, description="batch of the generation throughput measurement")
    zero_shot: tuple[str, ...] = Field(
        default=(), description="lm-eval tasks: standard names (online) or cloze:CORPUS (offline, built-in corpus)"
    )
    zero_shot_limit: int | None = Field(default=None, ge=1, description="examples per zero-shot task (None: all)")

    @field_validator("zero_shot")
    @classmethod
    def _check_zero_shot(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        for task in tasks:
            kind, colon, corpus = task.partition(":")
            if colon and kind in OFFLINE_ZERO_SHOT:
                BUILTIN_CORPORA.check(corpus)
            elif colon or task not in ZERO_SHOT_TASKS:
                offline = ", ".join(f"{k}:CORPUS" for k in OFFLINE_ZERO_SHOT)
                raise ValueError(
                    f"unknown zero-shot task {task!r}; valid: {', '.join(ZERO_SHOT_TASKS)} (online), "
                    f"{offline} with CORPUS one of {', '.join(BUILTIN_CORPORA.names())} (offline)"
                )
        return tuple(dict.fromkeys(tasks))


def _default_recover_source() -> DataSource:
    return DataSource(kind="builtin", name="pydoc")


#: Attention and MLP projections of LLaMA-family blocks: the default LoRA targets (LLM-Pruner tunes these).
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class RecoverConfig(StrictModel):
    """Training after pruning, on the training partition of ``source`` (never the report text).

    ``method``: ``none``, ``lora`` (low-rank adapters of ``rank`` / ``alpha`` / ``dropout`` on
    ``target_modules``, merged into the weights afterwards, as LLM-Pruner) or ``cpt`` (continued
    pretraining of every parameter). Both train a causal LM loss on windows of ``seq_len`` tokens,
    ``batch_size`` windows per step, for ``steps`` steps or until ``max_tokens`` tokens were trained on,
    whichever comes first. ``learning_rate`` ``None`` is the method's default (lora 2e-4, cpt 2e-5).
    ``heldout_tokens`` of the source's validation partition measure the PPL before and after.
    """

    method: str = "none"
    source: DataSource = Field(default_factory=_default_recover_source)
    steps: int = Field(default=100, ge=1, le=1_000_000)
    max_tokens: int | None = Field(default=None, ge=1, description="token budget; None = steps x batch x seq_len")
    batch_size: int = Field(default=4, ge=1)
    seq_len: int = Field(default=256, ge=8)
    learning_rate: float | None = Field(default=None, gt=0, lt=1)
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = LORA_TARGETS
    heldout_tokens: int = Field(default=8192, ge=16)
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _check_method(cls, method: str) -> str:
        if method != "none" and method not in RECOVERY:
            raise ValueError(f"unknown recovery method {method!r}; valid: none, {', '.join(RECOVERY.names())}")
        return method

    @field_validator("target_modules")
    @classmethod
    def _check_targets(cls, targets: tuple[str, ...]) -> tuple[str, ...]:
        if not targets:
            raise ValueError(f"name at least one module, e.g. {', '.join(LORA_TARGETS)}")
        return tuple(dict.fromkeys(targets))

    @model_validator(mode="after")
    def _train_split(self) -> RecoverConfig:
        if self.source.kind != "hf" and self.source.split in ("validation", "test"):
            raise ValueError(
                f"source: {self.source.label()} is a held-out partition; train on the train partition (no split)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    @property
    def train_source(self) -> DataSource:
        """The text trained on: a builtin or file source's train partition unless a split is named."""
        if self.source.kind == "hf" or self.source.split:
            return self.source
        return self.source.model_copy(update={"split": "train"})

    @property
    def heldout_source(self) -> DataSource:
        """The text the before/after PPL of recovery is measured on: the source's validation split."""
        return self.source.model_copy(update={"split": "validation"})


def check_recovery_held_out(recover: RecoverConfig, texts: tuple[DataSource, ...]) -> None:
    """Raise when recovery would train on text the final report is measured on (a whole file, split
    ``all``, overlaps each of its partitions)."""
    if not recover.enabled:
        return
    kind, name, config, split = text_key(recover.train_source, "calibration")
    for text in texts:
        other = text_key(text, "evaluation")
        if other[:3] == (kind, name, config) and (other[3] == split or "all" in (other[3], split)):
            raise ValueError(
                f"recover.source: {recover.source.label()} is also in evaluate.texts; "
                "recover on other text than the report's"
            )


EXPORT_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")


class ExportConfig(StrictModel):
    """Files for a serving runtime, written into the artifact folder after the pruned model: one per name
    in ``formats`` (from ``EXPORT_FORMATS``): ``gguf`` writes ``model-TYPE.gguf`` (llama.cpp), ``hf`` the
    folder ``hf-TYPE`` (stock ``from_pretrained``; uniform widths only), ``decilm`` the folder
    ``decilm-TYPE`` (vLLM ``nemotron_nas``). ``type``: the weight type; ``None`` is f16 for gguf and the
    model's own dtype otherwise; ``q8_0`` is GGUF only. A model a format cannot hold fails the job with
    the reason (the pruned artifact is saved first)."""

    formats: tuple[str, ...] = ()
    type: Literal["f32", "f16", "bf16", "q8_0"] | None = None

    @field_validator("formats")
    @classmethod
    def _check_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        for name in formats:
            EXPORT_FORMATS.check(name)
        return tuple(dict.fromkeys(formats))

    @model_validator(mode="after")
    def _check_type(self) -> ExportConfig:
        if self.type == "q8_0" and set(self.formats) - {"gguf"}:
            raise ValueError("type: q8_0 is a GGUF type; export hf/decilm as f32, f16 or bf16")
        return self


class PruneJob(StrictModel):
    """Everything one ``adapruner prune`` run needs; saved with the artifact."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    importance: ImportanceConfig = Field(default_factory=ImportanceConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    compensate: CompensateConfig = Field(default_factory=CompensateConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    recover: RecoverConfig = Field(default_factory=RecoverConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _no_shared_text(self) -> PruneJob:
        calib = {text_key(s, "calibration") for s in self.calibration.sources}
        for text in self.evaluate.texts:
            if text_key(text, "evaluation") in calib:
                raise ValueError(
                    f"evaluate.texts: {text.label()} is also a calibration source; report on held-out text"
                )
        check_recovery_held_out(self.recover, self.evaluate.texts)
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
    Compensation: ``compensators`` (names from ``COMPENSATORS``; a categorical dimension when more than one).
    Depth: ``depth_share`` (share of the budget removed as whole blocks; fixed at 0 by default) and
    ``block_criteria`` (names from ``BLOCK_CRITERIA``; a categorical dimension when more than one).

    ``seq_lens``: the calibration window lengths to choose from (a categorical dimension when more than
    one; ``seq_len: N`` is accepted for ``seq_lens: [N]``). Every choice has its own pool of statistics,
    so the warm-up costs about ``sum(seq_lens) / seq_lens[0]`` times that of the first alone; the default
    is one length. ``ratio``: a searched pruning ratio (``None``: the job's ``ratio``), only with a second
    objective (quality alone always prefers the lowest ratio); required for ``second_objective="params"``,
    since at a fixed ratio the parameter count barely moves.
    """

    sources: tuple[DataSource, ...] = Field(default_factory=_default_search_sources, min_length=1)
    samples: Range = Field(default_factory=lambda: Range(low=8, high=32))
    seq_lens: tuple[int, ...] = Field(default=(256,), min_length=1, description="calibration window lengths")
    pool_size: int = Field(default=32, ge=1, description="candidate calibration samples per source")
    subset_seeds: int = Field(default=8, ge=1, description="number of seeded subsets of the pool to choose from")
    metrics: tuple[str, ...] = ("taylor", "taylor_vector", "wanda", "flap", "l2")
    aggregations: tuple[Literal["sum", "mean", "max", "prod"], ...] = ("sum",)
    normalizations: tuple[Literal["none", "mean", "max", "l2", "zscore", "rank"], ...] = ("mean", "rank")
    attn_share: Range = Field(default_factory=lambda: Range(low=0.0, high=0.3))
    depth_slope: Range = Field(default_factory=lambda: Range(low=-1.0, high=1.0))
    protect_first: Range = Field(default_factory=lambda: _fixed(0))
    protect_last: Range = Field(default_factory=lambda: _fixed(0))
    compensators: tuple[str, ...] = ("none",)
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

    @model_validator(mode="before")
    @classmethod
    def _legacy_seq_len(cls, data):
        if isinstance(data, dict) and "seq_len" in data:
            if "seq_lens" in data:
                raise ValueError("give seq_lens or seq_len, not both")
            data = {k: v for k, v in data.items() if k != "seq_len"} | {"seq_lens": (data["seq_len"],)}
        return data

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
    """

    trials: int = Field(default=30, ge=1, le=10_000)
    n_init: int = Field(default=8, ge=1)
    time_budget_s: float | None = Field(
        default=None,
        gt=0,
        description="start no trial once the trials and the optimiser's proposals have taken this many seconds"
        " (summed over resumed runs; warm-up and the final evaluation not counted)",
    )
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
    second_objective: Literal["latency", "params"] | None = None
    second_cap: float | None = Field(default=None, gt=0, description="cap on the second objective for the artifact")
    latency_batch: int = Field(default=1, ge=1)
    latency_seq_len: int = Field(default=256, ge=8)
    latency_repeats: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _cap_needs_objective(self) -> SearchConfig:
        if self.second_cap is not None and self.second_objective is None:
            raise ValueError("second_cap: set second_objective (latency or params) too, or drop the cap")
        return self


class SearchJob(StrictModel):
    """Everything one ``adapruner search`` run needs; the worker stores it as the job row's spec."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    ratio: float = Field(default=0.2, gt=0.0, lt=1.0)
    targets: tuple[Literal["heads", "channels"], ...] = ("heads", "channels")
    space: SearchSpace = Field(default_factory=SearchSpace)
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluate: EvalConfig = Field(default_factory=lambda: EvalConfig(texts=_default_test_sources()))
    recover: RecoverConfig = Field(default_factory=RecoverConfig, description="applied to the best trial")
    export: ExportConfig = Field(default_factory=ExportConfig, description="formats written for the best trial")

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
        check_recovery_held_out(self.recover, self.evaluate.texts)
        return self

    @model_validator(mode="after")
    def _searched_ratio(self) -> SearchJob:
        searched = self.space.ratio is not None and not self.space.ratio.fixed
        if searched and self.search.second_objective is None:
            raise ValueError(
                "space.ratio: a searched ratio needs search.second_objective (quality alone prefers the lowest "
                "ratio); fix the ratio with the job's ratio or set a second objective"
            )
        if self.search.second_objective == "params" and not searched:
            raise ValueError(
                "space.ratio: search.second_objective 'params' needs a searched ratio range (low < high), "
                "e.g. {low: 0.1, high: 0.3}: at a fixed ratio the parameter count barely moves"
            )
        return self


class JobOptions(StrictModel):
    """How the service runs a job: ``deadline_s`` from its first start (``None``: the server default),
    ``max_attempts`` deliveries before it is dead-lettered (``None``: the server default)."""

    deadline_s: float | None = Field(default=None, gt=0)
    max_attempts: int | None = Field(default=None, ge=1, le=20)


class PruneRequest(JobOptions):
    """A prune job submitted to the service."""

    kind: Literal["prune"] = "prune"
    spec: PruneJob = Field(default_factory=PruneJob)


class SearchRequest(JobOptions):
    """A search job submitted to the service."""

    kind: Literal["search"] = "search"
    spec: SearchJob = Field(default_factory=SearchJob)


JOB_SPECS: dict[str, type[StrictModel]] = {"prune": PruneJob, "search": SearchJob}
