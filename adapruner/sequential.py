"""Sequential (layer-by-layer) mode: a model larger than the device is calibrated and evaluated one
decoder layer at a time, as SparseGPT and llm-compressor do.

The weights stay where they were loaded (the CPU). The inputs of every decoder layer are captured once
(:func:`adapruner.layerwise.capture_inputs`: the model runs with its layers bypassed, recording the hidden states that reach
the first layer and the keyword arguments the model passes each layer: attention mask, position
embeddings, position ids); then each layer visits the device in turn (:func:`run_layers`), runs on all
calibration chunks (the hooks registered on it or its Linears see what they need), its outputs become
the next layer's inputs, and it goes back. The model's own tail (final norm, head, softcapping, loss)
turns the last layer's outputs into logits (:func:`head_outputs`). On the device at any time: one
decoder layer, one chunk's activations and, for logits, the embedding and head.

What it serves, with the whole-model function it replaces (results equal to float tolerance):
- activation statistics (``act``, ``cov``): every metric that reads only them (wanda, flap, bip, the
  numerical ones, the data-free ones);
- every compensator: :func:`adapruner.prune.step.compensate_by_layer` runs with this placement (each
  layer's statistics collected, its surgery done and its solves run while it visits the device);
- block criteria ``block_influence`` (a layer's input and output) and ``ppl`` (one sequential pass per
  skipped block: exact, ``n_layers`` times the cost of one pass);
- perplexity evaluation.
Refused with a :class:`SequentialError` naming the metric: whatever needs gradients of the whole
model's loss or output (``grad``, ``fisher``, ``out_grad``: taylor, taylor2, nirvana..., and the block
criterion ``taylor_plus``); run those with the whole model on one device, or over several GPUs
(``model.gpus``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adapruner.adapters import get_adapter
from adapruner.adapters.base import ModelAdapter
from adapruner.catalog import BLOCK_CRITERIA, METRICS
from adapruner.config import ModelSpec, PruneJob
from adapruner.errors import UserError
from adapruner.layerwise import (
    CPU,
    Placement,
    capture_inputs,
    head_outputs,
    hidden_in,
    hidden_out,
    run_layers,
)
from adapruner.models.loading import placement
from adapruner.prune.depth import block_influence, skipping, token_cosine
from adapruner.stats import Statistics, calibration_mode, moment_hooks, unit_modules

GRADIENT_NEEDS = frozenset({"grad", "fisher", "out_grad"})
SEQUENTIAL_CRITERIA = ("block_influence", "ppl")


class SequentialError(UserError):
    """What the job asks for needs the whole model at once; the message names it and the fix."""


# ---- what the pipeline runs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Sequential(Placement):
    """Sequential mode: decoder layers visit ``device`` one at a time, their weights and the hidden
    states between layers stay on ``offload``; ``batch_size`` rows of calibration ids per chunk."""

    device: torch.device = CPU
    offload: torch.device = CPU
    batch_size: int = 4

    def statistics(
        self,
        adapter: ModelAdapter,
        batch: torch.Tensor,
        *,
        needs: Iterable[str],
        unit_terms: Mapping[str, Any] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Statistics:
        """:func:`adapruner.stats.collect_statistics` for ``act`` and ``cov``, layer by layer (the same
        hooks); each layer's statistics go to ``offload`` once it has run. Gradients (``needs`` or the
        per-unit terms of gradient metrics, ``unit_terms``) are refused."""
        needs = set(needs)
        if refused := (needs & GRADIENT_NEEDS) | set(unit_terms or ()):
            raise SequentialError(f"statistics {sorted(refused)} need the whole model's gradients; {_FIX}")
        stats = Statistics()
        if not needs:
            return stats
        modules = {name: adapter.linear(name) for name in unit_modules(adapter)}

        def after_layer(index: int) -> None:
            _offload_statistics(stats, self.offload)
            if progress:
                progress(index + 1, adapter.n_layers)

        with calibration_mode(adapter.model, trainable=()):
            inputs = self.capture(adapter, batch)
            with calibration_mode(adapter.model, trainable=(), hooks=moment_hooks(adapter, modules, stats, needs)):
                run_layers(adapter, inputs, device=self.device, offload=self.offload, after_layer=after_layer)
        stats.n_samples, stats.n_tokens = batch.shape[0], batch.numel()
        return stats

    def block_scores(
        self,
        adapter: ModelAdapter,
        batch: torch.Tensor,
        *,
        criterion: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """:func:`adapruner.prune.depth.block_scores` (``[n_layers]``, float64, CPU) for the criteria a
        layer's inputs and outputs give: ``block_influence`` and ``ppl``; ``taylor_plus`` is refused."""
        BLOCK_CRITERIA.check(criterion)
        if criterion not in SEQUENTIAL_CRITERIA:
            raise SequentialError(f"prune.block_criterion {criterion!r} needs the whole model's gradients; {_FIX}")
        if criterion == "ppl":
            return self._skip_perplexity(adapter, batch, progress)
        cos_sum = torch.zeros(adapter.n_layers, dtype=torch.float64)

        def hook(index: int):
            def record(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
                cos_sum[index] += token_cosine(hidden_in(args, kwargs), hidden_out(output)).sum().double().cpu()

            return record

        with calibration_mode(adapter.model, trainable=()):
            inputs = self.capture(adapter, batch)  # before the hooks: the capture bypasses the layers
            layers = adapter.layers
            handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
            try:
                run_layers(adapter, inputs, device=self.device, offload=self.offload)
            finally:
                for handle in handles:
                    handle.remove()
        if progress:
            progress(adapter.n_layers, adapter.n_layers)
        return block_influence(cos_sum, batch.numel())

    def _skip_perplexity(
        self, adapter: ModelAdapter, batch: torch.Tensor, progress: Callable[[int, int], None] | None
    ) -> torch.Tensor:
        """Shortened LLaMA's PPL criterion: ``exp(mean loss)`` with each block skipped in turn."""
        losses = []
        with calibration_mode(adapter.model, trainable=()):
            inputs = self.capture(adapter, batch)
            for i, layer in enumerate(adapter.layers):
                with skipping(layer):
                    finals = run_layers(adapter, inputs, device=self.device, offload=self.offload)
                chunks = batch.split(self.batch_size)
                outputs = head_outputs(adapter, chunks, finals, device=self.device, labels=True)
                # HF's loss is the mean over a chunk's tokens: weight each chunk by its rows, as depth.mean_loss.
                total = sum(float(out.loss) * final.shape[0] for out, final in zip(outputs, finals, strict=True))
                losses.append(total / batch.shape[0])
                if progress:
                    progress(i + 1, adapter.n_layers)
        return torch.tensor(losses, dtype=torch.float64).exp()

    def logits(self, model: nn.Module, batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The logits ``[b, seq, vocab]`` of each id batch in ``batches`` (each ``[b, seq]``; sizes may
        differ), every layer visiting the device once for all of them: what perplexity reads."""
        adapter = get_adapter(model)
        inputs = [  # chunks of their own sizes: one capture each
            capture_inputs(adapter, ids, batch_size=ids.shape[0], device=self.device, offload=self.offload)[0]
            for ids in batches
        ]
        finals = run_layers(adapter, inputs, device=self.device, offload=self.offload)
        for out in head_outputs(adapter, batches, finals, device=self.device):
            yield out.logits


_FIX = (
    "sequential mode (model.sequential) runs one layer at a time and cannot take them: choose activation "
    "metrics (wanda, flap, bip, ...) and the block criterion block_influence or ppl, or set model.sequential "
    "false (model.gpus > 1 spreads a model too large for one GPU over several)"
)


def sequential_for(spec: ModelSpec) -> Sequential | None:
    """The :class:`Sequential` mode ``spec`` asks for (``model.sequential``), on its compute device; else None."""
    return Sequential(placement(spec)[0]) if spec.sequential else None


def checked_sequential(job: PruneJob) -> Sequential | None:
    """The :class:`Sequential` mode of a prune ``job`` (None when ``model.sequential`` is off), once
    :func:`check_sequential` has refused what it cannot run: call before any work."""
    sequential = sequential_for(job.model)
    if sequential is not None:
        depth = job.prune.block_criterion if job.prune.depth_share > 0 else None
        check_sequential(job.importance.mix, block_criterion=depth)
    return sequential


def check_sequential(mix: Iterable[str], *, block_criterion: str | None = None) -> None:
    """Refuse, before any work, the metrics of ``mix`` and the block criterion that sequential mode cannot
    run (they need gradients of the whole model): one line naming them and the fix."""
    refused = sorted(name for name in mix if METRICS.get(name).needs & GRADIENT_NEEDS)
    if refused:
        raise SequentialError(f"importance: metric(s) {', '.join(refused)} need the whole model's gradients; {_FIX}")
    if block_criterion is not None and block_criterion not in SEQUENTIAL_CRITERIA:
        raise SequentialError(f"prune.block_criterion {block_criterion!r} needs the whole model's gradients; {_FIX}")


def _offload_statistics(stats: Statistics, offload: torch.device) -> None:
    """Move every accumulator of ``stats`` to ``offload`` (the layer that filled them has run)."""
    for store in (stats.act_sq, stats.act_sum, stats.cov):
        _move_all(store, offload)


def _move_all(store: Mapping[str, torch.Tensor], device: torch.device) -> None:
    for name, tensor in list(store.items()):
        if tensor.device != device:
            store[name] = tensor.to(device)  # type: ignore[index]
