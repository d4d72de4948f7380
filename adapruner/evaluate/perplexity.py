"""Sliding-window perplexity (the Hugging Face method)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from adapruner.errors import UserError
from adapruner.models.loading import input_device

if TYPE_CHECKING:
    from adapruner.sequential import Sequential


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    nll: float  # mean negative log-likelihood per predicted token
    tokens: int  # predicted tokens
    windows: int


def windows(n_tokens: int, *, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n_new)`` windows: each covers ``tokens[begin:end]`` and scores its last ``n_new``
    targets, the ones no earlier window scored (the first window scores all but its first token)."""
    spans, scored_until = [], 0
    for begin in range(0, n_tokens - 1, stride):
        end = min(begin + seq_len, n_tokens)
        new = end - max(scored_until, begin + 1)
        if new > 0:
            spans.append((begin, end, new))
            scored_until = end
        if end == n_tokens:
            break
    return spans


def perplexity(
    model,
    tokens: torch.Tensor,
    *,
    seq_len: int,
    stride: int | None = None,
    batch_size: int = 4,
    device=None,
    sequential: Sequential | None = None,
) -> Perplexity:
    """Perplexity of ``tokens`` (``[n]``) under ``model`` with windows of ``seq_len`` every ``stride``.

    ``stride`` defaults to, and is capped at, ``seq_len - 1``: consecutive windows then share at least
    one token, so every token after the first is predicted exactly once, with up to ``seq_len - 1``
    tokens of context. With ``sequential`` the model runs layer by layer (every layer visits the device
    once for all windows).
    """
    tokens = tokens.reshape(-1)
    if tokens.numel() < 2:
        raise UserError(f"seq_len: the text has {tokens.numel()} tokens; need at least 2")
    if seq_len < 2:
        raise UserError(f"seq_len must be at least 2, got {seq_len}")
    stride = min(stride or seq_len, seq_len - 1)
    device = device or input_device(model)
    spans = windows(tokens.numel(), seq_len=seq_len, stride=stride)
    total, count = 0.0, 0
    model.eval()
    # Windows of equal length are batched; the last, shorter one runs alone.
    batches = []
    for start in range(0, len(spans), batch_size):
        groups: dict[int, list[tuple[int, int, int]]] = {}
        for span in spans[start : start + batch_size]:
            groups.setdefault(span[1] - span[0], []).append(span)
        batches += [(torch.stack([tokens[b:e] for b, e, _ in same]), same) for same in groups.values()]
    with torch.inference_mode():
        if sequential is None:
            outputs = (model(ids.to(device), use_cache=False).logits for ids, _ in batches)
        else:
            outputs = sequential.logits(model, [ids for ids, _ in batches])
        for (ids, same), logits in zip(batches, outputs, strict=True):
            ids, length = ids.to(logits.device), ids.shape[1]
            for row, (_, _, new) in enumerate(same):
                total += token_nll(logits[row], ids[row])[length - 1 - new :].double().sum().item()
                count += new
    mean = total / count
    return Perplexity(ppl=math.exp(mean), nll=mean, tokens=count, windows=len(spans))


def token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``[t - 1]`` negative log-likelihood of ``ids[1:]`` (``ids: [t]``) under ``logits: [t, vocab]``, in
    float32, :data:`_NLL_ROWS` positions at a time: the float32 copy is a block's logits, not a window's or
    a batch's (with a 128K-word vocabulary a 512-token window is 262 MB in float32), and a block stays in
    the CPU's cache between the copy and the softmax (twice as fast as one call over the window)."""
    targets = ids[1:]
    return torch.cat(
        [
            F.cross_entropy(block.float(), targets[start : start + _NLL_ROWS], reduction="none")
            for start, block in zip(range(0, targets.shape[0], _NLL_ROWS), logits[:-1].split(_NLL_ROWS))
        ]
    )


_NLL_ROWS = 32
