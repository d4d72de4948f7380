"""Forward throughput, memory and generation latency of a model, as users feel them."""

from __future__ import annotations

import ctypes
import inspect
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from adapruner.errors import UserError
from adapruner.models.loading import input_device


@dataclass(frozen=True)
class Speed:
    tokens_per_s: float
    latency_s: float  # median seconds per forward of [batch, seq_len]
    batch: int
    seq_len: int
    peak_memory_bytes: int | None
    memory_kind: str  # "cuda_max_allocated" or "cpu_peak_rss_delta"


def _rss_peak_bytes() -> int | None:
    """The process's peak resident set (VmHWM) in bytes, where /proc exposes it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Return freed heap memory to the system, then reset VmHWM to the current RSS (Linux: write 5 to
    /proc/self/clear_refs), so that the next peak measures new allocations."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def weights_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers, tied tensors once."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def measure_speed(
    model: nn.Module, *, batch: int, seq_len: int, warmup: int = 2, repeats: int = 5, device=None
) -> Speed:
    """Throughput of forward passes over seeded random token ids ``[batch, seq_len]``.

    Memory: on CUDA the peak allocated during the timed passes; on CPU the growth of the process's
    peak resident memory over its level before them (activations and workspace, not the weights).
    """
    device = torch.device(device) if device else input_device(model)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    cuda = device.type == "cuda"
    model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(ids, use_cache=False)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        reset = not cuda and _reset_rss_peak()
        before = _rss_peak_bytes() if reset else None
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids, use_cache=False)
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:
        after = _rss_peak_bytes() if reset else None
        peak = None if before is None or after is None else max(after - before, 0)
        kind = "cpu_peak_rss_delta"
    latency = statistics.median(times)
    return Speed(batch * seq_len / latency, latency, batch, seq_len, peak, kind)


@dataclass(frozen=True)
class GenerationSpeed:
    """Greedy decoding with the KV cache after a prompt, as a chat user or a batch job feels it."""

    batch: int
    prompt_len: int
    new_tokens: int
    prefill_s: float  # median seconds to read the prompt and produce the first token
    per_token_s: float  # median seconds per further token (one cached decode step)
    tokens_per_s: float  # batch x (new_tokens - 1) / decode time: generated tokens per second
    device: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _greedy(model: nn.Module, ids: torch.Tensor, new_tokens: int, device: torch.device) -> tuple[float, float]:
    """Seconds of the prefill (prompt -> first token) and of the ``new_tokens - 1`` cached steps after it."""
    # transformers 5.x renamed ``past_key_values`` to ``cache`` (argument and output field).
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    start = time.perf_counter()
    out = model(ids, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    cache = getattr(out, key)
    _sync(device)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(token, use_cache=True, **{key: cache})
        token, cache = out.logits[:, -1:].argmax(-1), getattr(out, key)
    _sync(device)
    return prefill, time.perf_counter() - start


def measure_generation(
    model: nn.Module,
    *,
    batch: int = 1,
    prompt_len: int = 128,
    new_tokens: int = 32,
    warmup: int = 1,
    repeats: int = 3,
    device=None,
) -> GenerationSpeed:
    """Time greedy generation of ``new_tokens`` after seeded random prompts ``[batch, prompt_len]``.

    Decoding runs step by step with the model's KV cache (what ``generate`` does, without its stopping
    rules, so every run decodes exactly ``new_tokens``); on CUDA each timing ends with a synchronise.
    ``per_token_s`` is the batch-1 latency users feel between tokens; ``tokens_per_s`` at a larger
    batch is serving throughput.
    """
    if new_tokens < 2:
        raise UserError(f"new_tokens must be at least 2 (one prefill token and one decode step), got {new_tokens}")
    device = torch.device(device) if device else input_device(model)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(0)).to(device)
    model.eval()
    prefills, decodes = [], []
    with torch.inference_mode():
        for run in range(warmup + repeats):
            prefill, decode = _greedy(model, ids, new_tokens, device)
            if run >= warmup:
                prefills.append(prefill)
                decodes.append(decode)
    decode = statistics.median(decodes)
    return GenerationSpeed(
        batch=batch,
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        prefill_s=statistics.median(prefills),
        per_token_s=decode / (new_tokens - 1),
        tokens_per_s=batch * (new_tokens - 1) / decode,
        device=str(device),
    )
