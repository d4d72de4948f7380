"""Served speed: dense vs pruned SmolLM2-135M in llama.cpp at batch 1, next to the FLOP ideal.

Prunes SmolLM2-135M by ``--ratio`` (``--metric``, calibration on the pydoc train partition) twice: with
uniform widths (``prune.uniform``: GGUF architecture ``llama``) and with per-layer widths
(``depth_slope``: ``deci``), exports the dense and both pruned models to GGUF (``--type``) and times, for
each ``--threads`` setting, prompt processing (``--prompt`` tokens at once) and generation (``--gen``
tokens one at a time after the prompt; teacher-forced, so no sampling noise). Runs are interleaved
A/B: every repeat times each model once, in a rotating order, and the table gives medians over
``--repeats``. The FLOP ideal is dense / pruned forward FLOPs per token with the unpruned output layer
counted (:func:`adapruner.evaluate.forward_flops`) at the prompt length (prompt) and at the mean
context of generation (generation). Run it on an idle machine. Writes its table into BENCHMARKS.md.

    .venv/bin/python bench/serve_speed.py [--ratio 0.2] [--type f16] [--threads 1,2] [--prompt 256]
        [--gen 64] [--repeats 7] [--benchmarks PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from adapruner.artifacts import save_pruned
from adapruner.calibration import token_stream
from adapruner.config import (
    CalibrationConfig,
    CompensateConfig,
    DataSource,
    ImportanceConfig,
    PruneConfig,
    PruneJob,
)
from adapruner.evaluate import forward_flops, ideal_speedup
from adapruner.evaluate.llamacpp import load_llama, time_serving
from adapruner.export import export_model
from adapruner.models import load_model
from adapruner.pipeline import prune_copy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import ROOT, provenance, write_section  # noqa: E402

VARIANTS = {"uniform": {"uniform": True}, "per-layer": {"depth_slope": 0.6}}


def prune_variants(loaded, args) -> dict[str, object]:
    """The pruned models by variant name (uniform and per-layer widths)."""
    models = {}
    for name, prune in VARIANTS.items():
        job = PruneJob(
            calibration=CalibrationConfig(sources=(DataSource(kind="builtin", name="pydoc"),), samples=args.samples),
            importance=ImportanceConfig(mix={args.metric: 1.0}),
            # heads and channels, no compensation: the recipe these rows were measured with
            prune=PruneConfig(ratio=args.ratio, channel_multiple=args.channel_multiple, targets=("heads", "channels"), **prune),
            compensate=CompensateConfig(method="none"),
        )
        models[name], _ = prune_copy(loaded, job)
    return models


def measure(paths: dict[str, Path], tokens: list[int], args, threads: int) -> dict[str, tuple[float, float]]:
    """Median (prompt tokens/s, generated tokens/s) per model, runs interleaved in a rotating order."""
    llms = {name: load_llama(path, n_ctx=args.prompt + args.gen, n_threads=threads) for name, path in paths.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    names = list(paths)
    try:
        for name in names:  # warm-up, untimed
            time_serving(llms[name], tokens, prompt=args.prompt, generated=min(args.gen, 4))
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                times[name].append(time_serving(llms[name], tokens, prompt=args.prompt, generated=args.gen))
    finally:
        for llm in llms.values():
            llm.close()
    return {
        name: (
            args.prompt / statistics.median(t[0] for t in runs),
            args.gen / statistics.median(t[1] for t in runs),
        )
        for name, runs in times.items()
    }


def table(speeds: dict[int, dict[str, tuple[float, float]]], ideals: dict[str, tuple[float, float]]) -> str:
    rows = []
    for threads, by_model in speeds.items():
        dense = by_model["dense"]
        for name, (prompt, gen) in by_model.items():
            ideal = ideals.get(name)
            rows.append(
                (
                    str(threads),
                    name,
                    f"{prompt:.0f}",
                    "-" if ideal is None else f"{prompt / dense[0]:.2f}x / {ideal[0]:.2f}x",
                    f"{gen:.1f}",
                    "-" if ideal is None else f"{gen / dense[1]:.2f}x / {ideal[1]:.2f}x",
                )
            )
    header = ("threads", "model", "prompt tok/s", "prompt speed-up / ideal", "gen tok/s", "gen speed-up / ideal")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--metric", default="wanda")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--channel-multiple", type=int, default=32, help="32: whole q8_0 blocks, SIMD-friendly rows")
    parser.add_argument("--type", default="f16", choices=("f32", "f16", "bf16", "q8_0"))
    parser.add_argument("--threads", default="1,2", help="llama.cpp thread counts to time")
    parser.add_argument("--prompt", type=int, default=256, help="prompt tokens processed at once")
    parser.add_argument("--gen", type=int, default=64, help="tokens generated one at a time")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--section", default="serve-speed")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md", help="file to write")
    args = parser.parse_args(argv)

    loaded = load_model(args.model, device="cpu", dtype="float32")
    models = {"dense": loaded.model, **prune_variants(loaded, args)}
    source = DataSource(kind="builtin", name="jargon", split="test")
    tokens = token_stream(loaded.tokenizer, source, "evaluation", max_tokens=args.prompt + args.gen).tolist()
    gen_context = args.prompt + args.gen // 2
    flops = {n: (forward_flops(m, seq_len=args.prompt), forward_flops(m, seq_len=gen_context)) for n, m in models.items()}
    ideals = {n: (ideal_speedup(flops["dense"][0], f[0]), ideal_speedup(flops["dense"][1], f[1])) for n, f in flops.items()}
    ideals.pop("dense")
    with tempfile.TemporaryDirectory() as scratch:
        paths, archs = {}, {}
        for name, model in models.items():
            folder = save_pruned(model, loaded.tokenizer, Path(scratch) / name)
            result = export_model(folder, "gguf", Path(scratch) / f"{name}.gguf", args.type)
            paths[name], archs[name] = result.path, result.architecture
        speeds = {int(t): measure(paths, tokens, args, int(t)) for t in args.threads.split(",")}
    body = table(speeds, ideals)
    print(body)
    import llama_cpp

    described = ", ".join(f"{name}: {arch}" for name, arch in archs.items())
    write_section(
        args.section,
        f"## Served speed in llama.cpp (SmolLM2-135M, {args.ratio:.0%} pruned, GGUF {args.type}, batch 1)\n\n"
        f"{provenance('serve_speed.py', argv, 'cpu')}\n\n"
        f"Prompt: {args.prompt} tokens at once; generation: {args.gen} tokens one at a time after it. Medians "
        f"of {args.repeats} interleaved runs per model. Speed-up / ideal: measured vs the FLOP ideal (output "
        f"layer counted). GGUF architectures: {described}; llama-cpp-python {llama_cpp.__version__}.\n\n{body}\n",
        args.benchmarks,
    )


if __name__ == "__main__":
    main()
