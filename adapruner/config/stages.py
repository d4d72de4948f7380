"""The configs of a job's stages: model, calibration, importance, pruning, compensation, evaluation,
recovery and export."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

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
from adapruner.config.data import DataSource
from adapruner.config.values import StrictModel


def _default_calibration_sources() -> tuple[DataSource, ...]:
    return (DataSource(kind="builtin", name="pydoc"),)


def _default_eval_sources() -> tuple[DataSource, ...]:
    return (DataSource(kind="builtin", name="jargon"), DataSource(kind="builtin", name="gnu-standards"))


class ModelSpec(StrictModel):
    """A model: hub id, local folder, ``.gguf`` file, or a built-in alias such as ``smollm2-135m``."""

    source: str = Field(default="smollm2-135m", min_length=1, description="hub id, folder, .gguf file or alias")
    gguf_file: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="weights' dtype; 'auto' is bfloat16 on CUDA, float32 on the CPU"
    )
    device: str = Field(default="auto", description="'auto' picks cuda when present, else cpu")
    sequential: bool = Field(
        default=False,
        description="layer by layer: the weights stay on the CPU and each decoder layer visits the device in "
        "turn, so a model larger than the GPU can be pruned; activation metrics only (see docs/gpu.md)",
    )
    gpus: int = Field(
        default=1,
        ge=1,
        le=64,
        description="GPUs the job needs; above 1 the model is spread over them (accelerate device_map)",
    )

    @model_validator(mode="after")
    def _check_placement(self) -> ModelSpec:
        if self.gpus > 1 and self.sequential:
            raise ValueError("sequential runs on one GPU; set gpus to 1 or sequential to false")
        if self.gpus > 1 and self.device not in ("auto", "cuda"):
            raise ValueError(f"gpus {self.gpus} needs device 'auto' or 'cuda', got {self.device!r}")
        return self


class CalibrationConfig(StrictModel):
    """Seeded sampling of ``samples`` windows of ``seq_len`` tokens from the training partition."""

    sources: tuple[DataSource, ...] = Field(
        default_factory=_default_calibration_sources, min_length=1, description="text the statistics are computed on"
    )
    samples: int = Field(default=32, ge=1, le=100_000, description="calibration windows")
    seq_len: int = Field(default=256, ge=8, le=131_072, description="tokens per calibration window")
    seed: int = Field(default=0, description="seed of the window sampling")


class ImportanceConfig(StrictModel):
    """A weighted mix of registered metrics, each normalised per unit group before mixing."""

    mix: dict[str, float] = Field(
        default_factory=lambda: {"bip": 1.0}, min_length=1, description="metric name -> weight"
    )
    aggregation: Literal["sum", "mean", "max", "prod"] = Field(
        default="sum", description="how the scores of a unit's weights combine"
    )
    normalization: Literal["none", "mean", "max", "l2", "zscore", "rank"] = Field(
        default="mean", description="how each metric's scores are normalised per unit group before mixing"
    )
    seed: int = Field(default=0, description="seed of the random metric")

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

    ratio: float = Field(default=0.2, ge=0.0, lt=1.0, description="share of non-embedding params to remove")
    targets: tuple[Literal["heads", "channels"], ...] = Field(
        default=("channels",), description="units removed: KV head groups, MLP channels"
    )
    allocation: Literal["uniform", "protected", "nirvana"] = Field(
        default="uniform", description="how the removed params are spread over the layers"
    )
    protect_first: int = Field(default=4, ge=0, description="first blocks kept whole with allocation 'protected'")
    protect_last: int = Field(default=2, ge=0, description="last blocks kept whole with allocation 'protected'")
    attn_share: float | None = Field(
        default=None, ge=0.0, le=1.0, description="share of the removed params taken from attention"
    )
    attn_gamma: float | None = Field(
        default=None, gt=0.0, description="NIRVANA's gamma: MLP sparsity / attention sparsity (instead of attn_share)"
    )
    channel_multiple: int = Field(
        default=DEFAULT_CHANNEL_MULTIPLE, ge=1, description="kept channels: a multiple of this"
    )
    uniform: bool = Field(
        default=False,
        description="every layer keeps the same KV groups and channels (one width, as stock runtimes read)",
    )
    min_kv_groups: int = Field(default=1, ge=1)
    depth_slope: float = Field(default=0.0, ge=-1.0, le=1.0)
    depth_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of the removed params taken as whole blocks (0..1)"
    )
    block_criterion: str = Field(default="block_influence", description="which blocks go with depth_share")

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

    method: str = Field(default="obs", description="update of the remaining weights after pruning")
    damping: float | None = Field(
        default=None, ge=0.0, description="damping relative to the mean input variance (None: the method's default)"
    )

    @field_validator("method")
    @classmethod
    def _check_method(cls, method: str) -> str:
        return COMPENSATORS.check(method)


class EvalConfig(StrictModel):
    """Held-out perplexity (sliding window) and speed measurements."""

    texts: tuple[DataSource, ...] = Field(
        default_factory=_default_eval_sources, description="held-out text the report's perplexity is measured on"
    )
    seq_len: int = Field(default=512, ge=8, description="tokens per evaluation window")
    stride: int | None = Field(
        default=None, ge=1, description="window step; None = seq_len - 1 (windows share one token)"
    )
    max_tokens: int = Field(default=16_384, ge=16, description="max tokens of each evaluation text")
    batch_size: int = Field(default=4, ge=1)
    speed: bool = Field(default=True, description="measure the throughput")
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

    def perplexity_only(self) -> EvalConfig:
        """The same texts and windows without speed or zero-shot measurements: how a search reads the
        candidates and the fixed recipe it compares them with."""
        return self.model_copy(update={"speed": False, "zero_shot": ()})


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

    method: str = Field(default="none", description="training after pruning")
    source: DataSource = Field(
        default_factory=_default_recover_source, description="text trained on (its train partition)"
    )
    steps: int = Field(default=100, ge=1, le=1_000_000, description="optimiser steps")
    max_tokens: int | None = Field(default=None, ge=1, description="token budget; None = steps x batch x seq_len")
    batch_size: int = Field(default=4, ge=1, description="windows per step")
    seq_len: int = Field(default=256, ge=8, description="tokens per training window")
    learning_rate: float | None = Field(
        default=None, gt=0, lt=1, description="learning rate (None: lora 2e-4, cpt 2e-5)"
    )
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    rank: int = Field(default=8, ge=1, description="LoRA rank")
    alpha: float = Field(default=16.0, gt=0, description="LoRA alpha")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = LORA_TARGETS
    heldout_tokens: int = Field(default=8192, ge=16)
    seed: int = Field(default=0, description="seed of the training run")

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


EXPORT_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")


class ExportConfig(StrictModel):
    """Files for a serving runtime, written into the artifact folder after the pruned model: one per name
    in ``formats`` (from ``EXPORT_FORMATS``): ``gguf`` writes ``model-TYPE.gguf`` (llama.cpp), ``hf`` the
    folder ``hf-TYPE`` (stock ``from_pretrained``; uniform widths only), ``decilm`` the folder
    ``decilm-TYPE`` (vLLM ``nemotron_nas``). ``type``: the weight type; ``None`` is f16 for gguf and the
    model's own dtype otherwise; ``q8_0`` is GGUF only. A model a format cannot hold fails the job with
    the reason (the pruned artifact is saved first)."""

    formats: tuple[str, ...] = Field(default=(), description="serving formats written beside the pruned model")
    type: Literal["f32", "f16", "bf16", "q8_0"] | None = Field(
        default=None, description="weight type (None: f16 for gguf, else the model's)"
    )

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
