"""The consoles: their stderr once its reader went away (what a command says there is dropped,
and the command goes on to its own end and exit code), and text printed as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_a_name_between_colons_is_printed_as_it_is_not_as_an_emoji():
    # `pipeline process a:b:c` said "got 'a🅱c'": rich read ":b:" as an emoji's name.
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pipeline")), "process", "a:b:c"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: expected MODULE:PROCESSOR (e.g. consumers.orders_service:processor), got 'a:b:c'"
    )


WRITES_UNDER_A_PROXY = """
import io, sys
from rich.file_proxy import FileProxy
from pipeline.cli.console import stderr_console
console = stderr_console()
underneath = io.StringIO()
sys.stderr = FileProxy(console, underneath)  # what a progress bar does on a terminal
console.print("progress 1")
print("written: " + underneath.getvalue().strip())
"""


def test_the_stderr_console_writes_beneath_a_progress_bars_proxy_of_itself():
    # Before, it wrote to the proxy, which printed through the console: for ever.
    result = subprocess.run(
        [sys.executable, "-c", WRITES_UNDER_A_PROXY], capture_output=True, text=True, timeout=60
    )

    assert (result.returncode, result.stdout) == (0, "written: progress 1\n"), result.stderr
