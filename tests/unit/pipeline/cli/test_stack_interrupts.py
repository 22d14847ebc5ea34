"""Ctrl-C exits 130 and SIGTERM 143, with one line, from ``pipeline stack up``, ``pipeline
demo`` and ``pipeline stack logs --follow``; no child is left running.

No stack is needed: ``stack up`` and the demo are stopped while they wait for the stack's lock
(held here, as another ``stack up`` would), ``stack logs --follow`` while it follows a file.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline.cli.stack import STACK_UP_INTERRUPTED
from tests.support.stack_cli import PIPELINE

SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
IDS = ["ctrl-c", "sigterm"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _environment(home: Path) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if "PIPELINE_" not in name}
    return {**environment, "PIPELINE_STACK__HOME": str(home), "COLUMNS": "200"}


@pytest.fixture
def stack_locked(home: Path) -> Iterator[Path]:
    """The stack's lock, held as by another ``stack up``; yields the lock file."""
    lock = home / "state" / "stack.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield lock


def _wait_blocked_on(lock: Path, process: subprocess.Popen[str]) -> None:
    """Until ``process`` waits for ``lock`` (a blocked request in /proc/locks)."""
    inode = f":{lock.stat().st_ino} "
    deadline = time.monotonic() + 60
    while True:
        waiting = [line for line in Path("/proc/locks").read_text().splitlines() if "->" in line]
        if any(f" {process.pid} " in line and inode in line for line in waiting):
            return
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never waited for the stack's lock"
        time.sleep(0.1)


def _stop(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, stderr


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=IDS)
def test_stack_up_interrupted_exits_with_the_signal_code_and_one_line(
    home, stack_locked, signum, code
):
    process = subprocess.Popen(
        [PIPELINE, "stack", "up"],
        env=_environment(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_blocked_on(stack_locked, process)

    returncode, stderr = _stop(process, signum)

    assert returncode == code, stderr
    assert stderr.strip().splitlines() == [
        f"another `pipeline stack` command is starting or stopping the stack in {home}; "
        "waiting for it to finish ...",
        STACK_UP_INTERRUPTED,
    ]


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=IDS)
def test_demo_interrupted_while_starting_the_stack_exits_with_the_signal_code_and_one_line(
    home, stack_locked, signum, code
):
    process = subprocess.Popen(
        [PIPELINE, "demo"],
        env=_environment(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_blocked_on(stack_locked, process)

    returncode, stderr = _stop(process, signum)

    assert returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == (
        "interrupted while starting the stack: what this run had started is stopped"
    )


def _following(home: Path) -> tuple[Path, subprocess.Popen[str]]:
    """``stack logs kafka --follow`` on a log of one line, once it printed that line."""
    log = home / "state" / "kafka" / "kafka.log"  # where a component's log is when not running
    log.parent.mkdir(parents=True)
    log.write_text("first line\n")
    process = subprocess.Popen(
        [PIPELINE, "stack", "logs", "kafka", "--follow"],
        env=_environment(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "first line\n"  # following now
    return log, process


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=IDS)
def test_stack_logs_follow_interrupted_exits_with_the_signal_code_and_stops_tail(
    home, signum, code
):
    log, process = _following(home)
    followers = psutil.Process(process.pid).children(recursive=True)
    assert [child.name() for child in followers] == ["tail"]

    returncode, stderr = _stop(process, signum)

    assert returncode == code, stderr
    assert stderr.strip().splitlines() == [f"stopped following {log}"]
    _, alive = psutil.wait_procs(followers, timeout=30)
    assert alive == []


def test_stack_logs_follow_whose_reader_went_away_ends_with_exit_code_0(home):
    # `pipeline stack logs kafka -f | head -1`: tail died of SIGPIPE, and its -13 became the
    # command's exit code 243.
    log, process = _following(home)
    assert process.stdout is not None
    process.stdout.close()  # as head does once it has its line
    with log.open("a") as more:  # tail's next write finds no reader
        more.write("second line\n")

    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 0, stderr
