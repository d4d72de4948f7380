"""Recovery benchmark: quality of SmolLM2-135M pruned at a few ratios, before and after a short LoRA and a
short continued-pretraining (CPT) run, with zero-shot accuracy, and generation speed of the pruned models.

Pruning: the default Taylor metric, 32 calibration samples x 256 tokens of the pydoc train partition.
Recovery: ``--steps`` steps of ``--batch`` x ``--seq-len`` tokens of the ``--recover-text`` train partition
(LoRA r=8 on every attention and MLP projection, merged; CPT of every parameter). PPL on the test
partitions of jargon, gnu-standards and pydoc; zero-shot: the offline cloze tasks (test partitions).
Writes its table into BENCHMARKS.md between markers.

    .venv/bin/python bench/recover.py [--ratios 0.2,0.35] [--methods lora,cpt] [--steps 200]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from adapruner.config import (
    CalibrationConfig,
    CompensateConfig,
    DataSource,
    ImportanceConfig,
    PruneConfig,
    PruneJob,
    RecoverConfig,
)
from adapruner.models import input_device, load_model
from adapruner.pipeline import eval_texts, evaluate_model, prune_copy
from adapruner.recover import recover_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import add_eval_arguments, eval_config, provenance, write_section  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratios", default="0.2,0.35")
    parser.add_argument("--methods", default="lora,cpt")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lora-lr", type=float, default=2e-4)
    parser.add_argument("--cpt-lr", type=float, default=2e-5)
    parser.add_argument("--recover-text", default="pydoc", help="recovery trains on its train partition")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--no-speed", action="store_true", help="skip generation timing (bench/depth.py has it)")
    add_eval_arguments(parser, section="recover")
    args = parser.parse_args(argv)

    # Recovery changes weights, never shapes: the recovered models run at the pruned model's speed.
    quality = eval_config(args, ("jargon", "gnu-standards", "pydoc")).model_copy(update={"speed": False})
    evaluate = quality if args.no_speed else quality.model_copy(update={"speed": True})
    recover_source = DataSource.parse(args.recover_text)
    loaded = load_model(args.model)
    texts = eval_texts(loaded.tokenizer, evaluate)
    dense = evaluate_model(loaded.model, texts, evaluate, tokenizer=loaded.tokenizer)
    rows = [("dense", "-", dense, None)]
    for ratio in (float(r) for r in args.ratios.split(",")):
        job = PruneJob(
            calibration=CalibrationConfig(samples=args.samples, seq_len=256),
            # the recipe these rows were measured with (prune's defaults until issue 21 changed them)
            importance=ImportanceConfig(mix={"taylor": 1.0}),
            prune=PruneConfig(ratio=ratio, targets=("heads", "channels")),
            compensate=CompensateConfig(method="none"),
            evaluate=evaluate,
        )
        pruned, _ = prune_copy(loaded, job)
        rows.append((f"{ratio:.0%}", "none", evaluate_model(pruned, texts, evaluate, tokenizer=loaded.tokenizer), None))
        print(f"{ratio:.0%} none: {rows[-1][2]['perplexity']}", file=sys.stderr)
        for method in args.methods.split(","):
            config = RecoverConfig(
                method=method,
                source=recover_source,
                steps=args.steps,
                batch_size=args.batch,
                seq_len=args.seq_len,
                learning_rate=args.lora_lr if method == "lora" else args.cpt_lr,
            )
            model, result = recover_model(copy.deepcopy(pruned), loaded.tokenizer, config)
            rows.append(
                (f"{ratio:.0%}", method, evaluate_model(model, texts, quality, tokenizer=loaded.tokenizer), result)
            )
            print(f"{ratio:.0%} {method}: {rows[-1][2]['perplexity']} in {result.seconds:.0f}s", file=sys.stderr)
            del model
        del pruned

    labels = list(texts)
    tasks = list(evaluate.zero_shot)
    header = [
        "pruned",
        "recovery",
        *(f"PPL {label.removeprefix('builtin:')}" for label in labels),
        *(f"acc {task}" for task in tasks),
        "held-out PPL before -> after",
        "recovery s",
        *(() if args.no_speed else ("ms/token b1", f"gen tok/s b{evaluate.gen_batch}")),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ratio, method, result, recovery in rows:
        heldout = f"{recovery.heldout_ppl_before:.2f} -> {recovery.heldout_ppl_after:.2f}" if recovery else "-"
        cells = [
            ratio,
            method,
            *(f"{result['perplexity'][label]:.2f}" for label in labels),
            *(f"{result['zero_shot'][task]['acc']:.3f}" for task in tasks),
            heldout,
            f"{recovery.seconds:.0f}" if recovery else "-",
        ]
        if not args.no_speed:
            generation = result.get("generation")
            cells += [
                f"{1e3 * generation['batch1']['per_token_s']:.1f}" if generation else "as pruned",
                f"{generation['batched']['tokens_per_s']:.0f}" if generation else "as pruned",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    tokens = args.steps * args.batch * args.seq_len
    body = "\n".join(
        [
            f"## Recovery: LoRA and continued pretraining after pruning {args.model}",
            "",
            provenance("recover.py", argv, str(input_device(loaded.model))),
            "",
            f"Pruned with Taylor ({args.samples} x 256 tokens of pydoc train). Recovery: {args.steps} steps x "
            f"{args.batch} x {args.seq_len} = {tokens:,} tokens of {recover_source.label()} train (LoRA r=8, "
            f"alpha 16, lr {args.lora_lr:g}, merged; CPT lr {args.cpt_lr:g}); held-out PPL on its validation "
            f"partition. PPL: windows of 512 over at most {args.eval_tokens:,} tokens of each test partition. "
            + (
                "Zero-shot: offline cloze tasks from each corpus's test partition through lm-eval (4 choices, "
                "chance 0.25). "
                if tasks
                else ""
            )
            + (
                "Generation speed: see the depth table."
                if args.no_speed
                else "Generation: greedy with the KV cache after a 128-token prompt, 32 new tokens, measured on "
                "the dense and pruned models (recovery changes weights, not shapes)."
            ),
            "",
            *lines,
        ]
    )
    write_section(args.section, body, path=args.benchmarks)
    print(body)


if __name__ == "__main__":
    main()
