"""Compensation as a pipeline stage: any compensator after any metric, in ``prune_copy`` and in the search."""

from __future__ import annotations

import pytest
import torch

from adapruner.artifacts import load_pruned, save_pruned
from adapruner.config import PruneJob, SearchSpace
from adapruner.models import LoadedModel
from adapruner.search.space import decode, dims
from tests.conftest import tiny_llama


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n\n".join(f"calibration paragraph {i} about pruning models." * 5 for i in range(60)))
    return path


def _job(calib_file, *, metric: str, method: str, allocation: str = "uniform") -> PruneJob:
    return PruneJob.model_validate(
        {
            "calibration": {"sources": [{"kind": "file", "name": str(calib_file)}], "samples": 4, "seq_len": 32},
            "importance": {"mix": {metric: 1.0}},
            "prune": {"ratio": 0.25, "channel_multiple": 1, "allocation": allocation},
            "compensate": {"method": method},
            "evaluate": {"texts": [], "speed": False},
        }
    )


@pytest.mark.parametrize(
    ("metric", "method"),
    [("bip", "bias"), ("numerical", "numerical"), ("nirvana", "reformation"), ("wanda", "obs"), ("taylor", "none")],
)
def test_prune_copy_runs_any_metric_with_any_compensator(tmp_path, tiny_tokenizer, calib_file, metric, method):
    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64)
    loaded = LoadedModel(model, tiny_tokenizer, "tiny")
    from adapruner.pipeline import prune_copy

    pruned, facts = prune_copy(loaded, _job(calib_file, metric=metric, method=method))
    assert abs(facts["planned_ratio"] - 0.25) <= 0.01 * 0.25
    assert all(p.bias is None for n, p in model.named_modules() if n.endswith(("o_proj", "down_proj")))  # dense kept
    save_pruned(pruned, None, tmp_path)
    reloaded, _ = load_pruned(tmp_path)
    ids = torch.arange(12)[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, rtol=0, atol=0)


def test_prune_copy_with_nirvana_allocation_meets_the_ratio(tiny_tokenizer, calib_file):
    from adapruner.pipeline import prune_copy

    model = tiny_llama(vocab_size=len(tiny_tokenizer), layers=4, intermediate_size=64)
    pruned, facts = prune_copy(
        LoadedModel(model, tiny_tokenizer, "tiny"),
        _job(calib_file, metric="nirvana", method="none", allocation="nirvana"),
    )
    assert abs(facts["planned_ratio"] - 0.25) <= 0.01 * 0.25
    assert len({w["channels"] for w in facts["widths"]}) > 1  # layers lose different amounts


def test_compensators_are_a_categorical_search_dimension():
    space = SearchSpace(compensators=("none", "bias", "reformation"))
    dim = next(d for d in dims(space) if d.name == "compensate")
    assert dim.kind == "choice" and tuple(dim.choices) == ("none", "bias", "reformation")
    assert decode(space, {"compensate": "bias"}).compensate == "bias"
    default = next(d for d in dims(SearchSpace()) if d.name == "compensate")  # the best fixed recipe's obs
    assert default.choices == ("none", "obs") and decode(SearchSpace(), {}).compensate == "none"


def test_unknown_compensator_names_the_field():
    with pytest.raises(ValueError, match="compensator 'nope'; valid: none, bias"):
        SearchSpace(compensators=("nope",))
    with pytest.raises(ValueError, match="compensate.method"):
        PruneJob.model_validate({"compensate": {"method": "nope"}})


def test_help_lists_every_metric_and_compensator():
    from adapruner.catalog import COMPENSATORS, METRICS
    from adapruner.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them here
    prune_help = " ".join(commands["prune"].format_help().split())
    search_help = " ".join(commands["search"].format_help().split())
    for name in METRICS.names():
        assert name in prune_help and name in search_help
    assert ", ".join(COMPENSATORS.names()) in prune_help
    assert ", ".join(COMPENSATORS.names()) in search_help
    assert "uniform, protected or nirvana" in prune_help
