"""The suite's runner: a benchmark that writes its rows comes back "ok" with them; one that is
missing, fails, overruns its timeout or writes no fresh JSON comes back "failed" with a
one-line error, and the run goes on. Errors carry no password."""

from __future__ import annotations

import json
import os
import textwrap

from rich.console import Console
from rich.progress import Progress

from bench.suite.profiles import Benchmark
from bench.suite.runner import (
    ROOT,
    benchmark_environment,
    last_line,
    one_line,
    run_all,
    run_benchmark,
)

ROW = {
    "benchmark": "fake", "case": "a case", "stage": "processing", "kind": "throughput",
    "unit": "events/s", "value": 2.0, "rounds": [1.0, 2.0, 3.0], "spread_pct": 100.0,
    "baseline": None, "ratio": None, "goal_ratio": None, "goal_met": None,
    "cpu_ms_per_event": None, "latency_ms": None, "load_pct": None, "processes": None,
}  # fmt: skip


def _bench(tmp_path, body: str, name: str = "fake", **options) -> Benchmark:
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return Benchmark(name, full=("--full",), quick=("--quick",), directory=tmp_path, **options)


def _run(benchmark: Benchmark, tmp_path, quick: bool = True):
    console = Console(file=open(tmp_path / "console.txt", "w"))  # noqa: SIM115
    with Progress(console=console) as progress:
        return run_benchmark(benchmark, quick, tmp_path / "logs", progress, console)


WRITES_ROWS = f"""
    import json, sys
    from pathlib import Path
    row = {ROW!r}
    row["case"] = " ".join(sys.argv[1:])
    out = Path(__file__).parent / "results" / "fake.json"
    out.write_text(json.dumps({{"benchmark": "fake", "quick": True, "rows": [row]}}))
"""


def test_a_benchmark_that_writes_rows_comes_back_ok_with_them_and_its_arguments(tmp_path):
    (tmp_path / "logs").mkdir()
    run = _run(_bench(tmp_path, WRITES_ROWS), tmp_path, quick=True)
    assert run["status"] == "ok" and run["error"] is None
    assert [row["case"] for row in run["rows"]] == ["--quick"]
    assert run["command"] == [".venv/bin/python", "bench/fake.py", "--quick"]
    assert run["seconds"] > 0


def test_a_missing_benchmark_is_failed_with_one_line(tmp_path):
    benchmark = Benchmark("absent", full=(), quick=(), directory=tmp_path)
    run = _run(benchmark, tmp_path)
    assert run["status"] == "failed" and run["rows"] == []
    assert run["error"] == f"{tmp_path / 'absent.py'} does not exist"


def test_a_failing_benchmark_is_failed_with_its_last_line(tmp_path):
    (tmp_path / "logs").mkdir()
    failing = "import sys\nprint('working')\nsys.exit('the broker is gone')\n"
    run = _run(_bench(tmp_path, failing), tmp_path)
    assert run["status"] == "failed"
    assert run["error"].startswith("exit code 1: the broker is gone (log: ")
    assert "\n" not in run["error"]


def test_a_benchmark_that_leaves_an_old_json_is_failed(tmp_path):
    (tmp_path / "logs").mkdir()
    benchmark = _bench(tmp_path, "print('did nothing')\n")
    benchmark.result_json.write_text(json.dumps({"rows": [ROW]}))
    os.utime(benchmark.result_json, (1_000_000, 1_000_000))
    run = _run(benchmark, tmp_path)
    assert run["status"] == "failed"
    assert run["error"].startswith("it wrote no fresh ")


def test_a_benchmark_over_its_timeout_is_stopped_and_failed(tmp_path):
    (tmp_path / "logs").mkdir()
    slow = _bench(tmp_path, "import time\ntime.sleep(60)\n", timeout_quick_s=0.5)
    run = _run(slow, tmp_path)
    assert run["status"] == "failed"
    assert run["error"] == "stopped after its timeout of 0.5 s"
    assert run["seconds"] < 30


def test_the_run_goes_on_after_a_failure(tmp_path):
    good = _bench(tmp_path, WRITES_ROWS)
    missing = Benchmark("absent", full=(), quick=(), directory=tmp_path)
    console = Console(file=open(tmp_path / "console.txt", "w"))  # noqa: SIM115
    runs = run_all((missing, good), True, tmp_path / "logs", console)
    assert [(r["name"], r["status"]) for r in runs] == [("absent", "failed"), ("fake", "ok")]


def test_one_line_hides_a_password_in_a_url_and_joins_lines():
    text = "cannot connect\n  to postgresql+psycopg://pipeline:s3cret@127.0.0.1:5432/db"
    assert one_line(text) == "cannot connect to postgresql+psycopg://pipeline:***@127.0.0.1:5432/db"
    assert len(one_line("x" * 1000)) == 300


def test_last_line_is_the_last_line_with_text(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("first\nTraceback\nValueError: bad\n\n  \n")
    assert last_line(log) == "ValueError: bad"
    assert last_line(tmp_path / "missing.log") == ""


def test_a_benchmark_imports_this_checkout_first_and_prints_unbuffered():
    env = benchmark_environment({"PYTHONPATH": "/elsewhere", "HOME": "/root"})
    assert env["PYTHONPATH"] == os.pathsep.join([str(ROOT), "/elsewhere"])
    assert env["PYTHONUNBUFFERED"] == "1" and env["HOME"] == "/root"
    assert benchmark_environment({})["PYTHONPATH"] == str(ROOT)
