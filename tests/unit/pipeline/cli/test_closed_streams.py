"""A closed stdin or stdout, a full disk, a reader that went away: one line or silence, never a
traceback (an outside review: ``pipeline produce T <&-``, ``pipeline topics list >&-``,
``pipeline saga list > /dev/full``, ``pipeline saga list | head -1`` exiting 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.cli import console

#: The console script, as a user runs it (installed beside this interpreter).
PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def _closing(descriptor: int) -> Callable[[], None]:
    return lambda: os.close(descriptor)


def _run(
    args: list[str], *, close: int | None = None, stdout: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``args`` run with ``close`` (0 or 1) closed, as the shell's ``<&-`` or ``>&-``."""
    return subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=None if close is None else _closing(close),
    )


def _script(code: str, **options: object) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-c", code], **options)  # type: ignore[arg-type]


# --- a closed stdin ---------------------------------------------------------------------------


def test_a_command_asking_whether_stdin_is_typed_at_the_terminal_when_it_is_closed(
    monkeypatch, capsys
):
    monkeypatch.setattr(sys, "stdin", None)

    assert console.typed_at_the_terminal(reads_stdin=True) is False
    assert capsys.readouterr().err == "stdin is closed: nothing to read\n"


def test_a_closed_stdin_reads_as_empty_in_produce():
    # `pipeline produce T <&-`: AttributeError: 'NoneType' object has no attribute 'isatty'.
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        "from pipeline.cli.console import typed_at_the_terminal\n"
        "from pipeline.cli.produce_input import Input\n"
        "def command():\n"
        "    typed = typed_at_the_terminal(True)\n"
        "    with Input('-').batches() as batches:\n"
        "        print('typed', typed, 'lines', sum(map(len, batches)), file=sys.stderr)\n"
        "main.app = command; main.run()"
    )

    found = _script(code, close=0)

    assert found.returncode == 0, found.stderr
    assert found.stderr.splitlines() == [
        "stdin is closed: nothing to read",
        "typed False lines 0",
    ]


REPLAY_OF_STDIN = """
import sys
import pipeline.replay.replayer as replayer
from pipeline.cli.main import run

def sent(kafka, messages, **options):
    return replayer.ReplaySummary(sum(1 for _ in messages), {}, 0.0)

replayer.replay_into_kafka = sent
sys.argv = ["pipeline", "replay", "-"]
run()
"""


def test_replaying_a_closed_stdin_sends_nothing_and_says_why():
    # `pipeline replay - <&-`: the same AttributeError, then sys.stdin.buffer's.
    found = _script(REPLAY_OF_STDIN, close=0)

    assert found.returncode == 0, found.stderr
    assert "Traceback" not in found.stderr
    assert "stdin is closed: nothing to read" in found.stderr.splitlines()
    sent = [line for line in found.stderr.splitlines() if "sent (acknowledged)" in line]
    assert len(sent) == 1 and sent[0].split("│")[2].strip() == "0"


# --- a closed stdout, a full disk ---------------------------------------------------------------


def test_the_stdout_console_is_made_with_stdout_closed(monkeypatch):
    # Made when a command's module is imported (pipeline --help imports them all).
    monkeypatch.setattr(sys, "stdout", None)

    assert console.stdout_console().width == 160


@pytest.mark.parametrize("args", [["--help"], ["topics", "--help"], ["--version"]])
def test_printing_to_a_closed_stdout_is_one_error_line(args):
    found = _run([PIPELINE, *args], close=1)

    assert (found.returncode, found.stderr) == (
        2,
        "error: cannot write to stdout: it is closed\n",
    )


@pytest.mark.parametrize("args", [["--help"], ["topics", "--help"], ["--version"]])
def test_printing_to_a_full_disk_is_one_error_line(args):
    with open("/dev/full", "w") as full:
        found = _run([PIPELINE, *args], stdout=full.fileno())

    assert (found.returncode, found.stderr) == (
        2,
        "error: cannot write to stdout: No space left on device\n",
    )


A_TABLE = """
from rich.table import Table
from pipeline.cli import main
from pipeline.cli.console import stdout_console

def command():
    table = Table("saga", "status")
    for n in range(2000):
        table.add_row(f"saga-{n}", "completed")
    stdout_console().print(table)

main.app = command; main.run()
"""


def test_a_table_printed_to_a_full_disk_is_one_error_line():
    # `pipeline saga list > /dev/full`: OSError: [Errno 28], a traceback, exit code 1.
    with open("/dev/full", "w") as full:
        found = _script(A_TABLE, stdout=full.fileno())

    assert (found.returncode, found.stderr) == (
        2,
        "error: cannot write to stdout: No space left on device\n",
    )


def test_a_table_printed_to_a_closed_stdout_is_one_error_line():
    found = _script(A_TABLE, close=1)

    assert (found.returncode, found.stderr) == (
        2,
        "error: cannot write to stdout: it is closed\n",
    )


CONSUME_A_MESSAGE = """
import sys
from types import SimpleNamespace
import pipeline.cli.consume as consume
import pipeline.kafka.clients as clients
from pipeline.cli.main import run

consume.require_topic = lambda settings, topic: SimpleNamespace(partitions=1)
clients.build_consumer = lambda *args, **options: SimpleNamespace(close=lambda: None)
consume._start = lambda *args: consume._Reading("t", {0: 1}, False)

def read(consumer, reading, out, max_messages, commit):
    out.write(b'{"id": 1}\\n')
    out.flush()

consume._read = read
sys.argv = ["pipeline", "consume", "t"]
run()
"""


def test_consuming_into_a_closed_stdout_is_the_error_line_of_a_full_disk():
    # `pipeline consume T >&-`: AttributeError: 'NoneType' object has no attribute 'buffer'.
    found = _script(CONSUME_A_MESSAGE, close=1)

    assert found.returncode == 2, found.stderr
    assert found.stderr.splitlines() == [
        "error: cannot write to stdout: it is closed (after 0 messages)"
    ]


# --- the reader of stdout went away -----------------------------------------------------------


def _reader_gone() -> int:
    """The writing end of a pipe whose reader already left (``| head -1``, at once)."""
    reading, writing = os.pipe()
    os.close(reading)
    return writing


@pytest.mark.parametrize("args", [["--help"], ["topics", "--help"]])
def test_help_whose_reader_went_away_ends_silently_with_exit_code_0(args):
    # `pipeline --help | head -1`: exit code 1 and no word (rich's answer to a broken pipe).
    writing = _reader_gone()
    try:
        found = _run([PIPELINE, *args], stdout=writing)
    finally:
        os.close(writing)

    assert (found.returncode, found.stderr) == (0, "")


def test_a_table_whose_reader_went_away_ends_silently_with_exit_code_0():
    # `pipeline saga list | head -1`: exit code 1 and no word.
    writing = _reader_gone()
    try:
        found = _script(A_TABLE, stdout=writing)
    finally:
        os.close(writing)

    assert (found.returncode, found.stderr) == (0, "")


# --- a closed stderr ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "printed"),
    [
        (["--version"], 0, "pipeline "),
        (["topics", "list", "--bogus"], 2, ""),  # the usage error went to stderr: nowhere
        (["dlq", "--help"], 0, "Usage: pipeline dlq"),  # after rich's blank line
    ],
)
def test_a_closed_stderr_leaves_the_command_its_output_and_its_exit_code(args, code, printed):
    # The shell's 2>&-: every command ended at once with exit code 1 and no output.
    found = subprocess.run(
        [PIPELINE, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=_closing(2),
    )

    assert found.returncode == code
    assert found.stdout.strip().startswith(printed)
