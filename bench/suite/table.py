"""The suite's results as Markdown: the table of every row, the run's facts, the failures.

Pure functions of bench/results/latest.json; the same text goes to bench/results/latest.md and
into docs/benchmarks.md (bench.suite.results_page).
"""

from __future__ import annotations

from bench.suite.latest import Latest, all_rows, failures
from bench.suite.rows import Row

COLUMNS = (
    "stage", "case", "rate", "vs baseline", "spread", "p50 ms", "p99 ms", "p99.9 ms",
    "CPU ms/event", "goal",
)  # fmt: skip


def number(value: float | None) -> str:
    """A figure with as many digits as it deserves: 4,987 · 45.3 · 2.31 · 0.134."""
    if value is None:
        return ""
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def ratio_text(ratio: float, goal_ratio: float | None = None) -> str:
    """A ratio with two decimals ("0.54"), or with as many more as it takes for the figure
    shown not to contradict the goal: 0.497 against a goal of 0.5 is "0.497", not "0.50" next
    to "not met" (the verdict is of the exact ratio)."""
    digits = 2
    if goal_ratio is not None:
        met = ratio >= goal_ratio
        while digits < 9 and (float(f"{ratio:.{digits}f}") >= goal_ratio) != met:
            digits += 1
    return f"{ratio:.{digits}f}"


def _ratio(row: Row, baselines: set[tuple[str, str]]) -> str:
    if row["ratio"] is not None and row["baseline"] is not None:
        return f"{ratio_text(row['ratio'], row['goal_ratio'])}x {row['baseline']}"
    p99 = row.get("p99_vs_baseline")
    if row["kind"] == "latency" and p99 is not None and row["baseline"] is not None:
        # A latency row compares latency: the rates at one offered load are ~1 apart anyway.
        return f"p99 {number(p99)}x {row['baseline']}"
    if (row["benchmark"], row["case"]) in baselines:
        return "baseline"
    return ""


def _goal(row: Row) -> str:
    failure = row.get("failure")
    if row["goal_ratio"] is not None:
        goal = f"≥ {row['goal_ratio']:g}x"
    elif row.get("goal"):
        goal = str(row.get("goal"))
    else:
        return f"failed: {failure}" if failure else ""
    if row["goal_met"] is None:
        return goal
    verdict = f"{goal}: {'met' if row['goal_met'] else 'not met'}"
    return f"{verdict} ({failure})" if failure else verdict


def _spread(row: Row) -> str:
    if row["spread_pct"] is None:
        return f"{len(row['rounds'])} round" if len(row["rounds"]) == 1 else ""
    return f"{row['spread_pct']:.1f}%"


def table_row(row: Row, baselines: set[tuple[str, str]]) -> list[str]:
    """The cells of one row (``baselines``: the (benchmark, case) other rows compare with)."""
    latency = row["latency_ms"] or {"p50": None, "p99": None, "p999": None, "samples": None}
    return [
        row["stage"],
        row["case"],
        f"{number(row['value'])} {row['unit']}",
        _ratio(row, baselines),
        _spread(row),
        number(latency["p50"]),
        number(latency["p99"]),
        number(latency["p999"]),
        number(row["cpu_ms_per_event"]),
        _goal(row),
    ]


def markdown_table(rows: list[Row]) -> list[str]:
    """The Markdown table of the rows, one line each."""
    baselines = {(row["benchmark"], row["baseline"]) for row in rows if row["baseline"]}
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * (len(COLUMNS) - 3) + "---|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c) for c in table_row(row, baselines)) + " |")
    return lines


def run_lines(latest: Latest) -> list[str]:
    """Each benchmark's time and status, and the one-line error of any that failed."""
    lines = []
    for run in latest["benchmarks"]:
        seconds = f"{run['seconds']:.0f} s"
        if run["status"] == "ok":
            lines.append(f"- `{run['name']}`: {seconds}, {len(run['rows'])} rows")
        else:
            lines.append(f"- `{run['name']}`: **failed** after {seconds}: {run['error']}")
    return lines


def machine_line(latest: Latest) -> str:
    machine = latest["machine"]
    parts = [f"{machine['cpus']} CPUs"]
    if machine["cpu_model"]:
        parts.append(machine["cpu_model"])
    if machine["memory_gb"] is not None:
        parts.append(f"{machine['memory_gb']:g} GB")
    parts.append(f"Python {machine['python']}")
    parts.append(machine["platform"])
    load = f"load average {machine['load_average_before']:g} before"
    if machine["load_average_after"] is not None:
        load += f", {machine['load_average_after']:g} after"
    parts.append(load)
    return ", ".join(parts)


def run_summary(latest: Latest) -> str:
    """Profile, date, commit, machine: one line."""
    profile = "quick profile (`make bench QUICK=1`)" if latest["quick"] else "full profile"
    changes = " with uncommitted changes" if latest["uncommitted_changes"] else ""
    return (
        f"{profile}, started {latest['started']}, finished {latest['finished']}, "
        f"commit `{latest['commit']}`{changes}; machine: {machine_line(latest)}."
    )


def latest_markdown(latest: Latest) -> str:
    """bench/results/latest.md."""
    failed = failures(latest)
    lines = [
        "# Benchmark results",
        "",
        run_summary(latest),
        "",
        *markdown_table(all_rows(latest)),
        "",
        "Benchmarks:" if not failed else f"Benchmarks ({len(failed)} failed):",
        "",
        *run_lines(latest),
        "",
    ]
    return "\n".join(lines)
