"""Gemma 1, 2 and 3 (text): the LLaMA projections with Gemma's extras, none of which is per unit.

- Tied input/output embeddings (never pruned) and embeddings scaled by sqrt(hidden_size).
- Gemma 2/3 add ``pre_feedforward_layernorm`` and ``post_feedforward_layernorm`` and apply
  ``post_attention_layernorm`` to the attention output: all act on the residual width (hidden_size),
  which pruning never changes. A norm of a branch that writes zero is zero, so a block whose units are
  all zeroed is still the identity.
- Gemma 2/3 alternate sliding-window and global layers (``config.layer_types``, kept aligned by
  :meth:`~adapruner.adapters.base.ModelAdapter.remove_blocks`; each attention keeps its own window) and
  cap attention logits (``attn_logit_softcapping``) and final logits: scalar settings, unaffected.
- Gemma 3 adds per-head ``q_norm``/``k_norm`` over ``head_dim``, shared by all heads (as in Qwen3).
  Its text-only checkpoints have ``model_type`` ``gemma3_text`` (``Gemma3ForCausalLM``). The multimodal
  ``gemma3`` (``Gemma3ForConditionalGeneration``, vision tower + language model) is not supported: it
  fails with the list of supported types; prune a text-only checkpoint instead.
"""

from __future__ import annotations

from adapruner.adapters.llama import LlamaAdapter


class GemmaAdapter(LlamaAdapter):
    """Gemma 1, 2 and 3 (text): the units of LLaMA (the extras above are not per unit)."""
