"""Model loading: hub ids, local folders, GGUF files and built-in aliases."""

from adapruner.models.loading import (
    ALIASES,
    MANIFEST_NAME,
    LoadedModel,
    ModelLoadError,
    check_model_type,
    input_device,
    load_model,
    pick_device,
    pick_dtype,
    release_memory,
    resolve_source,
)

__all__ = [
    "ALIASES",
    "MANIFEST_NAME",
    "LoadedModel",
    "ModelLoadError",
    "check_model_type",
    "input_device",
    "load_model",
    "pick_device",
    "pick_dtype",
    "release_memory",
    "resolve_source",
]
