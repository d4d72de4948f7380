"""Data-free metrics: seeded random scores and weight magnitude."""

from __future__ import annotations

import hashlib

import torch

from adapruner.adapters.base import CoupledSlice, ModelAdapter, UnitGroup
from adapruner.importance.base import Importance, weighted_unit_totals
from adapruner.stats import Statistics


class RandomImportance(Importance):
    """Uniform random scores, seeded per (seed, layer, kind): the floor every metric must beat."""

    def __call__(
        self, adapter: ModelAdapter, group: UnitGroup, stats: Statistics, *, aggregation: str = "sum"
    ) -> torch.Tensor:
        key = hashlib.sha256(f"{self.seed}:{group.layer}:{group.kind}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
        return torch.rand(group.n_units, generator=generator, dtype=torch.float64)


class L1Importance(Importance):
    """Sum of |W| over each unit's weights in every coupled slice."""

    def unit_terms(self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics) -> torch.Tensor:
        return weighted_unit_totals(weight, slice_, n_units, power=1)


class L2Importance(Importance):
    """Sum of W^2 over each unit's weights (the squared L2 norm of the unit's weight vectors)."""

    def unit_terms(self, weight: torch.Tensor, slice_: CoupledSlice, n_units: int, stats: Statistics) -> torch.Tensor:
        return weighted_unit_totals(weight, slice_, n_units, power=2)
