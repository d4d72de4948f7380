"""Depth vs width vs combined pruning of SmolLM2-135M at one ratio, with every block criterion.

Width: the default Taylor metric over KV groups and MLP channels (``depth_share`` 0). Depth: whole blocks
chosen by each block criterion (``ppl``, ``taylor_plus``, ``block_influence``), ``depth_share`` 1 (the
sub-block remainder of the budget goes to width). Combined: ``depth_share`` 0.5. Calibration: the pydoc
train partition. PPL on the test partitions of jargon and gnu-standards (domains calibration did not
see); zero-shot: the offline cloze tasks of the same test partitions; forward throughput and generation
speed. Writes its table into BENCHMARKS.md between markers.

    .venv/bin/python bench/depth.py [--ratio 0.2] [--shares 0,0.5,1] [--criteria ppl,taylor_plus,block_influence]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from adapruner.catalog import BLOCK_CRITERIA
from adapruner.config import (
    CalibrationConfig,
    CompensateConfig,
    DataSource,
    ImportanceConfig,
    PruneConfig,
    PruneJob,
)
from adapruner.models import input_device, load_model
from adapruner.pipeline import eval_texts, evaluate_model, prune_copy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import add_eval_arguments, eval_config, provenance, write_section  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--shares", default="0,0.5,1", help="depth shares: 0 is width only, 1 depth only")
    parser.add_argument("--criteria", default=",".join(BLOCK_CRITERIA.names()), help="block criteria")
    parser.add_argument("--metric", default="taylor", help="width metric")
    parser.add_argument("--calib", default="pydoc", help="calibration source (its train partition)")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    add_eval_arguments(parser, section="depth")
    args = parser.parse_args(argv)

    evaluate = eval_config(args, ("jargon", "gnu-standards"))
    calibration = CalibrationConfig(sources=(DataSource.parse(args.calib),), samples=args.samples, seq_len=args.seq_len)
    loaded = load_model(args.model)
    texts = eval_texts(loaded.tokenizer, evaluate)
    dense = evaluate_model(loaded.model, texts, evaluate, tokenizer=loaded.tokenizer)
    rows = [("dense", "-", "-", dense, None)]
    shares = [float(s) for s in args.shares.split(",")]
    settings = [(share, criterion) for share in shares for criterion in args.criteria.split(",")]
    settings = list(dict.fromkeys((share, criterion if share > 0 else "-") for share, criterion in settings))
    for share, criterion in settings:
        # the recipe these rows were measured with (prune's defaults until issue 21 changed them)
        prune = PruneConfig(ratio=args.ratio, depth_share=share, targets=("heads", "channels"))
        if share > 0:
            prune = prune.model_copy(update={"block_criterion": BLOCK_CRITERIA.check(criterion)})
        job = PruneJob(
            calibration=calibration,
            importance=ImportanceConfig(mix={args.metric: 1.0}),
            prune=prune,
            compensate=CompensateConfig(method="none"),
            evaluate=evaluate,
        )
        start = time.perf_counter()
        model, facts = prune_copy(loaded, job)
        seconds = time.perf_counter() - start
        result = evaluate_model(model, texts, evaluate, tokenizer=loaded.tokenizer)
        name = "width" if share == 0 else ("depth" if share == 1 else f"combined {share:g}")
        rows.append((name, criterion, str(len(facts["blocks_removed"])), result, seconds))
        print(f"{name} {criterion}: {result['perplexity']} in {seconds:.1f}s", file=sys.stderr)
        del model

    labels, tasks = list(texts), list(evaluate.zero_shot)
    header = [
        "pruning",
        "block criterion",
        "blocks removed",
        *(f"PPL {label.removeprefix('builtin:')}" for label in labels),
        *(f"acc {task}" for task in tasks),
        "non-emb params",
        "fwd tok/s",
        "x dense",
        "ms/token b1",
        f"gen tok/s b{evaluate.gen_batch}",
        "prune s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, criterion, blocks, result, seconds in rows:
        tps = result["speed"]["tokens_per_s"]
        cells = [
            name,
            criterion,
            blocks,
            *(f"{result['perplexity'][label]:.2f}" for label in labels),
            *(f"{result['zero_shot'][task]['acc']:.3f}" for task in tasks),
            f"{result['non_embedding_params']:,}",
            f"{tps:.0f}",
            f"{tps / dense['speed']['tokens_per_s']:.2f}",
            f"{1e3 * result['generation']['batch1']['per_token_s']:.1f}",
            f"{result['generation']['batched']['tokens_per_s']:.0f}",
            "-" if seconds is None else f"{seconds:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    body = "\n".join(
        [
            f"## Depth vs width vs combined: {args.model} at {args.ratio:.0%}",
            "",
            provenance("depth.py", argv, str(input_device(loaded.model))),
            "",
            f"Calibration: {args.samples} x {args.seq_len} tokens of {calibration.sources[0].label()} train, "
            f"{args.metric} for width. Depth share = share of the removed parameters taken as whole blocks "
            "(1 = depth only, the sub-block remainder in width); blocks chosen by Shortened LLaMA's PPL and "
            "Taylor+ (first 4 and last 2 blocks kept) or ShortGPT's Block Influence on the calibration "
            f"batch. PPL: windows of 512 over at most {args.eval_tokens:,} tokens of each test partition. "
            + (
                "Zero-shot: offline cloze tasks from each corpus's test partition through lm-eval (4 choices, "
                "chance 0.25). "
                if tasks
                else ""
            )
            + "Speed: forward throughput (batch 4 x 256) and greedy generation with the KV cache after a "
            "128-token prompt.",
            "",
            *lines,
        ]
    )
    write_section(args.section, body, path=args.benchmarks)
    print(body)


if __name__ == "__main__":
    main()
