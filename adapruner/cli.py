"""``adapruner`` command line: parsing and printing only; the work is in :mod:`adapruner.pipeline`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

from pydantic import ValidationError

from adapruner import service_cli
from adapruner.catalog import (
    BLOCK_CRITERIA,
    BUILTIN_CORPORA,
    COMPENSATORS,
    EXPORT_FORMATS,
    METRICS,
    RECOVERY,
    ZERO_SHOT_TASKS,
)
from adapruner.config import DEFAULT_CHANNEL_MULTIPLE, EXPORT_TYPES, DataSource, ModelSpec, PruneJob, SearchJob
from adapruner.errors import UserError

# Config field path (as pydantic reports it) -> the option that sets it.
OPTION_OF = {
    "model": "--model",
    "calibration.sources": "--calib",
    "calibration.samples": "--samples",
    "calibration.seq_len": "--seq-len",
    "importance.mix": "--mix/--metric",
    "importance.aggregation": "--aggregation",
    "importance.normalization": "--normalization",
    "prune.ratio": "--ratio",
    "prune.targets": "--targets",
    "prune.allocation": "--allocation",
    "compensate.method": "--compensate",
    "compensate.damping": "--compensate-damping",
    "space.compensators": "--compensators",
    "prune.attn_share": "--attn-share",
    "prune.attn_gamma": "--attn-gamma",
    "prune.protect_first": "--protect",
    "prune.protect_last": "--protect",
    "prune.channel_multiple": "--channel-multiple",
    "prune.uniform": "--uniform",
    "space.channel_multiple": "--channel-multiple",
    "space.uniform": "--uniform",
    "prune.depth_share": "--depth-share",
    "prune.block_criterion": "--block-criterion",
    "evaluate.texts": "--eval-text",
    "evaluate.seq_len": "--eval-seq-len",
    "evaluate.max_tokens": "--eval-tokens",
    "ratio": "--ratio",
    "space.sources": "--calib",
    "space.metrics": "--metrics",
    "space.samples": "--samples",
    "space.pool_size": "--pool-size",
    "space.seq_lens": "--seq-lens",
    "space.ratio": "--ratio-range",
    "search.second_objective": "--second-objective",
    "search.second_cap": "--second-cap",
    "search.trials": "--trials",
    "search.n_init": "--n-init",
    "search.validation": "--val-text",
    "search.time_budget_s": "--time-budget",
    "search.patience": "--patience",
    "search.validation_tokens": "--val-tokens",
    "search.chunk_tokens": "--chunk-tokens",
    "recover.method": "--recover",
    "recover.steps": "--recover-steps",
    "recover.max_tokens": "--recover-tokens",
    "recover.learning_rate": "--recover-lr",
    "recover.batch_size": "--recover-batch",
    "recover.seq_len": "--recover-seq-len",
    "recover.source": "--recover-text",
    "recover.rank": "--lora-rank",
    "recover.alpha": "--lora-alpha",
    "recover": "--recover-text",
    "evaluate.zero_shot": "--zero-shot",
    "evaluate.zero_shot_limit": "--zero-shot-limit",
    "export.formats": "--export",
    "export.type": "--export-type",
}


UNIFORM_HELP = "keep the same widths in every layer (stock from_pretrained, llama.cpp 'llama', vLLM llama)"


class CliError(Exception):
    """A bad argument: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _option(loc: Sequence[Any]) -> str:
    path = ".".join(str(part) for part in loc if not isinstance(part, int))
    for prefix in sorted(OPTION_OF, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + "."):
            return OPTION_OF[prefix]
    return path


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc, message = tuple(first["loc"]), first["msg"].removeprefix("Value error, ")
    # A model-level check names its field first ("attn_gamma: ..."): report it as that field.
    field, sep, rest = message.partition(": ")
    if sep and field.isidentifier():
        loc, message = (*loc, field), rest
    return f"{_option(loc)}: {message}" if loc else message


def parse_mix(text: str) -> dict[str, float]:
    """``taylor=0.7,wanda=0.3`` -> ``{"taylor": 0.7, "wanda": 0.3}``."""
    mix = {}
    for part in text.split(","):
        name, eq, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight) if eq else 1.0
        except ValueError:
            raise CliError(f"--mix: weight {weight!r} of {name!r} is not a number (use NAME=W,...)") from None
    return mix


def parse_range(option: str, text: str) -> dict[str, float]:
    """``LOW,HIGH`` (or one number, a fixed value) -> a ``Range`` payload."""
    low, _, high = text.partition(",")
    try:
        return {"low": float(low), "high": float(high or low)}
    except ValueError:
        raise CliError(f"{option}: {text!r} is not LOW,HIGH (two numbers)") from None


def parse_source(spec: str) -> DataSource:
    try:
        return DataSource.parse(spec)
    except (ValueError, ValidationError) as error:
        detail = _one_line(error) if isinstance(error, ValidationError) else str(error)
        raise CliError(f"data source {spec!r}: {detail}") from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Where the model runs and in which dtype (ModelSpec.device, ModelSpec.dtype)."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when present)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=get_args(ModelSpec.model_fields["dtype"].annotation),
        help="weights' dtype (auto: bfloat16 on CUDA, float32 on the CPU)",
    )


def add_recover_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recovery after pruning and zero-shot evaluation")
    group.add_argument("--recover", default="none", help=f"none, {', '.join(RECOVERY.names())}")
    group.add_argument("--recover-steps", type=int, default=100, help="optimiser steps")
    group.add_argument("--recover-tokens", type=int, help="token budget (whichever of steps and tokens ends first)")
    group.add_argument("--recover-lr", type=float, help="learning rate (default: lora 2e-4, cpt 2e-5)")
    group.add_argument("--recover-batch", type=int, default=4, help="windows per step")
    group.add_argument("--recover-seq-len", type=int, default=256, help="tokens per window")
    group.add_argument("--recover-text", help="text trained on (its train partition; default pydoc)")
    group.add_argument("--lora-rank", type=int, default=8)
    group.add_argument("--lora-alpha", type=float, default=16.0)
    group.add_argument(
        "--zero-shot",
        help=f"comma-separated lm-eval tasks: {', '.join(ZERO_SHOT_TASKS)} (online) or cloze:CORPUS (offline)",
    )
    group.add_argument("--zero-shot-limit", type=int, help="examples per zero-shot task")


def add_export_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("files for a serving runtime, written into --out (see adapruner export)")
    group.add_argument("--export", help=f"comma-separated formats: {', '.join(EXPORT_FORMATS.names())}")
    group.add_argument("--export-type", choices=EXPORT_TYPES, help="weight type (default: f16 for gguf, else the model's)")


def export_payload(args: argparse.Namespace) -> dict[str, Any]:
    formats = tuple(f.strip() for f in args.export.split(",") if f.strip()) if args.export else ()
    return {"formats": formats, "type": args.export_type}


def recover_payload(args: argparse.Namespace) -> dict[str, Any]:
    recover: dict[str, Any] = {
        "method": args.recover,
        "steps": args.recover_steps,
        "max_tokens": args.recover_tokens,
        "learning_rate": args.recover_lr,
        "batch_size": args.recover_batch,
        "seq_len": args.recover_seq_len,
        "rank": args.lora_rank,
        "alpha": args.lora_alpha,
        "seed": args.seed,
    }
    if args.recover_text:
        recover["source"] = parse_source(args.recover_text)
    return recover


def zero_shot_payload(args: argparse.Namespace) -> dict[str, Any]:
    tasks = tuple(t.strip() for t in args.zero_shot.split(",") if t.strip()) if args.zero_shot else ()
    return {"zero_shot": tasks, "zero_shot_limit": args.zero_shot_limit}


def build_parser() -> Parser:
    parser = Parser(prog="adapruner", description="Structured pruning of causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    prune = sub.add_parser("prune", help="prune a model with one metric or a fixed metric mix")
    prune.add_argument("--model", default="smollm2-135m", help="hub id, folder, .gguf file or alias")
    prune.add_argument("--ratio", type=float, required=True, help="share of non-embedding params to remove")
    which = prune.add_mutually_exclusive_group()
    which.add_argument("--metric", help=f"one of: {', '.join(METRICS.names())}")
    which.add_argument("--mix", help="weighted metrics, e.g. taylor=0.7,wanda=0.3")
    prune.add_argument("--aggregation", default="sum", help="sum, mean, max or prod")
    prune.add_argument("--normalization", default="mean", help="none, mean, max, l2, zscore or rank")
    prune.add_argument(
        "--calib",
        action="append",
        help=f"calibration source (repeatable): {', '.join(BUILTIN_CORPORA.names())}, FILE.txt/.jsonl, "
        "file:PATH[:split], hf:NAME[:CONFIG[:SPLIT[:FIELD]]]",
    )
    prune.add_argument("--samples", type=int, default=32)
    prune.add_argument("--seq-len", type=int, default=256)
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--targets", default="heads,channels", help="heads, channels or both")
    prune.add_argument(
        "--allocation", default="uniform", help="uniform, protected or nirvana (NIRVANA: raw scores pick the layers)"
    )
    prune.add_argument(
        "--compensate",
        default="none",
        help=f"update the remaining weights after pruning, one of: {', '.join(COMPENSATORS.names())}",
    )
    prune.add_argument(
        "--compensate-damping", type=float, help="damping relative to the mean input variance (method default)"
    )
    prune.add_argument("--protect", default="4,2", help="FIRST,LAST blocks kept whole with --allocation protected")
    prune.add_argument("--attn-share", type=float, help="share of the removed params taken from attention")
    prune.add_argument(
        "--attn-gamma", type=float, help="NIRVANA's gamma: MLP sparsity / attention sparsity (instead of --attn-share)"
    )
    prune.add_argument("--channel-multiple", type=int, default=DEFAULT_CHANNEL_MULTIPLE, help="kept channels: a multiple")
    prune.add_argument("--uniform", action="store_true", help=UNIFORM_HELP)
    prune.add_argument(
        "--depth-share", type=float, default=0.0, help="share of the removed params taken as whole blocks (0..1)"
    )
    prune.add_argument(
        "--block-criterion",
        default="block_influence",
        help=f"which blocks go with --depth-share: {', '.join(BLOCK_CRITERIA.names())}",
    )
    prune.add_argument("--eval-text", action="append", help="held-out text to report PPL on (repeatable)")
    prune.add_argument("--eval-seq-len", type=int, default=512)
    prune.add_argument("--eval-tokens", type=int, default=16_384, help="max tokens of each eval text")
    prune.add_argument("--no-speed", action="store_true", help="skip the throughput measurement")
    add_model_options(prune)
    prune.add_argument("--out", required=True, help="folder for the pruned model and report.json")
    prune.add_argument("--json", action="store_true", help="print the report as JSON")
    add_recover_options(prune)
    add_export_options(prune)

    search = sub.add_parser("search", help="Bayesian search over calibration data x metric mix x allocation")
    search.add_argument("--model", default="smollm2-135m", help="hub id, folder, .gguf file or alias")
    search.add_argument("--ratio", type=float, required=True, help="share of non-embedding params to remove")
    search.add_argument("--trials", type=int, default=30)
    search.add_argument("--n-init", type=int, default=8, help="quasi-random trials before the GP")
    search.add_argument("--calib", action="append", help="candidate calibration source (repeatable)")
    search.add_argument("--val-text", action="append", help="validation text the search optimises (repeatable)")
    search.add_argument("--eval-text", action="append", help="held-out text the final report uses (repeatable)")
    search.add_argument("--metrics", help=f"metrics to mix, from: {', '.join(METRICS.names())}")
    search.add_argument(
        "--compensators",
        help=f"compensators to choose from (a search dimension), from: {', '.join(COMPENSATORS.names())}",
    )
    search.add_argument("--samples", help="LOW,HIGH calibration samples per trial")
    search.add_argument("--pool-size", type=int, default=32, help="candidate samples per source")
    search.add_argument("--channel-multiple", type=int, default=DEFAULT_CHANNEL_MULTIPLE, help="kept channels: a multiple")
    search.add_argument("--uniform", action="store_true", help=UNIFORM_HELP + " in every trial")
    search.add_argument(
        "--seq-lens", help="calibration window lengths to choose from, e.g. 128,256 (one pool each: warm-up adds up)"
    )
    search.add_argument(
        "--second-objective",
        choices=("latency", "params"),
        help="also minimise forward latency or non-embedding params; the report gets the Pareto front",
    )
    search.add_argument("--ratio-range", help="LOW,HIGH searched ratio (needs --second-objective; params needs it)")
    search.add_argument(
        "--second-cap", type=float, help="the artifact: best trial with latency (s) or params at most this"
    )
    search.add_argument("--val-tokens", type=int, default=8192, help="validation tokens per domain")
    search.add_argument("--chunk-tokens", type=int, default=1024, help="validation chunk (early-stop step)")
    search.add_argument(
        "--time-budget", type=float, help="start no trial after this many seconds of trials and proposals"
    )
    search.add_argument("--patience", type=int, help="stop after this many trials without improvement")
    search.add_argument("--no-early-reject", action="store_true")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--cache-dir", help="where pool statistics are cached (default ~/.cache/adapruner/stats)")
    add_model_options(search)
    search.add_argument("--out", required=True, help="folder for the model, report.json and the search state")
    search.add_argument("--json", action="store_true", help="print the report as JSON")
    add_recover_options(search)
    add_export_options(search)

    evaluate = sub.add_parser("eval", help="perplexity of a model or pruned artifact on a text")
    evaluate.add_argument("model", help="hub id, folder, .gguf file, alias or pruned artifact")
    text = evaluate.add_mutually_exclusive_group(required=True)
    text.add_argument("--text-file", help="a .txt/.jsonl file (the whole file)")
    text.add_argument("--dataset", help="a data source, e.g. jargon, hf:NAME:CONFIG:SPLIT:FIELD")
    evaluate.add_argument("--seq-len", type=int, default=512)
    evaluate.add_argument("--stride", type=int)
    evaluate.add_argument("--max-tokens", type=int, default=100_000)
    add_model_options(evaluate)
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument(
        "--runtime", choices=("torch", "llamacpp"), default="torch", help="llamacpp: the GGUF file in llama.cpp"
    )
    evaluate.add_argument("--threads", type=int, help="llama.cpp threads (default: its own choice)")
    evaluate.add_argument("--type", choices=EXPORT_TYPES, help="llamacpp: GGUF type a model folder is exported as")
    add_export_parser(sub)
    service_cli.add_commands(sub, parser_class=Parser)
    return parser


def add_export_parser(sub: Any) -> None:
    export = sub.add_parser("export", help="write a pruned artifact for a serving runtime (llama.cpp, HF, vLLM)")
    export.add_argument("model", help="pruned artifact folder (or any model folder, .gguf file or alias)")
    export.add_argument("--format", required=True, help=f"one of: {', '.join(EXPORT_FORMATS.names())}")
    export.add_argument("--out", required=True, help="the .gguf file (gguf) or folder (hf, decilm) to write")
    export.add_argument("--type", choices=EXPORT_TYPES, help="weight type (default: f16 for gguf, else the model's)")
    export.add_argument("--json", action="store_true")


def job_from_args(args: argparse.Namespace) -> PruneJob:
    mix = parse_mix(args.mix) if args.mix else {args.metric or "taylor": 1.0}
    first, _, last = args.protect.partition(",")
    try:
        protect = (int(first), int(last or 0))
    except ValueError:
        raise CliError(f"--protect: {args.protect!r} is not FIRST,LAST (two whole numbers)") from None
    calibration: dict[str, Any] = {"samples": args.samples, "seq_len": args.seq_len, "seed": args.seed}
    if args.calib:
        calibration["sources"] = tuple(parse_source(s) for s in args.calib)
    evaluate: dict[str, Any] = {
        "seq_len": args.eval_seq_len,
        "max_tokens": args.eval_tokens,
        "speed": not args.no_speed,
        **zero_shot_payload(args),
    }
    if args.eval_text:
        evaluate["texts"] = tuple(parse_source(s) for s in args.eval_text)
    # Validated as one nested payload so that errors carry the full field path (prune.ratio, ...).
    return PruneJob.model_validate(
        {
            "model": {"source": args.model, "device": args.device, "dtype": args.dtype},
            "calibration": calibration,
            "importance": {
                "mix": mix,
                "aggregation": args.aggregation,
                "normalization": args.normalization,
                "seed": args.seed,
            },
            "prune": {
                "ratio": args.ratio,
                "targets": tuple(t.strip() for t in args.targets.split(",")),
                "allocation": args.allocation,
                "protect_first": protect[0],
                "protect_last": protect[1],
                "attn_share": args.attn_share,
                "attn_gamma": args.attn_gamma,
                "channel_multiple": args.channel_multiple,
                "uniform": args.uniform,
                "depth_share": args.depth_share,
                "block_criterion": args.block_criterion,
            },
            "compensate": {"method": args.compensate, "damping": args.compensate_damping},
            "evaluate": evaluate,
            "recover": recover_payload(args),
            "export": export_payload(args),
        }
    )


def search_job_from_args(args: argparse.Namespace) -> SearchJob:
    space: dict[str, Any] = {"pool_size": args.pool_size, "channel_multiple": args.channel_multiple}
    if args.uniform:
        space["uniform"] = True
    if args.calib:
        space["sources"] = tuple(parse_source(s) for s in args.calib)
    if args.metrics:
        space["metrics"] = tuple(m.strip() for m in args.metrics.split(","))
    if args.compensators:
        space["compensators"] = tuple(c.strip() for c in args.compensators.split(","))
    if args.samples:
        space["samples"] = parse_range("--samples", args.samples)
    if args.ratio_range:
        space["ratio"] = parse_range("--ratio-range", args.ratio_range)
    if args.seq_lens:
        try:
            space["seq_lens"] = tuple(int(n) for n in args.seq_lens.split(","))
        except ValueError:
            raise CliError(f"--seq-lens: {args.seq_lens!r} is not a list of whole numbers, e.g. 128,256") from None
    search: dict[str, Any] = {
        "trials": args.trials,
        "n_init": args.n_init,
        "seed": args.seed,
        "validation_tokens": args.val_tokens,
        "chunk_tokens": args.chunk_tokens,
        "time_budget_s": args.time_budget,
        "patience": args.patience,
        "early_reject": not args.no_early_reject,
        "second_objective": args.second_objective,
        "second_cap": args.second_cap,
    }
    if args.val_text:
        search["validation"] = tuple(parse_source(s) for s in args.val_text)
    payload: dict[str, Any] = {
        "model": {"source": args.model, "device": args.device, "dtype": args.dtype},
        "ratio": args.ratio,
        "space": space,
        "search": search,
    }
    if args.eval_text:
        payload["evaluate"] = {"texts": tuple(parse_source(s) for s in args.eval_text)}
    if args.zero_shot:
        payload.setdefault("evaluate", {"texts": SearchJob().evaluate.texts}).update(zero_shot_payload(args))
    payload["recover"] = recover_payload(args)
    payload["export"] = export_payload(args)
    return SearchJob.model_validate(payload)


def _progress_bar():
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="sample", file=sys.stderr, leave=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return progress


def _loss_printer(steps: int):
    """Print the recovery's training loss about ten times over the run."""
    from tqdm import tqdm

    every = max(1, steps // 10)

    def on_loss(step: int, loss: float) -> None:
        if step % every == 0 or step == 1:
            tqdm.write(f"recovery step {step}: loss {loss:.4f}", file=sys.stderr)

    return on_loss


def cmd_prune(args: argparse.Namespace) -> int:
    from adapruner.pipeline import format_table, run_prune, summary_rows

    job = job_from_args(args)
    outcome = run_prune(job, out=args.out, progress=_progress_bar(), on_loss=_loss_printer(job.recover.steps))
    report = outcome.report
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    mix = ", ".join(f"{k}={v:g}" for k, v in job.importance.mix.items())
    print(
        f"model {job.model.source}: removed {report['ratio_achieved']:.1%} of non-embedding params "
        f"(target {job.prune.ratio:.0%}) with {mix}"
    )
    print(format_table(summary_rows(report), ("", "dense", "pruned")))
    speed = f", measured {report['measured_speedup']:.2f}x" if "measured_speedup" in report else ""
    print(f"ideal speed-up from FLOPs {report['ideal_speedup']:.2f}x{speed}")
    if "recovery" in report:
        r = report["recovery"]
        print(
            f"recovery {r['method']}: {r['steps']} steps, {r['tokens']:,} tokens in {r['seconds']:.0f}s; "
            f"PPL on {r['heldout']} {r['heldout_ppl_before']:.2f} -> {r['heldout_ppl_after']:.2f}"
        )
    print(f"saved to {Path(args.out).resolve()} (report.json)")
    print_exports(report)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from adapruner.calibration import token_stream
    from adapruner.evaluate import count_parameters, perplexity
    from adapruner.models import load_model

    source = parse_source(f"file:{args.text_file}" if args.text_file else args.dataset)
    if args.runtime == "llamacpp":
        return eval_llamacpp(args, source)
    loaded = load_model(ModelSpec(source=args.model, device=args.device, dtype=args.dtype))
    tokens = token_stream(loaded.tokenizer, source, "evaluation", max_tokens=args.max_tokens)
    result = perplexity(loaded.model, tokens, seq_len=args.seq_len, stride=args.stride)
    out = {
        "model": args.model,
        "text": source.label(),
        "perplexity": result.ppl,
        "params": count_parameters(loaded.model, non_embedding=False),
        "non_embedding_params": count_parameters(loaded.model, non_embedding=True),
        "tokens": result.tokens,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['model']} on {out['text']}: perplexity {out['perplexity']:.3f} over {out['tokens']:,} tokens; "
            f"params {out['params']:,} ({out['non_embedding_params']:,} non-embedding)"
        )
    return 0


def eval_llamacpp(args: argparse.Namespace, source: DataSource) -> int:
    """``eval --runtime llamacpp``: a .gguf file (or alias) as it is; a model folder exported to GGUF first."""
    import tempfile

    from adapruner.evaluate.llamacpp import gguf_perplexity
    from adapruner.models import resolve_source

    with tempfile.TemporaryDirectory() as scratch:
        folder, gguf_file = resolve_source(ModelSpec(source=args.model))
        if gguf_file:
            path = Path(folder) / gguf_file
        else:
            from adapruner.export import export_model

            path = export_model(args.model, "gguf", Path(scratch) / "model.gguf", args.type).path
        result = gguf_perplexity(
            path, source, seq_len=args.seq_len, stride=args.stride, max_tokens=args.max_tokens, n_threads=args.threads
        )
        size = path.stat().st_size
    out = {"model": args.model, "runtime": "llamacpp", "text": source.label(), "perplexity": result.ppl}
    out |= {"tokens": result.tokens, "file_bytes": size}
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['model']} in llama.cpp on {out['text']}: perplexity {out['perplexity']:.3f} over "
            f"{out['tokens']:,} tokens; GGUF {size / 2**20:.1f} MiB"
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from adapruner.pipeline import format_table, summary_rows
    from adapruner.search.run import DEFAULT_CACHE, run_search

    job = search_job_from_args(args)

    def on_trial(record: dict[str, Any]) -> None:
        if record["status"] == "failed":
            line = f"failed: {record['error']}"
        else:
            early = " (stopped early)" if record["stopped_early"] else ""
            line = f"val PPL {record['validation_ppl']:8.2f}{early}"
            if "latency_s" in record:
                line += f"  latency {1000 * record['latency_s']:.1f} ms"
        best = record["best_value"]
        best_text = f"best {math.exp(best):8.2f}" if best is not None else ""
        print(
            f"trial {record['finished']:>3}/{record['total']}  {line}  {best_text}  {record['seconds']:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    cache_dir = Path(args.cache_dir) if args.cache_dir else DEFAULT_CACHE
    outcome = run_search(job, out=args.out, cache_dir=cache_dir, progress=_progress_bar(), on_trial=on_trial)
    report = outcome.report
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    best = report["best"]
    recipe = best["recipe"]
    print(
        f"model {job.model.source}: best of {len(report['trials'])} trials is #{best['index']} "
        f"(validation PPL {best['validation_ppl']:.2f}, confirmed {best['confirmed_validation_ppl']:.2f})"
    )
    print("  metric mix: " + ", ".join(f"{k}={v:.2f}" for k, v in recipe["mix"].items()))
    print(
        "  calibration: "
        + ", ".join(f"{k}={v:.2f}" for k, v in recipe["source_weights"].items())
        + f"; {recipe['samples']} samples (subset {recipe['subset_seed']})"
    )
    print(
        f"  allocation: attn_share={recipe['attn_share']:.2f}, depth_slope={recipe['depth_slope']:.2f}, "
        f"protect={recipe['protect_first']},{recipe['protect_last']}; "
        f"{recipe['aggregation']} aggregation, {recipe['normalization']} normalisation; "
        f"compensation {recipe.get('compensate', 'none')}"
    )
    print(format_table(summary_rows(report), ("", "dense", "pruned")))
    cost = report["trial_cost"]
    print(
        f"mean trial {cost['mean_trial_vs_pass']:.2f}x one validation pass; "
        f"{cost['stopped_early']} trials stopped early"
    )
    if "pareto" in report:
        field = report["pick"]["field"]
        print(f"Pareto front (validation PPL vs {report['pick']['second_objective']}):")
        for point in report["pareto"]:
            second = f"{1000 * point[field]:.1f} ms" if field == "latency_s" else f"{point[field]:,} params"
            print(f"  #{point['index']}: PPL {point['validation_ppl']:.2f}, {second}, ratio {point['ratio']:.3f}")
    print(f"saved to {Path(args.out).resolve()} (report.json, search_state.json)")
    print_exports(report)
    return 0


def print_exports(report: dict[str, Any]) -> None:
    for record in report.get("exports", []):
        print(f"exported {record['path']} ({record['format']}, architecture {record['architecture']}, {record['type']})")
        for note in record["notes"]:
            print(f"note: {note}")


def cmd_export(args: argparse.Namespace) -> int:
    from adapruner.export import export_model

    result = export_model(args.model, EXPORT_FORMATS.check(args.format), args.out, args.type)
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print_exports({"exports": [result.as_dict()]})
    return 0


COMMANDS = {
    "prune": cmd_prune,
    "search": cmd_search,
    "eval": cmd_eval,
    "export": cmd_export,
    **service_cli.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:

    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except CliError as error:
        print(f"adapruner: error: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        print(f"adapruner: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except (UserError, FileNotFoundError) as error:
        print(f"adapruner: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
