"""Turn scores and a plan into a physically smaller model."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from adapruner.adapters.base import ModelAdapter
from adapruner.config import PruneConfig
from adapruner.prune.depth import choose_blocks
from adapruner.prune.plan import LayerShape, Plan, PlanError, blocks_to_remove, plan_widths, pruned_layers


def layer_shapes(adapter: ModelAdapter) -> list[LayerShape]:
    shapes = []
    for layer in range(adapter.n_layers):
        heads, channels = adapter.unit_group(layer, "heads"), adapter.unit_group(layer, "channels")
        shapes.append(
            LayerShape(
                heads=heads.n_units,
                head_params=adapter.params_per_unit(heads),
                channels=channels.n_units,
                channel_params=adapter.params_per_unit(channels),
                block_params=sum(p.numel() for p in adapter.layers[layer].parameters()),
            )
        )
    return shapes


def plan_model(
    adapter: ModelAdapter,
    *,
    params_before: int,
    config: PruneConfig,
    block_scores: Callable[[str], torch.Tensor] | None = None,
    saliency: Sequence[Mapping[str, Sequence[float]]] | None = None,
) -> Plan:
    """The plan for ``adapter``'s model: with ``config.depth_share > 0`` first the whole blocks with the
    lowest ``block_scores(config.block_criterion)`` (``[n_layers]``, called only then), then the widths
    that remove the rest of the budget."""
    shapes = layer_shapes(adapter)
    n_drop = blocks_to_remove(shapes, params_before=params_before, config=config)
    drop: list[int] = []
    if n_drop:
        if block_scores is None:
            raise PlanError("prune.depth_share > 0 needs block scores")
        candidates = pruned_layers(len(shapes), config)
        drop = choose_blocks(block_scores(config.block_criterion), n_drop, candidates=candidates)
    return plan_widths(shapes, params_before=params_before, config=config, saliency=saliency, drop=drop)


def top_units(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (``[keep]``, ascending) of the ``keep`` highest ``scores`` (``[n_units]``); ties go to
    the lower index so that the choice is deterministic."""
    order = torch.argsort(-scores, stable=True)
    return order[:keep].sort().values


def apply_plan(
    adapter: ModelAdapter, scores: Mapping[tuple[int, str], torch.Tensor], plan: Plan, *, drop_blocks: bool = True
) -> None:
    """Keep, in every group, the ``plan.keep`` best-scoring units; remove the rest; then remove the
    blocks ``plan.drop`` unless ``drop_blocks`` is false (a caller that still addresses modules by
    their dense layer index, e.g. compensation, calls :func:`remove_planned_blocks` afterwards)."""
    for layer in range(len(plan.keep)):
        apply_layer(adapter, scores, plan, layer)
    if drop_blocks:
        remove_planned_blocks(adapter, plan)
    adapter.sync_config()


def apply_layer(adapter: ModelAdapter, scores: Mapping[tuple[int, str], torch.Tensor], plan: Plan, layer: int) -> None:
    """:func:`apply_plan`'s surgery of one decoder layer (none for a block the plan removes whole; the
    model config is not synced)."""
    if layer in plan.drop:
        return
    for kind, keep in plan.keep[layer].items():
        group = adapter.unit_group(layer, kind)
        if keep < group.n_units:
            adapter.remove_units(group, top_units(scores[group.key], keep))


def layer_changes(adapter: ModelAdapter, plan: Plan, layer: int) -> bool:
    """Whether :func:`apply_layer` removes any unit of decoder ``layer``."""
    return layer not in plan.drop and any(
        keep < adapter.unit_group(layer, kind).n_units for kind, keep in plan.keep[layer].items()
    )


def remove_planned_blocks(adapter: ModelAdapter, plan: Plan) -> None:
    """Remove the whole blocks of ``plan.drop`` (indices of the model the plan was made for)."""
    if plan.drop:
        adapter.remove_blocks(plan.drop)
        adapter.sync_config()


def unit_saliency(scores: Mapping[tuple[int, str], torch.Tensor], n_layers: int) -> list[dict[str, list[float]]]:
    """Per-layer score lists for :func:`adapruner.prune.plan.plan_widths` (``allocation='nirvana'``):
    ``[{kind: [n_units floats]}, ...]`` from ``{(layer, kind): scores [n_units]}``."""
    out: list[dict[str, list[float]]] = [{} for _ in range(n_layers)]
    for (layer, kind), values in scores.items():
        out[layer][kind] = values.double().cpu().tolist()
    return out
