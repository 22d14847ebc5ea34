"""The consoles every command prints through: tables on stdout, messages on stderr.

When the output is not a terminal (a pipe, a file, CI), rich would wrap at 80 columns and cut
table cells; there we print at least 160 columns wide so nothing is lost.
"""

from __future__ import annotations

import sys

from rich.console import Console

_MIN_PIPED_WIDTH = 160


def _width(stream_is_terminal: bool) -> int | None:
    return None if stream_is_terminal else _MIN_PIPED_WIDTH


def stdout_console() -> Console:
    return Console(highlight=False, width=_width(sys.stdout.isatty()))


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr.isatty()))


def announce_kafka(bootstrap_servers: str) -> None:
    """Say at once, on stderr, where the command connects to Kafka: when Kafka is away, the
    one-line error comes only after the connection timeout."""
    stderr_console().print(f"connecting to Kafka at {bootstrap_servers}")
