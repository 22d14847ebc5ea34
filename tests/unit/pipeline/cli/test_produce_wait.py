"""pipeline produce's last wait for what it sent: an interrupt during it still gets the
summary (a first one waits again), and one that lands in the client's callbacks is no
traceback."""

from __future__ import annotations

import os
import signal

import pytest

from pipeline.cli.produce import wait_for_sent


def test_a_first_interrupt_during_the_last_wait_says_so_and_waits_again(capsys):
    calls = []

    def flush() -> str | None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return None

    unacknowledged, interrupt = wait_for_sent(flush)

    assert (unacknowledged, calls) == (None, [0, 1])
    assert isinstance(interrupt, KeyboardInterrupt)
    assert "interrupted; waiting for what was sent" in capsys.readouterr().err


def test_a_second_interrupt_during_the_last_wait_stops_it():
    def flush() -> str | None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_for_sent(flush)


def test_a_signal_that_lands_in_the_clients_callbacks_is_an_interrupt_not_a_system_error():
    # What confluent-kafka reports when Ctrl-C lands in a delivery callback run inside flush().
    fired = []

    def flush() -> str | None:
        if not fired:
            fired.append(True)
            try:
                os.kill(os.getpid(), signal.SIGINT)  # the handler raises KeyboardInterrupt here
            except KeyboardInterrupt:
                raise SystemError("flush returned NULL without setting an exception") from None
        return "3 events not acknowledged"

    unacknowledged, interrupt = wait_for_sent(flush)

    assert unacknowledged == "3 events not acknowledged"
    assert isinstance(interrupt, KeyboardInterrupt)
