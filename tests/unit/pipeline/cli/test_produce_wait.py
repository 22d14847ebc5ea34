"""pipeline produce's last wait for what it sent: an interrupt during it still gets the
summary (a first one is noted and the wait goes on, without cutting a delivery callback in
two), a second one stops it, and one that lands in the client's callbacks is no traceback."""

from __future__ import annotations

import os
import signal

import pytest

from pipeline.cli.interrupts import Terminated
from pipeline.cli.produce import wait_for_sent


def test_a_first_interrupt_during_the_last_wait_says_so_and_lets_the_wait_finish(capsys):
    counted = []

    def flush() -> str | None:
        # As in a delivery callback: the signal lands between its steps, which all run.
        os.kill(os.getpid(), signal.SIGINT)
        counted.append("acknowledged")
        return None

    unacknowledged, interrupt = wait_for_sent(flush)

    assert (unacknowledged, counted) == (None, ["acknowledged"])
    assert isinstance(interrupt, KeyboardInterrupt)
    assert "interrupted; waiting for what was sent" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_first_sigterm_during_the_last_wait_is_a_terminated_interrupt():
    def flush() -> str | None:
        os.kill(os.getpid(), signal.SIGTERM)
        return "2 events not acknowledged"

    unacknowledged, interrupt = wait_for_sent(flush)

    assert unacknowledged == "2 events not acknowledged"
    assert isinstance(interrupt, Terminated)


def test_a_second_interrupt_during_the_last_wait_stops_it():
    def flush() -> str | None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return None

    with pytest.raises(KeyboardInterrupt):
        wait_for_sent(flush)


def test_a_second_signal_that_lands_in_the_clients_callbacks_is_an_interrupt_not_an_error():
    # What confluent-kafka reports when the raising Ctrl-C lands in a delivery callback.
    def flush() -> str | None:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the second: its handler raises here
        except KeyboardInterrupt:
            raise SystemError("flush returned NULL without setting an exception") from None
        return None

    with pytest.raises(KeyboardInterrupt):
        wait_for_sent(flush)
