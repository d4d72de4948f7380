"""Calibration statistics that importance metrics read: input activation moments and gradients.

One pass over the calibration batch collects, for every Linear that belongs to a unit group:
  - ``act_sq[name]``: ``[in_features]`` sum over tokens of x^2 of the module's input;
  - ``act_sum[name]``: ``[in_features]`` sum over tokens of x;
  - ``grad[name]``: weight-shaped sum over samples of dL_s/dW (L_s: mean next-token loss of sample s);
  - ``fisher[name]``: weight-shaped sum over samples of (dL_s/dW)^2 (the diagonal empirical Fisher);
  - ``cov[name]``: ``[in_features, in_features]`` sum over tokens of x x^T, for the modules whose input
    columns carry the units (o_proj, down_proj): what least-squares compensation and Newton scores read;
  - ``out_grad[name]``: weight-shaped sum over samples of dF_s/dW, F_s the sample's logits maximised over
    positions and averaged over the vocabulary (the network output NIRVANA's NTK saliency differentiates);
  - ``unit_sums[statistic][slice]``: ``[n_units]`` a metric's per-unit terms of each sample's gradients,
    summed over samples (:func:`unit_term_reducer`), for the metrics that declare such a statistic
    (``Importance.pooled_from``): what ``prune`` and a search's pool (:mod:`adapruner.search.cache`) score
    gradient metrics from, so that no weight-shaped gradient sum is kept.
Gradients are collected only when a metric needs them; the Fisher and the per-unit terms need one
backward pass per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from adapruner.adapters.base import CoupledSlice, ModelAdapter, consumer_modules
from adapruner.models.loading import input_device

NEEDS = ("act", "grad", "fisher", "cov", "out_grad")
PASSES = ("loss", "output")  # the backward passes a statistics pass can take, in this order
PASS_OF = {"grad": "loss", "fisher": "loss", "out_grad": "output"}  # the backward pass of each gradient need


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
    unit_sums: dict[str, dict[CoupledSlice, torch.Tensor]] = field(default_factory=dict)

    def act_norm(self, name: str) -> torch.Tensor:
        """``[in_features]`` L2 norm of each input channel over all calibration tokens."""
        return self.act_sq[name].sqrt()

    def act_var(self, name: str) -> torch.Tensor:
        """``[in_features]`` variance of each input channel over the calibration tokens."""
        mean = self.act_sum[name] / self.n_tokens
        return (self.act_sq[name] / self.n_tokens - mean.square()).clamp_min(0.0)

    def input_cov(self, name: str, start: int, width: int) -> torch.Tensor:
        """The input covariance of channels ``start .. start + width - 1`` of module ``name``: ``[width,
        width]`` from ``cov`` or, where only the moments were collected (a search's pool), its diagonal
        ``[width]`` (``act_sq``), which ignores the correlations between channels."""
        if name in self.cov:
            return self.cov[name].narrow(0, start, width).narrow(1, start, width)
        return self.act_sq[name].narrow(0, start, width)


def unit_modules(adapter: ModelAdapter) -> list[str]:
    """Names of every Linear that appears in a unit group, in layer order."""
    names = [s.module for group in adapter.groups() for s in group.slices]
    return list(dict.fromkeys(names))


def output_objective(logits: torch.Tensor) -> torch.Tensor:
    """NIRVANA's scalar network output for a chunk (``logits: [batch, seq, vocab]``): per sample, the
    logits maximised over positions and averaged over the vocabulary, summed over samples."""
    return logits.float().max(dim=1).values.mean(dim=-1).sum()


def backward_passes(needs: Iterable[str]) -> tuple[str, ...]:
    """The backward passes that the statistics ``needs`` take, in :data:`PASSES` order: ``loss`` for
    ``grad``/``fisher``, ``output`` (NIRVANA's) for ``out_grad``."""
    needs = set(needs)
    return tuple(p for p in PASSES if needs & {n for n, q in PASS_OF.items() if q == p})


class UnitTerms(Protocol):
    """What :func:`unit_term_reducer` needs of a metric (an :class:`~adapruner.importance.base.Importance`)."""

    needs: frozenset[str]

    def unit_terms(
        self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics
    ) -> torch.Tensor | None: ...


def collect_statistics(
    adapter: ModelAdapter,
    batch: torch.Tensor,
    *,
    needs: Iterable[str],
    unit_terms: Mapping[str, UnitTerms] | None = None,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> Statistics:
    """Run the calibration ``batch`` (``[n_samples, seq_len]`` token ids) through the model once.

    ``needs`` is a subset of :data:`NEEDS` (gradients as weight-shaped sums). ``unit_terms`` (``{statistic:
    metric}``) adds ``unit_sums``: each metric's unit terms of every sample's gradients, summed over samples
    (one backward pass per sample; nothing weight-shaped kept). The model is left unchanged; at most one
    ``.grad`` is alive (:func:`calibration_passes`). The Fisher takes one backward pass per sample.
    """
    needs, unit_terms = set(needs), dict(unit_terms or {})
    if unknown := needs - set(NEEDS):
        raise ValueError(f"unknown statistics {sorted(unknown)}; valid: {', '.join(NEEDS)}")
    if not needs and not unit_terms:  # data-free metrics: nothing to run
        return Statistics()
    stats = Statistics()
    per_sample = "fisher" in needs or bool(unit_terms)
    reduce = unit_term_reducer(adapter, Statistics(), unit_terms, write=_summed_into(stats)) if unit_terms else None

    def consume(phase: str, name: str, grad: torch.Tensor) -> None:
        g = grad.float()
        if reduce is not None:
            reduce(phase, name, g)
        if phase == "output":
            if "out_grad" in needs:
                _accumulate(stats.out_grad, name, g)
            return
        if "fisher" in needs:
            _accumulate(stats.fisher, name, g.square())
        if "grad" in needs:
            _accumulate(stats.grad, name, g)

    step = 1 if per_sample else batch_size
    passes_needs = needs.union(*(metric.needs for metric in unit_terms.values()))
    for n in calibration_passes(adapter, batch, stats, needs=passes_needs, step=step, consume=consume):
        stats.n_samples += n
        stats.n_tokens += n * batch.shape[1]
        if progress:
            progress(stats.n_samples, batch.shape[0])
    return stats


def _summed_into(stats: Statistics) -> Callable[[str, CoupledSlice, torch.Tensor], None]:
    """``write(statistic, slice, terms)`` adding one sample's unit terms to ``stats.unit_sums``."""

    def write(key: str, slice_: CoupledSlice, terms: torch.Tensor) -> None:
        _accumulate(stats.unit_sums.setdefault(key, {}), slice_, terms)

    return write


def unit_term_reducer(
    adapter: ModelAdapter,
    current: Statistics,
    statistics: Mapping[str, UnitTerms],
    *,
    write: Callable[[str, CoupledSlice, torch.Tensor], None],
) -> Callable[[str, str, torch.Tensor], None]:
    """``consume(pass, module, grad)`` for :func:`calibration_passes` run one sample at a time: puts the
    sample's gradient of ``module`` into ``current`` (``grad`` and ``fisher`` for the loss pass,
    ``out_grad`` for the output pass), hands each statistic's unit terms ``[n_units]`` of the module's
    slices to ``write(statistic, slice, terms)`` and drops the gradient again. Every metric scores every
    slice (a metric that ignores one cannot be reduced per unit)."""
    by_module: dict[str, list[tuple[CoupledSlice, int]]] = {}
    for group in adapter.groups():
        for slice_ in group.slices:
            by_module.setdefault(slice_.module, []).append((slice_, group.n_units))
    fisher = any("fisher" in metric.needs for metric in statistics.values())
    taken = {key: backward_passes(metric.needs)[0] for key, metric in statistics.items()}

    def consume(phase: str, name: str, grad: torch.Tensor) -> None:
        g = grad.float()
        fields = {"out_grad": g} if phase == "output" else {"grad": g} | ({"fisher": g.square()} if fisher else {})
        for field_name, value in fields.items():
            getattr(current, field_name)[name] = value
        weight = adapter.linear(name).weight.detach()
        for key, metric in statistics.items():
            if taken[key] != phase:
                continue
            for slice_, n_units in by_module.get(name, ()):
                terms = metric.unit_terms(weight, slice_, n_units, current)
                if terms is None:
                    raise ValueError(f"statistic {key!r}: a metric pooled from unit terms scores every slice")
                write(key, slice_, terms)
        for field_name in fields:
            del getattr(current, field_name)[name]

    return consume


def calibration_passes(
    adapter: ModelAdapter,
    batch: torch.Tensor,
    stats: Statistics,
    *,
    needs: set[str],
    step: int,
    consume: Callable[[str, str, torch.Tensor], None],
) -> Iterator[int]:
    """Run ``batch`` (``[n_samples, seq_len]`` token ids) through the model ``step`` samples at a time and
    yield each chunk's number of samples once its passes are done.

    Forward pre-hooks add the input moments that ``needs`` names (``act``, ``cov``) to ``stats``. The
    loss backward (for ``grad``/``fisher``) and the output backward (for ``out_grad``, keeping the loss
    backward's graph) hand each unit weight's gradient to ``consume(pass, module, grad)`` as soon as
    autograd produces it and free it (:func:`gradient_sink`), so at most one ``.grad`` is alive. The
    model is left unchanged (no gradients kept on it, ``requires_grad`` restored).
    """
    model = adapter.model
    device = input_device(model)
    modules: dict[str, nn.Linear] = {name: adapter.linear(name) for name in unit_modules(adapter)}
    passes = backward_passes(needs)
    phase = [PASSES[0]]
    weights = {name: m.weight for name, m in modules.items()} if passes else {}
    handles = moment_hooks(adapter, modules, stats, needs)
    sink = gradient_sink(weights, lambda name, grad: consume(phase[0], name, grad))
    with calibration_mode(model, trainable=list(weights.values()), hooks=handles), sink:
        for start in range(0, batch.shape[0], step):
            ids = batch[start : start + step].to(device)
            with torch.set_grad_enabled(bool(passes)):
                out = model(ids, labels=ids if "loss" in passes else None, use_cache=False)
            if "loss" in passes:
                # HF's loss is the mean over the chunk's tokens; scale to a sum of per-sample means.
                phase[0] = "loss"
                (out.loss * ids.shape[0]).backward(retain_graph="output" in passes)
            if "output" in passes:
                phase[0] = "output"
                output_objective(out.logits).backward()
            del out
            yield ids.shape[0]


def moment_hooks(
    adapter: ModelAdapter,
    modules: Mapping[str, nn.Linear],
    stats: Statistics,
    needs: set[str],
    *,
    consumers: Iterable[str] | None = None,
) -> list[Any]:
    """Forward pre-hooks that add each of ``modules``' input moments (``act``) and the input covariance
    (``cov``) of ``consumers`` (default: every consumer projection) to ``stats``, in fp32 on the device of
    the input."""
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
                if name in stats.cov:  # in place: no second [d, d] matrix per chunk
                    stats.cov[name].addmm_(x.t(), x)
                else:
                    stats.cov[name] = x.t() @ x

            return record

        handles += [
            adapter.linear(name).register_forward_pre_hook(cov_hook(name))
            for name in (consumer_modules(adapter) if consumers is None else consumers)
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
            p.requires_grad_(flags.get(name, p.requires_grad))  # one created inside (surgery) keeps its own
            p.grad = None
        model.train(was_training)


def _accumulate(store: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    """Add ``value`` to ``store[name]``; the first value is stored as is (callers pass a tensor they own)."""
    if name in store:
        store[name] += value
    else:
        store[name] = value
