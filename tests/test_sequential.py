"""Sequential (layer-by-layer) mode equals the whole-model passes it replaces, on every family's tiny model:
activation statistics, compensation, block scores and perplexity; gradient metrics are refused."""

from __future__ import annotations

import pytest
import torch

from adapruner.adapters import get_adapter
from adapruner.compensate import build_compensator
from adapruner.config import ModelSpec, PruneConfig
from adapruner.evaluate import count_parameters, perplexity
from adapruner.importance import score_groups
from adapruner.layerwise import capture_inputs, run_layers
from adapruner.prune.depth import block_scores
from adapruner.prune.step import WHOLE_MODEL, prune_step
from adapruner.sequential import (
    Sequential,
    SequentialError,
    check_sequential,
    sequential_for,
)
from adapruner.stats import collect_statistics
from tests.adapters.families import CASES

CPU = torch.device("cpu")
SEQ = Sequential(CPU, batch_size=4)
FAMILIES = ["llama-gqa", "llama-mha", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text", "phi3"]


@pytest.fixture
def batch() -> torch.Tensor:
    """Seven rows: chunks of 4 and 3 (a short last chunk)."""
    return torch.randint(0, 96, (7, 12), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("case", FAMILIES)
def test_layer_outputs_equal_the_whole_models_hidden_states(case, batch):
    model = CASES[case]()
    adapter = get_adapter(model)
    finals = run_layers(adapter, capture_inputs(adapter, batch, batch_size=4, device=CPU), device=CPU)
    with torch.no_grad():
        whole = model.model(batch, output_hidden_states=True, use_cache=False).hidden_states
    # hidden_states[-1] is after the final norm; the last layer's own output is what the norm reads.
    normed = torch.cat([model.model.norm(h) for h in finals])
    torch.testing.assert_close(normed, whole[-1], rtol=1e-5, atol=1e-5)
    assert all("forward" not in layer.__dict__ for layer in adapter.layers)  # own forwards back


@pytest.mark.parametrize("case", FAMILIES)
def test_statistics_equal_the_whole_models(case, batch):
    adapter = get_adapter(CASES[case]())
    flags = [p.requires_grad for p in adapter.model.parameters()]
    whole = collect_statistics(adapter, batch, needs={"act", "cov"}, batch_size=4)
    seq = SEQ.statistics(adapter, batch, needs={"act", "cov"})
    assert (seq.n_tokens, seq.n_samples) == (whole.n_tokens, whole.n_samples)
    for store in ("act_sq", "act_sum", "cov"):
        mine, theirs = getattr(seq, store), getattr(whole, store)
        assert mine.keys() == theirs.keys() and mine
        for name in theirs:
            torch.testing.assert_close(mine[name], theirs[name], rtol=1e-5, atol=1e-5)
    assert [p.requires_grad for p in adapter.model.parameters()] == flags


@pytest.mark.parametrize("case", FAMILIES)
def test_perplexity_equals_the_whole_models(case):
    model = CASES[case]()
    tokens = torch.randint(0, 96, (150,), generator=torch.Generator().manual_seed(5))
    whole = perplexity(model, tokens, seq_len=32, stride=24, batch_size=2)
    seq = perplexity(model, tokens, seq_len=32, stride=24, batch_size=2, sequential=SEQ)
    assert (seq.tokens, seq.windows) == (whole.tokens, whole.windows)
    assert seq.nll == pytest.approx(whole.nll, rel=1e-6)


@pytest.mark.parametrize("criterion", ["block_influence", "ppl"])
@pytest.mark.parametrize("case", ["llama-gqa", "gemma2", "qwen2"])
def test_block_scores_equal_the_whole_models(case, criterion, batch):
    adapter = get_adapter(CASES[case]())
    whole = block_scores(adapter, batch, criterion=criterion, batch_size=4)
    seq = SEQ.block_scores(adapter, batch, criterion=criterion)
    assert seq.dtype == torch.float64 and seq.shape == (adapter.n_layers,)
    torch.testing.assert_close(seq, whole, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["bias", "obs", "reformation", "numerical"])
def test_compensation_equals_the_whole_models(method, batch):
    results = []
    for placement in (WHOLE_MODEL, SEQ):
        adapter = get_adapter(CASES["llama-gqa"]())
        stats = collect_statistics(adapter, batch, needs={"act"}, batch_size=4)
        scores = score_groups(adapter, adapter.groups(), stats, mix={"wanda": 1.0})
        before = count_parameters(adapter.model, non_embedding=True)
        prune_step(
            adapter,
            scores,
            config=PruneConfig(ratio=0.3, channel_multiple=1),
            params_before=before,
            compensator=build_compensator(method),
            calibration=lambda: batch,
            placement=placement,
        )
        results.append(adapter.model.state_dict())
    whole, seq = results
    assert whole.keys() == seq.keys()
    for name in whole:
        torch.testing.assert_close(seq[name], whole[name], rtol=1e-5, atol=1e-6)


def test_gradient_metrics_and_criteria_are_refused_naming_them(batch):
    adapter = get_adapter(CASES["llama-gqa"]())
    with pytest.raises(SequentialError, match=r"taylor, taylor2.*model\.sequential"):
        check_sequential(["wanda", "taylor2", "taylor"])
    with pytest.raises(SequentialError, match="taylor_plus"):
        check_sequential(["wanda"], block_criterion="taylor_plus")
    check_sequential(["wanda", "flap", "bip", "l2", "numerical"], block_criterion="block_influence")
    with pytest.raises(SequentialError, match="grad"):
        SEQ.statistics(adapter, batch, needs={"act", "grad"})
    with pytest.raises(SequentialError, match="taylor_plus"):
        SEQ.block_scores(adapter, batch, criterion="taylor_plus")


def test_the_spec_turns_it_on():
    assert sequential_for(ModelSpec(device="cpu")) is None
    assert sequential_for(ModelSpec(device="cpu", sequential=True)) == Sequential(CPU)


def test_a_search_refuses_sequential_mode():
    from pydantic import ValidationError

    from adapruner.config import SearchJob

    with pytest.raises(ValidationError, match="model.sequential: a search"):
        SearchJob.model_validate({"model": {"source": "x", "sequential": True}})


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n\n".join(f"calibration paragraph {i} about pruning models." * 5 for i in range(60)))
    return path


@pytest.fixture(scope="module")
def heldout_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("heldout") / "heldout.txt"
    path.write_text("\n\n".join(f"held out paragraph {i} that the report reads." * 5 for i in range(30)))
    return path


@pytest.mark.parametrize(
    ("metric", "method", "criterion"), [("wanda", "obs", "block_influence"), ("flap", "bias", "ppl")]
)
def test_run_prune_sequential_matches_the_whole_model_prune(
    tiny_model_dir, calib_file, heldout_file, metric, method, criterion
):
    from adapruner.config import PruneJob
    from adapruner.pipeline import run_prune

    outcomes = []
    for sequential in (False, True):
        job = PruneJob.model_validate(
            {
                "model": {"source": str(tiny_model_dir), "device": "cpu", "sequential": sequential},
                "calibration": {"sources": [{"kind": "file", "name": str(calib_file)}], "samples": 6, "seq_len": 32},
                "importance": {"mix": {metric: 1.0, "l2": 0.5}},
                "prune": {"ratio": 0.3, "channel_multiple": 1, "depth_share": 0.9, "block_criterion": criterion},
                "compensate": {"method": method},
                "evaluate": {"texts": [{"kind": "file", "name": str(heldout_file)}], "max_tokens": 300, "speed": False},
            }
        )
        outcomes.append(run_prune(job))
    whole, seq = outcomes
    for key in ("widths", "blocks_removed", "calibration_samples", "params_after"):
        assert seq.report[key] == whole.report[key], key
    assert seq.report["blocks_removed"]
    for part in ("dense", "pruned"):
        for label, ppl in whole.report[part]["perplexity"].items():
            assert seq.report[part]["perplexity"][label] == pytest.approx(ppl, rel=1e-5)
    theirs, mine = whole.model.state_dict(), seq.model.state_dict()
    assert theirs.keys() == mine.keys()
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-5)


def test_run_prune_refuses_a_gradient_metric_before_any_work(tiny_model_dir, calib_file, monkeypatch):
    from adapruner.config import PruneJob
    from adapruner.pipeline import run_prune

    job = PruneJob.model_validate(
        {
            "model": {"source": str(tiny_model_dir), "device": "cpu", "sequential": True},
            "calibration": {"sources": [{"kind": "file", "name": str(calib_file)}], "samples": 2, "seq_len": 16},
            "importance": {"mix": {"taylor": 1.0, "wanda": 1.0}},
            "evaluate": {"texts": [], "speed": False},
        }
    )
    monkeypatch.setattr("adapruner.pipeline.load_model", lambda spec: pytest.fail("loaded"))
    with pytest.raises(SequentialError, match="metric\\(s\\) taylor need"):
        run_prune(job)
