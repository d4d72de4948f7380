"""The export stage of a job: prune and search write the served files into the artifact folder."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from adapruner.config import ExportConfig, PruneJob, SearchJob
from adapruner.pipeline import run_prune
from tests.conftest import tiny_search_spec
from tests.export.conftest import save_bpe_model


@pytest.fixture(scope="module")
def bpe_model_dir(tmp_path_factory):
    return save_bpe_model(tmp_path_factory.mktemp("bpe-llama"))


def tiny_prune_job(model_dir, texts, **export) -> PruneJob:
    return PruneJob.model_validate(
        {
            "model": {"source": str(model_dir), "device": "cpu"},
            "calibration": {"sources": [{"kind": "file", "name": texts["a"]}], "samples": 4, "seq_len": 32},
            "importance": {"mix": {"l2": 1}},
            "prune": {"ratio": 0.3, "depth_slope": 0.8, "channel_multiple": 4},
            "evaluate": {"texts": [{"kind": "file", "name": texts["test"]}], "seq_len": 32, "max_tokens": 128, "speed": False},
            "export": export,
        }
    )


def test_prune_job_writes_each_format_into_its_folder(bpe_model_dir, job_texts, tmp_path):
    from gguf import GGUFReader

    job = tiny_prune_job(bpe_model_dir, job_texts, formats=["gguf", "decilm"], type="f32")
    outcome = run_prune(job, out=tmp_path / "out")
    exports = outcome.report["exports"]
    assert [(e["format"], e["path"]) for e in exports] == [("gguf", "model-f32.gguf"), ("decilm", "decilm-f32")]
    assert exports[0]["architecture"] == "deci"  # depth_slope: the layers lose different shares
    reader = GGUFReader(str(tmp_path / "out" / "model-f32.gguf"))
    assert reader.fields["general.architecture"].contents() == "deci"
    assert (tmp_path / "out" / "decilm-f32" / "config.json").is_file()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["exports"] == exports


def test_a_format_that_cannot_hold_the_model_fails_the_job_after_saving(bpe_model_dir, job_texts, tmp_path):
    from adapruner.export import ExportError

    job = tiny_prune_job(bpe_model_dir, job_texts, formats=["hf"])
    with pytest.raises(ExportError, match="^export --format hf: layers .* --uniform"):
        run_prune(job, out=tmp_path / "out")
    assert (tmp_path / "out" / "adapruner.json").is_file()


@pytest.mark.slow
def test_search_job_exports_the_best_trial(tiny_model_dir, job_texts, tmp_path):
    from adapruner.search.run import run_search

    spec = tiny_search_spec(job_texts, model=str(tiny_model_dir), trials=2, top_k=1)
    job = SearchJob.model_validate(spec | {"export": {"formats": ["decilm"], "type": "f16"}})
    outcome = run_search(job, out=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert outcome.report["exports"][0]["path"] == "decilm-f16"
    config = json.loads((tmp_path / "out" / "decilm-f16" / "config.json").read_text())
    assert len(config["block_configs"]) == outcome.model.config.num_hidden_layers


def test_export_config_refusals():
    with pytest.raises(ValidationError, match="unknown export format 'onnx'; valid: gguf, hf, decilm"):
        ExportConfig(formats=("onnx",))
    with pytest.raises(ValidationError, match="q8_0 is a GGUF type"):
        ExportConfig(formats=("gguf", "hf"), type="q8_0")
    with pytest.raises(ValidationError, match="Extra inputs"):
        ExportConfig.model_validate({"formats": ["gguf"], "quant": "q4"})
    assert ExportConfig(formats=("gguf", "gguf")).formats == ("gguf",)


def test_cli_prune_with_export(bpe_model_dir, job_texts, tmp_path, capsys):
    from adapruner.cli import main

    args = ["prune", "--model", str(bpe_model_dir), "--ratio", "0.3", "--metric", "l2", "--calib", job_texts["a"],
            "--samples", "4", "--seq-len", "32", "--eval-text", job_texts["test"], "--eval-tokens", "128",
            "--eval-seq-len", "32", "--no-speed", "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main([*args, "--export", "gguf,decilm", "--export-type", "f16"]) == 0
    out = capsys.readouterr().out
    assert "exported model-f16.gguf (gguf, architecture " in out and "exported decilm-f16 (decilm" in out
    assert (tmp_path / "out" / "model-f16.gguf").is_file()
    assert main([*args, "--export", "gguf,onnx"]) == 2
    assert capsys.readouterr().err.strip() == "adapruner: error: --export: unknown export format 'onnx'; valid: gguf, hf, decilm"
