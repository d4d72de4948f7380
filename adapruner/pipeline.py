"""The prune job runner, and the evaluation (and recovery) that the prune and search jobs share."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from adapruner.adapters import get_adapter
from adapruner.adapters.base import ModelAdapter
from adapruner.calibration import sample_windows, stack, token_stream
from adapruner.compensate import build_compensator
from adapruner.config import EvalConfig, PruneJob, RecoverConfig
from adapruner.errors import UserError
from adapruner.evaluate import (
    count_parameters,
    forward_flops,
    measure_generation,
    measure_speed,
    perplexity,
    weights_bytes,
)
from adapruner.importance import build_metric, metric_needs, score_groups
from adapruner.importance.base import per_unit, unit_statistics_of
from adapruner.models import LoadedModel, input_device, load_model
from adapruner.prune import unit_saliency
from adapruner.prune.depth import block_scores
from adapruner.prune.step import WHOLE_MODEL, DenseSnapshot, prune_step
from adapruner.report import build_report, save_result
from adapruner.sequential import Sequential, checked_sequential
from adapruner.stats import Statistics, collect_statistics

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as a stage advances."""


@dataclass
class PruneOutcome:
    model: Any
    tokenizer: Any
    report: dict[str, Any]


@contextmanager
def _timed(timings: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)


def eval_texts(tokenizer: Any, config: EvalConfig) -> dict[str, torch.Tensor]:
    """Held-out token streams, ``{label: [n_tokens]}``, capped at ``config.max_tokens`` each."""
    return {
        text.label(): token_stream(tokenizer, text, "evaluation", max_tokens=config.max_tokens) for text in config.texts
    }


def evaluate_model(
    model: Any,
    texts: dict[str, torch.Tensor],
    config: EvalConfig,
    *,
    tokenizer: Any = None,
    sequential: Sequential | None = None,
) -> dict[str, Any]:
    """Perplexity on each text (layer by layer with ``sequential``), parameter counts, FLOPs, (optionally)
    measured speed and generation latency, and zero-shot accuracy on ``config.zero_shot`` (needs ``tokenizer``)."""
    result: dict[str, Any] = {
        "perplexity": {
            label: perplexity(
                model,
                tokens,
                seq_len=config.seq_len,
                stride=config.stride,
                batch_size=config.batch_size,
                sequential=sequential,
            ).ppl
            for label, tokens in texts.items()
        },
        "params": count_parameters(model, non_embedding=False),
        "non_embedding_params": count_parameters(model, non_embedding=True),
        "flops_per_token": forward_flops(model, seq_len=config.speed_seq_len),
        "weights_bytes": weights_bytes(model),
    }
    if config.speed:
        result["speed"] = asdict(measure_speed(model, batch=config.speed_batch, seq_len=config.speed_seq_len))
        result["generation"] = {
            name: asdict(
                measure_generation(
                    model, batch=batch, prompt_len=config.gen_prompt_len, new_tokens=config.gen_new_tokens
                )
            )
            for name, batch in (("batch1", 1), ("batched", config.gen_batch))
        }
    if config.zero_shot:
        if tokenizer is None:
            raise UserError(
                "evaluate.zero_shot needs the model's tokenizer; this model has none (save it with its tokenizer)"
            )
        from adapruner.evaluate.zeroshot import zero_shot

        result["zero_shot"] = zero_shot(
            model, tokenizer, config.zero_shot, limit=config.zero_shot_limit, batch_size=config.batch_size
        )
    return result


def prune_copy(
    loaded: LoadedModel, job: PruneJob, *, progress: Progress | None = None, timings: dict[str, float] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Prune a copy of ``loaded.model`` as ``job`` says; the loaded model is left dense (for callers that
    compare several prunings of one model; :func:`run_prune` prunes in place).

    Returns the pruned model and the facts of the run (plan, calibration sample ids).
    """
    copied = LoadedModel(copy.deepcopy(loaded.model), loaded.tokenizer, loaded.name)
    facts = prune_loaded(copied, job, progress=progress, timings=timings)
    return copied.model, facts


def prune_loaded(
    loaded: LoadedModel,
    job: PruneJob,
    *,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    snapshot: DenseSnapshot | None = None,
) -> dict[str, Any]:
    """Prune ``loaded.model`` in place as ``job`` says (calibrate, score, then :func:`~adapruner.prune.step.
    prune_step`, recorded into ``snapshot`` when given); returns the run's facts (plan, sample ids)."""
    timings = {} if timings is None else timings
    adapter = get_adapter(loaded.model)
    with _timed(timings, "calibration_s"):
        samples = sample_windows(loaded.tokenizer, job.calibration)
    compensator = build_compensator(job.compensate.method, damping=job.compensate.damping)
    collect, score_blocks, placement = collect_statistics, block_scores, WHOLE_MODEL
    if (sequential := checked_sequential(job)) is not None:  # layer by layer: the same results
        collect, score_blocks, placement = sequential.statistics, sequential.block_scores, sequential
    mix = [name for name, weight in job.importance.mix.items() if weight > 0]
    unit_terms = unit_statistics_of(mix)  # gradient metrics: per-unit terms of each sample's gradients
    exact = [name for name in mix if not per_unit(build_metric(name))]
    with _timed(timings, "statistics_s"):
        needs = metric_needs(exact)
        stats = collect(
            adapter, stack(samples), needs=needs, unit_terms=unit_terms, progress=_stage(progress, "statistics")
        )
    with _timed(timings, "scoring_s"):
        scores, saliency = _scores(adapter, stats, job)
    del stats  # the compensation pass collects its own, one layer at a time

    def blocks(criterion: str) -> torch.Tensor:  # depth pruning: scored on the dense model, once
        with _timed(timings, "block_scores_s"):
            return score_blocks(adapter, stack(samples), criterion=criterion, progress=_stage(progress, "block scores"))

    plan = prune_step(
        adapter,
        scores,
        config=job.prune,
        params_before=count_parameters(loaded.model, non_embedding=True),
        compensator=compensator,
        calibration=lambda: stack(samples),
        placement=placement,
        block_scores=blocks,
        saliency=saliency,
        snapshot=snapshot,
        timed=lambda stage: _timed(timings, f"{stage}_s"),
    )
    return {
        "calibration_samples": [s.id for s in samples],
        "planned_ratio": plan.ratio_achieved,
        "blocks_removed": list(plan.drop),
        "widths": adapter.widths(),
    }


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """``progress`` as the ``(done, total)`` callback of one named stage."""
    return None if progress is None else lambda done, total: progress(stage, done, total)


def _scores(
    adapter: ModelAdapter, stats: Statistics, job: PruneJob
) -> tuple[dict[tuple[int, str], torch.Tensor], list[dict[str, list[float]]] | None]:
    """The metric mix's scores of the targeted groups and, for ``allocation='nirvana'``, the saliency of
    every unit (raw scores, comparable across layers)."""
    groups = [g for g in adapter.groups() if g.kind in job.prune.targets]
    importance = job.importance

    def score(normalization: str) -> dict[tuple[int, str], torch.Tensor]:
        return score_groups(
            adapter,
            groups,
            stats,
            mix=importance.mix,
            aggregation=importance.aggregation,
            normalization=normalization,
            seed=importance.seed,
        )

    scores = score(importance.normalization)
    saliency = unit_saliency(score("none"), adapter.n_layers) if job.prune.allocation == "nirvana" else None
    return scores, saliency


def recover_pruned(
    model: Any,
    tokenizer: Any,
    config: RecoverConfig,
    *,
    texts: dict[str, torch.Tensor],
    evaluate: EvalConfig,
    progress: Progress | None = None,
    on_loss: Callable[[int, float], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run the recovery ``config`` names on the pruned ``model``; returns the plain trained model and the
    report's ``recovery`` record, with the PPL on each held-out text before recovery."""
    from adapruner.recover import recover_model

    before = {
        label: perplexity(
            model, tokens, seq_len=evaluate.seq_len, stride=evaluate.stride, batch_size=evaluate.batch_size
        ).ppl
        for label, tokens in texts.items()
    }
    model, result = recover_model(model, tokenizer, config, progress=progress, on_loss=on_loss)
    return model, result.as_dict() | {"perplexity_before": before}


def run_prune(
    job: PruneJob,
    *,
    out: str | Path | None = None,
    loaded: LoadedModel | None = None,
    progress: Progress | None = None,
    on_loss: Callable[[int, float], None] | None = None,
) -> PruneOutcome:
    """Load, calibrate, score, prune, recover (when ``job.recover`` says), evaluate against the dense
    model and save (when ``out`` is given).

    The model is pruned in place after the dense evaluation (no copy: the peak memory is the weights
    plus the statistics), so a ``loaded`` model that is passed in is consumed: it is the pruned model
    afterwards. ``on_loss(step, loss)`` follows the recovery's training loss.
    """
    timings: dict[str, float] = {}
    sequential = checked_sequential(job)  # refuses what sequential mode cannot run, before any work
    if loaded is None:
        with _timed(timings, "load_s"):
            loaded = load_model(job.model)
    with _timed(timings, "eval_text_s"):
        texts = eval_texts(loaded.tokenizer, job.evaluate)
    with _timed(timings, "eval_dense_s"):
        dense_eval = evaluate_model(
            loaded.model, texts, job.evaluate, tokenizer=loaded.tokenizer, sequential=sequential
        )
    facts = prune_loaded(loaded, job, progress=progress, timings=timings)
    model = loaded.model
    if job.recover.enabled:
        with _timed(timings, "recovery_s"):
            model, facts["recovery"] = recover_pruned(
                model,
                loaded.tokenizer,
                job.recover,
                texts=texts,
                evaluate=job.evaluate,
                progress=progress,
                on_loss=on_loss,
            )
    with _timed(timings, "eval_pruned_s"):
        pruned_eval = evaluate_model(model, texts, job.evaluate, tokenizer=loaded.tokenizer, sequential=sequential)
    report = build_report(
        source=job.model.source,
        ratio_target=job.prune.ratio,
        config=job.model_dump(mode="json"),
        dense=dense_eval,
        pruned=pruned_eval,
        facts=facts,
        timings=timings,
    )
    report["device"] = str(input_device(model))
    if out is not None:
        save_result(model, loaded.tokenizer, Path(out), job=job, report=report)
    return PruneOutcome(model, loaded.tokenizer, report)
