"""A tiny model pruned by 30% with Wanda, with its dense calibration statistics and pruned projections."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from adapruner.adapters import ModelAdapter, get_adapter
from adapruner.compensate import PrunedInput, pruned_inputs
from adapruner.config import PruneConfig
from adapruner.evaluate import count_parameters
from adapruner.importance import score_groups
from adapruner.prune import apply_plan, layer_shapes, plan_widths
from adapruner.stats import Statistics, collect_statistics
from tests.conftest import tiny_llama


@dataclass
class Pruned:
    dense: ModelAdapter
    pruned: ModelAdapter
    stats: Statistics
    targets: list[PrunedInput]
    batch: torch.Tensor


def prune_tiny(*, gqa: bool = True, ratio: float = 0.3, metric: str = "wanda") -> Pruned:
    model = tiny_llama(gqa=gqa, layers=3)
    dense = get_adapter(model)
    batch = torch.randint(0, 96, (8, 24), generator=torch.Generator().manual_seed(2))
    stats = collect_statistics(dense, batch, needs={"act", "cov"})
    scores = score_groups(dense, dense.groups(), stats, mix={metric: 1.0})
    config = PruneConfig(ratio=ratio, channel_multiple=1, targets=("heads", "channels"))
    plan = plan_widths(layer_shapes(dense), params_before=count_parameters(model, non_embedding=True), config=config)
    pruned = get_adapter(copy.deepcopy(model))
    targets = pruned_inputs(pruned, scores, plan)
    apply_plan(pruned, scores, plan)
    return Pruned(dense, pruned, stats, targets, batch)


@pytest.fixture(params=[True, False], ids=["gqa", "mha"])
def pruned_tiny(request) -> Pruned:
    return prune_tiny(gqa=request.param)
