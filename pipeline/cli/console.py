"""The consoles every command prints through: tables on stdout, messages on stderr.

When the output is not a terminal (a pipe, a file, CI), rich would wrap at 80 columns and cut
table cells; there we print at least 160 columns wide so nothing is lost.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

_MIN_PIPED_WIDTH = 160


def _width(stream_is_terminal: bool) -> int | None:
    return None if stream_is_terminal else _MIN_PIPED_WIDTH


def stdout_console() -> Console:
    return Console(highlight=False, width=_width(sys.stdout.isatty()))


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr.isatty()))


#: How long a command waits for Kafka's first answer before it says where it is connecting.
SLOW_CONNECT_S = 1.0


@contextmanager
def announcing_kafka(bootstrap_servers: str, after_s: float = SLOW_CONNECT_S) -> Iterator[None]:
    """Around a command's first Kafka call: when Kafka has not answered within ``after_s``,
    say on stderr where the command is connecting, so a Kafka that is away is not silence
    until the connection timeout's one-line error. A quick answer prints nothing."""
    timer = threading.Timer(
        after_s, lambda: stderr_console().print(f"connecting to Kafka at {bootstrap_servers} ...")
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        # A note being printed right now finishes before the command says anything else, so it
        # never lands after the command's own error line.
        timer.join()
