"""Running the benchmarks: each as a subprocess of its own, one after the other, with a live
progress display (rich: which benchmark, its last output line, the time elapsed), and its JSON
read back and converted to rows.

A benchmark that is missing, exits non-zero, overruns its timeout, writes no fresh JSON or a
JSON its adapter cannot read is recorded "failed" with a one-line error, and the suite goes on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bench.suite.adapters import AdapterError, rows_of
from bench.suite.latest import BenchmarkRun, failed, ok
from bench.suite.profiles import BENCH_DIR, Benchmark
from bench.suite.rows import Row

ROOT = BENCH_DIR.parent
_SECRET_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_ERROR_CHARS = 300


def one_line(text: str) -> str:
    """A message as one line, without a password embedded in a URL, and not too long."""
    line = " ".join(text.split())
    line = _SECRET_IN_URL.sub(r"\1***@", line)
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 1] + "…"


def last_line(log: Path) -> str:
    """The last non-empty line of a log (its error, when the program failed)."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 8192))
            tail = file.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def benchmark_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A benchmark's environment: output unbuffered (its progress shows as it comes), and this
    checkout first on the import path, so the code measured is the checkout's own even where the
    virtualenv's editable install points at another one."""
    path = [str(ROOT), *(p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(path)}


def shown_command(benchmark: Benchmark, arguments: tuple[str, ...]) -> list[str]:
    """The command as a reader runs it from the repository's root."""
    return [".venv/bin/python", f"bench/{benchmark.name}.py", *arguments]


def run_benchmark(
    benchmark: Benchmark, quick: bool, logs: Path, progress: Progress, console: Console
) -> BenchmarkRun:
    """Run one benchmark and read its rows; never raises for the benchmark's own failure."""
    began = time.monotonic()
    arguments = benchmark.arguments(quick)
    command = shown_command(benchmark, arguments)
    if not benchmark.script.is_file():
        return failed(benchmark.name, command, 0.0, f"{_shown(benchmark.script)} does not exist")
    started_wall = time.time()
    log = logs / f"{benchmark.name}.log"
    task = progress.add_task(benchmark.name, total=None)
    timeout = benchmark.timeout_s(quick)
    error: str | None = None
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(benchmark.script), *arguments],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=benchmark_environment(os.environ),
        )
        try:
            while process.poll() is None:
                if time.monotonic() - began > timeout:
                    process.kill()
                    process.wait()
                    error = f"stopped after its timeout of {timeout:g} s"
                    break
                latest = escape(one_line(last_line(log))[:80])
                progress.update(task, description=f"{benchmark.name}  [dim]{latest}[/dim]")
                time.sleep(0.5)
        except KeyboardInterrupt:
            process.kill()
            process.wait()
            raise
    seconds = time.monotonic() - began
    progress.remove_task(task)
    if error is None and process.returncode != 0:
        error = f"exit code {process.returncode}: {one_line(last_line(log))} (log: {log})"
    if error is None:
        error, rows = _rows(benchmark, started_wall)
    if error is not None:
        console.print(
            f"[red]✗ {benchmark.name}[/red] failed after {seconds:.0f} s: {escape(error)}"
        )
        return failed(benchmark.name, command, seconds, one_line(error))
    console.print(f"[green]✓ {benchmark.name}[/green] {seconds:.0f} s, {len(rows)} rows")
    return ok(benchmark.name, command, seconds, rows)


def _rows(benchmark: Benchmark, started_wall: float) -> tuple[str | None, list[Row]]:
    path = benchmark.result_json
    try:
        if path.stat().st_mtime < started_wall:
            return f"it wrote no fresh {_shown(path)}", []
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return f"it wrote no {_shown(path)}", []
    except (OSError, ValueError) as error:
        return f"could not read {_shown(path)}: {error}", []
    try:
        return None, rows_of(benchmark.name, data)
    except AdapterError as error:
        return f"{_shown(path)}: {error}", []


def _shown(path: Path) -> str:
    """A path as from the repository's root when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_all(
    benchmarks: tuple[Benchmark, ...], quick: bool, logs: Path, console: Console
) -> list[BenchmarkRun]:
    """Every benchmark in turn, with the suite's progress."""
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[BenchmarkRun] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("suite", total=len(benchmarks))
        for number, benchmark in enumerate(benchmarks, start=1):
            progress.update(
                overall, description=f"suite: {number}/{len(benchmarks)} ({benchmark.name})"
            )
            runs.append(run_benchmark(benchmark, quick, logs, progress, console))
            progress.advance(overall)
        progress.update(overall, description=f"suite: {len(benchmarks)} benchmarks")
    return runs
