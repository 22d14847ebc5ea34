"""Ctrl-C and SIGTERM stop a command the same way: it prints its summary, then exits with
130 (Ctrl-C, 128 + SIGINT) or 143 (SIGTERM, 128 + SIGTERM), as shells and supervisors expect.

Inside :func:`signals_interrupt`, SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``,
so the code that handles Ctrl-C handles both; :func:`exit_code` tells them apart.
:func:`exit_on_interrupt` does all of it for a command with nothing to add but one line: the
``with`` blocks and ``finally`` clauses inside it clean up as the interrupt passes through them.
:func:`signals_witnessed` is :func:`signals_interrupt` for code that calls confluent-kafka, and
:func:`confirm` a ``[y/N]`` prompt that Ctrl-C and SIGTERM interrupt as they do the rest.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import BinaryIO

import typer

from pipeline.kafka.interrupts import InterruptWitness, SignalsTaken

#: How long a unit of work may hold back a signal (:class:`HeldInterrupts`).
HOLD_AT_MOST_S = 2.0

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as for Ctrl-C."""


def _terminate(_signal: int, _frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (Ctrl-C raises ``KeyboardInterrupt``
    as always); the previous SIGTERM handler is back afterwards."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_witnessed() -> Iterator[None]:
    """:func:`signals_interrupt`, and a signal that lands inside a C call (confluent-kafka's,
    or one of CPython's own as the handlers are given back at the end) leaves the block as its
    interrupt, not as the ``SystemError`` or ``TypeError`` that call reports instead
    (:class:`~pipeline.kafka.interrupts.InterruptWitness`)."""
    witness = InterruptWitness()
    try:
        with signals_interrupt(), witness:
            yield
    except (TypeError, SystemError):
        if not witness.seen:
            raise
        # Measured: SIGINT as the witness gave the handlers back, "SystemError: <method
        # 'items' of 'dict' objects> returned a result with an exception set".
        interrupt = Terminated() if witness.seen[-1] == signal.SIGTERM else KeyboardInterrupt()
        raise interrupt from None


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


@contextmanager
def exit_on_interrupt(message: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C or SIGTERM within the block ends the command: once the block has cleaned up,
    ``message()`` (one line) goes to stderr and the command exits 130 or 143 (not Click's
    "Aborted!" and 1)."""
    try:
        with signals_interrupt():
            yield
    except KeyboardInterrupt as interrupt:
        typer.echo(message(), err=True)
        raise typer.Exit(exit_code(interrupt)) from None


def confirm(text: str) -> bool:
    """Ask ``text`` on stderr (``[y/N]``); Ctrl-C or SIGTERM at the prompt raise their
    interrupt as anywhere else in the command, which then says what it did and exits 130 or
    143 (``typer.confirm`` alone turns them into "Aborted." and exit 1, as it still does for
    end of input)."""
    try:
        return typer.confirm(text, err=True)
    except typer.Abort as abort:
        interrupt = abort.__context__  # Abort is raised "from None" in the prompt's except clause
        if not isinstance(interrupt, KeyboardInterrupt):
            raise
        typer.echo(err=True)  # past the prompt's line
        raise interrupt from None


class HeldInterrupts:
    """Ctrl-C and SIGTERM held back while a unit of work runs, so that it is done whole.

    ``with HeldInterrupts() as held:`` around a loop, ``with held.holding():`` around each unit
    (a batch of lines: parsed, queued, counted): a signal that comes during a unit is raised
    as it would have been (``KeyboardInterrupt``, or :class:`Terminated` inside
    :func:`signals_interrupt`) once the unit ends; between units (a blocking read, say) at
    once. A unit cut in two by an interrupt left a line read but neither sent nor counted, or
    a delivery report half counted. The hold is bounded: a second signal, or
    :data:`HOLD_AT_MOST_S` (a unit stuck waiting for Kafka: a supervisor sends one SIGTERM,
    then SIGKILL), raises it during the unit. A unit that fails by itself keeps its own error
    (the held signal is dropped: the run stops either way).

    Written by hand: the standard library offers no deferral of signals. Handlers (and the
    timer, SIGALRM) can only be set in the main thread; elsewhere signals are left as they are.
    """

    def __init__(self) -> None:
        self._signals = SignalsTaken(self._arrived)
        self._holding = False
        self._pending: int | None = None
        self._previous_alarm: object = None

    def __enter__(self) -> HeldInterrupts:
        self._signals.take()
        if self._signals.taken:
            self._previous_alarm = signal.signal(signal.SIGALRM, self._held_too_long)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._signals.taken:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous_alarm)  # type: ignore[arg-type]
        self._signals.give_back()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Run one unit; a signal that arrives meanwhile is raised when it ends."""
        self._holding = True
        failed = True
        try:
            yield
            failed = False
        finally:
            self._holding = False
            pending, self._pending = self._pending, None
            if pending is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                if not failed:
                    self._signals.hand_over(pending)

    def _arrived(self, signum: int, _frame: FrameType | None) -> None:
        if self._holding and self._pending is None:
            self._pending = signum
            signal.setitimer(signal.ITIMER_REAL, HOLD_AT_MOST_S)
            return
        # Between units, or a second signal during one: at once, as without this class.
        self._raise_pending(signum)

    def _held_too_long(self, _signum: int, _frame: FrameType | None) -> None:
        if self._pending is not None:
            self._raise_pending(self._pending)

    def _raise_pending(self, signum: int) -> None:
        self._pending = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._signals.hand_over(signum)


def write_whole(
    stream: BinaryIO, data: bytes, on_written: Callable[[int], None] | None = None
) -> None:
    """Write ``data`` to ``stream`` whole, even when a signal held by :class:`HeldInterrupts`
    arrives meanwhile (its handler returns, and the write goes on). ``on_written(n)`` is told
    how many bytes are out so far after each write (a hold that ran out raises in between).

    Written by hand: CPython 3.11's ``BufferedWriter.write`` of more than its buffer, cut by a
    signal whose handler returns, reports success having written only part (measured: 69,632
    of 250,500 bytes reached a pipe whose reader paused). ``os.write`` reports how much it
    wrote, and the rest is written again. A stream without a file descriptor (a test's
    ``BytesIO``) is written as it is.
    """
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(data)
        stream.flush()
        return
    stream.flush()  # what the stream holds goes first
    view = memoryview(data)
    written = 0
    while written < len(data):
        written += os.write(descriptor, view[written:])
        if on_written is not None:
            on_written(written)
