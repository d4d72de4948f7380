"""The report of a prune or search job: built from the dense and pruned evaluations and the run's facts,
written as ``report.json`` next to the saved model, and summarised as rows for a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapruner.artifacts import save_pruned
from adapruner.evaluate import ideal_speedup

if TYPE_CHECKING:
    from adapruner.config import PruneJob, SearchJob

REPORT_VERSION = 1


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
    """The report: parameter counts and ratio, the dense and pruned evaluations, the ideal (and, when
    measured, the real) speedup, the job ``config``, ``timings`` and the run's ``facts`` merged in."""
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


def save_result(model: Any, tokenizer: Any, out: Path, *, job: PruneJob | SearchJob, report: dict[str, Any]) -> None:
    """Save the pruned model, write the formats of ``job.export`` next to it (listed in the report's
    ``exports``) and write ``report.json``: the artifact folder of a prune or search job."""
    save_pruned(model, tokenizer, out, job=job.model_dump(mode="json"), extra={"report": "report.json"})
    if job.export.formats:
        from adapruner.export import export_artifact

        report["exports"] = export_artifact(out, job.export)
    write_report(report, out / "report.json")


def write_report(report: dict[str, Any], path: Path) -> None:
    """``report`` as indented JSON at ``path``."""
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
