"""Phi-3 / Phi-3.5 / Phi-4-mini: fused ``qkv_proj`` and ``gate_up_proj``.

One Linear holds several coupled slices, placed by :class:`~adapruner.adapters.base.CoupledSlice`'s
``offset``. ``qkv_proj`` rows are ``[q: n_heads * d | k: n_kv * d | v: n_kv * d]``; KV group ``u`` owns
q rows ``u * n_rep * d ...``, k rows ``n_heads * d + u * d ...`` and v rows
``(n_heads + n_kv) * d + u * d ...``. ``gate_up_proj`` rows are ``[gate: I | up: I]``; channel ``c`` owns
rows ``c`` and ``I + c``, so the pruned weight still splits in half (``chunk(2)``) into gate and up.

Phi-3 attention splits ``qkv`` with ``config.num_attention_heads`` and its own ``num_key_value_heads``,
so after removing KV groups each attention gets its own counts: ``num_key_value_heads`` and a
per-layer view of the config (:class:`LayerConfig`) that overrides ``num_attention_heads`` and reads
every other field from the model's config.
"""

from __future__ import annotations

from typing import Any

import torch

from adapruner.adapters.base import CoupledSlice, UnitGroup, UnitKind
from adapruner.adapters.llama import LlamaAdapter


class LayerConfig:
    """A read-through view of a model config with a few fields overridden for one layer."""

    def __init__(self, base: Any, **overrides: Any) -> None:
        self.__dict__["_base"] = base
        self.__dict__["_overrides"] = dict(overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        state = self.__dict__
        if "_base" not in state:
            raise AttributeError(name)
        if name in state["_overrides"]:
            return state["_overrides"][name]
        return getattr(state["_base"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._base, name, value)


def _base_config(config: Any) -> Any:
    return config._base if isinstance(config, LayerConfig) else config


class Phi3Adapter(LlamaAdapter):
    """Phi-3: LLaMA's units inside the fused ``qkv_proj`` and ``gate_up_proj``."""

    def unit_group(self, layer: int, kind: UnitKind) -> UnitGroup:
        prefix = f"model.layers.{layer}"
        block = self.layers[layer]
        if kind == "heads":
            attn = block.self_attn
            d, n_rep, n_kv = attn.head_dim, attn.num_key_value_groups, attn.num_key_value_heads
            qkv = f"{prefix}.self_attn.qkv_proj"
            q_rows = n_kv * n_rep * d
            return UnitGroup(
                layer,
                "heads",
                n_kv,
                (
                    CoupledSlice(qkv, 0, n_rep * d, 0),
                    CoupledSlice(qkv, 0, d, q_rows),
                    CoupledSlice(qkv, 0, d, q_rows + n_kv * d),
                    CoupledSlice(f"{prefix}.self_attn.o_proj", 1, n_rep * d),
                ),
            )
        mlp = block.mlp
        n = mlp.down_proj.in_features
        gate_up = f"{prefix}.mlp.gate_up_proj"
        return UnitGroup(
            layer,
            "channels",
            n,
            (
                CoupledSlice(gate_up, 0, 1, 0),
                CoupledSlice(gate_up, 0, 1, n),
                CoupledSlice(f"{prefix}.mlp.down_proj", 1, 1),
            ),
        )

    def remove_units(self, group: UnitGroup, keep: torch.Tensor) -> None:
        super().remove_units(group, keep)
        if group.kind == "heads":
            attn = self.layers[group.layer].self_attn
            attn.num_key_value_heads = attn.o_proj.in_features // (attn.num_key_value_groups * attn.head_dim)
            attn.config = LayerConfig(
                _base_config(attn.config), num_attention_heads=attn.num_key_value_heads * attn.num_key_value_groups
            )
