"""Ctrl-C and SIGTERM stop a command alike, with the exit codes 130 and 143."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from pipeline.cli import interrupts
from pipeline.cli.interrupts import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    HeldInterrupts,
    Terminated,
    exit_code,
    signals_interrupt,
)


def test_sigterm_inside_the_block_raises_terminated_a_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt) as raised, signals_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)

    assert isinstance(raised.value, Terminated)
    assert exit_code(raised.value) == EXIT_TERMINATED == 143


def test_ctrl_c_exits_130():
    assert exit_code(KeyboardInterrupt()) == EXIT_INTERRUPTED == 130


def test_the_previous_sigterm_handler_is_back_after_the_block():
    def mine(_signum, _frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with signals_interrupt():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_during_a_held_unit_is_raised_when_the_unit_ends():
    done = []
    with pytest.raises(KeyboardInterrupt) as raised, signals_interrupt(), HeldInterrupts() as held:
        with held.holding():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("after the signal")  # the unit runs to its end
        done.append("after the unit")  # not reached

    assert done == ["after the signal"]
    assert isinstance(raised.value, Terminated)


def test_a_signal_between_units_is_raised_at_once():
    with pytest.raises(KeyboardInterrupt), HeldInterrupts() as held:
        with held.holding():
            pass
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("not raised at once")


def test_a_second_signal_during_a_held_unit_is_raised_at_once():
    reached = []
    with pytest.raises(KeyboardInterrupt), HeldInterrupts() as held, held.holding():
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("held")
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("not held")

    assert reached == ["held"]


def test_the_handlers_are_back_after_held_interrupts():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with HeldInterrupts():
        assert signal.getsignal(signal.SIGINT) is not before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_unit_stuck_longer_than_the_hold_gets_the_signal_during_it(monkeypatch):
    # One SIGTERM from a supervisor, then SIGKILL: a unit waiting for Kafka must not sit on it.
    monkeypatch.setattr(interrupts, "HOLD_AT_MOST_S", 0.1)
    reached = []
    with pytest.raises(KeyboardInterrupt), HeldInterrupts() as held, held.holding():
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("held")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # stuck
            time.sleep(0.01)
        reached.append("never let go")

    assert reached == ["held"]


def test_a_unit_that_fails_by_itself_keeps_its_own_error():
    with pytest.raises(ValueError, match="its own"), HeldInterrupts() as held, held.holding():
        os.kill(os.getpid(), signal.SIGINT)
        raise ValueError("its own")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left behind


@pytest.mark.parametrize(
    ("signum", "interrupt"),
    [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_lost_in_a_c_call_leaves_signals_witnessed_as_its_interrupt(signum, interrupt):
    # What confluent-kafka's commit_transaction reports for a signal whose handler raised in
    # one of its delivery callbacks.
    with pytest.raises(KeyboardInterrupt) as raised, interrupts.signals_witnessed():
        with contextlib.suppress(KeyboardInterrupt):  # the C code swallows it
            signal.raise_signal(signum)
        raise SystemError("<method 'commit_transaction' ...> returned NULL without an exception")

    assert type(raised.value) is interrupt


def test_a_signal_as_the_handlers_are_given_back_leaves_signals_witnessed_as_its_interrupt(
    monkeypatch,
):
    # Measured: a Ctrl-C as the witness gave the handlers back, at the end of a redrive, was
    # "SystemError: <method 'items' of 'dict' objects> returned a result with an exception
    # set" and a traceback.
    from pipeline.kafka.interrupts import InterruptWitness

    giving_back = InterruptWitness.__exit__

    def cut(self, *args):
        giving_back(self, *args)
        self.seen.append(signal.SIGINT)
        raise SystemError("<method 'items' of 'dict' objects> returned a result with an exception")

    monkeypatch.setattr(InterruptWitness, "__exit__", cut)

    with pytest.raises(KeyboardInterrupt), interrupts.signals_witnessed():
        pass


def test_a_system_error_without_a_signal_stays_what_it_is():
    with pytest.raises(SystemError), interrupts.signals_witnessed():
        raise SystemError("a bug")
