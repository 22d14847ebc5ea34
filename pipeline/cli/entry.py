"""The ``pipeline`` command's entry point.

Loading the command line (typer, pydantic, the settings) takes about 0.2 s before any command
can take charge of Ctrl-C; an interrupt meanwhile ended in a traceback. Here it is held until
the code is loaded (:mod:`pipeline.cli.held_interrupts`), then ends the command quietly with
130 (143 for SIGTERM made an interrupt by a command), as a command's own handling does
(:mod:`pipeline.cli.interrupts`). This module imports nothing heavy at its top, so it is in
place at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from types import FrameType

from pipeline.cli.held_interrupts import interrupts_held


def run() -> None:
    """Run the command line (:func:`pipeline.cli.main.run`)."""
    # First in, so last of the exit's callbacks (they run last in, first out).
    atexit.register(ignore_ctrl_c_from_here)
    stderr_to_null_if_closed()
    try:
        with interrupts_held():  # while pydantic builds the settings' classes, among others
            from pipeline.cli.main import run as run_command_line

        run_command_line()
    except SystemExit as done:
        _exit_at_ctrl_c(done.code)
        raise
    except KeyboardInterrupt as interrupt:
        # Only a command that loaded pipeline.cli.interrupts turns SIGTERM into an interrupt;
        # importing it here could be interrupted again.
        interrupts = sys.modules.get("pipeline.cli.interrupts")
        sys.exit(interrupts.exit_code(interrupt) if interrupts is not None else 130)


def stderr_to_null_if_closed() -> None:
    """A closed stderr (the shell's ``2>&-``; Python then has no ``sys.stderr``) becomes the
    null device: what the command says there goes nowhere and it runs to its own exit code.
    Every command, ``--version`` included, ended at once with exit code 1 and no output (the
    console asked ``None`` whether it was a terminal). File descriptor 2 itself is pointed at
    the null device, not left free: the next file or socket opened would have taken it, and
    the Kafka client's C code would have written its lines into that."""
    if sys.stderr is not None:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    if null != 2:  # descriptor 2 was free, yet a lower one too (stdin closed as well)
        os.dup2(null, 2)
        os.close(null)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115 (for the process's life)


def _exit_at_ctrl_c(code: object) -> None:
    """Once the command has ended (its output written, its exit code known), a Ctrl-C while
    Python winds down (the logs' last flush to Kafka, say) ends the process at once with the
    command's own exit code: the default handler, put back as Python finalizes, made it a
    death by SIGINT (130) after a run that had finished, with no line saying it was cut."""
    status = code if isinstance(code, int) else (0 if code is None else 1)

    def leave(_signum: int, _frame: FrameType | None) -> None:
        sys.stdout.flush()
        os._exit(status)

    with contextlib.suppress(ValueError):  # not the main thread: left as it is
        signal.signal(signal.SIGINT, leave)


def ignore_ctrl_c_from_here() -> None:
    """The exit's last callback: what is left is Python's own teardown, which puts Ctrl-C's
    default action back first (for a handler set in Python, as :func:`_exit_at_ctrl_c`'s), so a
    Ctrl-C in its last tens of milliseconds killed a finished command (130, after its whole
    output). An ignored signal stays ignored to the end."""
    with contextlib.suppress(ValueError):  # not the main thread: left as it is
        signal.signal(signal.SIGINT, signal.SIG_IGN)
