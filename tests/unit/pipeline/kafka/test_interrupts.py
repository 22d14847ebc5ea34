"""InterruptWitness: a signal still raises at once; one a C call swallowed is raised again."""

from __future__ import annotations

import signal

import pytest

from pipeline.kafka.interrupts import InterruptWitness, SignalsTaken


class Stopped(Exception):
    pass


def _swallowing_call() -> None:
    """What confluent-kafka's C code does with a KeyboardInterrupt raised inside it."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        raise TypeError("expected header key to be unicode string") from None


def test_ctrl_c_in_python_code_raises_keyboard_interrupt_at_once_and_is_seen():
    with InterruptWitness() as witness, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert witness.seen == [signal.SIGINT]


def test_ctrl_c_swallowed_by_a_call_comes_out_as_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt), InterruptWitness() as witness:
        _swallowing_call()
    assert witness.seen == [signal.SIGINT]


def test_a_calls_own_error_without_a_signal_is_left_as_it_is():
    with pytest.raises(TypeError, match="bad header"), InterruptWitness() as witness:
        raise TypeError("bad header")
    assert witness.seen == []


def test_sigterm_raises_what_the_commands_own_handler_raises_and_handlers_are_put_back():
    def stop(_signum, _frame):
        raise Stopped

    before = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped), InterruptWitness():
            try:
                signal.raise_signal(signal.SIGTERM)
            except Stopped:
                raise SystemError("returned NULL without setting an exception") from None
        assert signal.getsignal(signal.SIGTERM) is stop
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_signal_that_lands_as_the_handler_is_set_goes_to_the_one_there_before(monkeypatch):
    class Terminated(Exception):
        pass

    def before(signum, frame):
        raise Terminated(signum)

    original = signal.signal
    original(signal.SIGTERM, before)
    taken = SignalsTaken(lambda signum, frame: taken.hand_over(signum))

    def set_and_deliver(signum, handler):
        previous = original(signum, handler)
        if signum == signal.SIGTERM:  # the signal arrives the moment it is set
            handler(signum, None)
        return previous

    monkeypatch.setattr(signal, "signal", set_and_deliver)
    try:
        with pytest.raises(Terminated):  # not a RecursionError
            taken.take()
    finally:
        monkeypatch.undo()
        taken.give_back()
        original(signal.SIGTERM, signal.SIG_DFL)
