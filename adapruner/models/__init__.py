"""Model loading: hub ids, local folders, GGUF files and built-in aliases."""

from adapruner.models.loading import (
    ALIASES,
    MANIFEST_NAME,
    GpuCountError,
    LoadedModel,
    ModelLoadError,
    check_gpus,
    check_model_type,
    input_device,
    load_model,
    pick_device,
    pick_dtype,
    placement,
    release_memory,
    resolve_source,
    spread_kwargs,
)

__all__ = [
    "ALIASES",
    "MANIFEST_NAME",
    "GpuCountError",
    "LoadedModel",
    "ModelLoadError",
    "check_gpus",
    "check_model_type",
    "input_device",
    "load_model",
    "pick_device",
    "pick_dtype",
    "placement",
    "release_memory",
    "resolve_source",
    "spread_kwargs",
]
