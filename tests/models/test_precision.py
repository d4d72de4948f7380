"""Precision and placement: ``ModelSpec.dtype`` (auto = bfloat16 on CUDA, float32 on the CPU) on every
command, TF32 on CUDA, inputs on the embedding's device, and failing fast when the weights cannot fit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from adapruner.artifacts import load_pruned, save_pruned
from adapruner.cli import CliError, build_parser, job_from_args, search_job_from_args
from adapruner.config import ModelSpec
from adapruner.models import ModelLoadError, input_device, load_model, loading, pick_dtype
from tests.conftest import tiny_llama

ROOT = Path(__file__).resolve().parents[2]


def test_auto_dtype_is_bfloat16_on_cuda_and_float32_on_the_cpu():
    assert ModelSpec().dtype == "auto"
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16


def test_tf32_is_enabled_for_cuda_only():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        loading.enable_tf32(torch.device("cpu"))
        assert torch.get_float32_matmul_precision() == "highest"
        loading.enable_tf32(torch.device("cuda", 0))
        assert torch.get_float32_matmul_precision() == "high"  # TF32 for float32 matmuls
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("command", ["prune", "search", "eval"])
def test_every_command_takes_dtype(command):
    extra = ["m", "--text-file", "t.txt"] if command == "eval" else ["--ratio", "0.2", "--out", "o"]
    args = build_parser().parse_args([command, *extra, "--dtype", "bfloat16"])
    assert args.dtype == "bfloat16"
    assert build_parser().parse_args([command, *extra]).dtype == "auto"
    if command != "eval":
        job = (job_from_args if command == "prune" else search_job_from_args)(args)
        assert job.model.dtype == "bfloat16"


def test_a_wrong_dtype_is_a_usage_error():
    with pytest.raises(CliError, match="--dtype: invalid choice: 'float8'"):
        build_parser().parse_args(["eval", "m", "--text-file", "t.txt", "--dtype", "float8"])


def test_load_in_bfloat16_and_the_artifact_keeps_it(tiny_model_dir, tmp_path):
    assert next(load_model(str(tiny_model_dir), device="cpu").model.parameters()).dtype == torch.float32
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    save_pruned(loaded.model, loaded.tokenizer, tmp_path / "a")
    model, _ = load_pruned(tmp_path / "a")  # no dtype: the saved one
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, loaded.model(ids).logits, rtol=0, atol=0)


def test_a_model_that_cannot_fit_fails_before_loading(tiny_model_dir, monkeypatch):
    need = sum(p.numel() for p in tiny_llama().parameters())  # the tiny config's parameters
    monkeypatch.setattr(loading, "available_bytes", lambda device: need * 3)  # fits bf16 (2 B), not fp32 (4 B)
    built = []
    monkeypatch.setattr(
        "transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: built.append(a) or pytest.fail("loaded")
    )
    with pytest.raises(ModelLoadError, match=r"needs .* GiB for its weights in float32, cpu has .* GiB free") as error:
        load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert "--dtype bfloat16" in str(error.value) and not built
    monkeypatch.undo()
    monkeypatch.setattr(loading, "available_bytes", lambda device: need)
    with pytest.raises(ModelLoadError, match="in bfloat16") as error:
        load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert "a device with more memory" in str(error.value)


def test_a_pruned_artifact_that_cannot_fit_fails_before_loading(tiny_model_dir, tmp_path, monkeypatch):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    save_pruned(loaded.model, loaded.tokenizer, tmp_path / "a")
    size = sum(f.stat().st_size for f in (tmp_path / "a").glob("*.safetensors"))
    assert loading.MANIFEST_NAME and size > 0
    monkeypatch.setattr(loading, "available_bytes", lambda device: size // 3)  # below even bf16's half
    monkeypatch.setattr("adapruner.artifacts.load_pruned", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(ModelLoadError, match="needs"):
        load_model(str(tmp_path / "a"), device="cpu", dtype="bfloat16")


def test_inputs_go_to_the_embedding_device():
    model = tiny_llama()
    assert input_device(model) == model.get_input_embeddings().weight.device
    pattern = re.compile(r"next\([\w.]*parameters\(\)\)\.device")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("adapruner", "worker", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert not offenders, f"use adapruner.models.input_device: {offenders}"
