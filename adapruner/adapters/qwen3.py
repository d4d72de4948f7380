"""Qwen3: the LLaMA layout plus per-head RMS norms on queries and keys (``q_norm``, ``k_norm``).

Both norms have a ``[head_dim]`` weight applied to every head alike (``q_proj(x).view(..., -1, head_dim)``
then the norm), so they are shared across heads: removing KV groups leaves them unchanged, and the
head units stay exactly those of LLaMA.
"""

from __future__ import annotations

from adapruner.adapters.llama import LlamaAdapter


class Qwen3Adapter(LlamaAdapter):
    """Qwen3: the units of LLaMA (the q/k norms are shared by all heads)."""
