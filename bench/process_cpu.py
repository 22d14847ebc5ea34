"""CPU time by process over a stretch of a benchmark: the processes it names, and every
PostgreSQL process and the Kafka broker of the machine, so it shows where the time went (and
whether the machine's cores were all busy).

``before = cpu_by_pid({"relay": pid})`` ... ``spent = cpu_spent(before, cpu_by_pid(...))`` gives
user + system CPU seconds by name ("relay", "postgresql", "kafka"); :func:`cores_busy` turns
them and the stretch's wall time into how many of the machine's cores they kept busy on average.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import psutil

__all__ = ["CpuFigures", "cores_busy", "cpu_by_pid", "cpu_per_thousand", "cpu_spent", "cpu_table"]

Reading = dict[int, tuple[str, float]]


def cpu_by_pid(pids: Mapping[str, int]) -> Reading:
    """User + system CPU seconds by pid: each named process (all its threads), PostgreSQL's,
    Kafka's."""
    found: Reading = {}
    names = {pid: name for name, pid in pids.items()}
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            command = " ".join(process.info["cmdline"] or [])
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if process.pid in names:
            name = names[process.pid]
        elif (process.info["name"] or "").startswith("postgres"):
            name = "postgresql"
        elif "kafka.Kafka" in command:
            name = "kafka"
        else:
            continue
        found[process.pid] = (name, times.user + times.system)
    return found


def cpu_spent(before: Reading, after: Reading) -> dict[str, float]:
    """CPU seconds spent between two readings, by name. A process that started in between
    counts whole; one that ended in between is lost (PostgreSQL backends come and go, so its
    figure is a lower bound)."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        spent[name] = spent.get(name, 0.0) + max(0.0, seconds - start)
    return spent


def cores_busy(spent: Mapping[str, float], wall_s: float, cores: int | None = None) -> float:
    """The share of the machine's cores the processes of ``spent`` kept busy over ``wall_s``
    seconds (1.0: every core, all the time)."""
    count = cores or os.cpu_count() or 1
    return sum(spent.values()) / (wall_s * count) if wall_s > 0 else 0.0


class CpuFigures(NamedTuple):
    """:func:`cpu_per_thousand`'s medians over the rounds."""

    by_name: dict[str, float]  # CPU ms per 1,000 events of each process
    total: float  # of all of them together (the median of the rounds' totals)
    cores_busy: float  # the share of the cores they kept busy


def cpu_per_thousand(
    rounds: Sequence[tuple[Mapping[str, float], float]], events: int, cores: int | None = None
) -> CpuFigures:
    """Over rounds of ``events`` each, given as (CPU seconds by name, wall seconds): the median
    CPU milliseconds per 1,000 events by name and in all, and the median share of the cores
    kept busy (each a median of its own, so the names' figures need not add up to the total)."""
    names = sorted({name for spent, _ in rounds for name in spent})
    by_name = {
        name: statistics.median(spent.get(name, 0.0) * 1e6 / events for spent, _ in rounds)
        for name in names
    }
    total = statistics.median(sum(spent.values()) * 1e6 / events for spent, _ in rounds)
    busy = statistics.median(cores_busy(spent, wall, cores) for spent, wall in rounds)
    return CpuFigures(by_name, total, busy)


def cpu_table(figures: Mapping[str, CpuFigures], first: str) -> list[str]:
    """A Markdown table of :func:`cpu_per_thousand`'s figures by contender (the column ``first``
    names them): CPU ms per 1,000 events of each process, in all, and the cores busy."""
    names = sorted({name for figure in figures.values() for name in figure.by_name})
    lines = [
        f"| {first} | {' | '.join(names)} | total | cores busy |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for contender, figure in figures.items():
        cells = " | ".join(f"{figure.by_name.get(name, 0.0):,.0f}" for name in names)
        lines.append(f"| {contender} | {cells} | {figure.total:,.0f} | {figure.cores_busy:.0%} |")
    return lines
