"""A stock Hugging Face folder: ``AutoModelForCausalLM.from_pretrained(out)`` loads it, no adapruner needed.

Only uniform widths fit (a HF config holds one width for all layers). Output-projection biases from
FLAP's ``bias`` compensation are kept exactly: LLaMA-style configs create them only together with the
other projections' biases (``attention_bias``: q/k/v/o, ``mlp_bias``: gate/up/down), so those are written
as zeros.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adapruner.export.base import (
    TORCH_TYPES,
    ExportError,
    Exporter,
    ExportResult,
    ExportSource,
    describe_differences,
    output_bias,
)

UNIFORM_HINT = "prune with --uniform (or search with --uniform) for one width in every layer"


def zero_bias(linear: torch.nn.Linear) -> None:
    """Give ``linear`` a zero bias where it has none."""
    if linear.bias is None:
        weight = linear.weight
        linear.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device))


def add_bias_companions(source: ExportSource) -> list[str]:
    """Set ``attention_bias`` / ``mlp_bias`` where an output projection has a bias, with zero biases on
    the projections that must have one too; returns the config fields set."""
    config, fields = source.config, []
    layers = list(source.layers())
    if any(output_bias(layer.self_attn.o_proj) is not None for _, layer, _ in layers):
        for _, layer, _ in layers:
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                zero_bias(getattr(layer.self_attn, name))
        config.attention_bias = True
        fields.append("attention_bias")
    if any(output_bias(layer.mlp.down_proj) is not None for _, layer, _ in layers):
        for _, layer, _ in layers:
            for name in ("gate_proj", "up_proj", "down_proj"):
                zero_bias(getattr(layer.mlp, name))
        config.mlp_bias = True
        fields.append("mlp_bias")
    return fields


class HfExporter(Exporter):
    name = "hf"

    def default_name(self, type_: str) -> str:
        return f"hf-{type_}"

    def check(self, source: ExportSource, type_: str) -> None:
        super().check(source, type_)
        if not source.uniform:
            raise ExportError(f"export --format hf: {describe_differences(source.shapes)}; {UNIFORM_HINT}, "
                              "or export --format gguf / decilm")

    def write(self, source: ExportSource, out: Path, type_: str) -> ExportResult:
        from adapruner.adapters import get_adapter

        model = source.model
        get_adapter(model).sync_config()
        fields = add_bias_companions(source)
        model.to(TORCH_TYPES[type_])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        if source.tokenizer is not None:
            source.tokenizer.save_pretrained(out)
        model.float()
        notes = tuple(f"{field}=true with zero biases where the model has none" for field in fields)
        return ExportResult(out, self.name, type_, model.config.model_type, notes)
