"""An interrupted demo leaves no child process running: each is sent SIGTERM and waited for,
and killed when a second interrupt comes during that wait."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

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
