"""Scale benchmark: peak memory and time of the search's steps and of a Taylor prune, on random-init
models of real shapes (Llama-3.2-1B, Llama-3-8B, Llama-3-70B; ``tiny`` for a quick check).

Cost does not need real weights: each model is built directly in bfloat16 on its device (no float32
copy, no checkpoint) with uniform random weights, and fed SmolLM2's tokenizer (token ids below its
49,152-word vocabulary; the embedding keeps the shape's own). Texts: the built-in corpora, as the search
uses them (train partitions for calibration, validation partitions for the objective, test partitions
for the final report). Every measured job runs in a fresh subprocess:

- ``search``: warm-up (pool statistics), ``--trials`` trials without compensation (each reads all the
  validation text: no early stop) and the final step (pick, confirm, evaluate, save);
- ``prune``: ``prune --metric taylor`` (``wanda`` in sequential mode, which refuses gradient metrics);
- ``compensation``: a ``wanda`` prune with ``--compensator`` (default ``reformation``: the input covariance of
  every pruned projection, one solve each), timed on its compensation phase.

Memory is the peak RSS (CPU; read per step by resetting the process's high-water mark) or
``torch.cuda.max_memory_allocated`` (CUDA), less what the process held before the model was built, as a
multiple of the weights' bytes; time as a multiple of one validation pass of the dense model measured in
the same job. Writes its section of BENCHMARKS.md with ``--write``.

    .venv/bin/python bench/scale.py --shape 1b --device cpu --write      # about 15 min on 2 idle cores
    .venv/bin/python bench/scale.py --shape 8b --device cuda --write
    .venv/bin/python bench/scale.py --shape 8b --device cuda --sequential --memory-fraction 0.025 --write

(0.025 of a 141 GB H200 is 3.5 GB, under a quarter of the 8B shape's 16 GB of weights.) ``--shape tiny`` is
a quick check of the script itself (tests/bench/test_scale.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import ROOT, provenance, write_section  # noqa: E402

GIB = 2**30
_LLAMA3 = dict(vocab_size=128_256, num_key_value_heads=8, head_dim=128, rope_theta=500_000.0, rms_norm_eps=1e-5)
SHAPES: dict[str, dict[str, Any]] = {
    # The published configs' shapes (rope scaling and context length do not change the cost measured here).
    "tiny": dict(
        vocab_size=49_152,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=8,
        tie_word_embeddings=True,
    ),
    "1b": _LLAMA3
    | dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        head_dim=64,
        tie_word_embeddings=True,
    ),
    "8b": _LLAMA3
    | dict(hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32, num_attention_heads=32),
    "70b": _LLAMA3
    | dict(hidden_size=8192, intermediate_size=28_672, num_hidden_layers=80, num_attention_heads=64),
}
JOBS = ("search", "prune", "compensation")
# Targets of issue 17: peaks (1B shape on the CPU; 8B on one GPU) and the GPU memory cap of sequential mode
# as multiples of the weights' bytes, a trial's time as a multiple of one validation pass.
PRUNE_PEAK, SEARCH_PEAK, GPU_PEAK, SEQUENTIAL_CAP, TRIAL_COST = 1.6, 1.8, 1.5, 0.25, 1.1


@dataclass
class Meter:
    """Memory in use on the measured device, and its peak since the last :meth:`reset`."""

    device: str

    def current(self) -> int:
        if self.device == "cuda":
            return torch.cuda.memory_allocated()
        return _proc_status("VmRSS")

    def peak(self) -> int:
        if self.device == "cuda":
            return torch.cuda.max_memory_allocated()
        return _proc_status("VmHWM")

    def reset(self) -> None:
        """Start a new peak from what is in use now (Linux: ``clear_refs`` 5 resets the RSS high-water mark)."""
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return
        Path("/proc/self/clear_refs").write_text("5")


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def build_model(shape: str, device: str) -> Any:
    """A random-init LLaMA of ``shape``, built in bfloat16 directly on ``device`` (no float32 detour:
    transformers' initialisation is skipped and every tensor is filled once, in place)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights

    from adapruner.models.loading import check_fits, config_weight_bytes

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192)
    # One line naming what the weights need and what the device has, rather than an out-of-memory kill.
    need = config_weight_bytes(config, torch.bfloat16)
    check_fits(f"random-init:{shape}", need, torch.device(device), torch.bfloat16)
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.tie_weights()
    generator = torch.Generator(device).manual_seed(0)
    bound = 0.02 * math.sqrt(3)  # uniform with the standard deviation of LLaMA's normal(0, 0.02)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.uniform_(-bound, bound, generator=generator)
            else:  # RMSNorm scales
                param.fill_(1.0)
    return model.eval()


def load_tokenizer(folder: Path | None = None) -> Any:
    """SmolLM2-135M's tokenizer from the installed GGUF (the model itself is not loaded), or from the
    ``folder`` it was saved in (the jobs read the parent's copy: parsing the GGUF takes seconds)."""
    from transformers import AutoTokenizer

    from adapruner.config import ModelSpec
    from adapruner.models.loading import resolve_source

    if folder is not None:
        return AutoTokenizer.from_pretrained(folder)
    where, gguf_file = resolve_source(ModelSpec(source="smollm2-135m"))
    return AutoTokenizer.from_pretrained(where, gguf_file=gguf_file)


def model_spec(args: argparse.Namespace) -> Any:
    from adapruner.config import ModelSpec

    spec: dict[str, Any] = {"source": f"random-init:{args.shape}", "dtype": "bfloat16", "device": args.device}
    if args.sequential:
        if "sequential" not in ModelSpec.model_fields:
            raise SystemExit("--sequential: not available (this adapruner's ModelSpec has no sequential field)")
        spec["sequential"] = True
    return ModelSpec(**spec)


def small_eval(default: Any, args: argparse.Namespace) -> Any:
    """A job's default held-out texts, read in ``--eval-tokens`` tokens each, without speed measurements."""
    return default.model_copy(
        update={"max_tokens": args.eval_tokens, "seq_len": args.seq_len, "batch_size": 1, "speed": False}
    )


def search_config(args: argparse.Namespace) -> Any:
    """Few validation tokens in windows of ``--seq-len``; every trial reads all of them (no early stop)."""
    from adapruner.config import SearchConfig

    tokens = args.validation_tokens or SearchConfig.model_fields["validation_tokens"].default
    return SearchConfig(
        trials=args.trials,
        validation_tokens=tokens,
        chunk_tokens=max(args.seq_len, min(tokens, SearchConfig.model_fields["chunk_tokens"].default)),
        eval_seq_len=args.seq_len,
        early_reject=False,
        top_k=1,
    )


def validation_text(args: argparse.Namespace) -> str:
    """How much validation text a pass reads, for the section."""
    search = search_config(args)
    default = " (the search's default)" if args.validation_tokens is None else ""
    return f"{search.validation_tokens} tokens{default} x {len(search.validation)} domains"


def search_job(args: argparse.Namespace) -> Any:
    """A short search: small pools and windows, otherwise the default space (compensators included) and
    search (the fixed recipe its first trial and, in the final step, pruned for the report), and test texts."""
    from adapruner.config import SearchJob

    samples = {"low": args.samples, "high": args.samples}
    return SearchJob(
        model=model_spec(args),
        space={"pool_size": args.pool_size, "seq_lens": (args.seq_len,), "samples": samples},
        search=search_config(args),
        evaluate=small_eval(SearchJob().evaluate, args),  # the test partitions
    )


def prune_job(args: argparse.Namespace, metric: str, compensator: str = "none") -> Any:
    """``prune --metric METRIC`` with the search's calibration size and the CLI's other defaults."""
    from adapruner.config import PruneJob

    return PruneJob(
        model=model_spec(args),
        calibration={"samples": args.samples, "seq_len": args.seq_len},
        importance={"mix": {metric: 1.0}},
        prune={"targets": ("heads", "channels")},
        compensate={"method": compensator},
        evaluate=small_eval(PruneJob().evaluate, args),
    )


def validation_pass(args: argparse.Namespace, loaded: Any) -> float:
    """Seconds of one pass of the dense model over the search's validation chunks (the cost unit; layer
    by layer in sequential mode, as the prune's own evaluation runs)."""
    from adapruner.evaluate import perplexity
    from adapruner.search.objective import validation_chunks

    search = search_config(args)
    validation = validation_chunks(
        loaded.tokenizer,
        search.validation,
        tokens_per_domain=search.validation_tokens,
        chunk_tokens=search.chunk_tokens,
        seq_len=search.eval_seq_len,
    )
    mode: dict[str, Any] = {}
    if args.sequential:
        from adapruner.sequential import sequential_for

        mode["sequential"] = sequential_for(model_spec(args))
    start = time.perf_counter()
    for chunk in validation.chunks:  # as the search's observe() reads them
        perplexity(loaded.model, chunk, seq_len=validation.seq_len, **mode)
    return time.perf_counter() - start


@contextmanager
def step(meter: Meter, steps: dict[str, dict[str, float]], name: str) -> Iterator[None]:
    """Time a step and read its own peak memory."""
    meter.reset()
    start = time.perf_counter()
    yield
    steps[name] = {"seconds": time.perf_counter() - start, "peak": meter.peak()}


def measure_search(args: argparse.Namespace, loaded: Any, meter: Meter) -> dict[str, Any]:
    """The search's steps one by one (as ``run_search`` runs them): warm-up, each trial, the final step.
    The model is handed over as the search's own, as when the search loads it (the final model is then
    pruned in place rather than copied). The first trial is the fixed recipe (with its compensator); the
    others are that recipe without compensation, each on another calibration subset where the space has
    several (the trial-cost target is for trials without compensation). The dense validation pass is
    timed again after the trials: the cost unit is the mean of both passes (one pass varies by 10-20%
    between runs on a shared machine)."""
    from adapruner.search.records import SearchState
    from adapruner.search.run import SearchRun
    from adapruner.search.space import fixed_params
    from adapruner.search.store import FileStore

    job, steps = search_job(args), {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        run = SearchRun(job, FileStore(out, job), SearchState(job), loaded, own=True)
        params = fixed_params(job)
        for seed in range(1, args.trials):
            run.optimizer.enqueue(params | {"compensate": "none", "subset_seed": seed % job.space.subset_seeds})
        with step(meter, steps, "warmup"):
            run.warm_up(cache_dir=Path(tmp) / "cache", progress=None)
        for i in range(args.trials):
            with step(meter, steps, f"trial {i}"):
                run.run_trials(max_new_trials=1)
        second_pass = validation_pass(args, loaded)
        with step(meter, steps, "final"):
            run.finish(out)
    plain = [steps[f"trial {r.index}"] for r in run.state.trials() if r.recipe.get("compensate") == "none"]
    compensated = [steps[f"trial {r.index}"] for r in run.state.trials() if r.recipe.get("compensate") != "none"]
    return {
        "validation_pass_s": statistics.fmean([run.state.timings["validation_pass_s"], second_pass]),
        "warmup_s": run.state.timings["warmup_s"],  # the pools alone (the step also holds the dense pass)
        "warmup_peak": steps["warmup"]["peak"],
        "trial_s": statistics.fmean(t["seconds"] for t in plain) if plain else None,
        "trial_peak": max(t["peak"] for t in plain) if plain else None,
        "compensated_trial_s": statistics.fmean(t["seconds"] for t in compensated) if compensated else None,
        "compensated_trial_peak": max(t["peak"] for t in compensated) if compensated else None,
        "trials_without_compensation": len(plain),
        "compensator": params["compensate"],
        "final_s": steps["final"]["seconds"],
        "final_peak": steps["final"]["peak"],
        "search_s": sum(v["seconds"] for v in steps.values()),
        "search_peak": max(v["peak"] for v in steps.values()),
        "failed_trials": sum(1 for r in run.state.records.values() if r.status != "completed"),
    }


def measure_prune(args: argparse.Namespace, loaded: Any, meter: Meter, *, metric: str, compensator: str) -> dict:
    """One ``prune`` job (the model pruned in place); its time without the evaluations, and its
    compensation phase."""
    from adapruner.pipeline import run_prune

    pass_s = validation_pass(args, loaded)
    meter.reset()
    start = time.perf_counter()
    outcome = run_prune(prune_job(args, metric, compensator), loaded=loaded)
    wall = time.perf_counter() - start
    timings = outcome.report["timings"]
    evaluation = sum(timings.get(k, 0.0) for k in ("eval_text_s", "eval_dense_s", "eval_pruned_s"))
    return {
        "validation_pass_s": pass_s,
        "prune_s": wall - evaluation,
        "compensation_s": timings.get("compensation_s"),
        "peak": meter.peak(),
        "timings": timings,
    }


def prune_metric(args: argparse.Namespace) -> str:
    return "wanda" if args.sequential else "taylor"


def measure(args: argparse.Namespace, loaded: Any, meter: Meter) -> dict[str, Any]:
    if args.job == "search":
        return measure_search(args, loaded, meter)
    if args.job == "prune":
        return measure_prune(args, loaded, meter, metric=prune_metric(args), compensator="none")
    return measure_prune(args, loaded, meter, metric="wanda", compensator=args.compensator)


def child(args: argparse.Namespace) -> None:
    """One measured job in this (fresh) process; its facts go to ``args.result`` as JSON."""
    from adapruner.evaluate import weights_bytes
    from adapruner.models import LoadedModel

    result: dict[str, Any] = {"job": args.job}
    try:
        meter = Meter(args.device)
        if args.device == "cuda" and args.memory_fraction:
            torch.cuda.set_per_process_memory_fraction(args.memory_fraction)
            result["cap_bytes"] = int(args.memory_fraction * torch.cuda.get_device_properties(0).total_memory)
        tokenizer = load_tokenizer(args.tokenizer)
        result["baseline"] = meter.current()
        start = time.perf_counter()
        model = build_model(args.shape, "cpu" if args.sequential else args.device)
        result["build_s"] = time.perf_counter() - start
        result["weights_bytes"] = weights_bytes(model)
        result["params"] = sum(p.numel() for p in model.parameters())
        result |= measure(args, LoadedModel(model, tokenizer, f"random-init:{args.shape}"), meter)
    except Exception as error:  # reported in the table; the other jobs still run
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        Path(args.result).write_text(json.dumps(result))
        raise
    Path(args.result).write_text(json.dumps(result))


def jobs(args: argparse.Namespace) -> tuple[str, ...]:
    """The measured jobs: a search refuses sequential mode (its trials run whole-model passes)."""
    return tuple(j for j in JOBS if not (args.sequential and j == "search"))


def run_jobs(args: argparse.Namespace, argv: list[str]) -> dict[str, dict[str, Any]]:
    """Every job in a fresh subprocess of this script (its stderr passes through)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        load_tokenizer().save_pretrained(Path(tmp) / "tokenizer")
        argv = [*argv, "--tokenizer", str(Path(tmp) / "tokenizer")]
        for job in jobs(args):
            path = Path(tmp) / f"{job}.json"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, *argv, "--job", job, "--result", str(path)])
            result = json.loads(path.read_text()) if path.exists() else {"job": job}
            if proc.returncode and "error" not in result:
                result["error"] = f"exit status {proc.returncode}"
            results[job] = result
            print(f"{job}: {time.perf_counter() - start:.1f} s", result.get("error", ""), file=sys.stderr)
    return results


@dataclass
class Row:
    step: str
    seconds: float | None
    passes: float | None  # seconds / one validation pass of the same job
    peak: int | None  # bytes above the job's baseline
    weights: float | None  # peak / the weights' bytes
    error: str = ""


def row(step: str, result: dict[str, Any] | None, time_key: str, peak_key: str) -> Row:
    if result is None:
        return Row(step, None, None, None, None, "not run (a search refuses sequential mode)")
    if "error" in result:
        return Row(step, None, None, None, None, "failed: " + result["error"])
    if result.get(peak_key) is None:
        return Row(step, None, None, None, None, "no such trial ran")
    seconds, above = result[time_key], result[peak_key] - result["baseline"]
    passes = None if seconds is None else seconds / result["validation_pass_s"]
    return Row(step, seconds, passes, above, above / result["weights_bytes"])


def table_rows(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> list[Row]:
    search, prune, comp = results.get("search"), results["prune"], results["compensation"]
    samples = args.pool_size * 3
    facts = search or {}
    failed = f", {facts['failed_trials']} failed" if facts.get("failed_trials") else ""
    plain = f"mean of {facts.get('trials_without_compensation', 0)}{failed}, no compensation"
    return [
        row(f"warm-up (pool statistics, {samples} x {args.seq_len} tokens)", search, "warmup_s", "warmup_peak"),
        row(f"one trial ({plain})", search, "trial_s", "trial_peak"),
        row(
            f"one trial (the fixed recipe, {facts.get('compensator', '-')} compensation)",
            search,
            "compensated_trial_s",
            "compensated_trial_peak",
        ),
        row("final step (pick, confirm, fixed-recipe report, evaluate, save)", search, "final_s", "final_peak"),
        row(f"search ({args.trials} trials, whole)", search, "search_s", "search_peak"),
        row(f"compensation ({args.compensator}, after a wanda prune)", comp, "compensation_s", "peak"),
        row(f"prune --metric {prune_metric(args)}", prune, "prune_s", "peak"),
    ]


def _num(value: float | None, fmt: str) -> str:
    """``value`` in ``fmt``, or two significant digits below 0.1 (a tiny model's compensation takes ms)."""
    if value is None:
        return "-"
    return format(value, ".2g") if 0 < abs(value) < 0.1 else format(value, fmt)


def format_rows(rows: list[Row]) -> list[str]:
    lines = ["| step | s | x validation pass | peak GiB | x weights |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.step} | {r.error} | | | |")
            continue
        peak = None if r.peak is None else r.peak / GIB
        cells = [_num(r.seconds, ".1f"), _num(r.passes, ".2f"), _num(peak, ".2f"), _num(r.weights, ".2f")]
        lines.append(f"| {r.step} | " + " | ".join(cells) + " |")
    return lines


def verdict(name: str, value: float | None, limit: float, unit: str, fmt: str = ".2f") -> str:
    if value is None:
        return f"- {name}: not measured (target <= {limit}{unit}): not met"
    return f"- {name}: {value:{fmt}}{unit} (target <= {limit}{unit}): {'met' if value <= limit else 'not met'}"


def targets(args: argparse.Namespace, rows: list[Row], results: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 17's targets for this device and mode, each met or not met."""
    warmup, trial, _, _, search, _, prune = rows
    if args.sequential:
        facts = results["prune"]
        share = None
        if "cap_bytes" in facts and "weights_bytes" in facts:
            share = facts["cap_bytes"] / facts["weights_bytes"]
        line = verdict("GPU memory cap under which sequential mode pruned", share, SEQUENTIAL_CAP, "x weights")
        if any("error" in r for r in results.values()):
            line = line.rpartition(": ")[0] + ": not met (a job failed)"
        return [line]
    lines = [verdict("one trial (no compensation)", trial.passes, TRIAL_COST, "x validation pass")]
    if args.device == "cpu":
        lines.insert(0, verdict(f"peak of {prune.step}", prune.weights, PRUNE_PEAK, "x weights"))
        lines.insert(1, verdict("peak of the search", search.weights, SEARCH_PEAK, "x weights"))
    else:
        lines.append(verdict("peak of the warm-up", warmup.weights, GPU_PEAK, "x weights"))
        lines.append(verdict("peak of a trial", trial.weights, GPU_PEAK, "x weights"))
    return lines


def setting(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    """The paragraph under the command: the weights, how memory and time are measured, the sizes."""
    facts = next((r for r in results.values() if "weights_bytes" in r), {})
    cpu = args.device == "cpu"
    passes = ", ".join(f"{job} {r['validation_pass_s']:.1f} s" for job, r in results.items() if "error" not in r)
    return (
        f"Weights: {facts.get('params', 0):,} parameters, {facts.get('weights_bytes', 0) / GIB:.2f} GiB; "
        f"memory before the model was built: {facts.get('baseline', 0) / GIB:.2f} GiB "
        f"({'RSS' if cpu else 'CUDA allocated'}). Peak memory is "
        f"{'the peak RSS' if cpu else 'torch.cuda.max_memory_allocated'} of each step above that, each job in a "
        "fresh process (the compensation and prune rows: their whole job's peak; their time leaves out the "
        f"evaluations). One validation pass of the dense model ({validation_text(args)}, in windows of "
        f"{args.seq_len}), measured in each job: {passes} (the search's: the mean of a pass before and one after "
        f"its trials). Search: {args.trials} trials (the fixed recipe, then that recipe without compensation), pools "
        f"of {args.pool_size} samples per source x 3 sources, {args.samples} calibration samples per trial, no early "
        f"stop, top 1 confirmed; prunes: {args.samples} samples x {args.seq_len} tokens; final evaluations: "
        f"{args.eval_tokens} tokens per test text."
    )


def section(args: argparse.Namespace, argv: list[str], results: dict[str, dict[str, Any]]) -> str:
    rows = table_rows(args, results)
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name(0)
    mode = ", sequential" if args.sequential else ""
    cap = f", GPU memory capped at {args.memory_fraction:g} of the device" if args.memory_fraction else ""
    lines = [
        f"## Scale: random-init {args.shape} shape, {args.device}, bfloat16{mode}{cap}",
        "",
        provenance("scale.py", argv, device),
        "",
        setting(args, results),
        "",
        *format_rows(rows),
        "",
        "Targets (issue 17):",
        "",
        *targets(args, rows, results),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=tuple(SHAPES), default="1b")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sequential", action="store_true", help="layer by layer (model.sequential), CUDA")
    parser.add_argument("--memory-fraction", type=float, help="cap of this process's share of the GPU's memory")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=2, help="pool samples per calibration source")
    parser.add_argument("--samples", type=int, default=4, help="calibration samples of a trial and of a prune")
    parser.add_argument("--seq-len", type=int, default=128, help="calibration and evaluation window")
    parser.add_argument("--validation-tokens", type=int, help="per validation domain (default: the search's)")
    parser.add_argument("--eval-tokens", type=int, default=256, help="per test text of the final evaluation")
    parser.add_argument("--compensator", default="reformation", help="reformation: half the solve time of obs")
    parser.add_argument("--write", action="store_true", help="(re)write this run's section of BENCHMARKS.md")
    parser.add_argument("--section", help="BENCHMARKS.md section (default scale-SHAPE-DEVICE[-sequential])")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md", help="file to write")
    parser.add_argument("--job", choices=JOBS, help=argparse.SUPPRESS)  # a measured job, in a subprocess
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", type=Path, help=argparse.SUPPRESS)  # the parent's saved copy
    args = parser.parse_args(argv)
    if (args.sequential or args.memory_fraction) and args.device != "cuda":
        parser.error("--sequential and --memory-fraction are for --device cuda")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.job:
        child(args)
        return
    model_spec(args)  # --sequential fails here, before any job, when the library lacks it
    results = run_jobs(args, argv)
    body = section(args, argv, results)
    print(body)
    if args.write:
        name = args.section or f"scale-{args.shape}-{args.device}" + ("-sequential" if args.sequential else "")
        write_section(name, body, args.benchmarks)
    if any("error" in r for r in results.values()):
        sys.exit(1)  # the table shows which job failed and why


if __name__ == "__main__":
    main()
