"""How many units each layer keeps so that a global parameter target is met.

Pure arithmetic over layer shapes (no torch): the plan decides *how many* KV groups and MLP channels
each layer keeps; the importance scores then decide *which*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapruner.config import PruneConfig
from adapruner.errors import UserError


class PlanError(UserError):
    """The target cannot be met with these settings; the message names the field to change."""


@dataclass(frozen=True)
class LayerShape:
    """Current widths of one decoder layer and the parameters one unit of each kind costs."""

    heads: int
    head_params: int
    channels: int
    channel_params: int
    block_params: int = 0  # every parameter of the block (projections and norms): what removing it saves


@dataclass(frozen=True)
class Plan:
    """Units kept per layer: ``keep[i] = {"heads": kv_groups, "channels": n}``."""

    keep: tuple[dict[str, int], ...]
    params_before: int
    params_removed: int
    target_removed: int
    drop: tuple[int, ...] = ()  # whole blocks removed (indices before removal); their ``keep`` is unchanged

    @property
    def ratio_achieved(self) -> float:
        return self.params_removed / self.params_before


def spread(total: int, slots: int, *, weights: Sequence[float] | None = None) -> list[int]:
    """``total`` split over ``slots``: in proportion to ``weights`` (largest remainders get the extra
    ones), or as evenly as possible with the extra ones evenly spaced."""
    if weights is not None and sum(weights) > 0:
        quotas = [total * w / sum(weights) for w in weights]
        counts = [int(q) for q in quotas]
        order = sorted(range(slots), key=lambda i: (counts[i] - quotas[i], i))
        for i in order[: total - sum(counts)]:
            counts[i] += 1
        return counts
    base, extra = divmod(total, slots)
    counts = [base] * slots
    for i in range(extra):
        counts[(2 * i + 1) * slots // (2 * extra)] += 1
    return counts


def _take(total: int, capacity: Sequence[int], weights: Sequence[float] | None) -> list[int]:
    """Spread ``total`` removals over layers with per-layer ``capacity`` (in proportion to ``weights``
    when given), refilling where capped."""
    taken = [0] * len(capacity)
    remaining = total
    while remaining > 0:
        open_slots = [i for i, cap in enumerate(capacity) if taken[i] < cap]
        if not open_slots:
            break
        share = [weights[i] for i in open_slots] if weights is not None else None
        for i, extra in zip(open_slots, spread(remaining, len(open_slots), weights=share), strict=True):
            step = min(extra, capacity[i] - taken[i])
            taken[i] += step
            remaining -= step
    return taken


def _take_lowest(total: int, candidates: Sequence[Sequence[float]]) -> list[int]:
    """NIRVANA's global threshold: remove the ``total`` lowest-scored candidates over all layers, where
    ``candidates[i]`` lists layer i's removable candidates in ascending order (capacity = its length);
    returns how many each layer loses. Ties go to the earlier layer."""
    pool = sorted((score, i, rank) for i, scores in enumerate(candidates) for rank, score in enumerate(scores))
    taken = [0] * len(candidates)
    for _score, i, _rank in pool[:total]:
        taken[i] += 1
    return taken


def _nirvana_candidates(scores: Sequence[float], cap: int, size: int) -> list[float]:
    """Layer candidates for :func:`_take_lowest`: the ascending scores grouped in chunks of ``size``
    units, each chunk scored by its largest member (a chunk is under a threshold when all its units are),
    at most ``cap`` chunks."""
    ordered = sorted(scores)
    return [ordered[(c + 1) * size - 1] for c in range(min(cap, len(ordered) // size))]


def depth_weights(n: int, slope: float) -> list[float] | None:
    """Per-layer budget weights ``1 + slope * (2 * position - 1)``; ``None`` (even) when slope is 0."""
    if slope == 0 or n < 2:
        return None
    return [max(1 + slope * (2 * i / (n - 1) - 1), 0.0) for i in range(n)]


def pruned_layers(n_layers: int, config: PruneConfig) -> list[int]:
    if config.allocation != "protected":  # uniform and nirvana prune every layer
        return list(range(n_layers))
    layers = list(range(config.protect_first, n_layers - config.protect_last))
    if not layers:
        raise PlanError(
            f"prune.protect_first + prune.protect_last = {config.protect_first + config.protect_last} "
            f"protects all {n_layers} layers; lower them"
        )
    return layers


@dataclass(frozen=True)
class _Removal:
    """What :func:`plan_widths` removes from each pruned layer, and the most it could remove."""

    layers: tuple[int, ...]
    heads: tuple[int, ...]
    chunks: tuple[int, ...]
    removed: int
    target: int
    most: int
    tolerance: float


def plan_widths(
    shapes: Sequence[LayerShape],
    *,
    params_before: int,
    config: PruneConfig,
    saliency: Sequence[Mapping[str, Sequence[float]]] | None = None,
    drop: Sequence[int] = (),
) -> Plan:
    """Plan the kept widths that remove ``config.ratio`` of ``params_before`` (non-embedding params).

    Attention is pruned in whole KV groups (at least ``min_kv_groups`` stay), channels in multiples of
    ``channel_multiple``; channels absorb the rounding of the coarse attention units. With
    ``allocation='nirvana'``, ``saliency[i][kind]`` (one raw score per unit of layer i) decides which
    layers lose the units (NIRVANA, Ai et al., 2025, arXiv 2509.14230): the same number of KV groups and
    channel chunks is removed as otherwise, so the ratio is met as exactly. ``drop`` lists whole blocks
    removed first (:func:`blocks_to_remove`); the rest of the budget is spread over the other layers.
    """
    if config.allocation == "nirvana" and saliency is None:
        raise PlanError("prune.allocation='nirvana' needs unit scores (saliency); use uniform or protected here")
    got = _removal(shapes, params_before=params_before, config=config, saliency=saliency, drop=drop)
    if not _met(got):
        raise PlanError(_unmet(shapes, params_before=params_before, config=config, saliency=saliency, drop=drop))
    keep = [{"heads": s.heads, "channels": s.channels} for s in shapes]
    for i, heads, chunks in zip(got.layers, got.heads, got.chunks, strict=True):
        keep[i] = {"heads": shapes[i].heads - heads, "channels": shapes[i].channels - chunks * config.channel_multiple}
    return Plan(tuple(keep), params_before, got.removed, got.target, tuple(sorted(drop)))


def _met(got: _Removal) -> bool:
    return not got.target or abs(got.removed - got.target) <= got.tolerance


def _attention_share(shapes: Sequence[LayerShape], layers: Sequence[int], config: PruneConfig) -> float:
    """The fraction of the width target taken from attention heads (the rest from MLP channels)."""
    if "channels" not in config.targets:
        return 1.0
    if "heads" not in config.targets:
        return 0.0
    if config.attn_share is not None:
        return config.attn_share
    attn_total = sum(shapes[i].heads * shapes[i].head_params for i in layers)
    mlp_total = sum(shapes[i].channels * shapes[i].channel_params for i in layers)
    # the MLP loses gamma times attention's fraction (NIRVANA's gamma; 1: the same ratio from both)
    return attn_total / (attn_total + (config.attn_gamma or 1.0) * mlp_total)


def _removal(
    shapes: Sequence[LayerShape],
    *,
    params_before: int,
    config: PruneConfig,
    saliency: Sequence[Mapping[str, Sequence[float]]] | None,
    drop: Sequence[int],
) -> _Removal:
    target = round(config.ratio * params_before)
    dropped = set(drop)
    layers = [i for i in pruned_layers(len(shapes), config) if i not in dropped]
    blocks_removed = sum(shapes[i].block_params for i in drop)
    heads_on, channels_on = "heads" in config.targets, "channels" in config.targets
    head_cap = [max(shapes[i].heads - config.min_kv_groups, 0) if heads_on else 0 for i in layers]
    chunk = [config.channel_multiple * shapes[i].channel_params for i in layers]
    chunk_cap = [
        max((shapes[i].channels - config.channel_multiple) // config.channel_multiple, 0) if channels_on else 0
        for i in layers
    ]
    share = _attention_share(shapes, layers, config)
    weights = depth_weights(len(layers), config.depth_slope)

    def take(total: int, capacity: list[int], kind: str, size: int) -> list[int]:
        if config.uniform:  # the same count in every layer (the nearest to the total's even share)
            return [min(round(total / len(capacity)), min(capacity))] * len(capacity)
        if config.allocation != "nirvana":
            return _take(total, capacity, weights)
        candidates = [
            _nirvana_candidates(saliency[i][kind], cap, size) for i, cap in zip(layers, capacity, strict=True)
        ]
        return _take_lowest(total, candidates)

    head_unit = max(shapes[i].head_params for i in layers)
    width_target = target - blocks_removed
    heads_removed = (
        take(max(round(share * width_target / head_unit), 0), head_cap, "heads", 1) if heads_on else [0] * len(layers)
    )
    removed = blocks_removed + sum(n * shapes[i].head_params for n, i in zip(heads_removed, layers, strict=True))
    chunks_removed = [0] * len(layers)
    if channels_on:
        total_chunks = max(round((target - removed) / max(chunk)), 0)
        chunks_removed = take(total_chunks, chunk_cap, "channels", config.channel_multiple)
        removed += sum(n * c for n, c in zip(chunks_removed, chunk, strict=True))
    if config.uniform:  # every layer down to the narrowest layer's limit
        head_cap, chunk_cap = [min(head_cap)] * len(layers), [min(chunk_cap)] * len(layers)
    most = blocks_removed + sum(
        head_cap[j] * shapes[i].head_params + chunk_cap[j] * chunk[j] for j, i in enumerate(layers)
    )
    # Uniform widths move in steps of one channel chunk in every layer: the ratio is met to half a step.
    tolerance = max(0.01 * target, sum(chunk) / 2 if config.uniform and channels_on else 0)
    return _Removal(tuple(layers), tuple(heads_removed), tuple(chunks_removed), removed, target, most, tolerance)


def _unmet(shapes: Sequence[LayerShape], *, params_before: int, config: PruneConfig, **plan) -> str:
    """Why ``config.ratio`` cannot be met, and what can: the most that can be removed, or (the usual case
    on small models) the reachable ratios next to it, since units go in whole KV groups and in groups of
    ``channel_multiple`` channels."""
    got = _removal(shapes, params_before=params_before, config=config, **plan)
    where = f"prune.targets={list(config.targets)}, allocation={config.allocation!r}"
    if got.target > 1.01 * got.most:
        return (
            f"prune.ratio {config.ratio} cannot be met: at most {got.most / params_before:.3f} of the parameters "
            f"can be removed with {where}; lower prune.ratio or prune more kinds of units"
        )
    channels_on = "channels" in config.targets
    units = (["whole KV groups"] if "heads" in config.targets else []) + (
        [f"groups of prune.channel_multiple={config.channel_multiple} channels"] if channels_on else []
    )
    step = config.channel_multiple * max(s.channel_params for s in shapes) if channels_on else shapes[0].head_params
    reachable = []
    for j in range(-4, 5):
        ratio = round((got.removed + j * step) / params_before, 3)
        if 0 < ratio < 1:
            nearby = config.model_copy(update={"ratio": ratio})
            if _met(_removal(shapes, params_before=params_before, config=nearby, **plan)):
                reachable.append(ratio)
    below = max((r for r in reachable if r < config.ratio), default=None)
    above = min((r for r in reachable if r > config.ratio), default=None)
    near = " or ".join(f"{r:g}" for r in (below, above) if r is not None)
    return (
        f"prune.ratio {config.ratio} cannot be met: with {where}, units are removed in "
        f"{' and '.join(units)}, and the nearest this reaches is {got.removed / params_before:.3f}; "
        + (f"use prune.ratio {near}" if near else "use another prune.ratio")
        + (" or a smaller prune.channel_multiple" if channels_on else "")
    )


def blocks_to_remove(shapes: Sequence[LayerShape], *, params_before: int, config: PruneConfig) -> int:
    """How many whole blocks ``config.depth_share`` of the removal budget buys (depth pruning): the
    nearest whole number of (mean-sized) prunable blocks, one fewer when that would overshoot the
    budget by more than 1%; at least one prunable block stays."""
    if config.depth_share == 0:
        return 0
    layers = pruned_layers(len(shapes), config)
    block = sum(shapes[i].block_params for i in layers) / len(layers)
    if block <= 0:
        raise PlanError("prune.depth_share > 0: this model's blocks have no parameter count to plan depth pruning")
    target = round(config.ratio * params_before)
    n = round(config.depth_share * target / block)
    if n * block > 1.01 * target:
        n -= 1
    if n > len(layers) - 1:
        raise PlanError(
            f"prune.depth_share {config.depth_share} asks for {n} of the {len(layers)} prunable blocks; "
            "lower prune.depth_share or prune.ratio"
        )
    return n
