"""Sequential (layer-by-layer) mode: a model larger than the device is calibrated and evaluated one
decoder layer at a time, as SparseGPT and llm-compressor do.

The weights stay where they were loaded (the CPU). The inputs of every decoder layer are captured once
(:func:`capture_inputs`: the model runs with its layers bypassed, recording the hidden states that reach
the first layer and the keyword arguments the model passes each layer: attention mask, position
embeddings, position ids); then each layer visits the device in turn (:func:`run_layers`), runs on all
calibration chunks (the hooks registered on it or its Linears see what they need), its outputs become
the next layer's inputs, and it goes back. The model's own tail (final norm, head, softcapping, loss)
turns the last layer's outputs into logits (:func:`head_outputs`). On the device at any time: one
decoder layer, one chunk's activations and, for logits, the embedding and head.

What it serves, with the whole-model function it replaces (results equal to float tolerance):
- activation statistics (``act``, ``cov``): every metric that reads only them (wanda, flap, bip, the
  numerical ones, the data-free ones) and every compensator, whose solves run per layer on the device;
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adapruner.adapters import get_adapter
from adapruner.adapters.base import ModelAdapter
from adapruner.catalog import BLOCK_CRITERIA, METRICS
from adapruner.config import ModelSpec, PruneJob
from adapruner.errors import UserError
from adapruner.models.loading import placement
from adapruner.prune.depth import _hidden_in, _hidden_out, block_influence, skipping, token_cosine
from adapruner.stats import Statistics, _moment_hooks, calibration_mode, unit_modules

CPU = torch.device("cpu")
GRADIENT_NEEDS = frozenset({"grad", "fisher", "out_grad"})
SEQUENTIAL_CRITERIA = ("block_influence", "ppl")


class SequentialError(UserError):
    """What the job asks for needs the whole model at once; the message names it and the fix."""


@dataclass
class LayerInputs:
    """The decoder layers' inputs for one chunk of ``b`` sequences: ``hidden: [b, seq, hidden]`` (what
    reaches the first layer) and, per layer, the keyword arguments the model passes it (on ``offload``)."""

    hidden: torch.Tensor
    kwargs: list[dict[str, Any]] = field(default_factory=list)


# ---- moving tensors -------------------------------------------------------------------------------
def to_device(value: Any, device: torch.device, memo: dict[int, Any] | None = None) -> Any:
    """``value`` (a tensor, or tuples/lists/dicts of them) with every tensor on ``device``; a tensor met
    twice (the mask every layer shares) is moved once (``memo``)."""
    memo = {} if memo is None else memo
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = value.to(device)
        return memo[id(value)]
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device, memo) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device, memo) for k, v in value.items()}
    return value


@contextmanager
def visiting(module: nn.Module, device: torch.device) -> Iterator[None]:
    """``module``'s weights on ``device`` while active, back where they were after (the same Parameter
    objects: hooks and references held elsewhere stay valid)."""
    home = next(p.device for p in module.parameters())  # where the layer lives, not an input device
    module.to(device)
    try:
        yield
    finally:
        module.to(home)


def _outer_tensors(model: nn.Module, layers: nn.ModuleList) -> list[tuple[nn.Module, str, str]]:
    """``(module, kind, name)`` of every parameter and buffer outside the decoder layers (embedding,
    rotary tables, final norm, head)."""
    inside = {id(m) for m in layers.modules()}
    found = []
    for module in model.modules():
        if id(module) in inside:
            continue
        found += [(module, "_parameters", n) for n, p in module._parameters.items() if p is not None]
        found += [(module, "_buffers", n) for n, b in module._buffers.items() if b is not None]
    return found


@contextmanager
def outer_on(model: nn.Module, layers: nn.ModuleList, device: torch.device) -> Iterator[None]:
    """Everything of ``model`` but its decoder layers on ``device`` while active, back after (a tied
    head and embedding move once)."""
    places = _outer_tensors(model, layers)
    homes = [getattr(module, kind)[name].device for module, kind, name in places]
    _move(places, [device] * len(places))
    try:
        yield
    finally:
        _move(places, homes)


def _move(places: Sequence[tuple[nn.Module, str, str]], devices: Sequence[torch.device]) -> None:
    """Put each parameter (its data: the same Parameter object) or buffer of ``places`` on its device."""
    for (module, kind, name), device in zip(places, devices, strict=True):
        tensor = getattr(module, kind)[name]
        if kind == "_parameters":
            tensor.data = tensor.data.to(device)
        else:
            module._buffers[name] = tensor.to(device)


@contextmanager
def replaced_forwards(layers: nn.ModuleList, forward: Callable[[int], Callable[..., Any]]) -> Iterator[None]:
    """Each decoder layer ``i`` runs ``forward(i)`` instead of its own forward while active (hooks
    still fire); the layers' own forwards are back after."""
    own = [layer.__dict__.get("forward") for layer in layers]  # a wrapper already there (accelerate's) stays
    for index, layer in enumerate(layers):
        layer.forward = forward(index)
    try:
        yield
    finally:
        for layer, before in zip(layers, own, strict=True):
            del layer.forward
            if before is not None:
                layer.forward = before


class _Captured(Exception):
    """Stops the capture forward after the last decoder layer (the head is not needed)."""


# ---- the passes -----------------------------------------------------------------------------------
def capture_inputs(
    adapter: ModelAdapter, batch: torch.Tensor, *, batch_size: int, device: torch.device, offload: torch.device = CPU
) -> list[LayerInputs]:
    """The decoder layers' inputs for every chunk of ``batch_size`` rows of ``batch`` (``[n, seq]`` token
    ids), kept on ``offload``: the model runs with its embedding on ``device`` and its layers bypassed."""
    model, layers = adapter.model, adapter.layers
    captured: list[LayerInputs] = []

    def record(index: int) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            hidden = _hidden_in(args, kwargs)
            kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            if index == 0:
                captured.append(LayerInputs(hidden.to(offload)))
            captured[-1].kwargs.append(to_device(kwargs, offload, memo[-1]))
            if index == len(layers) - 1:
                raise _Captured
            return hidden

        return forward

    memo: list[dict[int, Any]] = []
    with outer_on(model, layers, device), replaced_forwards(layers, record), torch.no_grad():
        for start in range(0, batch.shape[0], batch_size):
            memo.append({})
            try:
                model(batch[start : start + batch_size].to(device), use_cache=False)
            except _Captured:
                pass
    return captured


def run_layers(
    adapter: ModelAdapter,
    inputs: Sequence[LayerInputs],
    *,
    device: torch.device,
    offload: torch.device = CPU,
    after_layer: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Run every decoder layer on ``device``, one at a time, on every chunk of ``inputs``; returns the
    last layer's outputs ``[b, seq, hidden]`` per chunk on ``offload``. ``after_layer(i)`` is called once
    layer ``i`` has seen every chunk (and has gone back)."""
    hidden = [chunk.hidden for chunk in inputs]
    with torch.no_grad():
        for index, layer in enumerate(adapter.layers):
            with visiting(layer, device):
                for c, chunk in enumerate(inputs):
                    out = layer(hidden[c].to(device), **to_device(chunk.kwargs[index], device))
                    hidden[c] = _hidden_out(out).to(offload)
            if after_layer:
                after_layer(index)
    return hidden


def head_outputs(
    adapter: ModelAdapter,
    chunks: Sequence[torch.Tensor],
    finals: Sequence[torch.Tensor],
    *,
    device: torch.device,
    labels: bool = False,
) -> Iterator[Any]:
    """The model's output (``.logits``, and ``.loss`` with ``labels``) for each id chunk of ``chunks``
    (``[b, seq]``) from its last layer's outputs ``finals`` (per chunk ``[b, seq, hidden]``): the model's
    own tail runs with the layers bypassed, the last one returning the stored hidden states."""
    model, layers = adapter.model, adapter.layers
    current: list[torch.Tensor] = []

    def forward(index: int) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> torch.Tensor:
            return current[0].to(device) if index == len(layers) - 1 else _hidden_in(args, kwargs)

        return run

    with outer_on(model, layers, device), replaced_forwards(layers, forward), torch.no_grad():
        for ids, final in zip(chunks, finals, strict=True):
            ids = ids.to(device)
            current[:] = [final]
            yield model(ids, labels=ids if labels else None, use_cache=False)


# ---- what the pipeline runs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Sequential:
    """Sequential mode: decoder layers visit ``device`` one at a time, their weights and the hidden
    states between layers stay on ``offload``; ``batch_size`` rows of calibration ids per chunk."""

    device: torch.device
    offload: torch.device = CPU
    batch_size: int = 4

    def capture(self, adapter: ModelAdapter, batch: torch.Tensor) -> list[LayerInputs]:
        """:func:`capture_inputs` of ``batch`` (``[n, seq]`` ids) in chunks of ``batch_size`` rows."""
        return capture_inputs(adapter, batch, batch_size=self.batch_size, device=self.device, offload=self.offload)

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
            with calibration_mode(adapter.model, trainable=(), hooks=_moment_hooks(adapter, modules, stats, needs)):
                run_layers(adapter, inputs, device=self.device, offload=self.offload, after_layer=after_layer)
        stats.n_samples, stats.n_tokens = batch.shape[0], batch.numel()
        return stats

    def compensate(self, compensator: Any, adapter: ModelAdapter, targets: Sequence[Any], stats: Statistics) -> None:
        """Run ``compensator`` (an :class:`adapruner.compensate.Compensator`) on ``targets`` layer by layer,
        each layer on ``device`` while its projections are solved (dense layer indices: before blocks
        are removed)."""
        prefix = adapter.layers_path + "."
        for index, layer in enumerate(adapter.layers):
            mine = [t for t in targets if t.module.startswith(f"{prefix}{index}.")]
            if mine:
                with visiting(layer, self.device):
                    compensator(adapter, mine, stats)

    def wrap(self, compensator: Any) -> LayerByLayer:
        """``compensator`` run by :meth:`compensate`: a drop-in for the pruning step."""
        return LayerByLayer(compensator, self)

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
                cos_sum[index] += token_cosine(_hidden_in(args, kwargs), _hidden_out(output)).sum().double().cpu()

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

@dataclass(frozen=True)
class LayerByLayer:
    """A compensator (same ``needs`` and call) whose solves run one decoder layer at a time on the device."""

    inner: Any
    sequential: Sequential

    @property
    def needs(self) -> frozenset[str]:
        return self.inner.needs

    def __call__(self, adapter: ModelAdapter, targets: Sequence[Any], stats: Statistics | None) -> None:
        if targets:
            self.sequential.compensate(self.inner, adapter, targets, stats)


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
