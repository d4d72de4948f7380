"""Baseline benchmark: every fixed metric on SmolLM2-135M at one ratio, same calibration budget.

Calibration text: the train partition of the built-in ``pydoc`` corpus. Reported on the test
partitions of ``jargon`` and ``gnu-standards`` (domains calibration did not see) and on pydoc's own
test partition (same domain, different text). Writes its table into BENCHMARKS.md between markers.

    .venv/bin/python bench/baseline.py [--ratio 0.2] [--samples 32] [--seq-len 256] [--eval-tokens 16384]
        [--metrics a,b] [--compensate none,bias,...] [--allocation uniform|nirvana] [--attn-gammas 1,3]
        [--section NAME]

``--compensate`` adds one row per metric and compensator (``metric + compensator``; ``none`` is the
metric alone); ``--attn-gammas`` one row per NIRVANA gamma (``prune.attn_gamma``).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from adapruner.catalog import COMPENSATORS, METRICS
from adapruner.config import DataSource, EvalConfig
from adapruner.models import input_device, load_model
from adapruner.pipeline import eval_texts, evaluate_model, prune_copy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fixed_prune_job  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_section(name: str, body: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->`` (or append it)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery table names the command that made it.\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def provenance(script: str, argv: list[str] | None, device: str) -> str:
    """The line under every table's title: the command that made it, the date, machine, torch and threads."""
    command = f"python bench/{script} " + shlex.join(sys.argv[1:] if argv is None else argv)
    return (
        f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d')}, {platform.machine()} {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads)."
    )


def add_eval_arguments(parser: argparse.ArgumentParser, *, section: str) -> None:
    """The evaluation and output options shared by the depth and recovery benchmarks."""
    parser.add_argument("--eval-tokens", type=int, default=16_384)
    parser.add_argument("--zero-shot", default="cloze:jargon,cloze:gnu-standards")
    parser.add_argument("--zero-shot-limit", type=int)
    parser.add_argument("--section", default=section, help="BENCHMARKS.md section to (re)write")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md", help="file to write")


def eval_config(args: argparse.Namespace, corpora: tuple[str, ...]) -> EvalConfig:
    """PPL in windows of 512 on the test partitions of the built-in ``corpora``, speed, and the zero-shot
    tasks of :func:`add_eval_arguments`."""
    return EvalConfig(
        texts=tuple(DataSource(kind="builtin", name=name) for name in corpora),
        max_tokens=args.eval_tokens,
        seq_len=512,
        speed=True,
        zero_shot=tuple(task for task in args.zero_shot.split(",") if task),
        zero_shot_limit=args.zero_shot_limit,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-tokens", type=int, default=16_384)
    parser.add_argument("--metrics", default=",".join(METRICS.names()))
    parser.add_argument("--targets", default="heads,channels", help="unit kinds to prune")
    parser.add_argument("--section", default="baseline", help="BENCHMARKS.md section to (re)write")
    parser.add_argument("--compensate", default="none", help=f"compensators, from: {', '.join(COMPENSATORS.names())}")
    parser.add_argument("--allocation", default="uniform", help="uniform or nirvana")
    parser.add_argument("--attn-gammas", help="NIRVANA's gamma (MLP sparsity / attention sparsity), one row per value")
    args = parser.parse_args(argv)

    texts_cfg = tuple(DataSource(kind="builtin", name=n) for n in ("jargon", "gnu-standards", "pydoc"))
    evaluate = EvalConfig(texts=texts_cfg, max_tokens=args.eval_tokens, seq_len=512, speed=True)
    loaded = load_model("smollm2-135m")
    texts = eval_texts(loaded.tokenizer, evaluate)
    dense = evaluate_model(loaded.model, texts, evaluate)
    rows = []
    gammas = [float(g) for g in args.attn_gammas.split(",")] if args.attn_gammas else [None]
    settings = [(m, c, g) for m in args.metrics.split(",") for c in args.compensate.split(",") for g in gammas]
    for metric, method, gamma in settings:
        job = fixed_prune_job(
            metric=metric,
            ratio=args.ratio,
            targets=tuple(args.targets.split(",")),
            samples=args.samples,
            seq_len=args.seq_len,
            evaluate=evaluate,
            compensate=method,
            allocation=args.allocation,
            attn_gamma=gamma,
        )
        timings: dict[str, float] = {}
        start = time.perf_counter()
        model, _ = prune_copy(loaded, job, timings=timings)
        prune_s = time.perf_counter() - start
        result = evaluate_model(model, texts, evaluate)
        name = (metric if method == "none" else f"{metric} + {method}") + (f", gamma {gamma:g}" if gamma else "")
        rows.append((name, result, prune_s))
        print(f"{name}: {result['perplexity']} in {prune_s:.1f}s", file=sys.stderr)
        del model

    labels = list(texts)
    header = [
        "metric",
        *(f"PPL {label.removeprefix('builtin:')}" for label in labels),
        "non-emb params",
        "tokens/s",
        "x dense",
        "score+prune s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name: str, result: dict, seconds: str) -> str:
        ppl = [f"{result['perplexity'][label]:.2f}" for label in labels]
        tps = result["speed"]["tokens_per_s"]
        speedup = tps / dense["speed"]["tokens_per_s"]
        return (
            f"| {name} | "
            + " | ".join([*ppl, f"{result['non_embedding_params']:,}", f"{tps:.0f}", f"{speedup:.2f}", seconds])
            + " |"
        )

    lines.append(row("dense", dense, "-"))
    lines += [row(name, result, f"{seconds:.1f}") for name, result, seconds in rows]
    pruned_flops = rows[0][1]["flops_per_token"] if rows else dense["flops_per_token"]
    body = "\n".join(
        [
            f"## Baseline: every fixed metric, SmolLM2-135M at {args.ratio:.0%}, pruning {args.targets}",
            "",
            provenance("baseline.py", argv, str(input_device(loaded.model))),
            "",
            f"Calibration: {args.samples} samples x {args.seq_len} tokens from the pydoc train partition, "
            f"{args.allocation} allocation over {args.targets} (heads are whole KV groups"
            + ("; gamma: MLP sparsity / attention sparsity" if args.attn_gammas else "")
            + "). PPL: sliding windows of 512 tokens over "
            f"at most {args.eval_tokens:,} tokens of each corpus's test partition (jargon and gnu-standards were "
            "not used for calibration; pydoc test is same-domain, unseen text). Speed: forward throughput, "
            f'batch {evaluate.speed_batch} x {evaluate.speed_seq_len} tokens. "score+prune s" includes the '
            "statistics pass and, for `metric + compensator` rows, the compensation.",
            "",
            *lines,
            "",
            f"Ideal speed-up from the FLOPs removed at this ratio: {dense['flops_per_token'] / pruned_flops:.2f}x "
            "(the 49K-vocabulary output layer is not pruned).",
        ]
    )
    write_section(args.section, body)
    print(body)


if __name__ == "__main__":
    main()
