"""PNG charts of a run (matplotlib, the ``bench`` extra): throughput against the baselines,
latency percentiles, scale-out. Which charts a run has is a pure function of its rows
(:func:`chart_names`), so the results page names them without looking at the files.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.suite.latest import Latest, all_rows
from bench.suite.rows import Row
from bench.suite.table import ratio_text

THROUGHPUT = "throughput.png"
LATENCY = "latency.png"
SCALE_OUT = "scale_out.png"
CAPTIONS = {
    THROUGHPUT: "Throughput of each case as a ratio to its baseline in the same run",
    LATENCY: "Latency percentiles (p50, p99, p99.9 where measured) per case and load",
    SCALE_OUT: "Throughput against the number of processes",
}
_LABEL_CHARS = 70
PERCENTILES = (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"))


def throughput_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r["kind"] == "throughput" and r["ratio"] is not None]


def latency_rows(rows: list[Row]) -> list[Row]:
    return [
        r
        for r in rows
        if r["latency_ms"] is not None
        and any(r["latency_ms"][p] is not None for p in ("p50", "p99", "p999"))
    ]


def scale_out_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r["processes"] is not None and r["kind"] == "throughput"]


def chart_names(latest: Latest) -> list[str]:
    """The charts this run has: a chart is drawn only when some row belongs in it."""
    rows = all_rows(latest)
    found = [
        (THROUGHPUT, throughput_rows(rows)),
        (LATENCY, latency_rows(rows)),
        (SCALE_OUT, scale_out_rows(rows)),
    ]
    return [name for name, members in found if members]


def _singular(word: str) -> str:
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def series_of(row: Row) -> str:
    """The line a scale-out row belongs to: its case without counts and plurals, so
    "gateway, 1 worker" and "gateway, 2 workers" are one line."""
    words = [_singular(w) for w in re.findall(r"[A-Za-z][\w.+-]*", row["case"])]
    return f"{row['stage']}: " + " ".join(words)


def _percentile(row: Row, key: str) -> float:
    """A percentile in ms, 0 (no bar) where not measured."""
    figures = row["latency_ms"]
    value = figures.get(key) if figures is not None else None
    return float(value) if isinstance(value, int | float) else 0.0


def _short(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


_COUNTED = re.compile(r"\b\d+ (process|processor|worker|orchestrator|consumer)(?:es|s)?\b")


def series_label(row: Row) -> str:
    """A scale-out line's legend: the case with its count of processes as N."""
    return _COUNTED.sub(lambda m: f"N {m[1]}{'es' if m[1] == 'process' else 's'}", row["case"])


def _label(row: Row) -> str:
    text = f"{row['stage']}: {row['case']}"
    if row["load_pct"] is not None and "%" not in row["case"]:
        text += f" ({row['load_pct']:g}% load)"
    return _short(text, _LABEL_CHARS)


def draw_charts(latest: Latest, directory: Path) -> list[Path]:
    """Draw the run's charts into ``directory`` (charts of an earlier run that this one does
    not have are removed); the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    rows = all_rows(latest)
    names = chart_names(latest)
    for stale in (THROUGHPUT, LATENCY, SCALE_OUT):
        if stale not in names:
            (directory / stale).unlink(missing_ok=True)
    profile = "quick" if latest["quick"] else "full"
    subtitle = f"{profile} run, {latest['started'][:10]}, commit {latest['commit']}"
    written = []

    if THROUGHPUT in names:
        members = throughput_rows(rows)
        stages = sorted({r["stage"] for r in members})
        colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(stages)}
        figure, axes = plt.subplots(figsize=(13, 1.4 + 0.38 * len(members)))
        positions = list(range(len(members)))[::-1]
        axes.barh(
            positions,
            [r["ratio"] or 0.0 for r in members],
            color=[colors[r["stage"]] for r in members],
        )
        for y, row in zip(positions, members, strict=True):
            if row["goal_ratio"] is not None:
                axes.plot([row["goal_ratio"]], [y], marker="|", markersize=16, color="black")
            axes.annotate(
                f"{ratio_text(row['ratio'] or 0.0, row['goal_ratio'])}x "
                f"{_short(row['baseline'] or '', 40)}",
                (row["ratio"] or 0.0, y),
                xytext=(4, -3),
                textcoords="offset points",
                fontsize=7,
            )
        axes.set_yticks(positions, [_label(r) for r in members], fontsize=8)
        axes.axvline(1.0, color="grey", linewidth=1)
        axes.set_xscale("log")
        axes.set_xlabel("ratio to the baseline named beside the bar (log scale; | marks the goal)")
        axes.set_xlim(right=max(r["ratio"] or 1.0 for r in members) * 8)
        axes.set_title(f"{CAPTIONS[THROUGHPUT]}\n{subtitle}", fontsize=10)
        figure.tight_layout()
        written.append(directory / THROUGHPUT)
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)

    if LATENCY in names:
        members = latency_rows(rows)
        figure, axes = plt.subplots(figsize=(11, 1.4 + 0.55 * len(members)))
        bar = 0.27
        centers = [float(len(members) - 1 - i) for i in range(len(members))]
        for offset, (key, name) in enumerate(PERCENTILES):
            axes.barh(
                [center + (1 - offset) * bar for center in centers],
                [_percentile(row, key) for row in members],
                height=bar,
                label=name,
            )
        axes.set_yticks(centers, [_label(r) for r in members], fontsize=8)
        axes.set_xscale("log")
        axes.set_xlabel("milliseconds (log scale; a missing bar was not measured)")
        axes.legend(loc="lower right", fontsize=8)
        axes.set_title(f"{CAPTIONS[LATENCY]}\n{subtitle}", fontsize=10)
        figure.tight_layout()
        written.append(directory / LATENCY)
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)

    if SCALE_OUT in names:
        members = scale_out_rows(rows)
        panels = sorted({(r["stage"], r["unit"]) for r in members})
        figure, all_axes = plt.subplots(
            1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False
        )
        for axes, (stage, unit) in zip(all_axes[0], panels, strict=True):
            inside = [r for r in members if (r["stage"], r["unit"]) == (stage, unit)]
            series: dict[str, list[Row]] = {}
            for row in inside:
                series.setdefault(series_of(row), []).append(row)
            for points in series.values():
                points.sort(key=lambda r: r["processes"] or 0)
                axes.plot(
                    [r["processes"] for r in points],
                    [r["value"] for r in points],
                    marker="o",
                    label=_short(series_label(points[0]), 60),
                )
            axes.set_xlabel("processes")
            axes.set_ylabel(unit)
            axes.set_title(f"{stage} ({unit})", fontsize=10)
            axes.set_xticks(sorted({r["processes"] or 0 for r in inside}))
            axes.set_ylim(bottom=0)
            axes.legend(fontsize=7)
        figure.suptitle(f"{CAPTIONS[SCALE_OUT]}\n{subtitle}", fontsize=10)
        figure.tight_layout()
        written.append(directory / SCALE_OUT)
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    return written
