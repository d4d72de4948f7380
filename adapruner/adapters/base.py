"""What can be pruned in a model, and the surgery that removes it.

An adapter describes a decoder-only architecture as *unit groups*: per decoder layer, the attention
heads (one unit = one KV group with the query heads that share it) and the MLP intermediate channels.
A unit group lists the coupled slices of weights that belong to each unit, so that metrics, surgery,
masking and reload are written once for every architecture (Torch-Pruning's dependency groups, made
explicit per architecture instead of traced). Whole decoder blocks are removed by :meth:`remove_blocks`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from adapruner.errors import UserError

UnitKind = Literal["heads", "channels"]
UNIT_KINDS: tuple[UnitKind, ...] = ("heads", "channels")


@dataclass(frozen=True)
class CoupledSlice:
    """The rows (``dim=0``) or columns (``dim=1``) of one Linear weight that belong to the units.

    Unit ``u`` owns indices ``offset + u * unit_size ... offset + (u + 1) * unit_size - 1`` along ``dim``;
    ``offset`` places the units inside a fused weight (for example q, k and v in one matrix).
    """

    module: str
    dim: int
    unit_size: int
    offset: int = 0


@dataclass(frozen=True)
class UnitGroup:
    """The prunable units of one kind in one layer. ``layer`` indexes the model's current layer list."""

    layer: int
    kind: UnitKind
    n_units: int
    slices: tuple[CoupledSlice, ...]

    @property
    def key(self) -> tuple[int, str]:
        return self.layer, self.kind

    def consumer(self) -> CoupledSlice:
        """The slice whose *input* columns carry the units (o_proj for heads, down_proj for channels):
        activation metrics read the statistics of that module's input."""
        return next(s for s in self.slices if s.dim == 1)


def unit_indices(slice_: CoupledSlice, units: torch.Tensor) -> torch.Tensor:
    """Row/column indices of ``units`` (``[k]``) in the slice's weight: ``[k * unit_size]``."""
    within = torch.arange(slice_.unit_size, device=units.device)
    return (slice_.offset + units[:, None] * slice_.unit_size + within[None, :]).reshape(-1)


def consumer_modules(adapter: ModelAdapter) -> list[str]:
    """Names of the Linears whose input columns carry the units (o_proj, down_proj), in layer order."""
    return list(dict.fromkeys(group.consumer().module for group in adapter.groups()))


def slice_weight(weight: torch.Tensor, slice_: CoupledSlice, n_units: int) -> torch.Tensor:
    """The units' part of a weight, unit-major: ``[n_units, unit_size, other]`` for either ``dim``."""
    span = weight.narrow(slice_.dim, slice_.offset, n_units * slice_.unit_size)
    if slice_.dim == 1:
        span = span.t()
    return span.reshape(n_units, slice_.unit_size, -1)


def _keep_mask(size: int, slices: Sequence[CoupledSlice], keep: torch.Tensor, n_units: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    for slice_ in slices:
        mask[slice_.offset : slice_.offset + n_units * slice_.unit_size] = False
        mask[unit_indices(slice_, keep.cpu())] = True
    return mask


#: Called as ``observer(old, dim, index, new)`` whenever surgery replaces a Parameter ``old`` by the Parameter
#: ``new`` of its entries ``index`` (``[k]``) along ``dim`` (see :func:`observing_slices`).
SliceObserver = Callable[[nn.Parameter, int, torch.Tensor, nn.Parameter], None]
_observers: list[SliceObserver] = []


@contextmanager
def observing_slices(observer: SliceObserver) -> Iterator[None]:
    """While active, :func:`slice_linear_` tells ``observer`` of every Parameter it replaces, before the
    module is pointed at the smaller one (a search trial's snapshot keeps only what restoring needs)."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def _sliced(param: nn.Parameter, dim: int, index: torch.Tensor) -> nn.Parameter:
    """A new Parameter of ``param``'s entries ``index`` along ``dim`` (the observers told first)."""
    new = nn.Parameter(param.index_select(dim, index), requires_grad=param.requires_grad)
    for observer in tuple(_observers):
        observer(param, dim, index, new)
    return new


def slice_linear_(linear: nn.Linear, *, dim: int, keep: torch.Tensor) -> None:
    """Keep the rows (``dim=0``, with the bias) or columns (``dim=1``) of ``linear`` given by ``keep``
    (a bool mask or index tensor), in place."""
    index = keep.nonzero().squeeze(1) if keep.dtype == torch.bool else keep
    index = index.to(linear.weight.device)
    with torch.no_grad():
        linear.weight = _sliced(linear.weight, dim, index)
        if dim == 0 and linear.bias is not None:
            linear.bias = _sliced(linear.bias, 0, index)
    if dim == 0:
        linear.out_features = index.numel()
    else:
        linear.in_features = index.numel()


class ModelAdapter:
    """Base class: one subclass per architecture, registered in ``adapruner.catalog.ADAPTERS``."""

    layers_path: ClassVar[str] = "model.layers"  # where the decoder layers' ModuleList lives

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # ---- architecture-specific -------------------------------------------------------------------
    def unit_group(self, layer: int, kind: UnitKind) -> UnitGroup:
        raise NotImplementedError

    def renumber_layer(self, layer: nn.Module, index: int) -> None:
        """Tell a decoder layer its new position after blocks were removed (for the KV cache)."""

    def sync_config(self) -> bool:
        """Write the current widths into ``model.config`` where they are uniform; return whether
        every layer has the same widths (then stock ``from_pretrained`` can load the model)."""
        raise NotImplementedError

    # ---- shared ----------------------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return self.model.get_submodule(self.layers_path)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def groups(self, kinds: Sequence[UnitKind] = UNIT_KINDS) -> list[UnitGroup]:
        return [self.unit_group(layer, kind) for layer in range(self.n_layers) for kind in kinds]

    def linear(self, name: str) -> nn.Linear:
        return self.model.get_submodule(name)

    def params_per_unit(self, group: UnitGroup) -> int:
        """Parameters removed with one unit of the group (weights plus output biases)."""
        total = 0
        for slice_ in group.slices:
            linear = self.linear(slice_.module)
            other = linear.in_features if slice_.dim == 0 else linear.out_features
            bias = linear.bias is not None and slice_.dim == 0
            total += slice_.unit_size * (other + int(bias))
        return total

    def remove_units(self, group: UnitGroup, keep: torch.Tensor) -> None:
        """Physically remove every unit of ``group`` not in ``keep`` (``[k]`` unit indices)."""
        keep = torch.as_tensor(keep, dtype=torch.long).sort().values
        if keep.numel() == group.n_units:
            return
        by_module: dict[tuple[str, int], list[CoupledSlice]] = defaultdict(list)
        for slice_ in group.slices:
            by_module[(slice_.module, slice_.dim)].append(slice_)
        for (name, dim), slices in by_module.items():
            linear = self.linear(name)
            size = linear.weight.shape[dim]
            slice_linear_(linear, dim=dim, keep=_keep_mask(size, slices, keep, group.n_units))

    def zero_units(self, group: UnitGroup, units: torch.Tensor) -> None:
        """Zero the weights of ``units`` (``[k]``) in every coupled slice: the masked reference that
        removal must reproduce exactly."""
        units = torch.as_tensor(units, dtype=torch.long)
        with torch.no_grad():
            for slice_ in group.slices:
                linear = self.linear(slice_.module)
                index = unit_indices(slice_, units).to(linear.weight.device)
                linear.weight.index_fill_(slice_.dim, index, 0.0)
                if slice_.dim == 0 and linear.bias is not None:
                    linear.bias.index_fill_(0, index, 0.0)

    def remove_blocks(self, drop: Sequence[int]) -> None:
        """Remove whole decoder layers (indices into the current layer list)."""
        drop_set = set(drop)
        if not drop_set:
            return
        if not drop_set <= set(range(self.n_layers)) or len(drop_set) >= self.n_layers:
            raise ValueError(f"cannot remove blocks {sorted(drop_set)} of {self.n_layers}")
        kept = [layer for i, layer in enumerate(self.layers) if i not in drop_set]
        for index, layer in enumerate(kept):
            self.renumber_layer(layer, index)
        parent, _, attr = self.layers_path.rpartition(".")
        setattr(self.model.get_submodule(parent), attr, nn.ModuleList(kept))
        config = self.model.config
        layer_types = getattr(config, "layer_types", None)
        if layer_types:
            config.layer_types = [t for i, t in enumerate(layer_types) if i not in drop_set]
        config.num_hidden_layers = len(kept)

    def widths(self) -> list[dict[str, int]]:
        """Units kept per layer: ``[{"heads": kv_groups, "channels": n}, ...]``."""
        return [{kind: self.unit_group(i, kind).n_units for kind in UNIT_KINDS} for i in range(self.n_layers)]

    def set_widths(self, widths: Sequence[dict[str, int]]) -> None:
        """Shrink a freshly built dense model to the given widths (keeping the first units), so that a
        pruned state dict loads into it."""
        if len(widths) != self.n_layers:
            raise UserError(f"manifest widths: {len(widths)} widths for {self.n_layers} layers of the model config")
        for layer, width in enumerate(widths):
            for kind in UNIT_KINDS:
                self.remove_units(self.unit_group(layer, kind), torch.arange(width[kind]))
