"""The ``pipeline`` command's entry point.

Loading the command line (typer, pydantic, the settings) takes about 0.2 s before any command
can take charge of Ctrl-C; an interrupt meanwhile ended in a traceback. Here it is held until
the code is loaded (:mod:`pipeline.cli.held_interrupts`), then ends the command quietly with
130 (143 for SIGTERM made an interrupt by a command), as a command's own handling does
(:mod:`pipeline.cli.interrupts`). This module imports nothing heavy at its top, so it is in
place at once.
"""

from __future__ import annotations

import sys

from pipeline.cli.held_interrupts import interrupts_held


def run() -> None:
    """Run the command line (:func:`pipeline.cli.main.run`)."""
    try:
        with interrupts_held():  # while pydantic builds the settings' classes, among others
            from pipeline.cli.main import run as run_command_line

        run_command_line()
    except KeyboardInterrupt as interrupt:
        # Only a command that loaded pipeline.cli.interrupts turns SIGTERM into an interrupt;
        # importing it here could be interrupted again.
        interrupts = sys.modules.get("pipeline.cli.interrupts")
        sys.exit(interrupts.exit_code(interrupt) if interrupts is not None else 130)
