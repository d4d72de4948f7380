"""The search space as optimiser dimensions, and a trial's parameters as a pruning recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapruner.config import (
    CalibrationConfig,
    CompensateConfig,
    ImportanceConfig,
    PruneConfig,
    PruneJob,
    Range,
    SearchJob,
    SearchSpace,
)
from adapruner.search.optimizer import Dim

SOURCE_PREFIX, METRIC_PREFIX = "source:", "metric:"


@dataclass(frozen=True)
class Recipe:
    """What one trial prunes with: calibration choice, metric mix, allocation and compensation."""

    source_weights: dict[str, float]
    samples: int
    subset_seed: int
    mix: dict[str, float]
    aggregation: str
    normalization: str
    attn_share: float | None  # None: the same ratio from attention and MLP
    depth_slope: float
    protect_first: int
    protect_last: int
    compensate: str  # a COMPENSATORS name
    seq_len: int  # calibration window length: picks the pool of statistics
    ratio: float | None  # a searched pruning ratio; None: the job's
    depth_share: float  # share of the budget removed as whole blocks
    block_criterion: str  # a BLOCK_CRITERIA name: which blocks go
    channel_multiple: int  # the space's shape constraints, the same in every trial
    uniform: bool

    def prune_config(self, *, ratio: float, targets: tuple[str, ...]) -> PruneConfig:
        """The prune config of this recipe; ``ratio`` (the job's) applies unless the recipe searched one."""
        protected = self.protect_first > 0 or self.protect_last > 0
        return PruneConfig(
            ratio=ratio if self.ratio is None else self.ratio,
            targets=targets,
            allocation="protected" if protected else "uniform",
            protect_first=self.protect_first,
            protect_last=self.protect_last,
            attn_share=self.attn_share if {"heads", "channels"} <= set(targets) else None,
            depth_slope=self.depth_slope,
            depth_share=self.depth_share,
            block_criterion=self.block_criterion,
            channel_multiple=self.channel_multiple,
            uniform=self.uniform,
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def prune_job(self, job: SearchJob) -> tuple[PruneJob, list[str]]:
        """The prune job closest to this recipe of ``job``, and what it cannot carry over: a prune job draws
        its samples evenly from its sources (afresh, with the search's seed), not a weighted subset of the
        search's candidate pool."""
        weights = {s.label(): self.source_weights.get(s.label(), 0.0) for s in job.space.sources}
        sources = tuple(s for s in job.space.sources if weights[s.label()] > 0) or job.space.sources
        differs = [
            "calibration: the samples are drawn afresh from the sources"
            f" (the trial took seeded subset {self.subset_seed} of the search's candidate pool)"
        ]
        used = [weights[s.label()] for s in sources]
        if len(used) > 1 and max(used) - min(used) > 1e-6:
            mix = ", ".join(f"{s.label()} {w:.2f}" for s, w in zip(sources, used, strict=True))
            differs.append(f"calibration: a prune job splits its samples evenly over its sources (the trial weighted {mix})")
        spec = PruneJob(
            model=job.model,
            calibration=CalibrationConfig(
                sources=sources, samples=self.samples, seq_len=self.seq_len, seed=job.search.seed
            ),
            importance=ImportanceConfig(
                mix={k: w for k, w in self.mix.items() if w > 0},
                aggregation=self.aggregation,
                normalization=self.normalization,
                seed=job.search.seed,
            ),
            prune=self.prune_config(ratio=job.ratio, targets=job.targets),
            compensate=CompensateConfig(method=self.compensate),
            evaluate=job.evaluate,
            recover=job.recover,
        )
        return spec, differs


def _range_dim(name: str, r: Range, kind: str) -> Dim | None:
    return None if r.fixed else Dim(name, kind, low=r.low, high=r.high)


def dims(space: SearchSpace) -> list[Dim]:
    """The free dimensions of ``space`` (fixed ones are left out and filled in by :func:`decode`)."""
    out: list[Dim | None] = []
    if len(space.sources) > 1:
        out += [Dim(SOURCE_PREFIX + s.label(), "float") for s in space.sources]
    out.append(_range_dim("samples", space.samples, "int"))
    if space.subset_seeds > 1:
        out.append(Dim("subset_seed", "int", low=0, high=space.subset_seeds - 1))
    if len(space.metrics) > 1:
        out += [Dim(METRIC_PREFIX + m, "float") for m in space.metrics]
    if len(space.aggregations) > 1:
        out.append(Dim("aggregation", "choice", choices=space.aggregations))
    if len(space.normalizations) > 1:
        out.append(Dim("normalization", "choice", choices=space.normalizations))
    out.append(_range_dim("attn_share", space.attn_share, "float"))
    out.append(_range_dim("depth_slope", space.depth_slope, "float"))
    out.append(_range_dim("protect_first", space.protect_first, "int"))
    out.append(_range_dim("protect_last", space.protect_last, "int"))
    if len(space.compensators) > 1:
        out.append(Dim("compensate", "choice", choices=space.compensators))
    if len(space.seq_lens) > 1:
        out.append(Dim("seq_len", "choice", choices=tuple(str(n) for n in space.seq_lens)))
    if space.ratio is not None:
        out.append(_range_dim("ratio", space.ratio, "float"))
    out.append(_range_dim("depth_share", space.depth_share, "float"))
    if len(space.block_criteria) > 1:
        out.append(Dim("block_criterion", "choice", choices=space.block_criteria))
    return [d for d in out if d is not None]


def fixed_params(job: SearchJob) -> dict[str, Any] | None:
    """The parameters of ``job``'s space that decode to ``prune``'s default recipe (its metric mix, units,
    compensator and uniform allocation without depth pruning) at the job's ratio, the sources weighted
    equally, in the space's first calibration window length, with prune's calibration size as far as the
    space's range of samples allows; ``None`` when the space cannot express that recipe (a default metric or the
    default compensator not searched, or a range without the default's value)."""
    space, prune, importance = job.space, PruneConfig(), ImportanceConfig()
    calibration = CalibrationConfig()
    wanted: dict[str, Any] = {SOURCE_PREFIX + s.label(): 1.0 for s in space.sources}
    wanted |= {METRIC_PREFIX + m: float(importance.mix.get(m, 0.0)) for m in space.metrics}
    wanted |= {
        "samples": min(max(calibration.samples, int(space.samples.low)), int(space.samples.high)),
        "subset_seed": 0,
        "aggregation": importance.aggregation,
        "normalization": importance.normalization,
        "attn_share": 0.0 if set(prune.targets) == {"channels"} else prune.attn_share,
        "depth_slope": prune.depth_slope,
        "protect_first": 0,
        "protect_last": 0,
        "compensate": CompensateConfig().method,
        "seq_len": str(space.seq_lens[0]),  # as the fixed baseline of the report calibrates
        "ratio": job.ratio,
        "depth_share": prune.depth_share,
        "block_criterion": space.block_criteria[0],
    }
    free = dims(space)
    params = {d.name: wanted[d.name] for d in free}
    if not all(d.contains(params[d.name]) for d in free):
        return None
    return params if _is_default(decode(space, params), job) else None


def _is_default(recipe: Recipe, job: SearchJob) -> bool:
    """Whether ``recipe`` prunes as ``prune``'s defaults do at ``job.ratio`` (attention kept whole is the
    same as pruning channels only)."""
    prune, importance = PruneConfig(), ImportanceConfig()
    config = recipe.prune_config(ratio=job.ratio, targets=job.targets)
    units = set(config.targets) if config.attn_share != 0.0 else {"channels"}
    return (
        {k: w for k, w in recipe.mix.items() if w > 0} == _simplex(importance.mix)
        and (recipe.aggregation, recipe.normalization) == (importance.aggregation, importance.normalization)
        and recipe.compensate == CompensateConfig().method
        and units == set(prune.targets)
        and (config.allocation, config.depth_slope, config.depth_share, config.ratio)
        == (prune.allocation, prune.depth_slope, prune.depth_share, job.ratio)
    )


def _simplex(raw: dict[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    if total <= 0:
        return {k: 1 / len(raw) for k in raw}
    return {k: v / total for k, v in raw.items()}


def decode(space: SearchSpace, params: dict[str, Any]) -> Recipe:
    """The recipe for a trial's ``params`` (the optimiser's values for the free dimensions)."""

    def value(name: str, r: Range) -> float:
        return float(params[name]) if name in params else r.low

    sources = [s.label() for s in space.sources]
    metrics = list(space.metrics)
    return Recipe(
        source_weights=_simplex({s: float(params.get(SOURCE_PREFIX + s, 1.0)) for s in sources}),
        samples=int(round(value("samples", space.samples))),
        subset_seed=int(params.get("subset_seed", 0)),
        mix=_simplex({m: float(params.get(METRIC_PREFIX + m, 1.0)) for m in metrics}),
        aggregation=str(params.get("aggregation", space.aggregations[0])),
        normalization=str(params.get("normalization", space.normalizations[0])),
        attn_share=value("attn_share", space.attn_share),
        depth_slope=value("depth_slope", space.depth_slope),
        protect_first=int(round(value("protect_first", space.protect_first))),
        protect_last=int(round(value("protect_last", space.protect_last))),
        compensate=str(params.get("compensate", space.compensators[0])),
        seq_len=int(params.get("seq_len", space.seq_lens[0])),
        ratio=None if space.ratio is None else value("ratio", space.ratio),
        depth_share=value("depth_share", space.depth_share),
        block_criterion=str(params.get("block_criterion", space.block_criteria[0])),
        channel_multiple=space.channel_multiple,
        uniform=space.uniform,
    )
