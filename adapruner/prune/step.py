"""One pruning step, written once for ``prune`` and for every search trial: plan -> surgery and compensation.

The step changes the model in place. :class:`DenseSnapshot` records what it replaces so that a search trial
can restore the dense model exactly instead of pruning a deep copy: one model in memory, whatever the number
of trials, and no dense copy of the pruned weights either (issue 17: a trial's peak is about the weights).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adapruner.adapters.base import ModelAdapter, observing_slices
from adapruner.compensate import Compensator, PrunedInput, pruned_inputs
from adapruner.config import PruneConfig
from adapruner.layerwise import LayerInputs, Placement, visiting
from adapruner.models.loading import trim_heap
from adapruner.prune.apply import apply_layer, apply_plan, layer_changes, plan_model, remove_planned_blocks
from adapruner.prune.plan import Plan
from adapruner.stats import Statistics, calibration_mode, moment_hooks

WHOLE_MODEL = Placement()
"""Layer passes over the model where it was loaded (no layer moves)."""

# Module attributes that hold containers surgery edits in place (``module.weight = ...``, a new layer list).
_CONTAINERS = ("_parameters", "_buffers", "_modules")


@dataclass
class _Slicing:
    """One surgery step on a Parameter: ``new`` holds the entries ``keep`` of ``old`` along ``dim``, ``dropped``
    the entries ``drop``; ``old`` itself is emptied until :meth:`undo` puts its dense value back."""

    old: nn.Parameter
    dim: int
    keep: torch.Tensor
    drop: torch.Tensor
    dropped: torch.Tensor
    new: nn.Parameter

    def undo(self) -> None:
        """Put the dense value back into ``old`` and free ``new`` and the removed entries (the pruned model
        is being discarded): the rebuild holds one extra tensor at a time, not a second pruned model."""
        shape = list(self.new.shape)
        shape[self.dim] += self.drop.numel()
        dense = torch.empty(shape, dtype=self.new.dtype, device=self.new.device)
        dense.index_copy_(self.dim, self.keep, self.new.detach())
        dense.index_copy_(self.dim, self.drop, self.dropped)
        self.old.data = dense
        self.new.data = torch.empty(0, dtype=dense.dtype, device=dense.device)
        self.dropped = self.new.data


class DenseSnapshot:
    """What is needed to put ``model`` back as it is now, after :func:`prune_step` changed it in place.

    Holds references, not copies: every module's attributes (with its parameter, buffer and child
    containers copied shallowly, so that the original Parameters and decoder layers stay reachable) and
    a deep copy of the model config (a few small fields). Surgery that the snapshot observes
    (:meth:`observing`) keeps, per replaced Parameter, only its removed entries and frees the rest: the
    dense value is rebuilt from the smaller Parameter and those entries. Tensors that are about to be
    changed in place are copied by :meth:`protect` first.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modules: list[tuple[nn.Module, dict[str, Any]]] = []
        for module in model.modules():
            attributes = dict(module.__dict__)
            for name in _CONTAINERS:
                attributes[name] = dict(attributes[name])
            self._modules.append((module, attributes))
        self._config = copy.deepcopy(model.config.__dict__)
        self._slicings: list[_Slicing] = []
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def observing(self) -> AbstractContextManager[None]:
        """Surgery inside this context is recorded (:func:`adapruner.adapters.base.observing_slices`)."""
        return observing_slices(self._record)

    def _record(self, old: nn.Parameter, dim: int, keep: torch.Tensor, new: nn.Parameter) -> None:
        mask = torch.ones(old.shape[dim], dtype=torch.bool, device=keep.device)
        mask[keep] = False
        drop = mask.nonzero().squeeze(1)
        self._slicings.append(_Slicing(old, dim, keep, drop, old.detach().index_select(dim, drop), new))
        old.data = torch.empty(0, dtype=old.dtype, device=old.device)  # freed until restore
        trim_heap()  # and given back, not kept as a heap fragment

    def protect(self, modules: Sequence[nn.Module]) -> None:
        """Copy the current values of the Parameters of ``modules`` (e.g. the kept columns and an existing
        bias of a projection whose input columns were sliced), before they are updated in place."""
        for module in modules:
            for param in module.parameters(recurse=False):
                self._saved.append((param, param.detach().clone()))

    def restore(self) -> None:
        """Put the model back as it was when the snapshot was taken (bit for bit, same module objects)."""
        with torch.no_grad():
            while self._saved:
                param, value = self._saved.pop()
                param.copy_(value)
            while self._slicings:  # last first; each one's pruned tensors are freed as soon as it is undone
                self._slicings.pop().undo()
                trim_heap()
        for module, attributes in self._modules:
            for name in set(module.__dict__) - set(attributes):
                del module.__dict__[name]
            for name, value in attributes.items():
                if name in _CONTAINERS:
                    container = module.__dict__[name]
                    container.clear()
                    container.update(value)
                else:
                    module.__dict__[name] = value
        config = self.model.config.__dict__
        config.clear()
        config.update(self._config)
        self.release()

    def release(self) -> None:
        """Drop every reference the snapshot holds (the pruned model is kept: frees the dense weights)."""
        self._modules, self._slicings, self._saved, self._config = [], [], [], {}


def prune_step(
    adapter: ModelAdapter,
    scores: Mapping[tuple[int, str], torch.Tensor],
    *,
    config: PruneConfig,
    params_before: int,
    compensator: Compensator,
    calibration: Callable[[], torch.Tensor],
    placement: Placement = WHOLE_MODEL,
    block_scores: Callable[[str], torch.Tensor] | None = None,
    saliency: Sequence[Mapping[str, Sequence[float]]] | None = None,
    snapshot: DenseSnapshot | None = None,
    timed: Callable[[str], AbstractContextManager[Any]] = lambda _stage: nullcontext(),
) -> Plan:
    """Plan ``adapter``'s model from ``scores`` (``{(layer, kind): [n_units]}``) and ``config``, remove the
    planned units (compensating the pruned projections, layer by layer, when the compensator reads
    statistics), then remove the planned blocks; returns the plan.

    ``calibration()`` gives the token ids ``[n, seq]`` whose dense activations the compensator reads; it
    is called only when it reads any. Blocks go last: compensation addresses dense layer indices. With
    ``snapshot``, surgery is recorded into it and tensors that compensation updates in place are saved
    first. ``timed(stage)`` wraps the stages ``pruning`` (plan, and surgery without compensation) and
    ``compensation`` (its statistics pass, surgery and solves), for the caller's timings.
    """
    with timed("pruning"):
        plan = plan_model(
            adapter, params_before=params_before, config=config, block_scores=block_scores, saliency=saliency
        )
        if not compensator.needs:
            with _observed(snapshot):
                apply_plan(adapter, scores, plan, drop_blocks=False)
    if compensator.needs:
        with timed("compensation"):
            compensate_by_layer(
                adapter, scores, plan, compensator, calibration(), placement=placement, snapshot=snapshot
            )
            adapter.sync_config()
    remove_planned_blocks(adapter, plan)
    return plan


def compensate_by_layer(
    adapter: ModelAdapter,
    scores: Mapping[tuple[int, str], torch.Tensor],
    plan: Plan,
    compensator: Compensator,
    batch: torch.Tensor,
    *,
    placement: Placement = WHOLE_MODEL,
    snapshot: DenseSnapshot | None = None,
) -> None:
    """Remove ``plan``'s units one decoder layer at a time, each layer's pruned projections compensated
    from their dense inputs on the calibration ``batch`` (``[n, seq]`` ids).

    The dense layer runs on the hidden states that reach it (the dense model's: its outputs, computed
    before its surgery, are the next layer's inputs), with hooks collecting what ``compensator.needs`` for
    its pruned projections only; then its units go and ``compensator`` updates it; its statistics are
    dropped before the next layer. The same statistics as one whole-model pass, with one layer's alive at
    a time (a down_proj's covariance is 0.8 GB at 8B, all 32 layers' 26 GB). ``placement`` says where
    each layer runs (:class:`~adapruner.sequential.Sequential`: one layer on the device at a time).
    """
    changed = [layer for layer in range(adapter.n_layers) if layer_changes(adapter, plan, layer)]
    if not changed:
        return
    with calibration_mode(adapter.model, trainable=()):
        inputs = placement.capture(adapter, batch)
        hidden = [chunk.hidden for chunk in inputs]
        for index in range(changed[-1] + 1):
            if index not in changed:
                placement.run_layer(adapter, index, inputs, hidden)
                continue
            targets = pruned_inputs(adapter, scores, plan, layers=(index,))
            stats = _layer_statistics(adapter, placement, index, inputs, hidden, targets, compensator.needs)
            stats.n_samples, stats.n_tokens = batch.shape[0], batch.numel()
            with _observed(snapshot):
                apply_layer(adapter, scores, plan, index)
            if snapshot is not None:
                snapshot.protect([adapter.linear(target.module) for target in targets])
            with visiting(adapter.layers[index], placement.device):
                compensator(adapter, targets, stats)
            del targets, stats


def _layer_statistics(
    adapter: ModelAdapter,
    placement: Placement,
    index: int,
    inputs: Sequence[LayerInputs],
    hidden: list[torch.Tensor],
    targets: Sequence[PrunedInput],
    needs: frozenset[str],
) -> Statistics:
    """Run layer ``index`` (advancing ``hidden``) with hooks adding ``needs`` of ``targets``' inputs to a
    new :class:`Statistics`."""
    stats = Statistics()
    modules = {target.module: adapter.linear(target.module) for target in targets}
    handles = moment_hooks(adapter, modules, stats, set(needs), consumers=modules)
    try:
        placement.run_layer(adapter, index, inputs, hidden)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _observed(snapshot: DenseSnapshot | None) -> AbstractContextManager[None]:
    return snapshot.observing() if snapshot is not None else nullcontext()
