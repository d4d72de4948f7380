"""LLaMA family (LLaMA 1-3, SmolLM, TinyLlama): GQA-exact head groups and SwiGLU channels."""

from __future__ import annotations

from torch import nn

from adapruner.adapters.base import CoupledSlice, ModelAdapter, UnitGroup, UnitKind


class LlamaAdapter(ModelAdapter):
    """Units per layer.

    heads: one unit per KV group = k and v rows of one KV head, the q rows of the ``n_rep`` query heads
    that share it and the matching o_proj columns, so ``num_key_value_groups`` stays valid and stock
    attention (eager, sdpa) runs the pruned layer unchanged. channels: gate/up rows, down_proj columns.
    """

    def unit_group(self, layer: int, kind: UnitKind) -> UnitGroup:
        prefix = f"model.layers.{layer}"
        block = self.layers[layer]
        if kind == "heads":
            attn = block.self_attn
            head_dim, n_rep = attn.head_dim, attn.num_key_value_groups
            return UnitGroup(
                layer,
                "heads",
                attn.k_proj.out_features // head_dim,
                (
                    CoupledSlice(f"{prefix}.self_attn.q_proj", 0, n_rep * head_dim),
                    CoupledSlice(f"{prefix}.self_attn.k_proj", 0, head_dim),
                    CoupledSlice(f"{prefix}.self_attn.v_proj", 0, head_dim),
                    CoupledSlice(f"{prefix}.self_attn.o_proj", 1, n_rep * head_dim),
                ),
            )
        mlp = block.mlp
        return UnitGroup(
            layer,
            "channels",
            mlp.down_proj.in_features,
            (
                CoupledSlice(f"{prefix}.mlp.gate_proj", 0, 1),
                CoupledSlice(f"{prefix}.mlp.up_proj", 0, 1),
                CoupledSlice(f"{prefix}.mlp.down_proj", 1, 1),
            ),
        )

    def renumber_layer(self, layer: nn.Module, index: int) -> None:
        layer.self_attn.layer_idx = index
        if hasattr(layer, "layer_idx"):  # e.g. Gemma 3 decoder layers keep their own index too
            layer.layer_idx = index

    def sync_config(self) -> bool:
        widths = self.widths()
        uniform = all(w == widths[0] for w in widths)
        if uniform:
            config, attn = self.model.config, self.layers[0].self_attn
            config.head_dim = attn.head_dim
            config.num_key_value_heads = widths[0]["heads"]
            config.num_attention_heads = widths[0]["heads"] * attn.num_key_value_groups
            config.intermediate_size = widths[0]["channels"]
        return uniform
