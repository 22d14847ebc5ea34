"""One measurement of the suite, a ROW of bench/results/latest.json, and the figures derived
from its rounds (median, spread, ratio to its baseline, whether the goal is met).

The ratio to a baseline is the median of the per-round ratios when the rounds pair up (as many
rounds on both sides, round i of each run beside the other's round i, as the benchmarks'
interleaved rounds are): a slow spell hits both sides of a round alike, and the ratio of each
round cancels it, where a ratio of the two medians mixes rounds run at different moments (raw
226k/332k/205k against 195k/176k/112k events/s: 0.78x of medians, 0.55x of rounds). Otherwise
(one side lost a round, or a baseline round is 0) it is the ratio of the two values.

The format is shared with the benchmarks that write rows themselves (bench/e2e_latency.py,
bench/scale_out.py); see docs/benchmarks.md. ``goal`` (a readable goal that is not a ratio, such
as the gateway's "3,000 req/s, p99 < 50 ms") is this suite's addition and may be missing.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["throughput", "latency"]


class Latency(TypedDict):
    """Latency percentiles in milliseconds, and how many observations they come from."""

    p50: float | None
    p99: float | None
    p999: float | None
    samples: int | None


class Row(TypedDict):
    """One measurement: a case of a benchmark, its rounds, and how it compares."""

    benchmark: str
    case: str
    stage: str
    kind: Kind
    unit: str
    value: float
    rounds: list[float]
    spread_pct: float | None
    baseline: str | None
    ratio: float | None
    goal_ratio: float | None
    goal_met: bool | None
    cpu_ms_per_event: float | None
    latency_ms: Latency | None
    load_pct: float | None
    processes: int | None
    goal: NotRequired[str | None]
    #: Latency rows: their p99 over their baseline's (a ratio of the rates achieved at the same
    #: offered load would say ~1 whatever the latency), shown as "p99 13.4x <baseline>".
    p99_vs_baseline: NotRequired[float | None]
    #: Why the row cannot be trusted (order violations, failed rounds, a baseline that failed):
    #: its goal is then not met whatever its figures say.
    failure: NotRequired[str | None]


#: Fields a row may lack (older rows, or rows without them).
OPTIONAL_FIELDS = ("goal", "p99_vs_baseline", "failure")
REQUIRED_FIELDS = tuple(name for name in Row.__annotations__ if name not in OPTIONAL_FIELDS)


def spread_pct(rounds: Sequence[float]) -> float | None:
    """(max - min) / median * 100 of the rounds; None with fewer than two rounds (no spread
    can be told from one) or a zero median."""
    if len(rounds) < 2:
        return None
    middle = statistics.median(rounds)
    if middle == 0:
        return None
    return (max(rounds) - min(rounds)) / middle * 100


def measurement(
    benchmark: str,
    case: str,
    stage: str,
    unit: str,
    value: float,
    rounds: Sequence[float],
    *,
    kind: Kind = "throughput",
    cpu_ms_per_event: float | None = None,
    latency_ms: Latency | None = None,
    load_pct: float | None = None,
    processes: int | None = None,
) -> Row:
    """A row without its comparison (baseline, ratio, goal): :func:`compared` adds those."""
    return {
        "benchmark": benchmark,
        "case": case,
        "stage": stage,
        "kind": kind,
        "unit": unit,
        "value": float(value),
        "rounds": [float(r) for r in rounds],
        "spread_pct": spread_pct(rounds),
        "baseline": None,
        "ratio": None,
        "goal_ratio": None,
        "goal_met": None,
        "cpu_ms_per_event": cpu_ms_per_event,
        "latency_ms": latency_ms,
        "load_pct": load_pct,
        "processes": processes,
    }


def round_ratios(rounds: Sequence[float], baseline_rounds: Sequence[float]) -> list[float] | None:
    """Each round's figure over the baseline's figure of the same round; None when the rounds
    do not pair up: a different number of rounds, none, or a baseline round of 0."""
    if not rounds or len(rounds) != len(baseline_rounds) or any(b == 0 for b in baseline_rounds):
        return None
    return [mine / theirs for mine, theirs in zip(rounds, baseline_rounds, strict=True)]


def paired_ratio(rounds: Sequence[float], baseline_rounds: Sequence[float]) -> float | None:
    """The median of :func:`round_ratios` (the official ratio of rounds run side by side);
    None when the rounds do not pair up."""
    ratios = round_ratios(rounds, baseline_rounds)
    return None if ratios is None else float(statistics.median(ratios))


def compared(
    row: Row,
    baseline: Row | None,
    goal_ratio: float | None = None,
    *,
    paired: bool = True,
) -> Row:
    """The row with its baseline's case, the ratio to it and, when a goal ratio is given,
    whether it is met (judged on that ratio). The ratio is the median of the per-round ratios
    (:func:`paired_ratio`) when the rounds pair up, else the ratio of the two values; ``paired``
    False (rounds that did not run side by side) takes the ratio of the values in any case. A
    baseline row (``baseline`` None or the row itself) keeps baseline and ratio None. A
    latency row compares latency, not rate: its ``ratio`` stays None and ``p99_vs_baseline``
    is its p99 over the baseline's (None when either lacks one)."""
    if baseline is None or baseline["case"] == row["case"]:
        return {**row, "goal_ratio": goal_ratio, "goal_met": None}
    if row["kind"] == "latency":
        return {
            **row,
            "baseline": baseline["case"],
            "ratio": None,
            "p99_vs_baseline": p99_ratio(row, baseline),
            "goal_ratio": goal_ratio,
            "goal_met": None,
        }
    ratio = paired_ratio(row["rounds"], baseline["rounds"]) if paired else None
    if ratio is None:
        if baseline["value"] == 0:
            return {**row, "goal_ratio": goal_ratio, "goal_met": None}
        ratio = row["value"] / baseline["value"]
    return {
        **row,
        "baseline": baseline["case"],
        "ratio": ratio,
        "goal_ratio": goal_ratio,
        "goal_met": None if goal_ratio is None else ratio >= goal_ratio,
    }


def p99_ratio(row: Row, baseline: Row) -> float | None:
    """The row's p99 latency over its baseline's; None when either was not measured or the
    baseline's is 0."""
    mine, theirs = row["latency_ms"], baseline["latency_ms"]
    if mine is None or theirs is None or mine["p99"] is None or not theirs["p99"]:
        return None
    return mine["p99"] / theirs["p99"]


def with_goal(row: Row, goal: str, met: bool | None) -> Row:
    """The row with a goal that is not a ratio (a readable text) and whether it is met."""
    return {**row, "goal": goal, "goal_met": met}


def with_failure(row: Row, failure: str) -> Row:
    """The row marked untrustworthy, with why: a goal it has is not met."""
    return {**row, "failure": failure, "goal_met": False if has_goal(row) else row["goal_met"]}


def has_goal(row: Row) -> bool:
    """Whether the row has a goal (a ratio or a text)."""
    return row["goal_ratio"] is not None or bool(row.get("goal"))


def latency(
    p50: float | None, p99: float | None, p999: float | None = None, samples: int | None = None
) -> Latency:
    """Percentiles in milliseconds (None where the benchmark did not measure one)."""
    return {"p50": p50, "p99": p99, "p999": p999, "samples": samples}


def missing_fields(row: dict[str, Any]) -> list[str]:
    """The fields of the common format a row written by a benchmark lacks."""
    return [name for name in REQUIRED_FIELDS if name not in row]
