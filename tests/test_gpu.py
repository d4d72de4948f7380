"""The pipeline on CUDA (marker ``gpu``: skipped with its reason on a machine without CUDA): every metric
and compensator, depth pruning, a 4-trial search, LoRA and continued pretraining, and reload, with the
model in bfloat16 (``dtype: auto`` on CUDA) and every tensor on the device of the weight it meets."""

from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.artifacts import save_pruned
from adapruner.catalog import BLOCK_CRITERIA, COMPENSATORS, METRICS
from adapruner.config import DataSource, PruneJob, RecoverConfig, SearchJob
from adapruner.models import LoadedModel, load_model, pick_dtype
from adapruner.pipeline import prune_copy
from adapruner.recover import recover_model
from adapruner.search.run import check_poolable, run_search
from tests.conftest import tiny_search_spec

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda", 0)


@pytest.fixture
def on_cuda(tiny_model_dir) -> LoadedModel:
    """The tiny LLaMA loaded as a user's model is: onto CUDA, ``dtype: auto`` (bfloat16 there)."""
    loaded = load_model(str(tiny_model_dir), device="cuda")
    assert next(loaded.model.parameters()).dtype == pick_dtype("auto", CUDA) == torch.bfloat16
    return loaded


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n\n".join(f"calibration paragraph {i} about pruning models." * 5 for i in range(60)))
    return path


def prune_job(calib_file, **prune) -> PruneJob:
    return PruneJob.model_validate(
        {
            "calibration": {"sources": [{"kind": "file", "name": str(calib_file)}], "samples": 4, "seq_len": 32},
            "importance": {"mix": prune.pop("mix", {"taylor": 1.0})},
            "prune": {"ratio": 0.25, "channel_multiple": 1} | prune.pop("prune", {}),
            "compensate": {"method": prune.pop("compensate", "none")},
            "evaluate": {"texts": [], "speed": False},
        }
    )


def check_on_cuda(model) -> None:
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.arange(12, device=CUDA)[None]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits.float()).all()


@pytest.mark.parametrize("metric", METRICS.names())
def test_prune_with_every_metric_on_cuda(on_cuda, calib_file, metric):
    model, facts = prune_copy(on_cuda, prune_job(calib_file, mix={metric: 1.0}))
    check_on_cuda(model)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in on_cuda.model.parameters())
    assert all(p.grad is None for p in on_cuda.model.parameters())


@pytest.mark.parametrize("method", COMPENSATORS.names())
def test_prune_with_every_compensator_on_cuda(on_cuda, calib_file, method):
    model, _ = prune_copy(on_cuda, prune_job(calib_file, mix={"wanda": 1.0}, compensate=method))
    check_on_cuda(model)


@pytest.mark.parametrize("criterion", BLOCK_CRITERIA.names())
def test_depth_pruning_on_cuda(on_cuda, calib_file, criterion):
    job = prune_job(calib_file, prune={"depth_share": 1.0, "block_criterion": criterion})
    model, facts = prune_copy(on_cuda, job)
    check_on_cuda(model)
    assert facts["blocks_removed"]


def test_a_four_trial_search_on_cuda(tmp_path, job_texts, on_cuda):
    metrics = [m for m in METRICS.names() if _poolable(m)]
    spec = tiny_search_spec(job_texts, model="tiny", trials=4, space={"metrics": metrics})
    outcome = run_search(SearchJob.model_validate(spec), out=tmp_path, loaded=on_cuda, cache_dir=None)
    assert [r["status"] for r in outcome.report["trials"]] == ["completed"] * 4
    check_on_cuda(outcome.model)


def _poolable(metric: str) -> bool:
    try:
        check_poolable((metric,))
    except Exception:
        return False
    return True


@pytest.mark.parametrize("method", ["lora", "cpt"])
def test_recovery_on_cuda(on_cuda, method):
    config = RecoverConfig(
        method=method,
        source=DataSource(kind="builtin", name="gnu-standards"),
        steps=4,
        batch_size=2,
        seq_len=32,
        learning_rate=1e-3,
        heldout_tokens=256,
    )
    model, result = recover_model(on_cuda.model, on_cuda.tokenizer, config)
    check_on_cuda(model)
    assert len(result.loss_curve) == 4 and all(torch.isfinite(torch.tensor(result.loss_curve)))


def test_reload_on_cuda_gives_the_same_logits(tmp_path, on_cuda, calib_file):
    model, _ = prune_copy(on_cuda, prune_job(calib_file, mix={"wanda": 1.0}))
    save_pruned(model, on_cuda.tokenizer, tmp_path / "a")
    reloaded = load_model(str(tmp_path / "a"), device="cuda")  # dtype auto: bfloat16 on CUDA
    check_on_cuda(reloaded.model)
    ids = torch.arange(12, device=CUDA)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert get_adapter(reloaded.model).widths() == get_adapter(model).widths()


# ---- sequential mode and multi-GPU jobs (issue 17 items 4 and 6) ----------------------------------------
def _random_llama_dir(tmp_path, tokenizer, *, layers: int = 16, hidden: int = 1024) -> tuple[str, int]:
    """A random LLaMA (bfloat16, about 18 MB per layer) saved with ``tokenizer``: ``(folder, weight bytes)``."""
    from tests.conftest import tiny_llama

    model = tiny_llama(
        vocab_size=len(tokenizer),
        layers=layers,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=hidden // 16,
        max_position_embeddings=256,
    ).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return str(tmp_path), sum(p.numel() * p.element_size() for p in model.parameters())


def test_sequential_prune_on_cuda_with_memory_capped_below_the_weights(tmp_path, tiny_tokenizer, calib_file):
    from adapruner.pipeline import run_prune

    folder, weight_bytes = _random_llama_dir(tmp_path / "m", tiny_tokenizer)
    job = prune_job(calib_file, mix={"wanda": 0.5, "flap": 0.5}, compensate="obs", prune={"depth_share": 0.5})
    heldout = DataSource(kind="builtin", name="gnu-standards")
    job = job.model_copy(
        update={
            "model": job.model.model_copy(update={"source": folder, "device": "cuda", "sequential": True}),
            "evaluate": job.evaluate.model_copy(update={"texts": (heldout,), "max_tokens": 256}),
        }
    )
    cap = weight_bytes // 2
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.get_device_properties(CUDA).total_memory, CUDA)
    try:
        loaded = load_model(job.model)
        assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
        with pytest.raises(torch.cuda.OutOfMemoryError):  # the cap is real: the whole model does not fit
            torch.empty(weight_bytes, dtype=torch.uint8, device=CUDA)
        torch.cuda.reset_peak_memory_stats(CUDA)
        outcome = run_prune(job, loaded=loaded)
        peak = torch.cuda.max_memory_allocated(CUDA)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
        torch.cuda.empty_cache()
    assert 0 < peak <= cap
    assert outcome.report["params_after"] < outcome.report["params_before"]
    assert outcome.report["blocks_removed"]
    assert all(torch.isfinite(torch.tensor(v)) for v in outcome.report["pruned"]["perplexity"].values())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (a multi-GPU job)")
def test_a_two_gpu_job_spreads_the_model_and_prunes(tmp_path, tiny_tokenizer, calib_file):
    from adapruner.pipeline import run_prune

    folder, _ = _random_llama_dir(tmp_path / "m", tiny_tokenizer, layers=8, hidden=512)
    job = prune_job(calib_file, mix={"taylor": 1.0}, compensate="obs")
    job = job.model_copy(update={"model": job.model.model_copy(update={"source": folder, "gpus": 2})})
    loaded = load_model(job.model)
    assert {p.device for p in loaded.model.parameters()} == {torch.device("cuda", 0), torch.device("cuda", 1)}
    outcome = run_prune(job, loaded=loaded)
    assert outcome.report["params_after"] < outcome.report["params_before"]
    ids = torch.arange(12, device=CUDA)[None]
    with torch.no_grad():
        assert torch.isfinite(outcome.model(ids).logits.float()).all()
