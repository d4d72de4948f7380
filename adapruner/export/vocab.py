"""The tokenizer and chat template in llama.cpp's GGUF keys, read from the HF fast tokenizer.

Byte-level BPE tokenizers (GPT-2 style: SmolLM, LLaMA 3, Qwen 2) are written as ``tokenizer.ggml.model
= gpt2`` with their merges. llama.cpp picks its pre-tokenizer regex by the name in ``tokenizer.ggml.pre``;
the name is read off the tokenizer's own ``pre_tokenizer`` (see :data:`PRE_TOKENIZERS`), so a tokenizer
whose splitting llama.cpp would not reproduce is refused rather than written wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adapruner.export.base import ExportError

# GPT-2's split regex (also what ByteLevel(use_regex=True) applies).
_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"""
_LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
_QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

#: A signature of a tokenizer.json ``pre_tokenizer`` -> llama.cpp's pre-tokenizer name that splits alike.
PRE_TOKENIZERS: dict[str, str] = {
    "bytelevel:regex": "gpt-2",
    "digits:individual|bytelevel:regex": "smollm",
    f"split:{_LLAMA3}|bytelevel": "llama-bpe",
    f"split:{_QWEN2}|bytelevel": "qwen2",
}

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class Vocab:
    """Everything ``tokenizer.*`` holds in a GGUF file."""

    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int]
    add_bos: bool
    chat_template: str | None


def _signature(pre: dict[str, Any] | None) -> str:
    if pre is None:
        return "none"
    kind = pre.get("type")
    if kind == "Sequence":
        return "|".join(_signature(p) for p in pre["pretokenizers"])
    if kind == "ByteLevel":
        return "bytelevel:regex" if pre.get("use_regex", True) else "bytelevel"
    if kind == "Digits":
        return "digits:individual" if pre.get("individual_digits") else "digits"
    if kind == "Split":
        pattern = pre.get("pattern", {})
        return f"split:{pattern.get('Regex', pattern.get('String'))}"
    return str(kind)


def pre_tokenizer_name(spec: dict[str, Any]) -> str:
    """llama.cpp's name for the splitting of a tokenizer.json, or :class:`ExportError`."""
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError(
            f"export --format gguf: tokenizer model {model.get('type')!r} is not exported; "
            "byte-level BPE tokenizers (GPT-2, SmolLM, LLaMA 3, Qwen 2 style) are"
        )
    signature = _signature(spec.get("pre_tokenizer"))
    if signature not in PRE_TOKENIZERS:
        raise ExportError(
            f"export --format gguf: the tokenizer's pre-tokenizer ({signature[:80]}) has no llama.cpp equivalent "
            f"here; known: {', '.join(sorted(set(PRE_TOKENIZERS.values())))}"
        )
    return PRE_TOKENIZERS[signature]


def read_vocab(tokenizer: Any, vocab_size: int) -> Vocab:
    """The GGUF vocabulary of a HF fast tokenizer, padded to the model's ``vocab_size`` with unused tokens."""
    if tokenizer is None or not hasattr(tokenizer, "backend_tokenizer"):
        raise ExportError("export --format gguf: the model has no fast tokenizer (tokenizer.json) to include")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = pre_tokenizer_name(spec)
    by_id = {i: t for t, i in spec["model"]["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= vocab_size:
        raise ExportError(f"export: the tokenizer has id {max(by_id)} but the model only {vocab_size} embeddings")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tokens.append(by_id[i])
        types.append((CONTROL if added[i].get("special") else USER_DEFINED) if i in added else NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    special = {
        role: getattr(tokenizer, f"{role}_token_id")
        for role in ("bos", "eos", "unk", "pad")
        if getattr(tokenizer, f"{role}_token_id", None) is not None
    }
    probe = tokenizer("a").input_ids
    add_bos = "bos" in special and bool(probe) and probe[0] == special["bos"]
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return Vocab(pre, tokens, types, merges, special, add_bos, template)


def add_vocab(writer: Any, vocab: Vocab) -> None:
    """Write ``vocab`` into a ``gguf.GGUFWriter``."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for role, token_id in vocab.special_ids.items():
        getattr(writer, f"add_{role}_token_id")(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
