"""The machine the suite runs on, and the commit it measures (read only)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil

from bench.suite.latest import Machine


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_before() -> Machine:
    """The machine, with the load average (1 minute) before the run."""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": round(os.getloadavg()[0], 2),
        "load_average_after": None,
    }


def with_load_after(machine: Machine) -> Machine:
    return {**machine, "load_average_after": round(os.getloadavg()[0], 2)}


def _git(root: Path, *arguments: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *arguments], cwd=root, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit(root: Path) -> str:
    """The short hash of HEAD, or "unknown" outside a git checkout."""
    return _git(root, "rev-parse", "--short", "HEAD") or "unknown"


def uncommitted_changes(root: Path) -> bool:
    """Whether tracked files outside bench/results differ from HEAD (the code measured is then
    not exactly the commit's)."""
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)bench/results", ":(exclude)docs/benchmarks.md")  # fmt: skip
    return bool(status)
