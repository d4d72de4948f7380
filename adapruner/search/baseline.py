"""The fixed recipe a search is compared with: ``adapruner prune``'s defaults at the search's ratio.

The defaults are the best fixed recipe the benchmarks measured (README, "Defaults"). The comparison runs
them on the search's own calibration sources and reports them on the search's held-out test texts, so the
report shows what the search gained over simply pruning with the defaults. The fixed recipe is pruned in
place on the search's model and restored afterwards (one model in memory); the test text is read for the
report only, never to choose anything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from adapruner.config import CalibrationConfig, PruneConfig, PruneJob, SearchJob
from adapruner.evaluate import count_parameters
from adapruner.models import LoadedModel, release_memory
from adapruner.pipeline import evaluate_model, prune_loaded
from adapruner.prune.plan import PlanError
from adapruner.prune.step import DenseSnapshot


@dataclass
class FixedBaseline:
    """The fixed recipe (its prune job's calibration, importance, prune and compensate configs), its test
    perplexities, the ratio it achieved and the seconds it took (pruning and evaluation); with
    ``search_test_ppl`` the search's pick on the same texts (before any recovery), for the comparison; or,
    with ``error``, why it could not run (the search's result stands without it)."""

    job: dict[str, Any]
    test_ppl: dict[str, float]
    ratio_achieved: float | None
    seconds: float
    search_test_ppl: dict[str, float] | None = None
    error: str | None = None  # why the fixed recipe could not prune this model (e.g. its ratio cannot be met)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fixed_prune_job(job: SearchJob) -> PruneJob:
    """``prune``'s default importance, targets and compensation at ``job.ratio``, calibrated on the search's
    sources (their training partitions, in the search's first calibration window length) and evaluated on
    its test texts."""
    return PruneJob(
        model=job.model,
        calibration=CalibrationConfig(sources=job.space.sources, seq_len=job.space.seq_lens[0], seed=job.search.seed),
        prune=PruneConfig(ratio=job.ratio),
        evaluate=job.evaluate,
    )


def fixed_baseline(loaded: LoadedModel, job: SearchJob, texts: dict[str, torch.Tensor]) -> FixedBaseline:
    """Prune ``loaded.model`` in place with :func:`fixed_prune_job`, read the test ``texts``, restore it."""
    prune_job = fixed_prune_job(job)
    start = time.perf_counter()
    before = count_parameters(loaded.model, non_embedding=True)
    spec = prune_job.model_dump(mode="json", include={"calibration", "importance", "prune", "compensate"})
    snapshot = DenseSnapshot(loaded.model)
    try:
        prune_loaded(loaded, prune_job, snapshot=snapshot)
        achieved = 1 - count_parameters(loaded.model, non_embedding=True) / before
        ppl = evaluate_model(loaded.model, texts, job.evaluate.perplexity_only())["perplexity"]
    except (PlanError, FloatingPointError) as error:  # the recipe cannot prune this model as asked
        return FixedBaseline(spec, {}, None, round(time.perf_counter() - start, 3), error=str(error))
    finally:
        snapshot.restore()
        release_memory()
    return FixedBaseline(spec, ppl, achieved, round(time.perf_counter() - start, 3))
