"""bench/scale.py at the tiny shape: every row measured (numbers > 0), every target evaluated, the section
written with its command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("warm-up", "one trial", "one trial", "final step", "search", "compensation", "prune --metric taylor")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "BENCHMARKS.md"
    argv = ["--shape", "tiny", "--trials", "2", "--validation-tokens", "128", "--seq-len", "64"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), *argv, "--write", "--benchmarks", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, out.read_text(), argv


@pytest.mark.slow
def test_every_row_is_measured(run):
    stdout, _, _ = run
    print(stdout)  # shown when the test fails
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert [r.split("|")[1].strip().split(" (")[0] for r in rows] == list(STEPS)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == 4, line
        assert all(float(c) > 0 for c in cells), line  # seconds, passes, peak GiB, x weights


@pytest.mark.slow
def test_targets_are_evaluated(run):
    stdout, _, _ = run
    verdicts = re.findall(r"^- (.+): ([\d.]+)x .*\(target <= ([\d.]+)x .*\): (met|not met)$", stdout, re.M)
    assert [name for name, *_ in verdicts] == [
        "peak of prune --metric taylor",
        "peak of the search",
        "one trial (no compensation)",
    ]
    for _, value, limit, verdict in verdicts:
        assert verdict == ("met" if float(value) <= float(limit) else "not met")


@pytest.mark.slow
def test_section_is_written_with_its_command(run):
    stdout, written, argv = run
    assert "<!-- scale-tiny-cpu:start -->" in written and "<!-- scale-tiny-cpu:end -->" in written
    assert "Command: `python bench/scale.py " + " ".join(argv) in written
    assert stdout.strip() in written


def _scale():
    """bench/scale.py as a module (bench/ is not a package)."""
    import importlib.util

    if "bench_scale" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "scale.py")
        sys.modules["bench_scale"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["bench_scale"])
    return sys.modules["bench_scale"]


GIB = 2**30
COMMON = {"baseline": GIB, "weights_bytes": 10 * GIB, "validation_pass_s": 10.0}
SEARCH = COMMON | {
    "warmup_s": 30.0,
    "warmup_peak": 13 * GIB,
    "trial_s": 12.0,  # 1.2 passes: not met
    "trial_peak": 12 * GIB,
    "compensated_trial_s": 30.0,
    "compensated_trial_peak": 16 * GIB,
    "trials_without_compensation": 2,
    "compensator": "obs",
    "final_s": 40.0,
    "final_peak": 18 * GIB,  # 1.7x: the search's peak, met
    "search_s": 100.0,
    "search_peak": 18 * GIB,
    "failed_trials": 1,
}
PRUNE = COMMON | {"prune_s": 20.0, "compensation_s": None, "peak": 15 * GIB}  # 1.4x: met
COMPENSATION = COMMON | {"prune_s": 25.0, "compensation_s": 5.0, "peak": 21 * GIB}


def test_rows_and_targets_from_the_jobs_facts():
    scale = _scale()
    args = scale.parse_args(["--shape", "1b", "--trials", "3"])
    results = {"search": SEARCH, "prune": PRUNE, "compensation": COMPENSATION}
    rows = scale.table_rows(args, results)
    assert rows[1].step.startswith("one trial (mean of 2, 1 failed, no compensation")
    assert rows[2].step == "one trial (the fixed recipe, obs compensation)" and rows[2].passes == 3.0
    assert (rows[1].passes, rows[4].weights, rows[5].seconds, rows[6].weights) == (1.2, 1.7, 5.0, 1.4)
    assert scale.targets(args, rows, results) == [
        "- peak of prune --metric taylor: 1.40x weights (target <= 1.6x weights): met",
        "- peak of the search: 1.70x weights (target <= 1.8x weights): met",
        "- one trial (no compensation): 1.20x validation pass (target <= 1.1x validation pass): not met",
    ]


def test_a_failed_job_is_a_row_and_its_target_not_met():
    scale = _scale()
    args = scale.parse_args(["--shape", "1b"])
    results = {"search": {"job": "search", "error": "OutOfMemoryError: no room"}, "prune": PRUNE, "compensation": PRUNE}
    rows = scale.table_rows(args, results)
    lines = scale.format_rows(rows)
    assert "| warm-up (pool statistics, 6 x 128 tokens) | failed: OutOfMemoryError: no room | | | |" in lines
    assert scale.targets(args, rows, results)[1:] == [
        "- peak of the search: not measured (target <= 1.8x weights): not met",
        "- one trial (no compensation): not measured (target <= 1.1x validation pass): not met",
    ]


def test_sequential_mode_skips_the_search_and_checks_the_memory_cap():
    scale = _scale()
    args = scale.parse_args(["--shape", "8b", "--device", "cuda", "--sequential", "--memory-fraction", "0.02"])
    assert scale.jobs(args) == ("prune", "compensation")
    capped = PRUNE | {"cap_bytes": 2 * GIB}
    results = {"prune": capped, "compensation": capped}
    rows = scale.table_rows(args, results)
    assert rows[0].error == "not run (a search refuses sequential mode)" and rows[6].step == "prune --metric wanda"
    assert scale.targets(args, rows, results) == [
        "- GPU memory cap under which sequential mode pruned: 0.20x weights (target <= 0.25x weights): met"
    ]
    failed = {"prune": capped, "compensation": {"job": "compensation", "error": "OutOfMemoryError: x"}}
    assert scale.targets(args, scale.table_rows(args, failed), failed)[0].endswith(": not met (a job failed)")
