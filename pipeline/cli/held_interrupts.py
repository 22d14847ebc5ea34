"""Ctrl-C held back while Python loads the command line's code.

A ``KeyboardInterrupt`` raised while pydantic builds a model class does not always come out as
one: pydantic-core wraps it (``SchemaError``, ``RuntimeError`` from ``__set_name__``) or drops
it ("Exception ignored in ..."), so a Ctrl-C in the first fraction of a second printed a
traceback, or was lost and the command ran to its end. :func:`interrupts_held` keeps SIGINT
from interrupting such code: an interrupt that arrives meanwhile is raised as a plain
``KeyboardInterrupt`` once the code is loaded. This module imports nothing else at its top, so
the entry point (:mod:`pipeline.cli.entry`) has it in place at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["interrupts_held"]


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Within the block SIGINT is noted, not raised; leaving it raises ``KeyboardInterrupt``
    if one came (the previous handler is back first). Outside the main thread, where no handler
    can be set, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        came.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        raise KeyboardInterrupt
