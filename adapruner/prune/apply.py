"""Turn scores and a plan into a physically smaller model."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from adapruner.adapters.base import ModelAdapter
from adapruner.prune.plan import LayerShape, Plan


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
            )
        )
    return shapes


def top_units(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (``[keep]``, ascending) of the ``keep`` highest ``scores`` (``[n_units]``); ties go to
    the lower index so that the choice is deterministic."""
    order = torch.argsort(-scores, stable=True)
    return order[:keep].sort().values


def apply_plan(adapter: ModelAdapter, scores: Mapping[tuple[int, str], torch.Tensor], plan: Plan) -> None:
    """Keep, in every group, the ``plan.keep`` best-scoring units; remove the rest."""
    for layer, widths in enumerate(plan.keep):
        for kind, keep in widths.items():
            group = adapter.unit_group(layer, kind)
            if keep < group.n_units:
                adapter.remove_units(group, top_units(scores[group.key], keep))
    adapter.sync_config()
