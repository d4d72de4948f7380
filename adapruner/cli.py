"""``adapruner`` command line: parsing and printing only; the work is in :mod:`adapruner.pipeline`.

The ``prune`` and ``search`` options are one table each (:class:`Option` rows bound to the job fields they
set): the parser, the job payload and the option named in an error message are all read from it, and the
default and help of an option are the config field's own, so a default exists only in the config.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from adapruner.catalog import (
    BLOCK_CRITERIA,
    BUILTIN_CORPORA,
    COMPENSATORS,
    EXPORT_FORMATS,
    METRICS,
    RECOVERY,
    STRATEGIES,
    ZERO_SHOT_TASKS,
)
from adapruner.config import EXPORT_TYPES, DataSource, ModelSpec, PruneJob, Range, SearchJob
from adapruner.errors import UserError


class CliError(Exception):
    """A bad argument: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    commands: Any = None  # the subcommands (argparse's _SubParsersAction) of the top-level parser

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _option(loc: Sequence[Any], names: Mapping[str, str]) -> str:
    path = ".".join(str(part) for part in loc if not isinstance(part, int))
    for prefix in sorted(names, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + "."):
            return names[prefix]
    return path


def _one_line(error: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """The first error of ``error`` as one line, its field named by the option that sets it (``names``)."""
    first = error.errors()[0]
    loc, message = tuple(first["loc"]), first["msg"].removeprefix("Value error, ")
    # A model-level check names its field first ("attn_gamma: ..."): report it as that field.
    field, sep, rest = message.partition(": ")
    if sep and field.isidentifier():
        loc, message = (*loc, field), rest
    return f"{_option(loc, names or {})}: {message}" if loc else message


# Parsers of option text: argparse calls them and names the option in the one-line error.


def parse_mix(text: str) -> dict[str, float]:
    """``taylor=0.7,wanda=0.3`` -> ``{"taylor": 0.7, "wanda": 0.3}``."""
    mix = {}
    for part in text.split(","):
        name, eq, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight) if eq else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"weight {weight!r} of {name!r} is not a number (use NAME=W,...)"
            ) from None
    return mix


def parse_metric(name: str) -> dict[str, float]:
    """``--metric taylor``: the mix of one metric."""
    return {name: 1.0}


def parse_range(text: str) -> dict[str, float]:
    """``LOW,HIGH`` (or one number, a fixed value) -> a ``Range`` payload."""
    low, _, high = text.partition(",")
    try:
        return {"low": float(low), "high": float(high or low)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (two numbers)") from None


def parse_names(text: str) -> tuple[str, ...]:
    """``a, b,c`` -> ``("a", "b", "c")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_whole_numbers(text: str) -> tuple[int, ...]:
    """``128,256`` -> ``(128, 256)``."""
    try:
        return tuple(int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers, e.g. 128,256") from None


def parse_protect(text: str) -> tuple[int, int]:
    """``FIRST,LAST`` (LAST 0 when left out) -> ``(FIRST, LAST)``."""
    first, _, last = text.partition(",")
    try:
        return int(first), int(last or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIRST,LAST (two whole numbers)") from None


def parse_source(spec: str) -> DataSource:
    try:
        return DataSource.parse(spec)
    except (ValueError, ValidationError) as error:
        detail = _one_line(error) if isinstance(error, ValidationError) else str(error)
        raise CliError(f"data source {spec!r}: {detail}") from None


@dataclass(frozen=True)
class Option:
    """One command-line option and the job fields (dotted paths, e.g. ``calibration.samples``) it sets.

    ``parse`` turns its text into the value (default: the field's own type, int, float or text);
    ``kind``: ``value``, ``append`` (repeatable: a tuple of parsed values), ``on``/``off`` (a flag that
    sets a bool field to True/False). Several ``fields`` get the same value, or with ``spread`` one item
    of the parsed tuple each. The help is the field's ``description`` (or ``text``), then ``note``, then
    the field's default. With no ``fields`` the option is the command's own (``--out``), not the job's.
    """

    flag: str
    fields: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    kind: Literal["value", "append", "on", "off"] = "value"
    note: str = ""
    text: str = ""
    spread: bool = False
    choices: bool = False
    required: bool = False
    group: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def bind(flag: str, *fields: str, **settings: Any) -> Option:
    return Option(flag, fields, **settings)


def own(flag: str, text: str, **settings: Any) -> Option:
    return Option(flag, (), text=text, **settings)


def _one_of(names: Sequence[str]) -> str:
    return f"one of: {', '.join(names)}"


def _alternatives(names: Sequence[str]) -> str:
    """``("a", "b", "c")`` -> ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


SOURCE_SYNTAX = (
    f"{', '.join(BUILTIN_CORPORA.names())}, FILE.txt/.jsonl, file:PATH[:split], hf:NAME[:CONFIG[:SPLIT[:FIELD]]]"
)
MODEL_OPTIONS = (
    bind("--device", "model.device"),
    bind("--dtype", "model.dtype", choices=True),
    bind("--gpus", "model.gpus"),
)
SEQUENTIAL = bind("--sequential", "model.sequential", kind="on")  # prune and eval (a search's trials cannot)
EVAL_OPTIONS = (bind("--seq-len", "evaluate.seq_len"), bind("--stride", "evaluate.stride"))
RECOVER_OPTIONS = (
    bind("--recover", "recover.method", note=_one_of(("none", *RECOVERY.names()))),
    bind("--recover-steps", "recover.steps"),
    bind("--recover-tokens", "recover.max_tokens"),
    bind("--recover-lr", "recover.learning_rate"),
    bind("--recover-batch", "recover.batch_size"),
    bind("--recover-seq-len", "recover.seq_len"),
    bind("--recover-text", "recover.source", parse=parse_source),
    bind("--lora-rank", "recover.rank"),
    bind("--lora-alpha", "recover.alpha"),
    bind(
        "--zero-shot",
        "evaluate.zero_shot",
        parse=parse_names,
        note=f"comma-separated, from: {', '.join(ZERO_SHOT_TASKS)}, cloze:CORPUS",
    ),
    bind("--zero-shot-limit", "evaluate.zero_shot_limit"),
)
EXPORT_OPTIONS = (
    bind(
        "--export",
        "export.formats",
        parse=parse_names,
        note=f"comma-separated, from: {', '.join(EXPORT_FORMATS.names())}",
    ),
    bind("--export-type", "export.type", choices=True),
)
RECOVER_GROUP = "recovery after pruning and zero-shot evaluation"
EXPORT_GROUP = "files for a serving runtime, written into --out (see adapruner export)"
JSON = own("--json", "print the report as JSON", kind="on")

PRUNE_OPTIONS = (
    bind("--model", "model.source"),
    bind("--ratio", "prune.ratio", required=True),
    bind("--mix", "importance.mix", parse=parse_mix, group="mix", text="weighted metrics, e.g. taylor=0.7,wanda=0.3"),
    bind("--metric", "importance.mix", parse=parse_metric, group="mix", text=_one_of(METRICS.names())),
    bind("--aggregation", "importance.aggregation"),
    bind("--normalization", "importance.normalization"),
    bind("--calib", "calibration.sources", kind="append", parse=parse_source, note=f"repeatable: {SOURCE_SYNTAX}"),
    bind("--samples", "calibration.samples"),
    bind("--seq-len", "calibration.seq_len"),
    bind(
        "--seed",
        "calibration.seed",
        "importance.seed",
        "recover.seed",
        text="seed of the sampling, metric and training",
    ),
    bind("--targets", "prune.targets", parse=parse_names, note="comma-separated: heads, channels or both"),
    bind("--allocation", "prune.allocation", note="nirvana: raw scores pick the layers"),
    bind("--compensate", "compensate.method", note=_one_of(COMPENSATORS.names())),
    bind("--compensate-damping", "compensate.damping"),
    bind(
        "--protect",
        "prune.protect_first",
        "prune.protect_last",
        parse=parse_protect,
        spread=True,
        text="FIRST,LAST blocks kept whole with --allocation protected",
    ),
    bind("--attn-share", "prune.attn_share"),
    bind("--attn-gamma", "prune.attn_gamma"),
    bind("--channel-multiple", "prune.channel_multiple"),
    bind("--uniform", "prune.uniform", kind="on"),
    bind("--depth-share", "prune.depth_share"),
    bind("--block-criterion", "prune.block_criterion", note=_one_of(BLOCK_CRITERIA.names())),
    bind("--eval-text", "evaluate.texts", kind="append", parse=parse_source, note="repeatable"),
    bind("--eval-seq-len", "evaluate.seq_len"),
    bind("--eval-tokens", "evaluate.max_tokens"),
    bind("--no-speed", "evaluate.speed", kind="off", text="skip the throughput measurement"),
    *MODEL_OPTIONS,
    SEQUENTIAL,
    own("--out", "folder for the pruned model and report.json", required=True),
    JSON,
)

SEARCH_OPTIONS = (
    bind("--model", "model.source"),
    bind("--ratio", "ratio", required=True),
    bind("--trials", "search.trials"),
    bind("--n-init", "search.n_init"),
    bind("--strategy", "search.strategy", note=_one_of(STRATEGIES.names())),
    bind("--warm-start", "search.warm_start", kind="append", parse=str, note="repeatable: an earlier --out folder"),
    bind("--calib", "space.sources", kind="append", parse=parse_source, note=f"repeatable: {SOURCE_SYNTAX}"),
    bind("--val-text", "search.validation", kind="append", parse=parse_source, note="repeatable"),
    bind("--eval-text", "evaluate.texts", kind="append", parse=parse_source, note="repeatable"),
    bind("--metrics", "space.metrics", parse=parse_names, note=f"comma-separated, from: {', '.join(METRICS.names())}"),
    bind(
        "--compensators",
        "space.compensators",
        parse=parse_names,
        note=f"comma-separated, from: {', '.join(COMPENSATORS.names())}",
    ),
    bind("--samples", "space.samples", parse=parse_range, note="LOW,HIGH"),
    bind("--pool-size", "space.pool_size"),
    bind("--channel-multiple", "space.channel_multiple"),
    bind("--uniform", "space.uniform", kind="on"),
    bind(
        "--seq-lens",
        "space.seq_lens",
        parse=parse_whole_numbers,
        note="e.g. 128,256 (a pool of statistics each: the warm-up adds up)",
    ),
    bind("--second-objective", "search.second_objective", choices=True),
    bind(
        "--ratio-range", "space.ratio", parse=parse_range, note="LOW,HIGH (needs --second-objective; params needs it)"
    ),
    bind("--second-cap", "search.second_cap", note="latency in seconds or a parameter count"),
    bind("--val-tokens", "search.validation_tokens"),
    bind("--chunk-tokens", "search.chunk_tokens"),
    bind("--time-budget", "search.time_budget_s"),
    bind("--patience", "search.patience"),
    bind("--parallel", "search.parallel"),
    bind("--no-early-reject", "search.early_reject", kind="off", text="never stop a trial early"),
    bind("--seed", "search.seed", "recover.seed", text="seed of the trials, optimiser and training"),
    own("--cache-dir", "where pool statistics are cached (default ~/.cache/adapruner/stats)"),
    *MODEL_OPTIONS,
    own("--out", "folder for the model, report.json and the search state", required=True),
    JSON,
)


@dataclass(frozen=True)
class Command:
    """A command whose options make a job: its table, in groups (``None``: the command's own group)."""

    name: str
    help: str
    job: type[BaseModel]
    groups: tuple[tuple[str | None, tuple[Option, ...]], ...]

    @property
    def options(self) -> tuple[Option, ...]:
        return tuple(option for _, options in self.groups for option in options)

    @functools.cached_property
    def names(self) -> dict[str, str]:
        """Job field path -> the option(s) that set it, for error messages."""
        names: dict[str, list[str]] = {}
        for option in self.options:
            for path in option.fields:
                names.setdefault(path, []).append(option.flag)
        return {path: "/".join(flags) for path, flags in names.items()}


JOB_COMMANDS = {
    command.name: command
    for command in (
        Command(
            "prune",
            "prune a model with one metric or a fixed metric mix",
            PruneJob,
            ((None, PRUNE_OPTIONS), (RECOVER_GROUP, RECOVER_OPTIONS), (EXPORT_GROUP, EXPORT_OPTIONS)),
        ),
        Command(
            "search",
            "Bayesian search over calibration data x metric mix x allocation",
            SearchJob,
            ((None, SEARCH_OPTIONS), (RECOVER_GROUP, RECOVER_OPTIONS), (EXPORT_GROUP, EXPORT_OPTIONS)),
        ),
    )
}


def _field(job: type[BaseModel], path: str) -> FieldInfo:
    """The pydantic field at the dotted ``path`` of ``job`` (``calibration.samples``)."""
    *sections, name = path.split(".")
    model = job
    for section in sections:
        model = model.model_fields[section].annotation
    return model.model_fields[name]


@functools.cache
def _default_job(job: type[BaseModel]) -> BaseModel:
    return job()


def _default(job: type[BaseModel], path: str) -> Any:
    """The value a job left to its defaults has at ``path`` (a section's default may differ from its class's)."""
    value: Any = _default_job(job)
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _plain(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        return kept[0] if len(kept) == 1 else annotation
    return annotation


def _literal(annotation: Any) -> tuple[str, ...]:
    plain = _plain(annotation)
    return get_args(plain) if get_origin(plain) is Literal else ()


def _show(value: Any) -> str:
    """A default as it would be typed on the command line ("" for none)."""
    if value is None or value is False or value == () or value == {}:
        return ""
    if isinstance(value, tuple):
        return ",".join(_show(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{name}={weight:g}" for name, weight in value.items())
    if isinstance(value, DataSource):
        return value.label()
    if isinstance(value, Range):
        return f"{value.low:g},{value.high:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(option: Option, job: type[BaseModel] | None) -> str:
    if not option.fields or job is None:
        return option.text.replace("%", "%%")
    field = _field(job, option.fields[0])
    names = _literal(field.annotation)
    alternatives = _alternatives(names) if names and not option.choices else ""
    text = ": ".join(part for part in (option.text or field.description or "", alternatives) if part)
    text = "; ".join(part for part in (text, option.note) if part)
    defaults = tuple(_default(job, path) for path in option.fields)
    shown = _show(defaults if option.spread else defaults[0])
    if shown and option.kind in ("value", "append") and not option.required:
        text += f" (default: {shown})"
    return text.replace("%", "%%")


def _named(flag: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` whose refusal is a :class:`CliError` naming ``flag`` (argparse would prefix "argument ")."""

    @functools.wraps(parse)
    def parse_option(text: str) -> Any:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as error:
            raise CliError(f"{flag}: {error}") from None

    return parse_option


def _parser_default(option: Option, job: type[BaseModel]) -> Any:
    """What argparse holds when the option is absent: the field's default for an option of the field's own
    type (so ``args`` shows it), else None. Either way the job then keeps the field's default."""
    if option.kind != "value" or option.parse or option.required or not option.fields:
        return None
    return _default(job, option.fields[0])


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option], job: type[BaseModel]) -> None:
    """Add ``options`` (bound to fields of ``job``) to ``parser``."""
    groups: dict[str, Any] = {}
    for option in options:
        target: Any = parser
        if option.group:
            if option.group not in groups:
                groups[option.group] = parser.add_mutually_exclusive_group()
            target = groups[option.group]
        settings: dict[str, Any] = {"help": _help(option, job)}
        if option.kind in ("on", "off"):
            target.add_argument(option.flag, action="store_true", **settings)
            continue
        if option.required:
            settings["required"] = True
        if option.kind == "append":
            settings["action"] = "append"
        annotation = _plain(_field(job, option.fields[0]).annotation) if option.fields else str
        names = _literal(annotation)
        settings["type"] = _named(option.flag, option.parse) if option.parse else (str if names else annotation)
        if option.choices:
            settings["choices"] = names
        target.add_argument(option.flag, default=_parser_default(option, job), **settings)


def _put(payload: dict[str, Any], path: str, value: Any) -> None:
    *sections, name = path.split(".")
    for section in sections:
        payload = payload.setdefault(section, {})
    payload[name] = value


def job_payload(args: argparse.Namespace, command: Command) -> dict[str, Any]:
    """The job's fields that the command line sets; the others keep their defaults. A section given in
    part starts from the job's default for it (search's ``evaluate`` reports on test splits)."""
    payload: dict[str, Any] = {}
    for option in command.options:
        value = getattr(args, option.dest)
        if not option.fields or value is None or value is False or value == _parser_default(option, command.job):
            continue
        if option.kind in ("on", "off"):
            value = option.kind == "on"
        elif option.kind == "append":
            value = tuple(value)
        values = value if option.spread else (value,) * len(option.fields)
        for path, item in zip(option.fields, values, strict=True):
            _put(payload, path, item)
    default = _default_job(command.job)
    for name, section in payload.items():
        base = getattr(default, name)
        if isinstance(section, dict) and isinstance(base, BaseModel):
            payload[name] = {field: getattr(base, field) for field in base.model_fields_set} | section
    return payload


def _job(args: argparse.Namespace, command: Command) -> Any:
    try:
        return command.job.model_validate(job_payload(args, command))
    except ValidationError as error:
        raise CliError(_one_line(error, command.names)) from None


def job_from_args(args: argparse.Namespace) -> PruneJob:
    return _job(args, JOB_COMMANDS["prune"])


def search_job_from_args(args: argparse.Namespace) -> SearchJob:
    return _job(args, JOB_COMMANDS["search"])


def subcommands(parser: Parser) -> Any:
    """The subcommands of a parser made by :func:`build_parser`, to add more to (the service's commands)."""
    return parser.commands


def build_parser() -> Parser:
    """The library's commands: ``prune`` and ``search`` from their tables, ``eval`` and ``export``."""
    parser = Parser(prog="adapruner", description="Structured pruning of causal LMs.")
    sub = parser.commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in JOB_COMMANDS.values():
        command_parser = sub.add_parser(command.name, help=command.help)
        for title, options in command.groups:
            target = command_parser.add_argument_group(title) if title else command_parser
            add_options(target, options, command.job)
    add_eval_parser(sub)
    add_export_parser(sub)
    return parser


def add_eval_parser(sub: Any) -> None:
    evaluate = sub.add_parser("eval", help="perplexity of a model or pruned artifact on a text")
    evaluate.add_argument("model", help="hub id, folder, .gguf file, alias or pruned artifact")
    text = evaluate.add_mutually_exclusive_group(required=True)
    text.add_argument("--text-file", help="a .txt/.jsonl file (the whole file)")
    text.add_argument("--dataset", help="a data source, e.g. jargon, hf:NAME:CONFIG:SPLIT:FIELD")
    add_options(evaluate, (*EVAL_OPTIONS, *MODEL_OPTIONS, SEQUENTIAL), PruneJob)
    evaluate.add_argument("--max-tokens", type=int, default=100_000)
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument(
        "--runtime", choices=("torch", "llamacpp"), default="torch", help="llamacpp: the GGUF file in llama.cpp"
    )
    evaluate.add_argument("--threads", type=int, help="llama.cpp threads (default: its own choice)")
    evaluate.add_argument("--type", choices=EXPORT_TYPES, help="llamacpp: GGUF type a model folder is exported as")


def add_export_parser(sub: Any) -> None:
    export = sub.add_parser("export", help="write a pruned artifact for a serving runtime (llama.cpp, HF, vLLM)")
    export.add_argument("model", help="pruned artifact folder (or any model folder, .gguf file or alias)")
    export.add_argument("--format", required=True, help=f"one of: {', '.join(EXPORT_FORMATS.names())}")
    export.add_argument("--out", required=True, help="the .gguf file (gguf) or folder (hf, decilm) to write")
    export.add_argument("--type", choices=EXPORT_TYPES, help="weight type (default: f16 for gguf, else the model's)")
    export.add_argument("--json", action="store_true")


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


def format_table(rows: Sequence[tuple[str, ...]], header: Sequence[str]) -> str:
    """``rows`` under ``header`` as aligned text columns (the first left-aligned, the rest right-aligned)."""
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


def cmd_prune(args: argparse.Namespace) -> int:
    from adapruner.pipeline import run_prune
    from adapruner.report import summary_rows

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
    from adapruner.sequential import sequential_for

    spec = ModelSpec(
        source=args.model, device=args.device, dtype=args.dtype, gpus=args.gpus, sequential=args.sequential
    )
    loaded = load_model(spec)
    tokens = token_stream(loaded.tokenizer, source, "evaluation", max_tokens=args.max_tokens)
    sequential = sequential_for(spec)
    result = perplexity(loaded.model, tokens, seq_len=args.seq_len, stride=args.stride, sequential=sequential)
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


def _trial_printer():
    """One line on stderr per finished trial: its validation PPL (or failure) and the best so far."""
    from adapruner.search.records import TrialDone

    def on_trial(done: TrialDone) -> None:
        record = done.record
        if record.status == "failed":
            line = f"failed: {record.error}"
        else:
            early = " (stopped early)" if record.stopped_early else ""
            line = f"val PPL {record.validation_ppl:8.2f}{early}"
            if record.latency_s is not None:
                line += f"  latency {1000 * record.latency_s:.1f} ms"
        best_text = f"best {math.exp(done.best_value):8.2f}" if done.best_value is not None else ""
        print(
            f"trial {done.finished:>3}/{done.total}  {line}  {best_text}  {record.seconds:.1f}s",
            file=sys.stderr,
            flush=True,
        )

    return on_trial


def cmd_search(args: argparse.Namespace) -> int:
    from adapruner.search.run import DEFAULT_CACHE, run_search

    job = search_job_from_args(args)
    cache_dir = Path(args.cache_dir) if args.cache_dir else DEFAULT_CACHE
    outcome = run_search(job, out=args.out, cache_dir=cache_dir, progress=_progress_bar(), on_trial=_trial_printer())
    if args.json:
        print(json.dumps(outcome.report, indent=2))
        return 0
    print_search_report(job, outcome.report)
    print(f"saved to {Path(args.out).resolve()} (report.json, search_state.json)")
    print_exports(outcome.report)
    return 0


def print_search_report(job: SearchJob, report: dict[str, Any]) -> None:
    """The best trial's recipe, the dense/pruned table, the trials' cost and the Pareto front."""
    from adapruner.report import summary_rows

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
    if "fixed" in report:
        print(fixed_comparison(report))
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


def fixed_comparison(report: dict[str, Any]) -> str:
    """The search's test PPL (its pick before any recovery) beside the fixed recipe's (prune's defaults on the
    same calibration sources), per test text."""
    fixed = report["fixed"]
    searched = fixed["search_test_ppl"]
    importance, prune = fixed["job"]["importance"], fixed["job"]["prune"]
    recipe = "+".join(importance["mix"]) + f" over {','.join(prune['targets'])}, {fixed['job']['compensate']['method']}"
    if fixed["error"]:
        return f"the fixed recipe (prune's defaults: {recipe}) could not prune this model: {fixed['error']}"
    texts = "; ".join(
        f"{label} {searched[label]:.2f} vs {ppl:.2f} ({searched[label] / ppl:.2f}x)" for label, ppl in fixed["test_ppl"].items()
    )
    return f"against the fixed recipe (prune's defaults: {recipe}; removed {fixed['ratio_achieved']:.1%}): test PPL {texts}"


def print_exports(report: dict[str, Any]) -> None:
    for record in report.get("exports", []):
        print(
            f"exported {record['path']} ({record['format']}, architecture {record['architecture']}, {record['type']})"
        )
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
}


def main(
    argv: Sequence[str] | None = None,
    *,
    parser: argparse.ArgumentParser | None = None,
    commands: Mapping[str, Callable[[argparse.Namespace], int]] | None = None,
) -> int:
    """Run one command; ``parser`` and ``commands`` (default: the library's) let the service add its own."""
    args = None
    try:
        args = (parser or build_parser()).parse_args(argv)
        return (commands or COMMANDS)[args.command](args)
    except CliError as error:
        print(f"adapruner: error: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        command = JOB_COMMANDS.get(getattr(args, "command", ""))
        print(f"adapruner: error: {_one_line(error, command.names if command else None)}", file=sys.stderr)
        return 2
    except UserError as error:
        print(f"adapruner: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
