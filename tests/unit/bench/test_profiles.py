"""The suite's profiles: every benchmark of bench/ is in them, and every benchmark that has
rounds runs 3 of them in both profiles."""

from __future__ import annotations

import re
from pathlib import Path

from bench.suite.profiles import BENCHMARKS

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_the_suite_runs_every_benchmark_that_writes_results():
    """A benchmark writes into bench/results (its RESULTS folder); helpers it starts do not."""
    names = {b.name for b in BENCHMARKS}
    writers = {path.stem for path in BENCH.glob("*.py") if "RESULTS" in path.read_text()}
    assert writers
    assert writers <= names


def test_benchmarks_with_rounds_run_three_in_both_profiles():
    """Given as ``--repeat 3``, or the script's own default of 3."""
    for benchmark in BENCHMARKS:
        if not (BENCH / f"{benchmark.name}.py").exists():
            continue
        source = (BENCH / f"{benchmark.name}.py").read_text()
        if '"--repeat"' not in source:
            continue
        default = re.search(r'"--repeat",\s*type=int,\s*default=(\d+)', source)
        for quick in (False, True):
            arguments = benchmark.arguments(quick)
            if "--repeat" in arguments:
                rounds = arguments[arguments.index("--repeat") + 1]
            else:
                rounds = default[1] if default else "?"
            assert rounds == "3", (benchmark.name, quick, rounds)
