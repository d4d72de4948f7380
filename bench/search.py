"""Search benchmark: the Bayesian search against every fixed metric-and-source pair and against random
search with the same trial budget, on SmolLM2-135M.

Validation (used to choose): the validation partitions of jargon and gnu-standards. Report (never
used to choose): their test partitions. Writes its tables into BENCHMARKS.md.

    .venv/bin/python bench/search.py [--ratio 0.2] [--trials 30] [--seq-lens 128,256]
    .venv/bin/python bench/search.py --second-objective latency [--ratio-range 0.1,0.3]   # section search-latency
    .venv/bin/python bench/search.py --second-objective params --ratio-range 0.1,0.3      # section search-params

With ``--second-objective`` the section adds the Pareto fronts (validation PPL vs latency or parameters)
of the GP search (log noisy EHVI) and of random search, with the hypervolume each dominates.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from adapruner.adapters import get_adapter
from adapruner.config import SearchJob
from adapruner.models import input_device, load_model
from adapruner.pipeline import eval_texts, evaluate_model
from adapruner.search.cache import load_pools
from adapruner.search.objective import observe
from adapruner.search.run import DEFAULT_CACHE, SECOND_FIELD, run_search
from adapruner.search.space import Recipe
from adapruner.search.trial import trial_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import provenance, write_section  # noqa: E402
from common import fixed_recipe, geo_mean, search_validation  # noqa: E402


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimised) and bounded by ``reference``."""
    area, ceiling = 0.0, reference[1]
    for x, y in sorted(p for p in points if p[0] < reference[0] and p[1] < reference[1]):
        if y < ceiling:
            area += (reference[0] - x) * (ceiling - y)
            ceiling = y
    return area


def pareto_section(results: dict[str, dict], second: str) -> list[str]:
    """Both searches' fronts (log PPL vs log of the second objective) and their hypervolumes."""
    field = SECOND_FIELD[second]
    fronts = {name: r["report"]["pareto"] for name, r in results.items()}
    logs = {name: [(p["value"], math.log(p[field])) for p in front] for name, front in fronts.items()}
    every = [pt for pts in logs.values() for pt in pts]
    worst = (max(x for x, _ in every), max(y for _, y in every))
    span = (worst[0] - min(x for x, _ in every), worst[1] - min(y for _, y in every))
    reference = (worst[0] + 0.1 * span[0] + 1e-9, worst[1] + 0.1 * span[1] + 1e-9)
    unit = "latency ms" if second == "latency" else "non-emb params"
    lines = ["| method | trial | validation PPL | " + unit + " | ratio |", "|---|---|---|---|---|"]
    for name, front in fronts.items():
        for p in front:
            value = f"{1000 * p[field]:.1f}" if second == "latency" else f"{p[field]:,}"
            lines.append(f"| {name} | {p['index']} | {p['validation_ppl']:.2f} | {value} | {p['ratio']:.3f} |")
    hv = "; ".join(f"{name} {hypervolume(pts, reference):.4f}" for name, pts in logs.items())
    lines += ["", f"Hypervolume of each front in (log validation PPL, log {unit}), one reference point: {hv}."]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--section", help="BENCHMARKS.md section (default search, or search-<second objective>)")
    parser.add_argument("--seq-lens", help="calibration window lengths to choose from, e.g. 128,256")
    parser.add_argument("--second-objective", choices=("latency", "params"))
    parser.add_argument("--ratio-range", help="LOW,HIGH searched ratio (with --second-objective)")
    parser.add_argument("--metrics", help="metrics the search mixes (default: SearchSpace's)")
    parser.add_argument("--compensators", help="compensators the search chooses from (default: none)")
    args = parser.parse_args(argv)
    section = args.section or ("search" if args.second_objective is None else f"search-{args.second_objective}")

    space_args: dict = {}
    if args.metrics:
        space_args["metrics"] = tuple(args.metrics.split(","))
    if args.compensators:
        space_args["compensators"] = tuple(args.compensators.split(","))
    if args.seq_lens:
        space_args["seq_lens"] = tuple(int(n) for n in args.seq_lens.split(","))
    if args.ratio_range:
        low, high = (float(v) for v in args.ratio_range.split(","))
        space_args["ratio"] = {"low": low, "high": high}
    job = SearchJob(
        ratio=args.ratio,
        space=space_args,
        search={"trials": args.trials, "second_objective": args.second_objective},
    )
    random_job = job.model_copy(update={"search": job.search.model_copy(update={"n_init": args.trials})})
    loaded = load_model(job.model)
    texts = eval_texts(loaded.tokenizer, job.evaluate)
    no_speed = job.evaluate.model_copy(update={"speed": False})
    labels = list(texts)

    def test_ppl(model) -> dict[str, float]:
        return evaluate_model(model, texts, no_speed)["perplexity"]

    def mean_log(ppl: dict[str, float]) -> float:
        return geo_mean(ppl.values())

    dense = evaluate_model(loaded.model, texts, job.evaluate)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, search_job in (("AdaPruner search (GP)", job), ("random search (Sobol)", random_job)):
            start = time.perf_counter()
            outcome = run_search(search_job, out=Path(tmp) / name.split()[0], loaded=loaded)
            report = outcome.report
            results[name] = {
                "test": report["pruned"]["perplexity"],
                # The same validation chunks as the fixed pairs below (the confirmation text is larger).
                "validation": report["best"]["validation_ppl"],
                "seconds": time.perf_counter() - start,
                "report": report,
            }
            print(name, results[name]["test"], file=sys.stderr)

    # Fixed metric-and-source pairs, each scored on the same validation text; the best is chosen there.
    space = job.space
    pools = load_pools(
        get_adapter(loaded.model),
        loaded.tokenizer,
        space.sources,
        pool_size=space.pool_size,
        seq_lens=space.seq_lens,
        seed=job.search.seed,
        cache_dir=DEFAULT_CACHE,
    )
    validation = search_validation(loaded.tokenizer, job.search)
    zeros = [0.0] * len(validation.chunks)
    pairs = []
    for source in space.sources:
        for metric in space.metrics:
            recipe = fixed_recipe(
                {source.label(): 1.0}, metric, samples=int(space.samples.high), seq_len=space.seq_lens[0]
            )
            with trial_model(loaded, pools, recipe, ratio=job.ratio, targets=job.targets, seed=0) as trial:
                value = observe(trial.model, validation, reference=zeros).value
            pairs.append((value, source.label(), metric, recipe))
            print(source.label(), metric, math.exp(value), file=sys.stderr)
    pairs.sort(key=lambda p: p[0])
    best_value, best_source, best_metric, best_recipe = pairs[0]

    def recipe_test_ppl(recipe: Recipe) -> dict[str, float]:  # the model pruned in place, then restored
        with trial_model(loaded, pools, recipe, ratio=job.ratio, targets=job.targets, seed=0) as trial:
            return test_ppl(trial.model)

    default = next(p for p in pairs if p[1] == "builtin:pydoc" and p[2] == "taylor")
    fixed_rows = {
        "LLM-Pruner-style default (taylor, pydoc)": {
            "test": recipe_test_ppl(default[3]),
            "validation": math.exp(default[0]),
        },
        f"best fixed pair on validation ({best_metric}, {best_source})": {
            "test": recipe_test_ppl(best_recipe),
            "validation": math.exp(best_value),
        },
    }
    del pairs

    def row(name: str, test: dict[str, float], validation: str) -> str:
        cells = [f"{test[label]:.2f}" for label in labels]
        return f"| {name} | " + " | ".join(cells) + f" | {mean_log(test):.2f} | {validation} |"

    heads = [f"test PPL {label.removeprefix('builtin:')}" for label in labels]
    rows = ["| method | " + " | ".join(heads) + " | geo-mean | validation PPL |", "|" + "---|" * (len(labels) + 3)]
    rows.append(row("dense", dense["perplexity"], "-"))
    rows += [row(name, r["test"], f"{r['validation']:.2f}") for name, r in {**fixed_rows, **results}.items()]

    ours = mean_log(results["AdaPruner search (GP)"]["test"])
    default_ppl = mean_log(fixed_rows["LLM-Pruner-style default (taylor, pydoc)"]["test"])
    best_fixed_ppl = mean_log(next(v for k, v in fixed_rows.items() if k.startswith("best"))["test"])
    report = results["AdaPruner search (GP)"]["report"]
    cost = report["trial_cost"]
    best = report["best"]["recipe"]
    body = "\n".join(
        [
            f"## Search: SmolLM2-135M at {args.ratio:.0%}, {args.trials} trials"
            + (f", second objective {args.second_objective}" if args.second_objective else ""),
            "",
            provenance("search.py", argv, str(input_device(loaded.model))),
            "",
            "Candidate calibration sources: train partitions of pydoc, jargon, gnu-standards "
            f"({space.pool_size} samples x {'/'.join(map(str, space.seq_lens))} tokens each in the pool). Validation (the objective): validation partitions of jargon and "
            "gnu-standards. Test (this table, never used to choose): their test partitions, "
            f"{job.evaluate.max_tokens:,} tokens each. Fixed pairs use {int(space.samples.high)} samples and the "
            "same ratio from attention and MLP."
            + (
                f" The search rows choose their ratio in {space.ratio.low:g}..{space.ratio.high:g} (the best-quality"
                f" trial is reported); the fixed pairs prune {args.ratio:g}: compare them on the Pareto table."
                if space.ratio is not None
                else ""
            ),
            "",
            *rows,
            "",
            f"Targets on held-out text (geo-mean of the two domains): search / LLM-Pruner-style default = "
            f"{ours / default_ppl:.3f} (target <= 0.90); search / best fixed pair chosen on validation = "
            f"{ours / best_fixed_ppl:.3f} (target <= 0.95).",
            "",
            f"Trial cost: one validation pass of the dense model {cost['validation_pass_s']:.1f}s; mean trial "
            f"{cost['mean_trial_vs_pass']:.2f}x, slowest full trial {cost['max_full_trial_vs_pass']:.2f}x; "
            f"{cost['stopped_early']} of {args.trials} trials stopped early; warm-up (pool statistics) "
            f"{cost['warmup_passes_per_source']:.2f} passes per source "
            f"({'cached on disk' if cost['warmup_s'] < 1 else 'computed'}).",
            "",
            f"Best recipe: mix {', '.join(f'{k}={v:.2f}' for k, v in best['mix'].items())}; calibration "
            f"{', '.join(f'{k}={v:.2f}' for k, v in best['source_weights'].items())}, {best['samples']} samples; "
            f"attn_share {best['attn_share']:.2f}, depth_slope {best['depth_slope']:.2f}, "
            f"{best['normalization']} normalisation, compensation {best.get('compensate', 'none')}, "
            f"calibration windows of {best.get('seq_len', space.seq_lens[0])} tokens"
            + (f", ratio {best['ratio']:.3f}." if best.get("ratio") is not None else "."),
            *(["", *pareto_section(results, args.second_objective)] if args.second_objective else []),
        ]
    )
    write_section(section, body)
    print(body)


if __name__ == "__main__":
    main()
