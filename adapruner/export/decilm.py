"""DeciLM / Nemotron-NAS layout (``model_type`` ``nemotron-nas``, ``DeciLMForCausalLM``): per-layer widths
in ``config.json``'s ``block_configs``, LLaMA weight names, as vLLM's ``nemotron_nas`` loader reads them, and
the config class (``configuration_decilm.py``, named by ``auto_map``) that ``trust_remote_code`` loads.

That loader's rules (vLLM ``vllm/model_executor/models/nemotron_nas.py``):

- every attention has ``config.num_attention_heads`` query heads and
  ``num_attention_heads // attention.n_heads_in_group`` KV heads of ``head_dim``; ``attention.no_op``
  skips the attention (and its norm);
- the MLP has ``ffn.intermediate_size`` channels when the block gives no ``ffn_mult`` (``ffn_mult`` is
  rounded up to a multiple of 256, which pruned widths are not, so it is never written); ``ffn.no_op``
  skips it;
- ``attention_bias`` gives q/k/v/o biases unless ``qkv_bias`` says otherwise; ``mlp_bias`` gives
  gate/up/down biases.

Blocks a prune job removed whole (the artifact's ``report.json``: ``blocks_removed``) are written as
``no_op`` blocks, so layer ``i`` of the export is layer ``i`` of the dense model.

Pruning keeps ``n_rep`` query heads per KV head, so a layer with fewer KV groups has fewer query heads,
which this layout cannot say. Such layers are padded exactly: each KV group gets
``num_attention_heads / kv`` query heads, the added ones with zero query rows and zero ``o_proj``
columns (their attention output is multiplied by zero). ``num_attention_heads`` is the smallest
common multiple of the layers' KV counts that holds every real head; the padding costs compute, and the
result lists it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from adapruner.export.base import TORCH_TYPES, Exporter, ExportResult, ExportSource, LayerShape, output_bias


def query_heads(shapes: list[LayerShape]) -> int:
    """The one query-head count ``H`` of the layout: the smallest multiple of every layer's KV count that
    is at least every layer's query-head count (so each KV group holds its real heads)."""
    lcm = math.lcm(*(s.n_kv for s in shapes))
    return lcm * math.ceil(max(s.n_head for s in shapes) / lcm)


def pad_heads(weight: torch.Tensor, *, dim: int, n_kv: int, real: int, padded: int, head_dim: int) -> torch.Tensor:
    """Spread ``weight``'s query heads (``n_kv * real`` heads along ``dim``, group-major) to ``padded``
    heads per KV group, the new heads zero: ``[n_kv * real * head_dim, d]`` -> ``[n_kv * padded * head_dim, d]``
    (``dim=0``, q_proj rows) or the same along columns (``dim=1``, o_proj)."""
    moved = weight if dim == 0 else weight.t()
    groups = moved.reshape(n_kv, real * head_dim, -1)
    out = groups.new_zeros(n_kv, padded * head_dim, groups.shape[-1])
    out[:, : real * head_dim] = groups
    out = out.reshape(n_kv * padded * head_dim, -1)
    return out if dim == 0 else out.t()


#: copied beside config.json: the config class that ``trust_remote_code`` loaders (vLLM, TensorRT-LLM) import
CONFIG_MODULE = Path(__file__).with_name("configuration_decilm.py")

NO_OP_BLOCK = {
    "attention": {"no_op": True, "replace_with_linear": False},
    "ffn": {"no_op": True, "replace_with_linear": False},
}


def dense_positions(source: ExportSource) -> list[int]:
    """Where each kept layer sat in the dense model: the export keeps the dense numbering, with ``no_op``
    blocks where whole blocks were removed (as Nemotron-NAS checkpoints do)."""
    removed, kept, index = set(source.removed_blocks), [], 0
    while len(kept) < len(source.shapes):
        if index not in removed:
            kept.append(index)
        index += 1
    return kept


def block_configs(source: ExportSource, heads: int) -> list[dict[str, Any]]:
    positions = dense_positions(source)
    blocks = [NO_OP_BLOCK] * (positions[-1] + 1)
    for position, shape in zip(positions, source.shapes, strict=True):
        blocks[position] = block_config(shape, heads)
    return blocks


def block_config(shape: LayerShape, heads: int) -> dict[str, Any]:
    return {
        "attention": {"no_op": False, "replace_with_linear": False, "n_heads_in_group": heads // shape.n_kv},
        "ffn": {"no_op": False, "replace_with_linear": False, "intermediate_size": shape.n_ff},
    }


def decilm_config(source: ExportSource, heads: int, type_: str) -> dict[str, Any]:
    config = source.config
    bias = _biases(source)
    out = {
        "architectures": ["DeciLMForCausalLM"],
        "model_type": "nemotron-nas",
        "auto_map": {"AutoConfig": f"{CONFIG_MODULE.stem}.DeciLMConfig"},
        "hidden_size": config.hidden_size,
        "num_hidden_layers": dense_positions(source)[-1] + 1,
        "num_attention_heads": heads,
        "head_dim": source.head_dim,
        "intermediate_size": max(s.n_ff for s in source.shapes),
        "hidden_act": config.hidden_act,
        "rms_norm_eps": config.rms_norm_eps,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": source.tied(),
        "attention_bias": bias["attention"],
        "qkv_bias": False,
        "mlp_bias": bias["mlp"],
        "torch_dtype": str(TORCH_TYPES[type_]).removeprefix("torch."),
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "block_configs": block_configs(source, heads),
    }
    rope = getattr(config, "rope_parameters", None)
    if rope:
        out["rope_theta"] = rope.get("rope_theta")
        out["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else dict(rope)
        out["rope_parameters"] = dict(rope)
    else:
        out["rope_theta"], out["rope_scaling"] = config.rope_theta, getattr(config, "rope_scaling", None)
    return out


def _biases(source: ExportSource) -> dict[str, bool]:
    layers = [layer for _, layer, _ in source.layers()]
    return {
        "attention": any(output_bias(layer.self_attn.o_proj) is not None for layer in layers),
        "mlp": any(output_bias(layer.mlp.down_proj) is not None for layer in layers),
    }


def decilm_state(source: ExportSource, heads: int) -> dict[str, torch.Tensor]:
    """The weights under vLLM's names, q_proj/o_proj padded to ``heads`` query heads per layer."""
    model, bias = source.model, _biases(source)
    state = {"model.embed_tokens.weight": model.get_input_embeddings().weight, "model.norm.weight": model.model.norm.weight}
    if not source.tied():
        state["lm_head.weight"] = model.get_output_embeddings().weight
    for (_, layer, shape), i in zip(source.layers(), dense_positions(source), strict=True):
        prefix, attn, mlp = f"model.layers.{i}", layer.self_attn, layer.mlp
        spread = {"n_kv": shape.n_kv, "real": shape.n_head // shape.n_kv, "padded": heads // shape.n_kv}
        spread["head_dim"] = source.head_dim
        state[f"{prefix}.input_layernorm.weight"] = layer.input_layernorm.weight
        state[f"{prefix}.post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
        state[f"{prefix}.self_attn.q_proj.weight"] = pad_heads(attn.q_proj.weight, dim=0, **spread)
        state[f"{prefix}.self_attn.k_proj.weight"] = attn.k_proj.weight
        state[f"{prefix}.self_attn.v_proj.weight"] = attn.v_proj.weight
        state[f"{prefix}.self_attn.o_proj.weight"] = pad_heads(attn.o_proj.weight, dim=1, **spread)
        for name in ("gate_proj", "up_proj", "down_proj"):
            state[f"{prefix}.mlp.{name}.weight"] = getattr(mlp, name).weight
        if bias["attention"]:
            state[f"{prefix}.self_attn.o_proj.bias"] = _bias_or_zero(attn.o_proj)
        if bias["mlp"]:
            for name in ("gate_proj", "up_proj", "down_proj"):
                state[f"{prefix}.mlp.{name}.bias"] = _bias_or_zero(getattr(mlp, name))
    return state


def _bias_or_zero(linear: torch.nn.Linear) -> torch.Tensor:
    return linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)


class DeciLmExporter(Exporter):
    name = "decilm"

    def default_name(self, type_: str) -> str:
        return f"decilm-{type_}"

    def write(self, source: ExportSource, out: Path, type_: str) -> ExportResult:
        heads = query_heads(source.shapes)
        dtype = TORCH_TYPES[type_]
        state = {k: v.detach().to(dtype).contiguous().clone() for k, v in decilm_state(source, heads).items()}
        out.mkdir(parents=True, exist_ok=True)
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(decilm_config(source, heads, type_), indent=2) + "\n")
        shutil.copyfile(CONFIG_MODULE, out / CONFIG_MODULE.name)
        if source.tokenizer is not None:
            source.tokenizer.save_pretrained(out)
        padded = [i for i, s in enumerate(source.shapes) if s.n_head != heads]
        notes = ()
        if padded:
            notes = (
                f"layers {', '.join(map(str, padded))} padded to {heads} query heads with zero heads "
                "(the layout has one query-head count); exact, but they compute the padding",
            )
        return ExportResult(out, self.name, type_, "nemotron-nas", notes)
