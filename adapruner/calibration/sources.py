"""Read the documents of a :class:`~adapruner.config.DataSource` and turn them into a token stream.

Builtin and file sources are partitioned deterministically so that calibration, search validation and
the final report never share text: the documents are concatenated, the word stream is cut into blocks of
:data:`BLOCK_WORDS` words, and block ``b`` goes to train / validation / test (80% / 10% / 10%) by a
SHA-256 hash of ``f"{kind}:{name}:{b}"``. The split ``all`` returns the documents unpartitioned.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from adapruner.calibration.builtin import group_paragraphs
from adapruner.catalog import BUILTIN_CORPORA
from adapruner.config import PARTITION_SPLITS, DataSource
from adapruner.errors import MissingFileError, UserError

Role = Literal["calibration", "evaluation"]

#: Words per partition block.
BLOCK_WORDS = 2000
#: Cumulative upper bounds of the hash fraction for train / validation (the rest is test).
_SPLIT_BOUNDS: tuple[tuple[str, float], ...] = (("train", 0.8), ("validation", 0.9), ("test", 1.0))
_WORD = re.compile(r"\S+\s*")
_TOKENIZE_BATCH = 64


# --------------------------------------------------------------------------------------------- partition


def partition_label(source: DataSource) -> str:
    """The key hashed to partition a source: kind and name, never the split."""
    return f"{source.kind}:{source.name}"


def split_blocks(documents: Sequence[str], *, block_words: int = BLOCK_WORDS) -> list[str]:
    """Concatenate ``documents`` (blank line between them) and cut the text into blocks of ``block_words``
    words, keeping the original whitespace inside a block; the last block may be shorter."""
    text = "\n\n".join(doc.strip() for doc in documents if doc.strip())
    words = _WORD.findall(text)
    return ["".join(words[i : i + block_words]).rstrip() for i in range(0, len(words), block_words)]


def _hash_fraction(label: str, block: int) -> float:
    digest = hashlib.sha256(f"{label}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_blocks(n_blocks: int, label: str) -> dict[str, list[int]]:
    """Block indices of each split (``train``, ``validation``, ``test``), each in increasing order.

    The splits are disjoint and cover ``range(n_blocks)``. Needs ``n_blocks >= 3``: when the hash leaves a
    split empty, it takes the last block of the largest split (ties: train, validation, test).
    """
    if n_blocks < len(PARTITION_SPLITS):
        raise UserError(f"{label}: {n_blocks} blocks cannot be split into {', '.join(PARTITION_SPLITS)}")
    splits: dict[str, list[int]] = {name: [] for name, _ in _SPLIT_BOUNDS}
    for block in range(n_blocks):
        fraction = _hash_fraction(label, block)
        name = next(name for name, bound in _SPLIT_BOUNDS if fraction < bound)
        splits[name].append(block)
    for target in ("validation", "test", "train"):
        if not splits[target]:
            donor = max(splits, key=lambda name: len(splits[name]))  # first maximum in split order
            splits[target].append(splits[donor].pop())
    return {name: sorted(blocks) for name, blocks in splits.items()}


def partition(documents: Sequence[str], label: str, split: str) -> list[str]:
    """The blocks of ``split`` (in corpus order) of the documents of the source ``label``."""
    if split not in PARTITION_SPLITS:
        raise ValueError(f"{label}: split {split!r} is not one of all, {', '.join(PARTITION_SPLITS)}")
    blocks = split_blocks(documents)
    if len(blocks) < len(PARTITION_SPLITS):
        n_words = sum(len(doc.split()) for doc in documents)
        raise UserError(
            f"{label}: {n_words} words are too few to split into {', '.join(PARTITION_SPLITS)} "
            f"(blocks of {BLOCK_WORDS} words; needs more than {2 * BLOCK_WORDS}); use the whole source "
            f"(no split)"
        )
    return [blocks[b] for b in assign_blocks(len(blocks), label)[split]]


# --------------------------------------------------------------------------------------------- readers


def _read_file(path_name: str, field: str) -> list[str]:
    path = Path(path_name).expanduser()
    if not path.is_file():
        raise MissingFileError(f"data file {path_name!r} does not exist")
    text = path.read_text(encoding="utf-8")
    documents: list[str]
    if path.suffix in (".txt", ".md"):
        return group_paragraphs(text)
    if path.suffix == ".json" and text.lstrip().startswith("["):
        records = json.loads(text)
        if not isinstance(records, list):
            raise UserError(f"{path_name}: expected a JSON list of objects")
        documents = [_field(record, field, path_name, f"item {i}") for i, record in enumerate(records, 1)]
        return [doc for doc in documents if doc.strip()]
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path_name} line {number}: not valid JSON ({error.msg})") from None
        documents.append(_field(record, field, path_name, f"line {number}"))
    return [doc for doc in documents if doc.strip()]


def _field(record: Any, field: str, path_name: str, where: str) -> str:
    if not isinstance(record, dict):
        raise UserError(f"{path_name} {where}: expected a JSON object, got {type(record).__name__}")
    if field not in record:
        raise UserError(
            f"{path_name} {where}: no field {field!r} (fields: {', '.join(map(str, record)) or 'none'}); "
            f"set the source's field"
        )
    value = record[field]
    if not isinstance(value, str):
        raise UserError(f"{path_name} {where}: field {field!r} is {type(value).__name__}, not text")
    return value


def _read_hf(source: DataSource, split: str) -> list[str]:
    import datasets

    dataset = datasets.load_dataset(source.name, source.config, split=split, data_files=source.data_files)
    if source.field not in dataset.column_names:
        raise UserError(
            f"{source.label()}: no column {source.field!r} in split {split!r}; "
            f"columns: {', '.join(dataset.column_names)}"
        )
    return [text for text in dataset[source.field] if isinstance(text, str) and text.strip()]


def load_documents(source: DataSource, role: Role) -> list[str]:
    """The documents of ``source`` in the split ``source.resolved_split(role)``.

    Builtin and file sources in ``train`` / ``validation`` / ``test`` return that partition's blocks of
    about :data:`BLOCK_WORDS` words; ``all`` returns the source's own documents. HF sources return the
    column ``source.field`` of the dataset split.
    """
    split = source.resolved_split(role)
    if source.kind == "hf":
        return _read_hf(source, split)
    if source.kind == "builtin":
        documents = list(BUILTIN_CORPORA.get(source.name)())
    elif source.kind == "file":
        documents = _read_file(source.name, source.field)
    else:  # pragma: no cover - DataSource validates kind
        raise ValueError(f"unknown data source kind {source.kind!r}")
    if split == "all":
        return documents
    return partition(documents, partition_label(source), split)


# --------------------------------------------------------------------------------------------- tokens


def token_stream(tokenizer: Any, source: DataSource, role: Role, *, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids of the split's documents, with ``tokenizer.eos_token_id`` between documents.

    No other special tokens are added. Returns a LongTensor ``[n_tokens]``, at most ``max_tokens`` long.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("token_stream: the tokenizer has no EOS token to separate documents")
    if max_tokens is not None and max_tokens < 0:
        raise UserError(f"max_tokens must be >= 0, got {max_tokens}")
    documents = load_documents(source, role)
    ids: list[int] = []
    for start in range(0, len(documents), _TOKENIZE_BATCH):
        if max_tokens is not None and len(ids) >= max_tokens:
            break
        batch = documents[start : start + _TOKENIZE_BATCH]
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for doc_ids in encoded:
            if ids:
                ids.append(eos)
            ids.extend(doc_ids)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return torch.tensor(ids, dtype=torch.long)
