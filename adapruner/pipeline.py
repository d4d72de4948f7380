"""The one function that runs a pruning job, and the evaluation that reports on it."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from adapruner.adapters import get_adapter
from adapruner.artifacts import save_pruned
from adapruner.calibration import sample_windows, stack, token_stream
from adapruner.compensate import build_compensator, pruned_inputs
from adapruner.config import EvalConfig, PruneJob, RecoverConfig
from adapruner.evaluate import (
    count_parameters,
    forward_flops,
    ideal_speedup,
    measure_generation,
    measure_speed,
    perplexity,
    weights_bytes,
)
from adapruner.importance import metric_needs, score_groups
from adapruner.models import LoadedModel, input_device, load_model
from adapruner.prune import apply_plan, plan_model, remove_planned_blocks, unit_saliency
from adapruner.prune.depth import block_scores
from adapruner.stats import collect_statistics

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as a stage advances."""

REPORT_VERSION = 1


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
    model: Any, texts: dict[str, torch.Tensor], config: EvalConfig, *, tokenizer: Any = None
) -> dict[str, Any]:
    """Perplexity on each text, parameter counts, FLOPs, (optionally) measured speed and generation
    latency, and zero-shot accuracy on ``config.zero_shot`` (needs ``tokenizer``)."""
    result: dict[str, Any] = {
        "perplexity": {
            label: perplexity(
                model, tokens, seq_len=config.seq_len, stride=config.stride, batch_size=config.batch_size
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
            raise ValueError("evaluate_model: evaluate.zero_shot needs the tokenizer")
        from adapruner.evaluate.zeroshot import zero_shot

        result["zero_shot"] = zero_shot(
            model, tokenizer, config.zero_shot, limit=config.zero_shot_limit, batch_size=config.batch_size
        )
    return result


def prune_copy(
    loaded: LoadedModel, job: PruneJob, *, progress: Progress | None = None, timings: dict[str, float] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Prune a copy of ``loaded.model`` as ``job`` says; the loaded model is left dense.

    Returns the pruned model and the facts of the run (plan, calibration sample ids).
    """
    timings = {} if timings is None else timings
    model = copy.deepcopy(loaded.model)
    adapter = get_adapter(model)
    with _timed(timings, "calibration_s"):
        samples = sample_windows(loaded.tokenizer, job.calibration)
    mix = job.importance.mix
    compensator = build_compensator(job.compensate.method, damping=job.compensate.damping)
    with _timed(timings, "statistics_s"):
        stats = collect_statistics(
            adapter,
            stack(samples),
            needs=metric_needs(mix) | compensator.needs,
            progress=(lambda done, total: progress("statistics", done, total)) if progress else None,
        )
    with _timed(timings, "scoring_s"):
        groups = [g for g in adapter.groups() if g.kind in job.prune.targets]
        scores = score_groups(
            adapter,
            groups,
            stats,
            mix=mix,
            aggregation=job.importance.aggregation,
            normalization=job.importance.normalization,
            seed=job.importance.seed,
        )
        saliency = None
        if job.prune.allocation == "nirvana":  # raw scores, comparable across layers
            raw = score_groups(
                adapter,
                groups,
                stats,
                mix=mix,
                aggregation=job.importance.aggregation,
                normalization="none",
                seed=job.importance.seed,
            )
            saliency = unit_saliency(raw, adapter.n_layers)

    def blocks(criterion: str) -> torch.Tensor:  # depth pruning: scored on the dense model, once
        with _timed(timings, "block_scores_s"):
            return block_scores(
                adapter,
                stack(samples),
                criterion=criterion,
                progress=(lambda done, total: progress("block scores", done, total)) if progress else None,
            )

    with _timed(timings, "pruning_s"):
        before = count_parameters(model, non_embedding=True)
        plan = plan_model(adapter, params_before=before, config=job.prune, block_scores=blocks, saliency=saliency)
        targets = pruned_inputs(adapter, scores, plan) if compensator.needs else []
        apply_plan(adapter, scores, plan, drop_blocks=False)
    with _timed(timings, "compensation_s"):
        compensator(adapter, targets, stats)
    remove_planned_blocks(adapter, plan)  # after compensation, which addresses the dense layer indices
    del stats, targets
    facts = {
        "calibration_samples": [s.id for s in samples],
        "planned_ratio": plan.ratio_achieved,
        "blocks_removed": list(plan.drop),
        "widths": adapter.widths(),
    }
    return model, facts


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

    ``loaded`` lets a caller that runs many jobs on one model load it once; ``on_loss(step, loss)``
    follows the recovery's training loss.
    """
    timings: dict[str, float] = {}
    if loaded is None:
        with _timed(timings, "load_s"):
            loaded = load_model(job.model)
    with _timed(timings, "eval_text_s"):
        texts = eval_texts(loaded.tokenizer, job.evaluate)
    with _timed(timings, "eval_dense_s"):
        dense_eval = evaluate_model(loaded.model, texts, job.evaluate, tokenizer=loaded.tokenizer)
    model, facts = prune_copy(loaded, job, progress=progress, timings=timings)
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
        pruned_eval = evaluate_model(model, texts, job.evaluate, tokenizer=loaded.tokenizer)
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


def build_report(
    *,
    source: str,
    ratio_target: float,
    config: dict[str, Any],
    dense: dict[str, Any],
    pruned: dict[str, Any],
    facts: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    before, after = dense["non_embedding_params"], pruned["non_embedding_params"]
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "model": source,
        "params_before": before,
        "params_after": after,
        "ratio_target": ratio_target,
        "ratio_achieved": 1 - after / before,
        "total_params_before": dense["params"],
        "total_params_after": pruned["params"],
        "ideal_speedup": ideal_speedup(dense["flops_per_token"], pruned["flops_per_token"]),
        "dense": dense,
        "pruned": pruned,
        "config": config,
        "timings": timings,
        **facts,
    }
    if "speed" in dense and "speed" in pruned:
        report["measured_speedup"] = pruned["speed"]["tokens_per_s"] / dense["speed"]["tokens_per_s"]
    if "generation" in dense and "generation" in pruned:
        report["generation_speedup"] = {
            name: dense["generation"][name]["per_token_s"] / pruned["generation"][name]["per_token_s"]
            for name in dense["generation"]
        }
    return report


def save_result(model: Any, tokenizer: Any, out: Path, *, job: PruneJob | Any, report: dict[str, Any]) -> None:
    """Save the pruned model, write the formats of ``job.export`` next to it (listed in the report's
    ``exports``) and write ``report.json``: the artifact folder of a prune or search job."""
    save_pruned(model, tokenizer, out, job=job.model_dump(mode="json"), extra={"report": "report.json"})
    if job.export.formats:
        from adapruner.export import export_artifact

        report["exports"] = export_artifact(out, job.export)
    write_report(report, out / "report.json")


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(quantity, dense, pruned)`` rows for a readable table."""
    dense, pruned = report["dense"], report["pruned"]
    rows = [
        ("non-embedding params", f"{report['params_before']:,}", f"{report['params_after']:,}"),
        ("total params", f"{dense['params']:,}", f"{pruned['params']:,}"),
    ]
    rows += [
        (f"PPL {label}", f"{dense['perplexity'][label]:.2f}", f"{pruned['perplexity'][label]:.2f}")
        for label in dense["perplexity"]
    ]
    if "recovery" in report:
        recovery = report["recovery"]
        rows += [
            (f"PPL {label} before {recovery['method']}", f"{dense['perplexity'][label]:.2f}", f"{ppl:.2f}")
            for label, ppl in recovery["perplexity_before"].items()
        ]
    for task, result in pruned.get("zero_shot", {}).items():
        rows.append((f"zero-shot acc {task}", f"{dense['zero_shot'][task]['acc']:.3f}", f"{result['acc']:.3f}"))
    if "speed" in dense and "speed" in pruned:
        rows.append(("tokens/s", f"{dense['speed']['tokens_per_s']:.0f}", f"{pruned['speed']['tokens_per_s']:.0f}"))
    if "generation" in dense and "generation" in pruned:
        one, many = dense["generation"]["batch1"], dense["generation"]["batched"]
        rows.append(
            (
                f"ms/new token, batch 1, prompt {one['prompt_len']}",
                f"{1e3 * one['per_token_s']:.1f}",
                f"{1e3 * pruned['generation']['batch1']['per_token_s']:.1f}",
            )
        )
        rows.append(
            (
                f"generated tokens/s, batch {many['batch']}",
                f"{many['tokens_per_s']:.0f}",
                f"{pruned['generation']['batched']['tokens_per_s']:.0f}",
            )
        )
    rows.append(("GFLOPs/token", f"{dense['flops_per_token'] / 1e9:.3f}", f"{pruned['flops_per_token'] / 1e9:.3f}"))
    rows.append(("weights MB", f"{dense['weights_bytes'] / 2**20:.1f}", f"{pruned['weights_bytes'] / 2**20:.1f}"))
    return rows


def format_table(rows: Sequence[tuple[str, ...]], header: Sequence[str]) -> str:
    table = [tuple(header), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
