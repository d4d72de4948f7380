"""llama.cpp as a runtime: perplexity and speed of a GGUF file where users serve it (``llama-cpp-python``).

:class:`LlamaCppLM` presents a GGUF model as a causal LM to :func:`adapruner.evaluate.perplexity`, so the
windows and the NLL sum are the same code as for PyTorch models; :class:`LlamaCppTokenizer` is the
file's own tokenizer. :func:`measure_serving` times prompt processing and generation at batch 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from adapruner.errors import UserError
from adapruner.evaluate.perplexity import Perplexity, perplexity


def load_llama(path: str | Path, *, n_ctx: int, n_threads: int | None = None, logits_all: bool = False) -> Any:
    """A ``llama_cpp.Llama`` on the CPU, quiet; a clear error when the binding is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise UserError("--runtime llamacpp needs llama-cpp-python: pip install 'adapruner[serve]'") from None
    if not Path(path).is_file():
        raise UserError(f"llama.cpp: no GGUF file {str(path)!r}")
    with _without_weight_repacking():
        return Llama(
            str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=logits_all,
            n_gpu_layers=0,
            verbose=False,
        )


@contextmanager
def _without_weight_repacking() -> Iterator[None]:
    """Models loaded inside take llama.cpp's plain CPU buffers (``use_extra_bufts`` false: no weights
    repacked for the CPU's matrix extensions). On this project's AMX machine the repacked Q8_0 weights gave
    logits unrelated to the model's (RMS error about 1x their spread, with llama-cpp-python 0.3.16 and
    0.3.36; f32, f16 and bf16 were exact): a runtime that measures the exported file must read what it
    holds. ``Llama`` takes no argument for it, so its default model parameters are wrapped while loading."""
    import llama_cpp.llama_cpp as binding

    defaults = binding.llama_model_default_params

    def plain() -> Any:
        params = defaults()
        if hasattr(params, "use_extra_bufts"):  # older bindings have no repacking switch
            params.use_extra_bufts = False
        return params

    binding.llama_model_default_params = plain
    try:
        yield
    finally:
        binding.llama_model_default_params = defaults


class LlamaCppLM:
    """A GGUF model behind the part of a HF causal LM's interface that perplexity uses:
    ``model(ids).logits`` (``ids: [b, t]`` -> ``[b, t, vocab]`` float32, each row from an empty cache)."""

    def __init__(self, path: str | Path, *, n_ctx: int = 512, n_threads: int | None = None) -> None:
        self.llm = load_llama(path, n_ctx=n_ctx, n_threads=n_threads, logits_all=True)
        self.n_ctx = n_ctx

    def eval(self) -> LlamaCppLM:
        return self

    def __call__(self, ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        if ids.shape[-1] > self.n_ctx:
            raise UserError(f"llama.cpp: {ids.shape[-1]} tokens do not fit the context of {self.n_ctx}")
        rows = []
        for row in ids.tolist():
            self.llm.reset()
            self.llm.eval(row)
            rows.append(np.array(self.llm.scores[: len(row)], dtype=np.float32))
        return SimpleNamespace(logits=torch.from_numpy(np.stack(rows)))

    def close(self) -> None:
        self.llm.close()


class LlamaCppTokenizer:
    """The GGUF file's own tokenizer, callable like a HF tokenizer on a batch of texts."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.eos_token_id = llm.token_eos()

    def __call__(self, texts: list[str], add_special_tokens: bool = False, **_: Any) -> dict[str, list[list[int]]]:
        encode = self.llm.tokenize
        return {"input_ids": [encode(t.encode(), add_bos=add_special_tokens, special=False) for t in texts]}


def gguf_perplexity(
    path: str | Path, source: Any, *, seq_len: int, stride: int | None, max_tokens: int, n_threads: int | None
) -> Perplexity:
    """Perplexity of a GGUF file in llama.cpp on ``source`` (a :class:`~adapruner.config.DataSource`,
    read for evaluation), tokenised by the file's own tokenizer, in the same windows as for PyTorch."""
    from adapruner.calibration import token_stream

    lm = LlamaCppLM(path, n_ctx=seq_len, n_threads=n_threads)
    try:
        tokens = token_stream(LlamaCppTokenizer(lm.llm), source, "evaluation", max_tokens=max_tokens)
        return perplexity(lm, tokens, seq_len=seq_len, stride=stride, batch_size=1, device="cpu")
    finally:
        lm.close()


def time_serving(llm: Any, tokens: list[int], *, prompt: int, generated: int) -> tuple[float, float]:
    """Seconds to process ``tokens[:prompt]`` at once and then to decode the next ``generated`` tokens
    one by one (teacher-forced: the same work as greedy generation, without sampling noise)."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens[:prompt])
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    for token in tokens[prompt : prompt + generated]:
        llm.eval([token])
    return prompt_s, time.perf_counter() - start
