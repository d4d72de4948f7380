"""bench/search_efficiency.py --quick (the tiny model, a few trials): every part runs, every target is
evaluated against its limit, the cached run resumes without recomputing, and the section is written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "search_efficiency.py"


def bench(*argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *argv], capture_output=True, text=True, timeout=1200, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search_efficiency")
    out, benchmarks = folder / "out", folder / "BENCHMARKS.md"
    proc = bench("--out", str(out), "--write", "--benchmarks", str(benchmarks))
    return proc.stdout, out, benchmarks


@pytest.mark.slow
def test_every_part_is_measured(run):
    stdout, out, _ = run
    print(stdout)  # shown when the test fails
    entries = json.loads((out / "results.json").read_text())["entries"]
    kinds = {key.split("/")[0] for key in entries}
    assert {"dense", "fixed", "fixed-test", "search", "prior", "scaling"} <= kinds
    assert not [k for k, v in entries.items() if "error" in v and k.startswith(("search", "scaling", "dense"))]
    searches = [v for k, v in entries.items() if k.startswith("search/")]
    assert searches and all(len(s["incumbents"]) == 3 for s in searches)  # --quick: 3 trials each
    assert all(v > 1 for s in searches for v in s["test_ppl"].values())  # perplexities


@pytest.mark.slow
def test_every_target_is_judged_by_its_value(run):
    stdout, _, _ = run
    upper = re.findall(r"^- .+: ([\d.]+)(x| trials) \(target <= ([\d.]+)(?:x| trials)\): (met|not met)$", stdout, re.M)
    lower = re.findall(r"^- .+: ([\d.]+)x linear \(target >= ([\d.]+)x linear\): (met|not met)$", stdout, re.M)
    assert len(upper) == 4  # in-domain and lodo against the best fixed recipe, GP against random twice
    assert len(lower) == 1  # 2 workers, the only count within the tiny run's range
    for value, _, limit, verdict in upper:
        assert verdict == ("met" if float(value) <= float(limit) else "not met")
    for value, limit, verdict in lower:
        assert verdict == ("met" if float(value) >= float(limit) else "not met")


@pytest.mark.slow
def test_a_resumed_run_rebuilds_the_tables_from_its_cache(run):
    stdout, out, _ = run
    before = (out / "results.json").read_text()
    again = bench("--out", str(out), "--resume")
    assert (out / "results.json").read_text() == before
    strip = re.compile(r"^Command: .*$", re.M)
    assert strip.sub("", again.stdout) == strip.sub("", stdout)


@pytest.mark.slow
def test_a_cached_run_is_not_overwritten_silently(run):
    _, out, _ = run
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode != 0 and "--resume" in proc.stderr


@pytest.mark.slow
def test_section_is_written_with_its_command(run):
    _, _, benchmarks = run
    written = benchmarks.read_text()
    for name in ("search-efficiency-quick", "search-efficiency-quick-scaling"):
        assert f"<!-- {name}:start -->" in written and f"<!-- {name}:end -->" in written
    assert written.count("python bench/search_efficiency.py --quick") == 2


@pytest.mark.slow
def test_one_part_prints_its_section_alone(run):
    _, out, _ = run
    stdout = bench("--out", str(out), "--resume", "--parts", "scaling").stdout
    assert "## Search efficiency: parallel trials" in stdout and "Strong fixed recipes" not in stdout
