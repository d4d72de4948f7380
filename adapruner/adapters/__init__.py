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
from adapruner.errors import ModelLoadError


def check_model_type(model_type: str | None) -> str:
    """``model_type`` if an adapter is registered for it; else a :class:`ModelLoadError` listing the supported."""
    if model_type not in ADAPTERS:
        raise ModelLoadError(f"model_type {model_type!r} is not supported; supported: {', '.join(ADAPTERS.names())}")
    return model_type


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
    "check_model_type",
    "get_adapter",
    "slice_weight",
    "unit_indices",
]
