"""An interrupted demo leaves no child process running: each is sent SIGTERM and waited for,
and killed when a second interrupt comes during that wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.cli.demo_services import _child
from pipeline.cli.interrupts import Terminated

#: A child that says it is ready, then ignores SIGTERM (as one busy finishing its work would).
_STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)
_OBEDIENT = "import sys, time\nprint('ready', flush=True)\ntime.sleep(600)\n"


def _started(log: Path) -> None:
    deadline = time.monotonic() + 60
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.05)


def test_an_interrupt_stops_the_children_with_sigterm(tmp_path):
    log = tmp_path / "child.log"

    with (
        pytest.raises(Terminated),
        _child([sys.executable, "-c", _OBEDIENT], {**os.environ}, str(log)) as child,
    ):
        _started(log)
        raise Terminated

    assert child.returncode == -15  # ended by the SIGTERM, not killed


def test_a_second_interrupt_while_a_child_finishes_kills_it(tmp_path):
    log = tmp_path / "child.log"
    waited = []

    stubborn = _child([sys.executable, "-c", _STUBBORN], {**os.environ}, str(log))
    with pytest.raises(KeyboardInterrupt) as raised, stubborn as child:
        _started(log)
        wait = child.wait

        def interrupted_wait(timeout=None):
            waited.append(timeout)
            if len(waited) == 1:  # the wait after SIGTERM: Ctrl-C again
                raise KeyboardInterrupt
            return wait(timeout)

        child.wait = interrupted_wait  # type: ignore[method-assign]
        raise Terminated
    left_running = child.poll() is None
    if left_running:  # not left behind by this test, whatever happened above
        child.kill()
        child.wait()

    assert type(raised.value) is KeyboardInterrupt  # the second interrupt goes on
    assert waited[0] == 30
    assert not left_running
    assert child.returncode == -9  # killed: ignoring SIGTERM did not keep it running


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_ends_when_the_demo_is_killed_outright(tmp_path):
    # The demo itself, killed with SIGKILL (as a test's timeout does): no chance to stop its
    # children, which must end by themselves.
    demo = subprocess.Popen(
        [sys.executable, "-c", _DEMO],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    child_pid = int(demo.stdout.readline())  # type: ignore[union-attr]
    demo.kill()
    demo.wait()

    deadline = time.monotonic() + 30
    while _running(child_pid):
        assert time.monotonic() < deadline, "the child outlived the demo"
        time.sleep(0.05)


#: A stand-in demo: one child made as the demo makes its services, then it waits.
_DEMO = (
    "import subprocess, sys, time\n"
    "from pipeline.cli.child_processes import dying_with_this_process\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "dying_with_this_process('import time; time.sleep(600)')])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
