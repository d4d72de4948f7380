"""Data sources: built-in corpora, deterministic partitions, files, the HF path (offline) and token streams."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from adapruner.calibration import builtin, gnu_standards_text, jargon_text, load_documents, pydoc_text, token_stream
from adapruner.calibration.sources import BLOCK_WORDS, assign_blocks, partition_label, split_blocks
from adapruner.config import PARTITION_SPLITS, DataSource
from tests.calibration.conftest import VOCAB, word_tokenizer

BUILTINS = {
    "pydoc": (pydoc_text, 50_000),
    "jargon": (jargon_text, 200_000),
    "gnu-standards": (gnu_standards_text, 50_000),
}


def builtin_split(name: str, split: str) -> DataSource:
    return DataSource(kind="builtin", name=name, split=split)


def words(documents: list[str]) -> Counter:
    return Counter(word for doc in documents for word in doc.split())


def write_text(path: Path, *, n_words: int, paragraph_words: int = 40, seed: int = 0) -> list[str]:
    """Write ``n_words`` random vocabulary words in paragraphs; return the words in order."""
    rng = random.Random(seed)
    stream = [rng.choice(VOCAB) for _ in range(n_words)]
    paragraphs = [" ".join(stream[i : i + paragraph_words]) for i in range(0, n_words, paragraph_words)]
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return stream


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


# ------------------------------------------------------------------------------------------- builtin corpora


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_corpus_loads_many_words(name: str) -> None:
    loader, min_words = BUILTINS[name]
    documents = loader()
    assert documents and all(isinstance(doc, str) and doc.strip() for doc in documents)
    assert sum(len(doc.split()) for doc in documents) >= min_words
    assert loader() == documents  # cached and deterministic
    documents.append("mutating the returned list does not touch the cache")
    assert loader() != documents


@pytest.mark.parametrize("name", ["jargon", "gnu-standards"])
def test_debian_corpora_are_grouped_paragraphs_without_table_rules(name: str) -> None:
    documents = BUILTINS[name][0]()
    assert all(len(doc.split()) >= 300 for doc in documents[:-1])
    for doc in documents:
        for line in doc.splitlines():
            assert not (line.strip() and set(line.strip()) <= set("─│├┤┌┐└┘┬┴┼═ ")), line


def test_pydoc_is_one_document_per_topic_sorted() -> None:
    from pydoc_data.topics import topics

    assert pydoc_text() == [topics[key].strip() for key in sorted(topics) if topics[key].strip()]


def test_missing_debian_file_says_which_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(builtin, "JARGON_PATH", tmp_path / "jargon.txt.gz")
    with pytest.raises(FileNotFoundError, match="needs the Debian package jargon-text.*apt-get install jargon-text"):
        jargon_text()
    monkeypatch.setattr(builtin, "GNU_STANDARDS_PATHS", (tmp_path / "standards.text.gz",))
    with pytest.raises(FileNotFoundError, match="apt-get install gnu-standards"):
        gnu_standards_text()


# ------------------------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_partitions_disjoint_covering_deterministic(name: str) -> None:
    corpus = BUILTINS[name][0]()
    parts = {split: load_documents(builtin_split(name, split), "calibration") for split in PARTITION_SPLITS}
    assert all(parts[split] for split in PARTITION_SPLITS)  # validation and test are never empty
    total = Counter()
    for split in PARTITION_SPLITS:
        total += words(parts[split])
    assert total == words(corpus)  # covering, without duplicated text
    blocks = split_blocks(corpus)
    indices = assign_blocks(len(blocks), f"builtin:{name}")
    assert sorted(i for split in PARTITION_SPLITS for i in indices[split]) == list(range(len(blocks)))
    for split in PARTITION_SPLITS:
        assert parts[split] == [blocks[i] for i in indices[split]]
    assert len(indices["train"]) > len(indices["validation"]) and len(indices["train"]) > len(indices["test"])
    again = {split: load_documents(builtin_split(name, split), "evaluation") for split in PARTITION_SPLITS}
    assert again == parts


def test_builtin_default_splits_follow_the_role() -> None:
    source = DataSource(kind="builtin", name="pydoc")
    train = load_documents(DataSource(kind="builtin", name="pydoc", split="train"), "evaluation")
    test = load_documents(DataSource(kind="builtin", name="pydoc", split="test"), "calibration")
    assert load_documents(source, "calibration") == train
    assert load_documents(source, "evaluation") == test
    assert not set(train) & set(test)


def test_blocks_have_fixed_word_count_and_keep_text() -> None:
    documents = [" ".join(f"w{i % 300}" for i in range(n)) for n in (1500, 2700, 900)]
    blocks = split_blocks(documents)
    assert [len(block.split()) for block in blocks] == [BLOCK_WORDS, BLOCK_WORDS, 1100]
    assert " ".join(blocks).split() == " ".join(documents).split()


@pytest.mark.parametrize("n_blocks", [3, 4, 5, 10, 200])
def test_assign_blocks_always_fills_every_split(n_blocks: int) -> None:
    for label in ("file:a.txt", "file:b.txt", "builtin:x", "file:c.jsonl"):
        indices = assign_blocks(n_blocks, label)
        assert all(indices[split] for split in PARTITION_SPLITS)
        flat = [i for split in PARTITION_SPLITS for i in indices[split]]
        assert sorted(flat) == list(range(n_blocks))
        assert indices == assign_blocks(n_blocks, label)


def test_assign_blocks_shares_are_about_80_10_10() -> None:
    indices = assign_blocks(10_000, "builtin:share")
    assert 0.77 < len(indices["train"]) / 10_000 < 0.83
    assert 0.08 < len(indices["validation"]) / 10_000 < 0.12
    assert 0.08 < len(indices["test"]) / 10_000 < 0.12


def test_partition_does_not_depend_on_the_split_field() -> None:
    a = DataSource(kind="file", name="x.txt", split="train")
    b = DataSource(kind="file", name="x.txt", split="test")
    assert partition_label(a) == partition_label(b) == "file:x.txt"


# ------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".txt", ".md"])
def test_text_file_groups_paragraphs(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corpus{suffix}"
    stream = write_text(path, n_words=1000, paragraph_words=70)
    documents = load_documents(DataSource(kind="file", name=str(path)), "calibration")  # split 'all'
    assert " ".join(documents).split() == stream
    assert all(len(doc.split()) >= 300 for doc in documents[:-1])
    assert len(documents) == 3  # 350 + 350 + 300 words
    assert all("\n\n" in doc for doc in documents)


def test_text_file_partitions(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    stream = write_text(path, n_words=12 * BLOCK_WORDS + 17)
    parts = {
        split: load_documents(DataSource(kind="file", name=str(path), split=split), "evaluation")
        for split in PARTITION_SPLITS
    }
    assert all(parts[split] for split in PARTITION_SPLITS)
    assert sum((words(parts[split]) for split in PARTITION_SPLITS), Counter()) == Counter(stream)
    assert sum(len(parts[split]) for split in PARTITION_SPLITS) == 13
    seen: set[str] = set()
    for split in PARTITION_SPLITS:
        assert not seen & set(parts[split])
        seen |= set(parts[split])


def test_small_file_cannot_be_partitioned(tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    write_text(path, n_words=500)
    with pytest.raises(ValueError, match="too few"):
        load_documents(DataSource(kind="file", name=str(path), split="train"), "calibration")


def test_jsonl_file_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [{"text": "w1 w2", "id": 1}, {"text": "w3"}, {"body": "w4", "text": "w5 w6 w7"}])
    assert load_documents(DataSource(kind="file", name=str(path)), "evaluation") == ["w1 w2", "w3", "w5 w6 w7"]


def test_jsonl_other_field_and_missing_field(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [{"body": "w1"}, {"body": "w2"}, {"text": "w3"}])
    with pytest.raises(ValueError, match=r"line 3: no field 'body' \(fields: text\)"):
        load_documents(DataSource(kind="file", name=str(path), field="body"), "calibration")
    with pytest.raises(ValueError, match=r"line 1: no field 'text'"):
        load_documents(DataSource(kind="file", name=str(path)), "calibration")


def test_json_file_invalid_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.json"
    path.write_text('{"text": "w1"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_documents(DataSource(kind="file", name=str(path)), "calibration")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "corpus.txt"
    with pytest.raises(FileNotFoundError, match="nowhere/corpus.txt"):
        load_documents(DataSource(kind="file", name=str(path)), "calibration")


# ------------------------------------------------------------------------------------------- hf (offline)


@pytest.fixture
def hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_hf_json_loader_reads_the_field(tmp_path: Path, hf_cache: Path) -> None:
    path = tmp_path / "data.jsonl"
    texts = [f"w{i} w{i + 1} w{i + 2}" for i in range(20)]
    write_jsonl(path, [{"content": text, "n": i} for i, text in enumerate(texts)])
    source = DataSource(kind="hf", name="json", data_files=str(path), field="content")
    assert source.resolved_split("calibration") == "train"
    assert load_documents(source, "calibration") == texts
    assert load_documents(source.model_copy(update={"split": "train[:5]"}), "evaluation") == texts[:5]


def test_hf_missing_column_lists_columns(tmp_path: Path, hf_cache: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [{"content": "w1", "n": 1}])
    source = DataSource(kind="hf", name="json", data_files=str(path))
    with pytest.raises(ValueError, match=r"no column 'text'.*columns: content, n"):
        load_documents(source, "calibration")


# ------------------------------------------------------------------------------------------- token stream


def test_token_stream_puts_eos_between_documents(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [{"text": "w1 w2"}, {"text": "w3"}, {"text": "w4 w5 w6"}])
    source = DataSource(kind="file", name=str(path))
    ids = token_stream(tokenizer, source, "calibration")
    vocab = tokenizer.get_vocab()
    eos = tokenizer.eos_token_id
    expected = [vocab["w1"], vocab["w2"], eos, vocab["w3"], eos, vocab["w4"], vocab["w5"], vocab["w6"]]
    assert ids.dtype == torch.long and ids.dim() == 1
    assert ids.tolist() == expected
    assert token_stream(tokenizer, source, "calibration", max_tokens=4).tolist() == expected[:4]
    assert token_stream(tokenizer, source, "calibration", max_tokens=100).tolist() == expected
    assert token_stream(tokenizer, source, "calibration", max_tokens=0).numel() == 0


def test_token_stream_of_a_large_corpus_is_fast(tokenizer: PreTrainedTokenizerFast) -> None:
    source = DataSource(kind="builtin", name="jargon", split="train")
    start = time.perf_counter()
    ids = token_stream(tokenizer, source, "calibration")
    assert time.perf_counter() - start < 10
    n_docs = len(load_documents(source, "calibration"))
    assert (ids == tokenizer.eos_token_id).sum().item() == n_docs - 1
    assert ids.numel() > 150_000
    limited = token_stream(tokenizer, source, "calibration", max_tokens=1000)
    assert torch.equal(limited, ids[:1000])


def test_token_stream_needs_eos(tmp_path: Path) -> None:
    tokenizer = word_tokenizer()
    tokenizer.eos_token = None
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [{"text": "w1"}])
    with pytest.raises(ValueError, match="EOS"):
        token_stream(tokenizer, DataSource(kind="file", name=str(path)), "calibration")
