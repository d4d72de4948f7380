from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from adapruner.artifacts import load_pruned
from adapruner.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapruner.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["prune", "--ratio", "1.5", "--out", "x"], "--ratio: "),
        (["prune", "--ratio", "0.2", "--metric", "magic", "--out", "x"], "unknown metric 'magic'; valid: random, l1"),
        (["prune", "--ratio", "0.2", "--mix", "taylor=abc", "--out", "x"], "--mix: weight 'abc'"),
        (["prune", "--ratio", "0.2"], "--out"),
        (
            ["prune", "--ratio", "0.2", "--calib", "builtin:wiki", "--out", "x"],
            "unknown builtin corpus 'wiki'; valid: pydoc",
        ),
        (["prune", "--ratio", "0.2", "--allocation", "greedy", "--out", "x"], "--allocation: "),
        (["prune", "--ratio", "0.2", "--targets", "blocks", "--out", "x"], "--targets: "),
        (
            ["prune", "--ratio", "0.2", "--attn-share", "0.1", "--attn-gamma", "3", "--out", "x"],
            "--attn-gamma: attn_share sets",
        ),
        (["search", "--ratio", "0.2", "--samples", "1,500", "--out", "x"], "--samples: 1..500 must lie in"),
        (["prune", "--ratio", "0.2", "--model", "./nowhere", "--out", "x"], "neither a folder"),
        (["eval", "smollm2-135m"], "--text-file --dataset"),
        (["search", "--ratio", "0.2", "--metrics", "taylor,magic", "--out", "x"], "unknown metric 'magic'"),
        (["search", "--ratio", "0.2", "--samples", "4,x", "--out", "x"], "--samples: "),
        (["search", "--ratio", "0.2", "--val-text", "builtin:jargon:test", "--out", "x"], "evaluate.texts: "),
        (["search", "--ratio", "0", "--out", "x"], "--ratio: "),
        (["squash"], "invalid choice: 'squash'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("adapruner: error: "), err
    assert needle in err


def test_help_lists_the_metrics():
    result = run_cli("prune", "--help")
    assert result.returncode == 0
    assert "taylor_vector" in result.stdout and "flap" in result.stdout


def test_prune_then_eval_end_to_end(tmp_path, tiny_model_dir):
    calib = tmp_path / "calib.txt"
    held_out = tmp_path / "held_out.txt"
    calib.write_text("\n\n".join(f"calibration paragraph {i} about pruning models." * 5 for i in range(60)))
    held_out.write_text("\n\n".join(f"a different text number {i} to report on." * 5 for i in range(40)))
    out = tmp_path / "pruned"
    result = run_cli(
        "prune", "--model", str(tiny_model_dir), "--ratio", "0.25", "--mix", "taylor=0.5,wanda=0.5",
        "--calib", str(calib), "--samples", "4", "--seq-len", "32", "--channel-multiple", "1",
        "--eval-text", str(held_out), "--eval-seq-len", "64", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PPL file:" in result.stdout and "non-embedding params" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["params_after"] < report["params_before"]
    assert abs(report["ratio_achieved"] - 0.25) <= 0.01 * 0.25
    assert report["config"]["importance"]["mix"] == {"taylor": 0.5, "wanda": 0.5}
    assert len(report["calibration_samples"]) == 4
    assert report["ideal_speedup"] > 1

    model, _ = load_pruned(out)
    assert sum(p.numel() for p in model.parameters()) == report["total_params_after"]
    evaluated = run_cli("eval", str(out), "--text-file", str(held_out), "--seq-len", "64", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    line = json.loads(evaluated.stdout)
    assert line["params"] == report["total_params_after"]
    assert line["perplexity"] == pytest.approx(report["pruned"]["perplexity"][f"file:{held_out}"], rel=1e-4)
    assert torch.isfinite(torch.tensor(line["perplexity"]))


def test_search_end_to_end(tmp_path, tiny_model_dir):
    texts = {}
    for name in ("a", "b", "val", "test"):
        path = tmp_path / f"{name}.txt"
        path.write_text("\n\n".join(f"text {name} number {i} for the search." * 4 for i in range(40)))
        texts[name] = str(path)
    out = tmp_path / "search"
    args = [
        "search", "--model", str(tiny_model_dir), "--ratio", "0.25", "--trials", "3", "--n-init", "2",
        "--calib", texts["a"], "--calib", texts["b"], "--val-text", texts["val"], "--eval-text", texts["test"],
        "--metrics", "taylor,wanda", "--samples", "2,6", "--pool-size", "4", "--val-tokens", "256", "--chunk-tokens", "64",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("trial ") >= 3 and "best" in result.stderr
    assert "metric mix: taylor=" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert len(report["trials"]) == 3 and "best" in report and "validation_vs_test" in report
    # Running it again resumes: nothing is re-run, the result is the same.
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "trial " not in again.stderr
    assert json.loads((out / "report.json").read_text())["best"] == report["best"]


def test_uniform_option_reaches_the_job_and_names_itself_in_errors(capsys):
    from adapruner.cli import build_parser, job_from_args, search_job_from_args

    args = build_parser().parse_args(["prune", "--ratio", "0.2", "--uniform", "--channel-multiple", "32", "--out", "x"])
    prune = job_from_args(args).prune
    assert prune.uniform and prune.channel_multiple == 32
    args = build_parser().parse_args(["search", "--ratio", "0.2", "--uniform", "--channel-multiple", "16", "--out", "x"])
    space = search_job_from_args(args).space
    assert space.uniform and space.channel_multiple == 16 and space.depth_slope.fixed
    assert main(["prune", "--ratio", "0.2", "--uniform", "--allocation", "protected", "--out", "x"]) == 2
    assert capsys.readouterr().err.startswith("adapruner: error: --uniform: one width for every layer needs")


def test_absent_options_leave_the_config_defaults():
    from adapruner.cli import build_parser, job_from_args, search_job_from_args
    from adapruner.config import PruneJob, SearchJob

    job = job_from_args(build_parser().parse_args(["prune", "--ratio", "0.3", "--out", "x"]))
    assert job == PruneJob.model_validate({"prune": {"ratio": 0.3}})
    assert job.calibration.model_fields_set == set() and job.prune.model_fields_set == {"ratio"}
    args = build_parser().parse_args(["search", "--ratio", "0.3", "--zero-shot", "piqa", "--out", "x"])
    search = search_job_from_args(args)
    assert search.evaluate.texts == SearchJob().evaluate.texts and search.evaluate.zero_shot == ("piqa",)
    assert search.space == SearchJob().space and search.search == SearchJob().search


def test_one_option_can_set_several_fields():
    from adapruner.cli import build_parser, job_from_args

    args = build_parser().parse_args(["prune", "--ratio", "0.2", "--protect", "3,1", "--seed", "7", "--out", "x"])
    job = job_from_args(args)
    assert (job.prune.protect_first, job.prune.protect_last) == (3, 1)
    assert job.calibration.seed == job.importance.seed == job.recover.seed == 7


def test_help_shows_the_config_fields_description_and_default():
    from adapruner.cli import build_parser
    from adapruner.config import CalibrationConfig, RecoverConfig

    commands = build_parser().commands.choices
    prune_help = " ".join(commands["prune"].format_help().split())
    samples = CalibrationConfig.model_fields["samples"]
    assert f"--samples SAMPLES {samples.description} (default: {samples.default})" in prune_help
    steps = RecoverConfig.model_fields["steps"]
    assert f"{steps.description} (default: {steps.default})" in " ".join(commands["search"].format_help().split())
