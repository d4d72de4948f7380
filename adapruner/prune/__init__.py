"""Pruning plan (how many units per layer) and its application (which units, surgery)."""

from adapruner.prune.apply import apply_plan, layer_shapes, top_units
from adapruner.prune.plan import LayerShape, Plan, PlanError, plan_widths, spread

__all__ = ["LayerShape", "Plan", "PlanError", "apply_plan", "layer_shapes", "plan_widths", "spread", "top_units"]
