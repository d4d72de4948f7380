"""A short real search on SmolLM2-135M."""

from __future__ import annotations

import math

import pytest

from adapruner.config import SearchJob
from adapruner.search.run import run_search

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_search_picks_a_trial_no_worse_than_the_initial_design(smollm2, tmp_path):
    job = SearchJob.model_validate(
        {
            "ratio": 0.2,
            "space": {"pool_size": 4, "samples": {"low": 4, "high": 12}, "metrics": ["taylor", "wanda", "flap"]},
            "search": {
                "trials": 6,
                "n_init": 3,
                "acq_restarts": 2,
                "raw_samples": 64,
                "validation_tokens": 1024,
                "chunk_tokens": 256,
                "top_k": 1,
            },
            "evaluate": {
                "texts": [
                    {"kind": "builtin", "name": "jargon", "split": "test"},
                    {"kind": "builtin", "name": "gnu-standards", "split": "test"},
                ],
                "max_tokens": 1024,
                "speed": False,
            },
        }
    )
    report = run_search(job, out=tmp_path, loaded=smollm2, cache_dir=tmp_path / "cache").report
    trials = report["trials"]
    assert len(trials) == 6 and all(t["status"] == "completed" for t in trials)
    initial = [t for t in trials if t["index"] < 3 and not t["stopped_early"]]
    chosen = next(t for t in trials if t["index"] == report["best"]["index"])
    noise = math.sqrt(chosen["noise"])
    assert chosen["value"] <= min(t["value"] for t in initial) + 2 * noise
    assert abs(report["ratio_achieved"] - 0.2) <= 0.01 * 0.2
    assert all(math.isfinite(v) for v in report["pruned"]["perplexity"].values())
    assert report["trial_cost"]["mean_trial_vs_pass"] > 0
