"""Ctrl-C and SIGTERM stop a command the same way: it prints its summary, then exits with
130 (Ctrl-C, 128 + SIGINT) or 143 (SIGTERM, 128 + SIGTERM), as shells and supervisors expect.

Inside :func:`signals_interrupt`, SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``,
so the code that handles Ctrl-C handles both; :func:`exit_code` tells them apart.
:func:`exit_on_interrupt` does all of it for a command with nothing to add but one line: the
``with`` blocks and ``finally`` clauses inside it clean up as the interrupt passes through them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import typer

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
