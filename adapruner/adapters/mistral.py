"""Mistral: the LLaMA layout (q/k/v/o and SwiGLU gate/up/down) with an optional sliding window.

The window is a config value read by every attention layer; it does not depend on widths or depth.
"""

from __future__ import annotations

from adapruner.adapters.llama import LlamaAdapter


class MistralAdapter(LlamaAdapter):
    """Mistral: the units of LLaMA (the window does not depend on widths)."""
