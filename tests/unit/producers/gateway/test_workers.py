"""The ``--workers`` supervisor: which exit code the parent gives, and what it says.

The workers here are small Python programs, not gateways: each learns its number (1, 2) from
``WORKER_NUMBER``, which the test's ``Popen`` adds to the environment the supervisor gives it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from producers.gateway import workers
from producers.gateway.workers import (
    exit_code,
    how_it_stopped,
    run_workers,
    supervisor_exit_code,
)

#: Worker 1 fails at once, as one that cannot listen does; worker 2 is still starting (no
#: SIGTERM handler yet: SIGTERM's default action ends it), bounded in case nothing stops it.
ONE_FAILS_WHILE_THE_OTHER_STARTS = """
import os, sys, time
if os.environ["WORKER_NUMBER"] == "1":
    sys.exit(2)
time.sleep(20)
"""

#: Worker 1 serves: stops cleanly on SIGTERM, saying so; worker 2 is killed by SIGKILL once
#: worker 1 serves (a file says so).
THE_SECOND_IS_KILLED = """
import os, pathlib, signal, sys, time
ready = pathlib.Path(sys.argv[1])
if os.environ["WORKER_NUMBER"] == "1":
    def stop(signum, frame):
        print("stopping", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    ready.touch()
    time.sleep(20)
    sys.exit(0)
while not ready.exists():
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""

#: Both still starting: SIGTERM's default action ends them.
BOTH_STARTING = """
import time
time.sleep(20)
"""


#: Writes its arguments to a file named after its number, in the folder of its first argument,
#: then waits for the other workers' files (a worker that stopped first would stop them).
WRITES_ITS_ARGUMENTS = """
import os, pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
(folder / os.environ["WORKER_NUMBER"]).write_text(" ".join(sys.argv[2:]))
deadline = time.monotonic() + 20
while len(list(folder.iterdir())) < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
"""


@pytest.fixture
def numbered_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process the supervisor starts gets its number, from 1, in ``WORKER_NUMBER``."""
    numbers = itertools.count(1)
    real_popen = subprocess.Popen

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs["env"] = {**kwargs["env"], "WORKER_NUMBER": str(next(numbers))}
        return real_popen(args, **kwargs)

    monkeypatch.setattr(workers.subprocess, "Popen", popen)


def test_the_exit_code_is_the_failing_workers_not_the_sigterm_that_stopped_the_other(
    numbered_workers: None,
):
    said: list[str] = []

    code = run_workers([sys.executable, "-c", ONE_FAILS_WHILE_THE_OTHER_STARTS], 2, say=said.append)

    assert code == 2  # not 143, the code of worker 2 killed by the parent's SIGTERM
    pids = said[0].removeprefix("2 gateway workers started (pids ").removesuffix(")")
    first_pid = pids.split(", ")[0]
    assert said[1:] == [
        f"error: gateway worker 1 (pid {first_pid}) exited with code 2; stopping the others"
    ]


def test_a_worker_killed_is_named_once_and_its_code_is_the_exit_code(
    numbered_workers: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    said: list[str] = []
    argv = [sys.executable, "-c", THE_SECOND_IS_KILLED, str(tmp_path / "ready")]

    code = run_workers(argv, 2, say=said.append)

    assert code == 128 + signal.SIGKILL  # 137, as a shell shows a process killed by SIGKILL
    second_pid = said[0].removesuffix(")").split(", ")[1]
    assert said[1:] == [
        f"error: gateway worker 2 (pid {second_pid}) was killed by SIGKILL; stopping the others"
    ]
    assert capfd.readouterr().out.count("stopping") == 1  # worker 1, stopped once, cleanly


def test_the_first_worker_alone_gets_the_first_args(numbered_workers: None, tmp_path: Path):
    # The gateway's start-up notes come from the worker given --announce, once for all.
    argv = [sys.executable, "-c", WRITES_ITS_ARGUMENTS, str(tmp_path), "--worker"]

    run_workers(argv, 3, say=lambda line: None, first_args=["--announce"])

    written = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert written == {"1": "--worker --announce", "2": "--worker", "3": "--worker"}


def test_workers_stopped_by_the_parents_sigterm_while_starting_exit_0():
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("2 gateway workers started"):
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler forwards it

    code = run_workers([sys.executable, "-c", BOTH_STARTING], 2, say=say)

    assert code == 0  # nothing was served, so nothing was lost: not 143
    assert len(said) == 1  # no worker stopped by itself


def test_a_worker_that_stopped_by_itself_gives_its_code_whatever_the_others_give():
    # Worker 2 failed (2); worker 1, told to stop while starting, was killed by that SIGTERM.
    assert supervisor_exit_code([-signal.SIGTERM, 2], first=1, signaled={0}) == 2
    # Worker 1 was killed by SIGKILL; worker 2 stopped at once, with its own code.
    assert supervisor_exit_code([-signal.SIGKILL, 130], first=0, signaled={1}) == 137


def test_without_a_worker_failing_the_exit_code_is_the_highest_of_the_workers():
    assert supervisor_exit_code([0, 0], first=None, signaled={0, 1}) == 0
    assert supervisor_exit_code([0, 2], first=None, signaled={0, 1}) == 2  # undelivered
    assert supervisor_exit_code([130, -signal.SIGTERM], first=None, signaled={0, 1}) == 130
    # One stopped cleanly by itself (0): the others decide, and the gateway was not asked to
    # stop, so it is at least 1 (a supervisor restarting on failure restarts it).
    assert supervisor_exit_code([0, 2], first=0, signaled={1}) == 2
    assert supervisor_exit_code([0, 0], first=0, signaled={1}) == 1


def test_a_sigterm_the_parent_did_not_send_is_not_the_parents():
    assert supervisor_exit_code([-signal.SIGTERM, 0], first=0, signaled={1}) == 143


def test_exit_codes_and_how_a_worker_stopped_read_as_a_shell_shows_them():
    assert [exit_code(code) for code in (0, 2, -9, -15)] == [0, 2, 137, 143]
    assert how_it_stopped(-signal.SIGKILL) == "was killed by SIGKILL"
    assert how_it_stopped(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert how_it_stopped(2) == "exited with code 2"
    assert how_it_stopped(0) == "stopped"


def test_ctrl_c_while_the_workers_start_starts_no_more_and_stops_those_started(
    monkeypatch: pytest.MonkeyPatch,
):
    # The workers started after the signal were never told to stop: the parent waited for a
    # second Ctrl-C.
    real_popen = subprocess.Popen
    started: list[subprocess.Popen[bytes]] = []

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_popen(args, **kwargs))
        if len(started) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the first worker starts
        return started[-1]

    monkeypatch.setattr(workers.subprocess, "Popen", popen)
    script = "import signal, sys, time; time.sleep(30)"  # SIGTERM's default action ends it

    code = run_workers([sys.executable, "-c", script], 3, say=lambda line: None)

    assert len(started) == 1
    assert started[0].returncode == -signal.SIGTERM
    assert code == 0  # stopped by the parent, as asked


def test_metrics_folders_of_parents_that_are_gone_are_removed_and_no_other(tmp_path):
    from producers.gateway.workers import remove_orphaned_metrics_folders

    gone = tmp_path / "pipeline-gateway-metrics-4242-abc"
    living = tmp_path / "pipeline-gateway-metrics-7-def"
    unnamed = tmp_path / "pipeline-gateway-metrics-x1y2z3"  # an older gateway's: owner unknown
    other = tmp_path / "something-else-4242-abc"
    for folder in (gone, living, unnamed, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"")

    removed = remove_orphaned_metrics_folders(tmp_path, alive=lambda pid: pid == 7)

    assert removed == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (living, unnamed, other)
    )


def test_the_metrics_folder_names_its_parent_so_a_later_start_can_tell_it_is_gone(tmp_path):
    import os

    from producers.gateway.workers import remove_orphaned_metrics_folders

    mine = tmp_path / f"pipeline-gateway-metrics-{os.getpid()}-abc"
    mine.mkdir()

    assert remove_orphaned_metrics_folders(tmp_path) == []  # this process lives
    assert mine.exists()
