"""bench/results/latest.json: one run of the suite, every benchmark's status and rows.

Pure: building the document and reading it back; the runner writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypedDict

from bench.suite.rows import Row

SCHEMA = 1
Status = Literal["ok", "failed"]


class Machine(TypedDict):
    """Where the suite ran."""

    cpus: int | None
    cpu_model: str | None
    memory_gb: float | None
    python: str
    platform: str
    load_average_before: float
    load_average_after: float | None


class BenchmarkRun(TypedDict):
    """One benchmark of the run: how it was started, how long it took, its rows."""

    name: str
    command: list[str]
    seconds: float
    status: Status
    error: str | None
    rows: list[Row]


class Latest(TypedDict):
    """The whole document."""

    schema: int
    started: str
    finished: str
    quick: bool
    commit: str
    uncommitted_changes: bool
    machine: Machine
    benchmarks: list[BenchmarkRun]


def ok(name: str, command: list[str], seconds: float, rows: list[Row]) -> BenchmarkRun:
    return {
        "name": name,
        "command": command,
        "seconds": seconds,
        "status": "ok",
        "error": None,
        "rows": rows,
    }


def failed(name: str, command: list[str], seconds: float, error: str) -> BenchmarkRun:
    return {
        "name": name,
        "command": command,
        "seconds": seconds,
        "status": "failed",
        "error": error,
        "rows": [],
    }


def all_rows(latest: Latest) -> list[Row]:
    """Every row of every benchmark, in the order they ran."""
    return [row for run in latest["benchmarks"] for row in run["rows"]]


def failures(latest: Latest) -> list[BenchmarkRun]:
    return [run for run in latest["benchmarks"] if run["status"] != "ok"]


def to_json(latest: Latest) -> str:
    return json.dumps(latest, indent=2) + "\n"


def read_latest(path: Path) -> Latest:
    """The document as written; ValueError when it is not one (schema, fields)."""
    data: Any = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a results document of schema {SCHEMA}")
    for name in Latest.__annotations__:
        if name not in data:
            raise ValueError(f"{path}: no {name!r}")
    return data  # type: ignore[return-value]
