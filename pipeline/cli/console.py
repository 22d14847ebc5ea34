"""The consoles every command prints through: tables on stdout, messages on stderr.

When the output is not a terminal (a pipe, a file, CI), rich would wrap at 80 columns and cut
table cells; there we print at least 160 columns wide so nothing is lost.

A program that logs ECS JSON to stderr (:func:`pipeline.logs.setup.json_console`: a
long-running one with ``PIPELINE_LOGS__CONSOLE=json``, or ``auto`` off a terminal) keeps
every line there JSON: what the stderr console would print is logged instead, as a record of
``pipeline.cli`` (:func:`log_said`), and so it reaches the logs topic with the rest.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, TextIO, cast

from rich.console import Console
from rich.file_proxy import FileProxy
from rich.markup import escape

from pipeline.errors import PipelineError
from pipeline.logs.redact import redact
from pipeline.logs.setup import json_console

_MIN_PIPED_WIDTH = 160


def _width(stream_is_terminal: bool) -> int | None:
    return None if stream_is_terminal else _MIN_PIPED_WIDTH


def _is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is a terminal; a closed one (``None``: the shell's ``<&-``, ``>&-``)
    is not."""
    return stream is not None and stream.isatty()


def stdout_console() -> Console:
    # emoji=False: rich would show a name between colons (``a:b:c``, a topic ``x:smile:``) as
    # an emoji; what a command prints is the text as it is.
    return Console(highlight=False, emoji=False, width=_width(_is_terminal(sys.stdout)))


class StdoutUnwritable(PipelineError):
    """stdout refused what a command printed (a full disk, a closed stdout): one line,
    ``error: cannot write to stdout: ...``, and exit code 2, as any expected failure."""


class StdoutReaderLeft(SystemExit):
    """The reader of stdout went away (``| head -1``): the command ends there, silently and
    with exit code 0, as ``pipeline consume`` does. An exit, not an error: rich's consoles
    and Typer answered the ``BrokenPipeError`` with exit code 1 and no word."""

    def __init__(self) -> None:
        super().__init__(0)


#: What a write to a closed stdout says.
STDOUT_CLOSED = "it is closed"


class _ClosedStdout:
    """What stands for a closed stdout (``>&-``), text and bytes: a command that prints
    nothing succeeds; one that prints fails as on a full disk (:class:`StdoutUnwritable`)."""

    encoding = "utf-8"

    def write(self, data: str | bytes) -> int:
        raise OSError(errno.EBADF, STDOUT_CLOSED)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, STDOUT_CLOSED)

    @property
    def buffer(self) -> _ClosedStdout:
        return self


class _StdoutOrError:
    """``sys.stdout`` while a command runs (:func:`standard_streams`): what refuses to be
    written there is a :class:`StdoutUnwritable` (not a traceback), a reader that went away a
    :class:`StdoutReaderLeft`."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        #: Whether a write or flush failed.
        self.refused = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as error:
            raise self._refused(error) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            raise self._refused(error) from None

    def _refused(self, error: OSError) -> BaseException:
        self.refused = True
        if isinstance(error, BrokenPipeError):
            return StdoutReaderLeft()
        return _unwritable(error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _ClosedStdin(io.TextIOWrapper):
    """What stands for a closed stdin (``<&-``): read, it is empty."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")


@contextmanager
def standard_streams() -> Iterator[None]:
    """Around a whole command (:func:`pipeline.cli.main.run`): a closed stdin reads as empty
    (``pipeline produce T -`` with nothing to read), and stdout is :class:`_StdoutOrError`,
    a closed one failing at its first write. Both as they were afterwards; stdout pointing at
    the null device if it refused something, so that the interpreter's last flush of what is
    still buffered cannot fail again (a traceback after the error line)."""
    stdin, stdout = sys.stdin, sys.stdout
    guarded = _StdoutOrError(stdout if stdout is not None else cast("IO[str]", _ClosedStdout()))
    if stdin is None:
        sys.stdin = _ClosedStdin()
    sys.stdout = cast("TextIO", guarded)
    try:
        yield
    finally:
        try:
            guarded.flush()
        except StdoutReaderLeft:
            pass
        finally:
            if guarded.refused and stdout is not None:
                _point_at_null(stdout)
            sys.stdin, sys.stdout = stdin, stdout


def stdin_is_closed() -> bool:
    """Whether stdin is closed (``<&-``), or stands for a closed one (:func:`standard_streams`)."""
    return sys.stdin is None or isinstance(sys.stdin, _ClosedStdin)


_stderr_console: Console | None = None
_stderr_console_made = threading.Lock()


def stderr_console() -> Console:
    """The process's one console of stderr, whichever module asks. A progress bar drawn on it
    clears its line before any message printed through it, from any module, and draws itself
    again below: printed through a console of its own (a rejected line in ``pipeline
    produce``, the plan of ``pipeline replay``), a message stuck to the end of the bar's line
    and left a copy of the bar on screen."""
    global _stderr_console
    with _stderr_console_made:
        if _stderr_console is None:
            _stderr_console = Console(
                file=cast("IO[str]", _StderrOrNothing()),
                highlight=False,
                emoji=False,
                soft_wrap=True,
                width=_width(sys.stderr.isatty()),
            )
        return _stderr_console


def _stderr() -> IO[str]:
    """``sys.stderr`` as it is now (a test's capture included), but never rich's proxy of it:
    on a terminal a progress bar (rich's ``Live``) swaps ``sys.stderr`` for a proxy that
    prints through the console, and the console writing to that proxy wrote to itself for
    ever (``pipeline replay``, ``record`` and ``produce`` hung on a terminal, Ctrl-C and
    SIGTERM unanswered)."""
    stream = sys.stderr
    while isinstance(stream, FileProxy):
        stream = stream.rich_proxied_file
    return stream


class _StderrOrNothing:
    """``sys.stderr`` (as it is at each call, see :func:`_stderr`) for a console, until its
    reader goes away (``pipeline replay ... 2>&1 | head -1``): from then on what a command says
    there is dropped, and its work goes on and ends with its own exit code. Progress, notes and
    summaries are for a reader; without this the first line after the pipe closed raised
    ``BrokenPipeError`` and click ended the command half-way with exit code 1."""

    def write(self, text: str) -> int:
        if json_console():
            log_said(text)
            return len(text)
        try:
            return _stderr().write(text)
        except BrokenPipeError:
            _drop_stderr()
            return len(text)

    def flush(self) -> None:
        try:
            _stderr().flush()
        except BrokenPipeError:
            _drop_stderr()

    def isatty(self) -> bool:
        # Logged as JSON: no colours nor cursor moves (rich asks before each one).
        return _stderr().isatty() and not json_console()

    def fileno(self) -> int:
        return _stderr().fileno()

    @property
    def encoding(self) -> str:
        return getattr(_stderr(), "encoding", None) or "utf-8"


#: The logger of what the command line says on stderr, when that is logged (see the module doc).
SAID_LOGGER = "pipeline.cli"
#: What a line says it is, by its first word, and the level it is logged at.
_SAID_LEVELS = (("error: ", logging.ERROR), ("warning: ", logging.WARNING))
# What rich writes for colours and links when its console started on a terminal (CSI and OSC).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def log_said(text: str) -> None:
    """What a console printed, as one record of :data:`SAID_LOGGER`: at error for a line
    that starts ``error:`` and at warning for ``warning:`` (the word itself left out: the
    level says it), else at info; colours taken out, nothing for a blank line. The record's
    document is redacted as any other's."""
    line = _ESCAPES.sub("", text).strip()
    if not line:
        return
    level = logging.INFO
    for word, named in _SAID_LEVELS:
        if line.startswith(word):
            line, level = line.removeprefix(word), named
            break
    logging.getLogger(SAID_LOGGER).log(level, line)


def _drop_stderr() -> None:
    """Point file descriptor 2 at the null device: every later write to stderr (this
    process's Python, logging, librdkafka's C code, the interpreter's last flush of what
    ``sys.stderr`` still buffers) succeeds and goes nowhere."""
    _point_at_null(_stderr())


def _unwritable(error: OSError, after: str = "") -> StdoutUnwritable:
    return StdoutUnwritable(f"cannot write to stdout: {error.strerror or error}{after}")


def stdout_refused(error: OSError, after: str = "") -> StdoutUnwritable:
    """What a command raises when stdout refused the bytes it wrote to ``sys.stdout.buffer``
    (a full disk; those writes pass by :func:`standard_streams`' guard): stdout is silenced
    (:func:`silence_stdout`) and this is its one-line error (``after``: what was written
    before, e.g. `` (after 3 messages)``)."""
    silence_stdout()
    return _unwritable(error, after)


def silence_stdout() -> None:
    """After stdout refused a write (its reader went away, a full disk, closed): point its file
    descriptor, if it has one, at the null device, so that the interpreter's last flush of what
    is still buffered cannot fail too (a traceback after the command's own last word)."""
    _point_at_null(sys.stdout)


def _point_at_null(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor, if it has one, at the null device."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a stand-in without a descriptor
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


# C0 controls but tab and newline, DEL and the C1 controls: what a terminal acts on.
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# Unicode's bidirectional formatting characters: a terminal that honours them reorders what
# follows (U+202E shows "gnp.exe" for "exe.png"), so a line could hide what it says.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` with the control characters a terminal would act on written out as
    ``\\x1b``, and Unicode's bidirectional controls as ``\\u202e``: data shown in a table (a
    log message, a dead letter's error, a saga's step) cannot recolour, move the cursor in,
    retitle the terminal of whoever reads it, or reorder what it shows. Rich drops a few
    (bell, carriage return) but passes the escape character through."""
    text = _TERMINAL_CONTROLS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
    return _BIDI_CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


#: What a command that reads stdin says when what it reads is typed at the terminal.
TYPING_HINT = "reading NDJSON from the terminal; end with Ctrl-D"
#: What a command that reads stdin says when stdin is closed (``<&-``).
CLOSED_STDIN_NOTE = "stdin is closed: nothing to read"


def typed_at_the_terminal(reads_stdin: bool) -> bool:
    """Whether a command's input is typed at the terminal: it reads stdin (``reads_stdin``)
    and stdin is a terminal. If so, says so on stderr (:data:`TYPING_HINT`), and the command
    draws no progress bar: its redraws wipe the line being typed. A closed stdin is read as
    empty, and said so (:data:`CLOSED_STDIN_NOTE`)."""
    if reads_stdin and stdin_is_closed():
        stderr_console().print(CLOSED_STDIN_NOTE, highlight=False, markup=False)
    typed = reads_stdin and _is_terminal(sys.stdin)
    if typed:
        stderr_console().print(TYPING_HINT, highlight=False, markup=False)
    return typed


#: How long a command waits for Kafka's first answer before it says where it is connecting.
SLOW_CONNECT_S = 1.0


@contextmanager
def announcing_kafka(bootstrap_servers: str, after_s: float = SLOW_CONNECT_S) -> Iterator[None]:
    """Around a command's first Kafka call: when Kafka has not answered within ``after_s``,
    say on stderr where the command is connecting, so a Kafka that is away is not silence
    until the connection timeout's one-line error. A quick answer prints nothing."""
    timer = threading.Timer(
        after_s,
        lambda: stderr_console().print(
            escape(f"connecting to Kafka at {redact(bootstrap_servers)} ...")
        ),
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
