"""bench/scale.py at the tiny shape: every row measured (numbers > 0), every target evaluated, the section
written with its command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("warm-up", "one trial", "final step", "search", "compensation", "prune --metric taylor")


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
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, out.read_text(), argv


@pytest.mark.slow
def test_every_row_is_measured(run):
    stdout, _, _ = run
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
