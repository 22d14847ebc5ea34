"""What produce, record and replay show on a terminal (a pseudo-terminal, Kafka replaced by
stand-ins): a message said while a progress bar shows goes on a line of its own above it, the
recording written to the terminal has no bar drawn into it, and a recording typed at the
terminal is not wiped by a bar's redraws."""

from __future__ import annotations

import errno
import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cli import produce, produce_input, record, replay
from pipeline.cli.console import stderr_console

#: rich's colours and styles: left out of what is compared (cursor moves and erases stay).
_STYLES = re.compile(r"\x1b\[[0-9;]*m")
#: A progress bar's elapsed time, as rich's TimeElapsedColumn draws it (not a time of day).
_ELAPSED = re.compile(r"(?<![\d:])\d:\d\d:\d\d(?![\d.:])")
#: What rich writes to clear a one-line bar before printing above it.
_CLEARED_LINE = "\r\x1b[2K"


def on_a_pty(script: str, typed: bytes = b"", timeout_s: float = 60) -> tuple[int, str]:
    """``python -c script`` with stdin, stdout and stderr on one pseudo-terminal: its exit code
    and what it wrote there (styles left out); ``typed`` is typed at the terminal first."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    if typed:
        os.write(master, typed)
    shown = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as error:  # EIO: every end of the terminal's other side is closed
                if error.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=10)
    finally:
        process.kill()
        os.close(master)
    return code, _STYLES.sub("", shown.decode("utf-8", "replace"))


def test_every_module_prints_through_one_stderr_console():
    assert stderr_console() is stderr_console()
    assert produce._err is produce_input._err is record._err is replay._err


REPLAY_OF_A_FILE = """
import sys, time
import pipeline.replay.processes as processes
from pipeline.cli.main import run
from pipeline.replay.recording import RecordedMessage
from pipeline.replay.replayer import ReplaySummary
from pipeline.replay.routing import survey

def sent(kafka, path, *, on_checked, on_progress, **options):
    time.sleep(0.3)  # the bar is on the terminal
    on_checked(survey([RecordedMessage("t", 0, n, None, b"v") for n in range(3)]), 2)
    for _ in range(3):
        on_progress(1)
        time.sleep(0.1)
    return ReplaySummary(3, {"t": 3}, 0.5)

processes.replay_recording = sent
sys.argv = ["pipeline", "replay", "r.ndjson", "--topic", "t"]
run()
"""


def test_replays_plan_goes_on_a_line_of_its_own_above_the_bar():
    # It was written at the end of the bar: "replaying 0 messages  0:00:00replaying 3 ...".
    code, shown = on_a_pty(REPLAY_OF_A_FILE)

    assert code == 0, shown
    plan = "replaying 3 messages from r.ndjson into t, as fast as possible, 2 processes"
    assert _CLEARED_LINE + plan in shown, shown
    assert "0:00:00replaying" not in shown


REJECTS_UNDER_THE_BAR = """
import sys, time
from pathlib import Path
from pipeline.cli.produce import _progress
from pipeline.cli.produce_input import RejectsFile
from producers.ndjson import RejectedLine

rejects = RejectsFile(Path(sys.argv[1]))
with _progress(True) as progress:
    progress.add_task("producing", total=None)
    time.sleep(0.3)  # the bar is on the terminal
    rejects.write(RejectedLine(1, "invalid JSON: Expecting value at column 1", "x"))
    time.sleep(0.3)
rejects.close()
"""


def test_produces_rejected_line_goes_on_a_line_of_its_own_above_the_bar(tmp_path: Path):
    # It was written at the end of the bar: "producing ━━━ 0/? 0:00:00rejected line 1: ...".
    script = REJECTS_UNDER_THE_BAR.replace("sys.argv[1]", repr(str(tmp_path / "rejects")))

    code, shown = on_a_pty(script)

    assert code == 0, shown
    said = "rejected line 1: invalid JSON: Expecting value at column 1"
    assert _CLEARED_LINE + said in shown, shown
    assert "0:00:00rejected" not in shown


RECORD_TO_STDOUT = """
import sys, time
import pipeline.cli.record as record
import pipeline.replay.recorder as recorder
from pipeline.cli.main import run
from pipeline.replay.recording import RecordedMessage

def messages(kafka, topics, *, start, stop, on_progress):
    for offset in range(3):
        time.sleep(0.3)  # a bar, when there is one, is on the terminal
        yield RecordedMessage("t", 0, offset, None, b"v")
        on_progress(1)

record._require_topics = lambda settings, topics: None
recorder.record_topics = messages
sys.argv = ["pipeline", "record", "t", "--from-beginning", "-n", "3", "--out", "-"]
run()
"""


def test_a_recording_written_to_the_terminal_has_no_bar_drawn_into_it():
    # It showed "recording 0 messages  0:00:00{"topic":"t",...}" and redraws over the lines.
    code, shown = on_a_pty(RECORD_TO_STDOUT)

    assert code == 0, shown
    lines = shown.split("\r\n")
    recorded = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(message["topic"], message["offset"]) for message in recorded] == [
        ("t", 0),
        ("t", 1),
        ("t", 2),
    ], shown
    assert not _ELAPSED.search(shown), shown
    assert "\x1b[2K" not in shown  # nothing erased: no bar drawn
    assert "recording t from the beginning, until 3 messages" in lines


REPLAY_OF_STDIN = """
import sys
import pipeline.replay.replayer as replayer
from pipeline.cli.main import run

def sent(kafka, messages, *, on_progress, **options):
    count = 0
    for _ in messages:
        count += 1
        on_progress(1)
    return replayer.ReplaySummary(count, {"t": count}, 0.5)

replayer.replay_into_kafka = sent
sys.argv = ["pipeline", "replay", "-", "--topic", "t"]
run()
"""

TYPED = '{"topic":"a","partition":0,"offset":1,"key":"k","payload":"v"}'


def test_a_recording_typed_at_the_terminal_gets_the_hint_and_no_bar():
    # The bar's redraws wiped the line being typed, and nothing said how to end the input.
    code, shown = on_a_pty(REPLAY_OF_STDIN, typed=f"{TYPED}\n\x04".encode())

    assert code == 0, shown
    lines = shown.split("\r\n")
    assert "reading NDJSON from the terminal; end with Ctrl-D" in lines, shown  # as produce
    assert "replaying messages from stdin into t, as fast as possible" in lines
    assert TYPED in lines  # what was typed, as it was typed
    assert not _ELAPSED.search(shown), shown
    assert "\x1b[2K" not in shown  # nothing erased: no bar drawn
