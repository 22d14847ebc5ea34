"""The consoles' stderr once its reader went away: what a command says there is dropped, and
the command goes on to its own end and exit code."""

from __future__ import annotations

import subprocess
import sys

SAYS_THEN_FINISHES = """
from pipeline.cli.console import stderr_console
console = stderr_console()
for n in range(100):
    console.print("progress", n)
print("finished")
"""


def test_a_command_whose_stderr_reader_went_away_finishes_with_its_own_exit_code():
    process = subprocess.Popen(
        [sys.executable, "-c", SAYS_THEN_FINISHES], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    process.stderr.close()  # as `2>&1 | head -1` does after its line, here before the first

    out, _ = process.communicate(timeout=60)

    assert (process.returncode, out) == (0, b"finished\n")


def test_stderr_that_is_read_gets_every_line():
    result = subprocess.run(
        [sys.executable, "-c", SAYS_THEN_FINISHES], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0
    assert result.stderr.splitlines() == [f"progress {n}" for n in range(100)]
