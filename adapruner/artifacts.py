"""Pruned-model artifacts: safetensors weights, config, tokenizer and a manifest of per-layer widths.

Where every layer has the same widths, ``config.json`` holds them and stock
``AutoModelForCausalLM.from_pretrained(path)`` loads the folder (unless the manifest lists output-projection
``biases`` added by compensation, which only :func:`load_pruned` restores). Otherwise ``config.json`` keeps the
dense widths and :func:`load_pruned` shrinks each layer to the manifest's widths before loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from adapruner.adapters import get_adapter
from adapruner.adapters.base import consumer_modules
from adapruner.errors import MissingFileError, UserError

MANIFEST_NAME = "adapruner.json"
FORMAT_VERSION = 1
SHARD_SIZE = "2GB"  # safetensors shards: a reload reads one at a time


def save_pruned(
    model: Any,
    tokenizer: Any,
    out: str | Path,
    *,
    job: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` to ``out`` with the manifest ``adapruner.json``.

    ``job`` is the resolved job config (JSON-ready); ``extra`` is merged into the manifest.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = get_adapter(model)
    uniform = adapter.sync_config()
    model.save_pretrained(out, max_shard_size=SHARD_SIZE)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    manifest = {
        "format": FORMAT_VERSION,
        "model_type": model.config.model_type,
        "uniform": uniform,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "widths": adapter.widths(),
        "biases": output_biases(adapter),
        "job": job,
        **(extra or {}),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def output_biases(adapter: Any) -> list[str]:
    """Output projections (o_proj, down_proj) that carry a bias, e.g. from FLAP's bias compensation.
    LLaMA-style configs cannot ask for these alone (``attention_bias``/``mlp_bias`` also add q/k/v or
    gate/up biases), so the manifest lists them and :func:`load_pruned` recreates them; stock
    ``from_pretrained`` would drop them."""
    return [name for name in consumer_modules(adapter) if adapter.linear(name).bias is not None]


def add_biases(adapter: Any, names: list[str]) -> None:
    """Give each named Linear a zero bias where the freshly built model has none (then loaded)."""
    for name in names:
        linear = adapter.linear(name)
        if linear.bias is None:
            weight = linear.weight
            linear.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device))


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the artifact folder ``path``; a :class:`MissingFileError` when it is none."""
    file = Path(path) / MANIFEST_NAME
    if not file.is_file():
        raise MissingFileError(f"{path} is not an adapruner artifact (no {MANIFEST_NAME})")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{file}: not valid JSON ({error}); save the artifact again") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise UserError(f"{file}: format {manifest.get('format')!r}, this adapruner reads {FORMAT_VERSION}")
    return manifest


def artifact_weight_bytes(path: str | Path, dtype: torch.dtype) -> int:
    """About the bytes of an artifact's weights once loaded in ``dtype`` (its safetensors files' size,
    scaled from the saved dtype), read without loading them."""
    path = Path(path)
    saved = getattr(torch, read_manifest(path)["dtype"])
    size = sum(file.stat().st_size for file in path.glob("*.safetensors"))
    return size * dtype.itemsize // saved.itemsize


def load_pruned(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """Load a pruned artifact: ``(model, tokenizer)`` with the saved per-layer widths and weights.

    The model is built on the meta device (no dense weights are allocated or initialised), shrunk to
    the manifest's widths, and each safetensors shard is read straight onto ``device`` and assigned in
    turn, so peak memory is about the pruned weights plus one shard.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    manifest = read_manifest(path)
    config = AutoConfig.from_pretrained(path)
    dtype = dtype or getattr(torch, manifest["dtype"])
    with init_empty_weights(include_buffers=False):  # buffers (rotary frequencies) are computed for real
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    adapter = get_adapter(model)
    adapter.set_widths(manifest["widths"])
    add_biases(adapter, manifest.get("biases", []))
    expected = set(model.state_dict())
    loaded: set[str] = set()
    for file in sorted(path.glob("*.safetensors")):
        shard = {name: tensor.to(dtype) for name, tensor in load_file(file, device=str(device)).items()}
        if unexpected := set(shard) - expected:
            raise UserError(f"{path}: weights do not match the manifest (unexpected {sorted(unexpected)})")
        model.load_state_dict(shard, strict=False, assign=True)
        loaded |= set(shard)
        del shard
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if missing := expected - loaded - tied:
        raise UserError(f"{path}: weights do not match the manifest (missing {sorted(missing)})")
    model.tie_weights()
    if still_empty := [name for name, p in model.named_parameters() if p.is_meta]:
        raise UserError(f"{path}: weights do not match the manifest (missing {still_empty})")
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    return model.to(device).eval(), tokenizer
