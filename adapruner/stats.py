"""Calibration statistics that importance metrics read: input activation moments and gradients.

One pass over the calibration batch collects, for every Linear that belongs to a unit group:
  - ``act_sq[name]``: ``[in_features]`` sum over tokens of x^2 of the module's input;
  - ``act_sum[name]``: ``[in_features]`` sum over tokens of x;
  - ``grad[name]``: weight-shaped sum over samples of dL_s/dW (L_s: mean next-token loss of sample s);
  - ``fisher[name]``: weight-shaped sum over samples of (dL_s/dW)^2 (the diagonal empirical Fisher);
  - ``cov[name]``: ``[in_features, in_features]`` sum over tokens of x x^T, for the modules whose input
    columns carry the units (o_proj, down_proj): what least-squares compensation and Newton scores read;
  - ``out_grad[name]``: weight-shaped sum over samples of dF_s/dW, F_s the sample's logits maximised over
    positions and averaged over the vocabulary (the network output NIRVANA's NTK saliency differentiates).
Gradients are collected only when a metric needs them; the Fisher needs one backward pass per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adapruner.adapters.base import ModelAdapter
from adapruner.models.loading import input_device

NEEDS = ("act", "grad", "fisher", "cov", "out_grad")


@dataclass
class Statistics:
    n_tokens: int = 0
    n_samples: int = 0
    act_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    act_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    grad: dict[str, torch.Tensor] = field(default_factory=dict)
    fisher: dict[str, torch.Tensor] = field(default_factory=dict)
    cov: dict[str, torch.Tensor] = field(default_factory=dict)
    out_grad: dict[str, torch.Tensor] = field(default_factory=dict)

    def act_norm(self, name: str) -> torch.Tensor:
        """``[in_features]`` L2 norm of each input channel over all calibration tokens."""
        return self.act_sq[name].sqrt()

    def act_var(self, name: str) -> torch.Tensor:
        """``[in_features]`` variance of each input channel over the calibration tokens."""
        mean = self.act_sum[name] / self.n_tokens
        return (self.act_sq[name] / self.n_tokens - mean.square()).clamp_min(0.0)


def unit_modules(adapter: ModelAdapter) -> list[str]:
    """Names of every Linear that appears in a unit group, in layer order."""
    names = [s.module for group in adapter.groups() for s in group.slices]
    return list(dict.fromkeys(names))


def consumer_modules(adapter: ModelAdapter) -> list[str]:
    """Names of the Linears whose input columns carry the units (o_proj, down_proj), in layer order."""
    return list(dict.fromkeys(group.consumer().module for group in adapter.groups()))


def output_objective(logits: torch.Tensor) -> torch.Tensor:
    """NIRVANA's scalar network output for a chunk (``logits: [batch, seq, vocab]``): per sample, the
    logits maximised over positions and averaged over the vocabulary, summed over samples."""
    return logits.float().max(dim=1).values.mean(dim=-1).sum()


def collect_statistics(
    adapter: ModelAdapter,
    batch: torch.Tensor,
    *,
    needs: Iterable[str],
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> Statistics:
    """Run the calibration ``batch`` (``[n_samples, seq_len]`` token ids) through the model once.

    ``needs`` is a subset of :data:`NEEDS`. The model is left unchanged (no gradients
    kept on it, ``requires_grad`` restored). Each weight's gradient is folded into the accumulators as
    soon as autograd produces it and freed (:func:`gradient_sink`), so at most one ``.grad`` is alive;
    the loss backward runs only for ``grad``/``fisher`` and the output backward (NIRVANA's, which keeps
    the graph of the loss backward) only for ``out_grad``.
    """
    needs = set(needs)
    if unknown := needs - set(NEEDS):
        raise ValueError(f"unknown statistics {sorted(unknown)}; valid: {', '.join(NEEDS)}")
    if not needs:  # data-free metrics: nothing to run
        return Statistics()
    model = adapter.model
    device = input_device(model)
    modules: dict[str, nn.Linear] = {name: adapter.linear(name) for name in unit_modules(adapter)}
    stats = Statistics()
    handles = _moment_hooks(adapter, modules, stats, needs)
    use_loss = bool(needs & {"grad", "fisher"})
    use_output = "out_grad" in needs
    per_sample = "fisher" in needs
    step = 1 if per_sample else batch_size
    phase = ["loss"]

    def consume(name: str, grad: torch.Tensor) -> None:
        g = grad.float()
        if phase[0] == "output":
            _accumulate(stats.out_grad, name, g)
            return
        if per_sample:
            _accumulate(stats.fisher, name, g.square())
        if "grad" in needs:
            _accumulate(stats.grad, name, g)

    weights = {name: m.weight for name, m in modules.items()} if use_loss or use_output else {}
    with calibration_mode(model, trainable=list(weights.values()), hooks=handles), gradient_sink(weights, consume):
        for start in range(0, batch.shape[0], step):
            ids = batch[start : start + step].to(device)
            with torch.set_grad_enabled(bool(weights)):
                out = model(ids, labels=ids if use_loss else None, use_cache=False)
            if use_loss:
                # HF's loss is the mean over the chunk's tokens; scale to a sum of per-sample means.
                phase[0] = "loss"
                (out.loss * ids.shape[0]).backward(retain_graph=use_output)
            if use_output:
                phase[0] = "output"
                output_objective(out.logits).backward()
            del out
            stats.n_samples += ids.shape[0]
            stats.n_tokens += ids.numel()
            if progress:
                progress(stats.n_samples, batch.shape[0])
    return stats


def _moment_hooks(
    adapter: ModelAdapter, modules: Mapping[str, nn.Linear], stats: Statistics, needs: set[str]
) -> list[Any]:
    """Forward pre-hooks that add each module's input moments (``act``) and the consumers' input
    covariance (``cov``) to ``stats``, in fp32 on the device of the input."""
    handles = []
    if "act" in needs:

        def hook(name: str):
            def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
                _accumulate(stats.act_sq, name, x.square().sum(0))
                _accumulate(stats.act_sum, name, x.sum(0))

            return record

        handles = [module.register_forward_pre_hook(hook(name)) for name, module in modules.items()]
    if "cov" in needs:

        def cov_hook(name: str):
            def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
                _accumulate(stats.cov, name, x.t() @ x)

            return record

        handles += [
            adapter.linear(name).register_forward_pre_hook(cov_hook(name)) for name in consumer_modules(adapter)
        ]
    return handles


@contextmanager
def gradient_sink(weights: Mapping[str, nn.Parameter], consume: Callable[[str, torch.Tensor], None]):
    """While active, every gradient that autograd accumulates into one of ``weights`` is handed to
    ``consume(name, grad)`` at once and dropped from the parameter (``.grad`` is ``None`` again), so a
    backward pass never holds more than the gradient being reduced. Hooks are removed on exit."""

    def hook(name: str):
        def run(param: torch.Tensor) -> None:
            grad, param.grad = param.grad, None
            consume(name, grad)

        return run

    handles = [param.register_post_accumulate_grad_hook(hook(name)) for name, param in weights.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def calibration_mode(model: nn.Module, *, trainable: Sequence[nn.Parameter], hooks: Sequence[Any] = ()):
    """Eval mode with gradients only for ``trainable``; on exit restores every ``requires_grad`` flag
    and the training mode, drops gradients and removes ``hooks`` (forward-hook handles)."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
        yield
    finally:
        for handle in hooks:
            handle.remove()
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = None
        model.train(was_training)


def _accumulate(store: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    """Add ``value`` to ``store[name]``; the first value is stored as is (callers pass a tensor they own)."""
    if name in store:
        store[name] += value
    else:
        store[name] = value
