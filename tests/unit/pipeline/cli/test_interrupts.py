"""Ctrl-C and SIGTERM stop a command alike, with the exit codes 130 and 143."""

from __future__ import annotations

import os
import signal

import pytest

from pipeline.cli.interrupts import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
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
