"""Parameter counts and forward FLOPs, read from the modules (pruned layers differ in width)."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, *, non_embedding: bool = True) -> int:
    """All parameters (tied ones once), or all but the input and output embeddings."""
    skip: set[int] = set()
    if non_embedding:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                skip.update(id(p) for p in module.parameters())
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def forward_flops(model: nn.Module, *, seq_len: int) -> float:
    """FLOPs per token of a forward pass over ``seq_len`` tokens.

    Counts 2 * in * out for every ``nn.Linear`` (the output layer included) and, for every attention
    module (one with ``q_proj`` and ``head_dim``), the causal score and value products:
    2 * 2 * q_width * mean context, with mean context (seq_len + 1) / 2. Norms, activations, rotary
    embeddings and softmax are ignored (a few percent at these sizes).
    """
    linear = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    context = (seq_len + 1) / 2
    attention = sum(
        4 * m.q_proj.out_features * context for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "head_dim")
    )
    return float(linear + attention)


def ideal_speedup(dense_flops: float, pruned_flops: float) -> float:
    """The speed-up that the FLOPs removed would give if time were proportional to FLOPs."""
    return dense_flops / pruned_flops
