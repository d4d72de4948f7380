"""Pruning plan (how many units per layer) and its application (which units, surgery)."""

from adapruner.prune.apply import (
    apply_plan,
    layer_shapes,
    plan_model,
    remove_planned_blocks,
    top_units,
    unit_saliency,
)
from adapruner.prune.plan import LayerShape, Plan, PlanError, blocks_to_remove, plan_widths, spread

__all__ = [
    "LayerShape",
    "Plan",
    "PlanError",
    "apply_plan",
    "blocks_to_remove",
    "layer_shapes",
    "plan_model",
    "plan_widths",
    "remove_planned_blocks",
    "spread",
    "top_units",
    "unit_saliency",
]
