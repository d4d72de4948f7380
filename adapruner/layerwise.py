"""Running a model's decoder layers one at a time on stored hidden states: the passes that sequential
mode (:mod:`adapruner.sequential`) and layer-by-layer compensation
(:func:`adapruner.prune.step.compensate_by_layer`) are made of.

:func:`capture_inputs` runs the model with its layers bypassed and records the hidden states that reach
the first layer and the keyword arguments the model passes each layer (attention mask, position
embeddings, position ids); :func:`run_layers` then runs each layer on every chunk, its outputs becoming
the next layer's inputs; :func:`head_outputs` turns the last layer's outputs into the model's output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adapruner.adapters.base import ModelAdapter
from adapruner.models.loading import input_device

CPU = torch.device("cpu")


def hidden_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The hidden states a decoder layer's forward receives (first positional or ``hidden_states``)."""
    return args[0] if args else kwargs["hidden_states"]


def hidden_out(output: Any) -> torch.Tensor:
    """The hidden states of a decoder layer's output (a tuple's first element, or the tensor)."""
    return output[0] if isinstance(output, tuple) else output


@dataclass
class LayerInputs:
    """The decoder layers' inputs for one chunk of ``b`` sequences: ``hidden: [b, seq, hidden]`` (what
    reaches the first layer) and, per layer, the keyword arguments the model passes it (on ``offload``)."""

    hidden: torch.Tensor
    kwargs: list[dict[str, Any]] = field(default_factory=list)


# ---- moving tensors -------------------------------------------------------------------------------
def home_device(module: nn.Module) -> torch.device:
    """Where ``module``'s weights live (not an input device: a layer of a model split over GPUs)."""
    return next(p.device for p in module.parameters())


def to_device(value: Any, device: torch.device | None, memo: dict[int, Any] | None = None) -> Any:
    """``value`` (a tensor, or tuples/lists/dicts of them) with every tensor on ``device`` (None: where it
    is); a tensor met twice (the mask every layer shares) is moved once (``memo``)."""
    if device is None:
        return value
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
def visiting(module: nn.Module, device: torch.device | None) -> Iterator[None]:
    """``module``'s weights on ``device`` while active, back where they were after (the same Parameter
    objects: hooks and references held elsewhere stay valid); ``None`` leaves it where it is."""
    if device is None:
        yield
        return
    home = home_device(module)
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
def outer_on(model: nn.Module, layers: nn.ModuleList, device: torch.device | None) -> Iterator[None]:
    """Everything of ``model`` but its decoder layers on ``device`` while active, back after (a tied
    head and embedding move once); ``None`` moves nothing."""
    if device is None:
        yield
        return
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
    adapter: ModelAdapter,
    batch: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | None,
    offload: torch.device | None = CPU,
) -> list[LayerInputs]:
    """The decoder layers' inputs for every chunk of ``batch_size`` rows of ``batch`` (``[n, seq]`` token
    ids), kept on ``offload``: the model runs with its embedding on ``device`` and its layers bypassed.
    ``None`` for either: the model's own placement (ids go to the embedding's device)."""
    model, layers = adapter.model, adapter.layers
    ids_device = device or input_device(model)
    captured: list[LayerInputs] = []

    def record(index: int) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            hidden = hidden_in(args, kwargs)
            kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            if index == 0:
                captured.append(LayerInputs(to_device(hidden, offload)))
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
                model(batch[start : start + batch_size].to(ids_device), use_cache=False)
            except _Captured:
                pass
    return captured


def run_layers(
    adapter: ModelAdapter,
    inputs: Sequence[LayerInputs],
    *,
    device: torch.device | None,
    offload: torch.device | None = CPU,
    after_layer: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Run every decoder layer on ``device``, one at a time, on every chunk of ``inputs``; returns the
    last layer's outputs ``[b, seq, hidden]`` per chunk on ``offload``. ``after_layer(i)`` is called once
    layer ``i`` has seen every chunk (and has gone back)."""
    hidden = [chunk.hidden for chunk in inputs]
    for index in range(len(adapter.layers)):
        run_layer(adapter, index, inputs, hidden, device=device, offload=offload)
        if after_layer:
            after_layer(index)
    return hidden


def run_layer(
    adapter: ModelAdapter,
    index: int,
    inputs: Sequence[LayerInputs],
    hidden: list[torch.Tensor],
    *,
    device: torch.device | None,
    offload: torch.device | None = CPU,
) -> None:
    """Run decoder layer ``index`` on ``device`` (``None``: where it lives) on every chunk: ``hidden[c]``
    (``[b, seq, hidden]``, its inputs) is replaced by its outputs, on ``offload`` (``None``: where computed)."""
    layer = adapter.layers[index]
    with torch.no_grad(), visiting(layer, device):
        here = device or home_device(layer)
        for c, chunk in enumerate(inputs):
            out = layer(hidden[c].to(here), **to_device(chunk.kwargs[index], here))
            hidden[c] = to_device(hidden_out(out), offload)


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
            return current[0].to(device) if index == len(layers) - 1 else hidden_in(args, kwargs)

        return run

    with outer_on(model, layers, device), replaced_forwards(layers, forward), torch.no_grad():
        for ids, final in zip(chunks, finals, strict=True):
            ids = ids.to(device)
            current[:] = [final]
            yield model(ids, labels=ids if labels else None, use_cache=False)


@dataclass(frozen=True)
class Placement:
    """Where layer-by-layer passes run: each decoder layer on ``device`` while it runs, the hidden states
    between layers on ``offload`` (``None`` for either: where the model has them, one device or several),
    ``batch_size`` rows of ids per chunk. The default is the whole model where it was loaded;
    :class:`adapruner.sequential.Sequential` is the mode that moves layers to the device in turn."""

    device: torch.device | None = None
    offload: torch.device | None = None
    batch_size: int = 4

    def capture(self, adapter: ModelAdapter, batch: torch.Tensor) -> list[LayerInputs]:
        """:func:`capture_inputs` of ``batch`` (``[n, seq]`` ids) in chunks of ``batch_size`` rows."""
        return capture_inputs(adapter, batch, batch_size=self.batch_size, device=self.device, offload=self.offload)

    def run_layer(
        self, adapter: ModelAdapter, index: int, inputs: Sequence[LayerInputs], hidden: list[torch.Tensor]
    ) -> None:
        """:func:`run_layer` here."""
        run_layer(adapter, index, inputs, hidden, device=self.device, offload=self.offload)
