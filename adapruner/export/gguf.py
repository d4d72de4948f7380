"""GGUF for llama.cpp, written with the ``gguf`` package.

Uniform widths are written as the model's own llama.cpp architecture (``llama``); per-layer widths as
``deci`` (llama.cpp ``src/models/deci.cpp``), which reads ``feed_forward_length``, ``head_count`` and
``head_count_kv`` as per-layer arrays. Removed blocks are simply absent (the remaining ones are
renumbered), so they need no special architecture. Both architectures apply "normal" (interleaved)
RoPE, so the rows of every query and key head are reordered from HF's rotate-half layout
(:func:`rope_interleave`). Output-projection biases added by FLAP's ``bias`` compensation are written as
``attn_output.bias`` / ``ffn_down.bias``, optional tensors both architectures add to the projection.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapruner.export.base import ExportError, Exporter, ExportResult, ExportSource, output_bias
from adapruner.export.vocab import add_vocab, read_vocab

Q8_BLOCK = 32


def rope_interleave(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of a q/k projection ``[n_head * head_dim, d]`` from HF's rotate-half order (dims ``i`` and
    ``i + head_dim/2`` rotate together) to GGML's interleaved order (dims ``2i`` and ``2i + 1``)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def llama3_rope_factors(config: Any, head_dim: int) -> torch.Tensor:
    """LLaMA 3.1's frequency-dependent RoPE scaling as llama.cpp's ``rope_freqs`` tensor ``[head_dim/2]``."""
    scaling, base = config.rope_scaling, _rope_theta(config)
    factor, low, high = scaling["factor"], scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old = scaling.get("original_max_position_embeddings", 8192)
    freqs = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (old / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    out = torch.where(wavelen < old / high, torch.ones_like(freqs), torch.where(wavelen > old / low, factor, mid))
    return out.float()


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def _rope_scaling(config: Any) -> dict[str, Any] | None:
    scaling = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    if not scaling or scaling.get("rope_type", scaling.get("type", "default")) == "default":
        return None
    return scaling


class GgufExporter(Exporter):
    name = "gguf"
    types = ("f32", "f16", "bf16", "q8_0")

    def default_name(self, type_: str) -> str:
        return f"model-{type_}.gguf"

    def default_type(self, source: ExportSource) -> str:
        return "f16"

    def check(self, source: ExportSource, type_: str) -> None:
        super().check(source, type_)
        scaling = _rope_scaling(source.config)
        kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
        if kind not in (None, "linear", "llama3"):
            raise ExportError(f"export --format gguf: RoPE scaling {kind!r} is not exported; default, linear, llama3 are")
        for i, layer, _ in source.layers():
            attn = layer.self_attn
            if any(output_bias(m) is not None for m in (attn.q_proj, attn.k_proj, attn.v_proj)):
                raise ExportError(f"export --format gguf: layer {i} has q/k/v biases, which llama and deci have not")
        read_vocab(source.tokenizer, source.config.vocab_size)

    def write(self, source: ExportSource, out: Path, type_: str) -> ExportResult:
        import gguf

        arch = "llama" if source.uniform else "deci"
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = gguf.GGUFWriter(str(out), arch)
        _add_hparams(writer, source, type_)
        add_vocab(writer, read_vocab(source.tokenizer, source.config.vocab_size))
        fallback = []
        for name, tensor in _tensors(source):
            if not _add_tensor(writer, name, tensor, type_):
                fallback.append(name)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        notes = []
        if fallback:
            notes.append(
                f"{len(fallback)} weights kept in f16: q8_0 needs rows of a multiple of {Q8_BLOCK} "
                f"(e.g. {fallback[0]}); prune with --channel-multiple 32 to quantise all"
            )
        return ExportResult(out, self.name, type_, arch, tuple(notes))


FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}


def _add_hparams(writer: Any, source: ExportSource, type_: str) -> None:
    config, shapes = source.config, source.shapes

    def per_layer(values: list[int]) -> int | list[int]:
        return values[0] if source.uniform else values

    writer.add_name(source.name)
    writer.add_file_type(FILE_TYPES[type_])
    writer.add_block_count(len(shapes))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(per_layer([s.n_ff for s in shapes]))
    writer.add_head_count(per_layer([s.n_head for s in shapes]))
    writer.add_head_count_kv(per_layer([s.n_kv for s in shapes]))
    writer.add_key_length(source.head_dim)
    writer.add_value_length(source.head_dim)
    writer.add_rope_dimension_count(source.head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    scaling = _rope_scaling(config)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])


def _tensors(source: ExportSource):
    """``(gguf name, float tensor)`` for every weight, in llama.cpp's names and layouts."""
    model = source.model
    yield "token_embd.weight", model.get_input_embeddings().weight
    scaling = _rope_scaling(source.config)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        yield "rope_freqs.weight", llama3_rope_factors(source.config, source.head_dim)
    for i, layer, shape in source.layers():
        attn, mlp = layer.self_attn, layer.mlp
        yield f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight
        yield f"blk.{i}.attn_q.weight", rope_interleave(attn.q_proj.weight, shape.n_head)
        yield f"blk.{i}.attn_k.weight", rope_interleave(attn.k_proj.weight, shape.n_kv)
        yield f"blk.{i}.attn_v.weight", attn.v_proj.weight
        yield f"blk.{i}.attn_output.weight", attn.o_proj.weight
        if (bias := output_bias(attn.o_proj)) is not None:
            yield f"blk.{i}.attn_output.bias", bias
        yield f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight
        yield f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight
        yield f"blk.{i}.ffn_up.weight", mlp.up_proj.weight
        yield f"blk.{i}.ffn_down.weight", mlp.down_proj.weight
        if (bias := output_bias(mlp.down_proj)) is not None:
            yield f"blk.{i}.ffn_down.bias", bias
    yield "output_norm.weight", model.model.norm.weight
    if not source.tied():
        yield "output.weight", model.get_output_embeddings().weight


def _add_tensor(writer: Any, name: str, tensor: torch.Tensor, type_: str) -> bool:
    """Add one tensor in ``type_`` (1-D tensors stay f32, as llama.cpp expects); False when a q8_0
    weight had to stay f16 because its rows are not whole blocks."""
    import gguf

    data = tensor.detach().float().cpu().numpy()
    if data.ndim == 1 or type_ == "f32":
        writer.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))
        return True
    if type_ == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        return True
    if type_ == "bf16":
        qtype = gguf.GGMLQuantizationType.BF16
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        return True
    writer.add_tensor(name, data.astype(np.float16))
    return type_ != "q8_0"
