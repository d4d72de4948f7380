"""One search trial's model: the loaded model pruned in place for a recipe, restored to dense afterwards.

A trial does not copy the model (issue 17: exactly one model in memory during a search). It scores the
dense model from the pooled statistics, runs the one pruning step (:func:`adapruner.prune.step.prune_step`)
on ``loaded.model`` itself and, when the trial ends (normally or by an error such as running out of
memory), puts back the dense model bit for bit from a :class:`~adapruner.prune.step.DenseSnapshot`.
The final pick holds recipes, not models: it is pruned once more with ``keep=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from adapruner.adapters import get_adapter
from adapruner.compensate import build_compensator
from adapruner.evaluate import count_parameters
from adapruner.models import LoadedModel
from adapruner.prune.plan import Plan
from adapruner.prune.step import DenseSnapshot, prune_step
from adapruner.search.cache import PoolStats, choose_samples, pool_tokens, pooled_scores
from adapruner.search.space import Recipe


@dataclass
class TrialModel:
    """The pruned model of a trial (``loaded.model`` itself), its calibration sample ids and its plan."""

    model: Any
    sample_ids: list[str]
    plan: Plan


@contextmanager
def trial_model(
    loaded: LoadedModel,
    pools: Mapping[int, PoolStats],
    recipe: Recipe,
    *,
    ratio: float,
    targets: tuple[str, ...],
    seed: int,
    blocks: Callable[[str], torch.Tensor] | None = None,
    keep: bool = False,
) -> Iterator[TrialModel]:
    """Prune ``loaded.model`` in place for ``recipe`` and yield it; on exit restore the dense model exactly
    (same modules, weights, config and layer list), also when the trial raises. With ``keep`` (the final
    pick, then recovered, evaluated and saved) a normal exit leaves the model pruned and frees the dense
    weights.

    ``pools`` holds one pool of statistics per calibration window length; the recipe's ``seq_len`` picks.
    ``blocks(criterion)`` gives the dense model's block scores ``[n_layers]`` when the recipe removes
    whole blocks (``depth_share > 0``): a :class:`~adapruner.prune.depth.BlockScores` shared by every
    trial of a search, computed once per criterion on a fixed calibration batch (not on the trial's
    samples: one-shot block criteria such as PPL cost a forward pass per block).
    """
    snapshot = DenseSnapshot(loaded.model)
    done = False
    try:
        trial = _prune(loaded, pools, recipe, ratio=ratio, targets=targets, seed=seed, blocks=blocks, snapshot=snapshot)
        yield trial
        done = True
    finally:
        trial = None
        if done and keep:
            snapshot.release()
        else:
            snapshot.restore()
        snapshot = None


def _prune(
    loaded: LoadedModel,
    pools: Mapping[int, PoolStats],
    recipe: Recipe,
    *,
    ratio: float,
    targets: tuple[str, ...],
    seed: int,
    blocks: Callable[[str], torch.Tensor] | None,
    snapshot: DenseSnapshot,
) -> TrialModel:
    pool = pools[recipe.seq_len]
    adapter = get_adapter(loaded.model)
    ids = choose_samples(pool, weights=recipe.source_weights, n=recipe.samples, subset_seed=recipe.subset_seed)
    scores = pooled_scores(
        adapter,
        pool,
        ids,
        mix=recipe.mix,
        aggregation=recipe.aggregation,
        normalization=recipe.normalization,
        kinds=targets,
        seed=seed,
    )
    compensator = build_compensator(recipe.compensate)
    plan = prune_step(
        adapter,
        scores,
        config=recipe.prune_config(ratio=ratio, targets=targets),
        params_before=count_parameters(loaded.model, non_embedding=True),
        compensator=compensator,
        calibration=lambda: pool_tokens(pool, ids),  # the compensator reads the chosen samples' activations
        block_scores=blocks,
        snapshot=snapshot,
    )
    return TrialModel(loaded.model, ids, plan)
