"""Depth pruning: which whole decoder blocks to remove.

A block criterion scores every decoder block of a model on a calibration batch (higher = more
important, keep); the plan (:func:`adapruner.prune.plan.blocks_to_remove`) decides how many blocks go,
and :func:`choose_blocks` removes the lowest-scored ones. Criteria, registered in
``adapruner.catalog.BLOCK_CRITERIA``:

- ``ppl`` (Shortened LLaMA, Kim et al., 2024, arXiv 2402.02834): the calibration perplexity of the
  model with the block skipped (its output replaced by its input), one-shot for each block. Blocks
  whose removal hurts least (lowest PPL) go first.
- ``taylor_plus`` (Shortened LLaMA's Taylor+): the block's first-order Taylor saliency, the sum of
  ``|W * dL/dW|`` over every parameter of the block; the "+" keeps the first four and last two blocks
  (the paper's heuristic), when the model has more than six.
- ``block_influence`` (ShortGPT, Men et al., 2024, arXiv 2403.03853): ``BI = 1 - E_t[cos(x_t, y_t)]``
  with ``x_t``/``y_t`` the block's input/output hidden state of token t; a block that barely turns
  the residual stream is redundant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from adapruner.adapters.base import ModelAdapter
from adapruner.catalog import BLOCK_CRITERIA
from adapruner.errors import UserError
from adapruner.layerwise import hidden_in, hidden_out
from adapruner.models.loading import input_device
from adapruner.prune.plan import PlanError
from adapruner.stats import calibration_mode


# ---- tensor math ------------------------------------------------------------------------------------
def token_cosine(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each token's block input and output: ``[..., hidden]`` x2 -> ``[...]``
    (float32)."""
    return torch.nn.functional.cosine_similarity(inputs.float(), outputs.float(), dim=-1)


def block_influence(cos_sum: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """ShortGPT's Block Influence ``1 - mean_t cos(x_t, y_t)`` from the per-block sums of the token
    cosines: ``cos_sum: [n_layers]`` -> ``[n_layers]``."""
    return 1.0 - cos_sum.double() / n_tokens


def taylor_saliency(weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """First-order Taylor saliency of a group of weights (LLM-Pruner's element-wise form summed over
    the group, Shortened LLaMA's block score): ``sum_k sum |W_k * G_k|`` over tensors of any shapes,
    returned as a float64 scalar."""
    total = torch.zeros((), dtype=torch.float64)
    for w, g in zip(weights, grads, strict=True):
        total += (w.detach().double() * g.double()).abs().sum().cpu()
    return total


def protect_ends(scores: torch.Tensor, *, first: int, last: int) -> torch.Tensor:
    """``scores: [n_layers]`` with the first ``first`` and last ``last`` blocks set to +inf (never
    removed), unchanged when the model has no more than ``first + last`` blocks."""
    n = scores.numel()
    if n <= first + last:
        return scores
    scores = scores.clone()
    scores[:first] = float("inf")
    scores[n - last :] = float("inf")
    return scores


def choose_blocks(scores: torch.Tensor, n: int, *, candidates: Sequence[int]) -> list[int]:
    """The ``n`` lowest-scored blocks among ``candidates`` (``scores: [n_layers]``), ascending; ties go
    to the later block."""
    if n > len(candidates):
        raise PlanError(f"prune.depth_share: cannot remove {n} of {len(candidates)} candidate blocks")
    order = sorted(candidates, key=lambda i: (float(scores[i]), -i))
    return sorted(order[:n])


# ---- running the model ------------------------------------------------------------------------------
@contextmanager
def skipping(layer: nn.Module) -> Iterator[None]:
    """Run ``layer`` as the identity (its output replaced by its input hidden states) inside the block."""

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        hidden = hidden_in(args, kwargs)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = layer.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _chunks(batch: torch.Tensor, size: int, device: torch.device) -> Iterator[torch.Tensor]:
    for start in range(0, batch.shape[0], size):
        yield batch[start : start + size].to(device)


def mean_loss(model: nn.Module, batch: torch.Tensor, *, batch_size: int = 4) -> float:
    """Mean next-token loss of ``model`` over ``batch`` (``[n_samples, seq_len]`` token ids)."""
    device = input_device(model)
    total = 0.0
    with torch.no_grad():
        for ids in _chunks(batch, batch_size, device):
            total += float(model(ids, labels=ids, use_cache=False).loss) * ids.shape[0]
    return total / batch.shape[0]


class BlockCriterion:
    """Base class of the block criteria; registered by name in ``adapruner.catalog.BLOCK_CRITERIA``."""

    def __init__(self, *, batch_size: int = 4) -> None:
        self.batch_size = batch_size

    def __call__(
        self, adapter: ModelAdapter, batch: torch.Tensor, *, progress: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """Scores ``[n_layers]`` (float64, CPU; higher = keep) from the calibration ``batch``
        (``[n_samples, seq_len]`` token ids). The model is left unchanged."""
        raise NotImplementedError


class PerplexityCriterion(BlockCriterion):
    """Shortened LLaMA's PPL criterion: ``exp(loss)`` of the model with block i skipped."""

    def __call__(self, adapter, batch, *, progress=None):
        model = adapter.model
        losses = []
        with calibration_mode(model, trainable=()):
            for i, layer in enumerate(adapter.layers):
                with skipping(layer):
                    losses.append(mean_loss(model, batch, batch_size=self.batch_size))
                if progress:
                    progress(i + 1, adapter.n_layers)
        return torch.tensor(losses, dtype=torch.float64).exp()


class TaylorPlusCriterion(BlockCriterion):
    """Shortened LLaMA's Taylor+ criterion: the sum of ``|W * dL/dW|`` over the block's parameters
    (``L`` summed over samples of each sample's mean next-token loss), with the first ``protect[0]``
    and last ``protect[1]`` blocks kept."""

    protect: ClassVar[tuple[int, int]] = (4, 2)

    def raw(self, adapter: ModelAdapter, batch: torch.Tensor) -> torch.Tensor:
        """The unprotected Taylor saliency of every block: ``[n_layers]``."""
        model = adapter.model
        device = input_device(model)
        params = [list(layer.parameters()) for layer in adapter.layers]
        with calibration_mode(model, trainable=[p for block in params for p in block]):
            for ids in _chunks(batch, self.batch_size, device):
                (model(ids, labels=ids, use_cache=False).loss * ids.shape[0]).backward()
            return torch.stack(
                [
                    taylor_saliency(block, [p.grad if p.grad is not None else torch.zeros_like(p) for p in block])
                    for block in params
                ]
            )

    def __call__(self, adapter, batch, *, progress=None):
        scores = self.raw(adapter, batch)
        if progress:
            progress(adapter.n_layers, adapter.n_layers)
        return protect_ends(scores, first=self.protect[0], last=self.protect[1])


class BlockInfluenceCriterion(BlockCriterion):
    """ShortGPT's Block Influence, ``1 - mean cos(input, output)`` over every calibration token."""

    def __call__(self, adapter, batch, *, progress=None):
        model = adapter.model
        device = input_device(model)
        cos_sum = torch.zeros(adapter.n_layers, dtype=torch.float64)

        def hook(index: int):
            def record(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
                cos_sum[index] += token_cosine(hidden_in(args, kwargs), hidden_out(output)).sum().double().cpu()

            return record

        handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(adapter.layers)]
        with calibration_mode(model, trainable=(), hooks=handles), torch.no_grad():
            for ids in _chunks(batch, self.batch_size, device):
                model(ids, use_cache=False)
        if progress:
            progress(adapter.n_layers, adapter.n_layers)
        return block_influence(cos_sum, batch.numel())


def build_block_criterion(name: str, *, batch_size: int = 4) -> BlockCriterion:
    return BLOCK_CRITERIA.get(name)(batch_size=batch_size)


def block_scores(
    adapter: ModelAdapter,
    batch: torch.Tensor,
    *,
    criterion: str,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The registered ``criterion``'s scores ``[n_layers]`` of every block on ``batch``."""
    return build_block_criterion(criterion, batch_size=batch_size)(adapter, batch, progress=progress)


def fixed_batch(tokens: torch.Tensor | None, n: int = 32) -> torch.Tensor:
    """``n`` evenly spaced rows of ``tokens`` (``[n_pool, seq_len]``, a pool concatenated by source, so
    every source contributes): ``[min(n, n_pool), seq_len]``."""
    if tokens is None:
        raise UserError("the calibration pool holds no token ids; delete its cache to rebuild it")
    rows = torch.linspace(0, tokens.shape[0] - 1, min(n, tokens.shape[0])).round().long()
    return tokens[rows]


class BlockScores:
    """Block scores of one (dense) model on one fixed calibration batch, computed once per criterion
    on first use: a search shares them across its trials. ``batch`` is ``[n_samples, seq_len]`` token
    ids or a function returning them (called on first use only)."""

    def __init__(
        self,
        adapter: ModelAdapter,
        batch: torch.Tensor | Callable[[], torch.Tensor],
        *,
        batch_size: int = 4,
    ) -> None:
        self.adapter, self.batch_size = adapter, batch_size
        self._batch = batch
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, criterion: str) -> torch.Tensor:
        if criterion not in self._cache:
            if callable(self._batch):
                self._batch = self._batch()
            self._cache[criterion] = block_scores(
                self.adapter, self._batch, criterion=criterion, batch_size=self.batch_size
            )
        return self._cache[criterion]
