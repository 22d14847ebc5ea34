"""The pure parts shared by bench/e2e_latency.py and bench/scale_out.py: percentiles, the
pacing schedule of an open-model load, rounds cut from one level, and the rows of the suite's
common result format (/tmp/tools/bench_schema.md, issue 17), with their Markdown table.

No I/O here except :func:`write_results` (the JSON and Markdown files) and :func:`machine`
(what the run ran on), so the unit tests in tests/unit/bench/ cover the arithmetic.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "LostSamples",
    "all_samples",
    "capacity_row",
    "cumulative_rates",
    "latency_rows",
    "latency_summary",
    "machine",
    "markdown_table",
    "pacing_schedule",
    "percentile",
    "row",
    "start_rates",
    "with_ratios",
    "write_results",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..1): the smallest value with at least ``q`` of
    the values at or below it. With n values, p99.9 is the largest of them until n >= 1000:
    the rows say how many samples there were, so read p99.9 of a small sample as its maximum."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q}")
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered))  # 1-based
    return ordered[max(rank, 1) - 1]


class LostSamples(SystemExit):
    """A measurement lost samples (a request not answered 202, an effect never written, a
    line never found, a message never consumed): its percentiles would be of the survivors,
    the fast ones, so the benchmark stops with this error (a non-zero exit) instead."""


def all_samples(what: str, spans: Sequence[tuple[float, float]], expected: int) -> list[Any]:
    """``spans`` when it holds all ``expected`` samples; :class:`LostSamples` otherwise."""
    if len(spans) != expected:
        raise LostSamples(
            f"{what}: {expected - len(spans):,} of {expected:,} samples lost "
            "(no percentile of the survivors is reported)"
        )
    return list(spans)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | int]:
    """``{"p50", "p99", "p999", "samples"}`` of latencies in milliseconds (rounded to 0.01)."""
    return {
        "p50": round(percentile(latencies_ms, 0.50), 2),
        "p99": round(percentile(latencies_ms, 0.99), 2),
        "p999": round(percentile(latencies_ms, 0.999), 2),
        "samples": len(latencies_ms),
    }


def pacing_schedule(rate_per_s: float, seconds: float) -> list[float]:
    """Send offsets (seconds from the level's start) of an open-model load: one every
    ``1 / rate``, whatever the answers do, for ``seconds`` (at least one send)."""
    if rate_per_s <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be > 0, got {rate_per_s} and {seconds}")
    count = max(1, round(rate_per_s * seconds))
    return [n / rate_per_s for n in range(count)]


def start_rates(spans: Sequence[tuple[float, float]], parts: int) -> list[float]:
    """Achieved rates of ``parts`` consecutive parts of one paced level, from when the samples
    entered the path (their starts: a 202 received, a saga row created, a log call made): the
    starts in order are cut in parts, and a part's rate is its count over its time, from one
    mean interval before its first start to its last. Completions would say the same when the
    path keeps up, but they come in clumps (a search sees a refresh's worth at once), and a
    path that does not keep up shows it in its latency. These are the rounds of a latency row:
    a level is measured once and cut in parts, so that every row has as many rounds as a
    throughput row without running each level three times."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if len(spans) < max(parts, 2):
        raise ValueError(f"{len(spans)} samples cannot make {parts} parts")
    starts = sorted(start for start, _ in spans)
    interval = (starts[-1] - starts[0]) / (len(starts) - 1)
    rates = []
    for index in range(parts):
        chunk = starts[index * len(starts) // parts : (index + 1) * len(starts) // parts]
        elapsed = chunk[-1] - chunk[0] + interval
        rates.append(len(chunk) / elapsed if elapsed > 0 else float(len(chunk)))
    return rates


def cumulative_rates(spans: Sequence[tuple[float, float]], parts: int) -> list[float]:
    """Rates of a saturation burst (all started at once, or as fast as they went), measured at
    ``parts`` points: the ends in order are cut in parts, and after each part the rate is how
    many completed so far over the time since the first start. The first point includes the
    time to fill the pipeline, so the median of them is a conservative capacity."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if len(spans) < parts:
        raise ValueError(f"{len(spans)} samples cannot make {parts} parts")
    ends = sorted(end for _, end in spans)
    began = min(start for start, _ in spans)
    rates = []
    for index in range(1, parts + 1):
        done = index * len(ends) // parts
        elapsed = ends[done - 1] - began
        rates.append(done / elapsed if elapsed > 0 else float(done))
    return rates


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def row(
    benchmark: str,
    case: str,
    *,
    stage: str,
    kind: str,
    unit: str,
    rounds: Sequence[float],
    baseline: str | None = None,
    goal_ratio: float | None = None,
    cpu_ms_per_event: float | None = None,
    latency_ms: dict[str, float | int] | None = None,
    load_pct: int | None = None,
    processes: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One ROW of the common format; ``value`` is the median of ``rounds`` (the achieved rate on
    latency rows), the ratio is filled by :func:`with_ratios` once the baseline's row exists.
    ``extra`` keys are kept after the common ones (e.g. what the baseline is)."""
    if not rounds:
        raise ValueError(f"{case}: a row needs at least one round")
    value = _median(rounds)
    # None for one round (no spread can be told from one), as bench.suite.rows.spread_pct
    # gives every other benchmark's rows.
    spread = (max(rounds) - min(rounds)) / value * 100 if value and len(rounds) > 1 else None
    return {
        "benchmark": benchmark,
        "case": case,
        "stage": stage,
        "kind": kind,
        "unit": unit,
        "value": round(value, 3),
        "rounds": [round(r, 3) for r in rounds],
        "spread_pct": None if spread is None else round(spread, 1),
        "baseline": baseline,
        "ratio": None,
        "goal_ratio": goal_ratio,
        "goal_met": None,
        "cpu_ms_per_event": None if cpu_ms_per_event is None else round(cpu_ms_per_event, 4),
        "latency_ms": latency_ms,
        "load_pct": load_pct,
        "processes": processes,
        **extra,
    }


def with_ratios(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with ``ratio`` = value / the baseline row's value (the row whose ``case`` its
    ``baseline`` names), and ``goal_met`` where a goal is set (of the exact ratio). A latency
    row compares latency: its ``ratio`` stays None (the rates achieved at one offered load are
    ~1 apart whatever the latency) and ``p99_vs_baseline`` is its p99 over the baseline's. A
    missing baseline is an error: every ratio must come from the same run."""
    rows = list(rows)
    by_case = {r["case"]: r for r in rows}
    done = []
    for r in rows:
        r = dict(r)
        if r["baseline"] is not None:
            base = by_case.get(r["baseline"])
            if base is None:
                raise ValueError(f"{r['case']}: no row {r['baseline']!r} in this run")
            if r["kind"] == "latency":
                r["ratio"] = None
                r["p99_vs_baseline"] = _p99_ratio(r, base)
            else:
                exact = r["value"] / base["value"] if base["value"] else None
                r["ratio"] = None if exact is None else round(exact, 3)
                if r["goal_ratio"] is not None and exact is not None:
                    r["goal_met"] = exact >= r["goal_ratio"]
        done.append(r)
    return done


def _p99_ratio(measured: dict[str, Any], base: dict[str, Any]) -> float | None:
    mine = (measured.get("latency_ms") or {}).get("p99")
    theirs = (base.get("latency_ms") or {}).get("p99")
    return round(mine / theirs, 2) if mine is not None and theirs else None


Spans = list[tuple[float, float]]


def latency_rows(
    benchmark: str,
    stage: str,
    cases: tuple[str, str],
    levels: dict[str, tuple[Spans, Spans]],
    unit: str,
    repeat: int,
    **extra: Any,
) -> list[dict[str, Any]]:
    """The rows of paced levels: ``cases`` = (the measured case, its baseline's case);
    ``levels[load]`` = (the measured (start, end) pairs, the baseline's) at that % of capacity.
    Per load, the baseline's row then the measured one, named ``"<case>, <load>%"``; the
    measured row's ``p99_vs_baseline`` is the ratio of the two p99 latencies."""
    case, baseline_case = cases
    rows = []
    for load, (measured, base) in levels.items():
        pair = []
        for name, spans, baseline in (
            (f"{baseline_case}, {load}%", base, None),
            (f"{case}, {load}%", measured, f"{baseline_case}, {load}%"),
        ):
            pair.append(
                row(
                    benchmark,
                    name,
                    stage=stage,
                    kind="latency",
                    unit=unit,
                    rounds=start_rates(spans, min(repeat, len(spans))),
                    baseline=baseline,
                    latency_ms=latency_summary([(end - start) * 1000 for start, end in spans]),
                    load_pct=int(load),
                    **extra,
                )
            )
        pair[1]["p99_vs_baseline"] = _p99_ratio(pair[1], pair[0])
        rows += pair
    return rows


def capacity_row(
    benchmark: str,
    stage: str,
    case: str,
    burst: Spans,
    unit: str,
    repeat: int,
    **extra: Any,
) -> dict[str, Any]:
    """The saturation run that the levels are percentages of: ``"<case>: capacity (saturation
    run)"``, its rounds the :func:`cumulative_rates` of the burst; no baseline of its own."""
    return row(
        benchmark,
        f"{case}: capacity (saturation run)",
        stage=stage,
        kind="throughput",
        unit=unit,
        rounds=cumulative_rates(burst, min(repeat, len(burst))),
        **extra,
    )


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one Markdown table: case, load, processes, rate, ratio, latency, CPU."""
    lines = [
        "| case | load | processes | value | rounds | vs baseline | p50 ms | p99 ms | p99.9 ms "
        "| samples | CPU ms/event |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        latency = r["latency_ms"] or {}
        if r["ratio"] is not None:
            ratio = f"{r['ratio']:.2f}x of {r['baseline']}"
        elif r.get("p99_vs_baseline") is not None:
            ratio = f"p99 {r['p99_vs_baseline']:.2f}x of {r['baseline']}"
        else:
            ratio = ""
        rounds = ", ".join(f"{x:,.1f}" for x in r["rounds"])
        lines.append(
            f"| {r['case']} | {'' if r['load_pct'] is None else str(r['load_pct']) + '%'} "
            f"| {r['processes'] or ''} | {r['value']:,.1f} {r['unit']} | {rounds} | {ratio} "
            f"| {_number(latency.get('p50'))} | {_number(latency.get('p99'))} "
            f"| {_number(latency.get('p999'))} | {latency.get('samples', '')} "
            f"| {_number(r['cpu_ms_per_event'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What the run ran on, and how busy it was (other jobs share these cores)."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg()[0],
        "niceness": os.nice(0),
    }


def write_results(
    directory: Path,
    name: str,
    *,
    quick: bool,
    started: datetime,
    rows: Sequence[dict[str, Any]],
    title: str,
    notes: Sequence[str] = (),
    **extra: Any,
) -> Path:
    """``<directory>/<name>.json`` in the suite's format and ``<name>.md`` (a title, the notes,
    the table); returns the JSON's path."""
    directory.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC)
    result = {
        "benchmark": name,
        "quick": quick,
        "started": started.isoformat(),
        "seconds": round((finished - started).total_seconds(), 1),
        "machine": machine(),
        "rows": list(rows),
        **extra,
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    text = [f"# {title}", "", *notes, "", markdown_table(rows)]
    (directory / f"{name}.md").write_text("\n".join(text))
    return path
