"""Model adapters: one per architecture, chosen by ``config.model_type``."""

from __future__ import annotations

from torch import nn

from adapruner.adapters.base import (
    UNIT_KINDS,
    CoupledSlice,
    ModelAdapter,
    UnitGroup,
    UnitKind,
    slice_weight,
    unit_indices,
)
from adapruner.catalog import ADAPTERS
from adapruner.models.loading import check_model_type


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter registered for ``model.config.model_type``; an unsupported type lists the valid ones."""
    model_type = check_model_type(getattr(model.config, "model_type", None))
    return ADAPTERS.get(model_type)(model)


__all__ = [
    "UNIT_KINDS",
    "CoupledSlice",
    "ModelAdapter",
    "UnitGroup",
    "UnitKind",
    "get_adapter",
    "slice_weight",
    "unit_indices",
]
