"""Ctrl-C and SIGTERM that arrive inside a call into confluent-kafka's C code, told apart from
the error that call reports instead.

Python runs a signal handler between bytecodes, which can be inside a call into
confluent-kafka (``produce`` converting headers, ``poll`` running a delivery callback). The
``KeyboardInterrupt`` the handler raises there does not come out of the call: the C code
reports an error of its own instead, e.g. ``TypeError: expected header key to be unicode
string`` or ``SystemError: ... returned NULL without setting an exception``, and a command
meant to print its summary and exit 130 ends in a traceback (measured: 4 of 8 Ctrl-C during
``pipeline produce``, 3 of 5 during a one-process ``pipeline replay``).

:class:`InterruptWitness` puts a handler of its own before the one that was there: it counts
the signal, then calls that handler as before (so Ctrl-C still raises at once, even in a
blocking read). When a ``TypeError`` or ``SystemError`` leaves its block after a signal came,
the previous handler is called again, now in Python code, and its exception
(``KeyboardInterrupt``, or the command's own for SIGTERM) is raised in the error's place, as
it would have been; without a signal the error is the call's own and goes on as it is.

Written by hand: neither the standard library nor confluent-kafka offers it. Handlers can only
be set in the main thread; elsewhere signals are left as they are.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["InterruptWitness", "SignalsTaken"]

_WATCHED = (signal.SIGINT, signal.SIGTERM)


class SignalsTaken:
    """SIGINT and SIGTERM handled by ``handler`` between :meth:`take` and :meth:`give_back`
    (in the main thread; elsewhere signals are left as they are); :meth:`hand_over` does what
    the handler that was there before would have done."""

    def __init__(self, handler: Callable[[int, FrameType | None], None]) -> None:
        self._handler = handler
        self._previous: dict[int, Any] = {}

    @property
    def taken(self) -> bool:
        """Whether the handler is in place (only the main thread can set one)."""
        return bool(self._previous)

    def take(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in _WATCHED:
                # The handler that was there is noted before this one is set: a signal that
                # lands as it is set (a SIGTERM right after start) is handed over to it. Noted
                # after, the hand-over found this handler in its place and called itself.
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handler)

    def give_back(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def hand_over(self, signum: int) -> None:
        handler = self._previous.get(signum, signal.getsignal(signum))
        if handler == self._handler:  # never itself: as if none had been there
            handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        if callable(handler):
            handler(signum, None)  # e.g. raises KeyboardInterrupt
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)  # the default action: the process ends


class InterruptWitness:
    """``with InterruptWitness():`` around a loop of calls into confluent-kafka: the error such
    a call reports for a signal that landed inside it leaves the block as that signal's
    exception."""

    def __init__(self) -> None:
        #: The signals seen while the block ran, in order.
        self.seen: list[int] = []
        self._signals = SignalsTaken(self._witness)

    def __enter__(self) -> InterruptWitness:
        self._signals.take()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._signals.give_back()
        if kind is not None and issubclass(kind, (TypeError, SystemError)) and self.seen:
            self._signals.hand_over(self.seen[-1])  # raises what the signal raises without us

    def _witness(self, signum: int, _frame: FrameType | None) -> None:
        self.seen.append(signum)
        self._signals.hand_over(signum)
