"""What every export format shares: the loaded model, its per-layer shapes, and the base class.

A format (:class:`Exporter` subclass, registered in ``adapruner.catalog.EXPORT_FORMATS``) turns a pruned
artifact (or any model :func:`adapruner.models.load_model` reads) into the files a serving runtime loads.
Every refusal is an :class:`ExportError`: one line naming the cause and the way out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from adapruner.errors import UserError

#: ``--type`` -> torch dtype of the weights written (q8_0: GGUF's 8-bit blocks, from float32).
TORCH_TYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "q8_0": torch.float32}
#: torch dtype name (the manifest's ``dtype``) -> ``--type``.
TYPE_OF_DTYPE = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


class ExportError(UserError):
    """The model cannot be written in the asked format; the message says why and what to do instead."""


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer's widths: query heads, KV heads and MLP channels (``n_ff``)."""

    n_head: int
    n_kv: int
    n_ff: int


@dataclass
class ExportSource:
    """A model loaded for export: the float model, its tokenizer and what the folder says about it."""

    model: Any
    tokenizer: Any
    name: str
    dtype: str  # the saved weights' dtype (torch name)
    manifest: dict[str, Any] | None = None
    shapes: list[LayerShape] = field(default_factory=list)
    removed_blocks: tuple[int, ...] = ()  # whole blocks pruned away, as indices of the dense model

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def head_dim(self) -> int:
        return self.model.model.layers[0].self_attn.head_dim

    @property
    def uniform(self) -> bool:
        return not differing_layers(self.shapes)

    def layers(self) -> Iterator[tuple[int, Any, LayerShape]]:
        for index, (layer, shape) in enumerate(zip(self.model.model.layers, self.shapes, strict=True)):
            yield index, layer, shape

    def tied(self) -> bool:
        """Whether the output layer is the input embedding (then no separate output tensor is written)."""
        head, embed = self.model.get_output_embeddings(), self.model.get_input_embeddings()
        return head is None or head.weight.data_ptr() == embed.weight.data_ptr()


def layer_shapes(model: Any) -> list[LayerShape]:
    """Per-layer widths read off the modules (so they hold for any artifact, uniform or not)."""
    shapes = []
    for layer in model.model.layers:
        attn = layer.self_attn
        n_head = attn.q_proj.out_features // attn.head_dim
        shapes.append(LayerShape(n_head, attn.k_proj.out_features // attn.head_dim, layer.mlp.down_proj.in_features))
    return shapes


def differing_layers(shapes: list[LayerShape]) -> list[int]:
    """Indices of the layers whose widths differ from layer 0's."""
    return [i for i, shape in enumerate(shapes) if shape != shapes[0]]


def describe_differences(shapes: list[LayerShape], limit: int = 6) -> str:
    """``layers 3 (heads 6, kv 2, ffn 1024), 5 (...)`` against layer 0, for one-line messages."""
    first = shapes[0]
    layers = differing_layers(shapes)
    parts = [f"{i} (heads {shapes[i].n_head}, kv {shapes[i].n_kv}, ffn {shapes[i].n_ff})" for i in layers[:limit]]
    more = f" and {len(layers) - limit} more" if len(layers) > limit else ""
    return (
        f"layers {', '.join(parts)}{more} differ from layer 0 (heads {first.n_head}, kv {first.n_kv}, ffn {first.n_ff})"
    )


def output_bias(linear: torch.nn.Module) -> torch.Tensor | None:
    """A Linear's bias where it has one that is not all zero (FLAP ``bias`` compensation adds these)."""
    bias = getattr(linear, "bias", None)
    if bias is None or not bool(bias.detach().abs().max() > 0):
        return None
    return bias.detach()


@dataclass(frozen=True)
class ExportResult:
    """What was written: the path, the format, the architecture it declares and notes for the user."""

    path: Path
    format: str
    type: str
    architecture: str
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "type": self.type,
            "architecture": self.architecture,
            "notes": list(self.notes),
        }


class Exporter:
    """Base class of the export formats. ``types``: the ``--type`` values the format writes;
    ``default_name``: the file or folder written inside a job's artifact folder."""

    name: ClassVar[str] = ""
    types: ClassVar[tuple[str, ...]] = ("f32", "f16", "bf16")
    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral")

    def default_name(self, type_: str) -> str:
        raise NotImplementedError

    def default_type(self, source: ExportSource) -> str:
        """The type written when none is asked: the weights' own dtype."""
        return TYPE_OF_DTYPE.get(source.dtype, "f32")

    def check(self, source: ExportSource, type_: str) -> None:
        """Raise :class:`ExportError` when this format cannot hold the model (before writing anything)."""
        if type_ not in self.types:
            raise ExportError(f"export --type {type_}: the {self.name} format writes {', '.join(self.types)}")
        model_type = source.config.model_type
        if model_type not in self.model_types:
            raise ExportError(
                f"export --format {self.name}: model_type {model_type!r} is not supported; "
                f"supported: {', '.join(self.model_types)}"
            )
        window = getattr(source.config, "sliding_window", None)
        if window is not None and window < source.config.max_position_embeddings:
            raise ExportError(
                f"export --format {self.name}: sliding-window attention ({window} tokens) is not exported; "
                "only full-attention models are"
            )

    def write(self, source: ExportSource, out: Path, type_: str) -> ExportResult:
        raise NotImplementedError
