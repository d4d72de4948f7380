"""Shared fixtures: tiny random LLaMA models, a tiny tokenizer, and the real SmolLM2 (once per session)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama_config(*, gqa: bool = True, layers: int = 3, **overrides) -> LlamaConfig:
    """A 3-layer LLaMA: 4 query heads over 2 KV groups (GQA) or 4 over 4 (MHA), head_dim 8."""
    values = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2 if gqa else 4,
        head_dim=8,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_llama(*, gqa: bool = True, seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(gqa=gqa, **overrides)).eval()
    # Random init keeps norms at 1; perturb them so that tests see per-channel differences.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(0.3 * torch.randn_like(param))
    return model


@pytest.fixture(params=[True, False], ids=["gqa", "mha"])
def tiny_model(request) -> LlamaForCausalLM:
    return tiny_llama(gqa=request.param)


@pytest.fixture
def tiny_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 96, (2, 16), generator=generator)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (about 18 s to dequantise): loaded once per test session."""
    from adapruner.models import load_model

    return load_model("smollm2-135m")


def make_tiny_tokenizer():
    """A character-level tokenizer over printable ASCII (about 100 ids), built offline."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1}
    for char in string.printable:
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="</s>", pad_token="</s>")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny random LLaMA saved with its tokenizer, as a user's local model folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(vocab_size=len(tiny_tokenizer), layers=4).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- service and worker tests: the machine's PostgreSQL and Redis (see tests/backends.py) ---------------


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    from tests.backends import Databases

    dbs = Databases(tmp_path_factory.mktemp("databases"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def job_texts(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("job-texts")
    words = {
        "a": "the model prunes heads and channels of every layer",
        "b": "calibration data moves the result of structured pruning",
        "val": "validation text chooses among the trials of the search",
        "test": "held out test text is read once for the final report",
    }
    paths = {}
    for name, sentence in words.items():
        path = folder / f"{name}.txt"
        path.write_text("\n\n".join(f"{sentence} {i}." * 3 for i in range(40)))
        paths[name] = str(path)
    return paths


def tiny_search_spec(
    texts: dict[str, str],
    *,
    model: str,
    trials: int,
    top_k: int = 2,
    space: dict | None = None,
    search: dict | None = None,
) -> dict:
    """A search spec over ``job_texts`` for a tiny random LLaMA: each trial takes well under a second on the CPU."""
    return {
        "model": {"source": model},
        "ratio": 0.25,
        "space": {
            "sources": [{"kind": "file", "name": texts["a"]}, {"kind": "file", "name": texts["b"]}],
            "pool_size": 4,
            "seq_lens": [16],
            "samples": {"low": 2, "high": 6},
            "subset_seeds": 4,
            "metrics": ["taylor", "wanda", "l2"],
        }
        | (space or {}),
        "search": {
            "trials": trials,
            "n_init": 2,
            "acq_restarts": 2,
            "raw_samples": 16,
            "validation": [{"kind": "file", "name": texts["val"]}],
            "validation_tokens": 256,
            "chunk_tokens": 64,
            "eval_seq_len": 32,
            "top_k": top_k,
        }
        | (search or {}),
        "evaluate": {
            "texts": [{"kind": "file", "name": texts["test"]}],
            "seq_len": 32,
            "max_tokens": 256,
            "speed": False,
        },
    }
