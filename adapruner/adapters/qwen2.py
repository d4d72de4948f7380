"""Qwen2 / Qwen2.5: the LLaMA layout with biases on q/k/v (none on o_proj).

The biases of q, k and v are output rows, so they are sliced with their units
(:func:`~adapruner.adapters.base.slice_linear_`). Sliding-window layers are named in
``config.layer_types``, which :meth:`~adapruner.adapters.base.ModelAdapter.remove_blocks` keeps aligned.
"""

from __future__ import annotations

from adapruner.adapters.llama import LlamaAdapter


class Qwen2Adapter(LlamaAdapter):
    """Qwen2/2.5: the units of LLaMA, with the q/k/v biases sliced as output rows."""
