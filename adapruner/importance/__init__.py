"""Importance metrics: one score per prunable unit, and their weighted mix."""

from adapruner.importance.base import (
    Importance,
    aggregate,
    build_metric,
    metric_needs,
    normalize,
    score_groups,
)

__all__ = ["Importance", "aggregate", "build_metric", "metric_needs", "normalize", "score_groups"]
