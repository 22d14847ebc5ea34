"""Checks shared by the tests of bench/suite's adapters: rows by case, the official ratio of
paired rounds, and the common format every row has."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from bench.suite.rows import REQUIRED_FIELDS


def by_case(rows: Iterable[Any]) -> dict[str, Any]:
    return {row["case"]: row for row in rows}


def of_rounds(mine: Sequence[float], theirs: Sequence[float]) -> float:
    """The median of the per-round ratios: the official ratio of paired rounds."""
    return statistics.median(m / t for m, t in zip(mine, theirs, strict=True))


def assert_common_format(rows: Sequence[Any], benchmark: str) -> None:
    assert rows
    for row in rows:
        assert all(name in row for name in REQUIRED_FIELDS)
        assert row["benchmark"] == benchmark
        assert row["kind"] in ("throughput", "latency")
    assert len({row["case"] for row in rows}) == len(rows), "cases are unique"
