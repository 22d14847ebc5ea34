"""The commands with a progress bar, run on a terminal as a person runs them (a pseudo-terminal
made by util-linux's ``script``): they finish with their summary. On a terminal rich's progress
bar swaps ``sys.stderr`` for a proxy of the console, and the console wrote to that proxy, so
produce, record and replay hung for ever there (only kill -9 ended them).

What the terminal shows is checked too (:func:`screen`): a message said while a bar shows is
on a line of its own above it, and no copy of the bar is left behind; a recording written to
the terminal has no bar drawn into it; what is typed at the terminal is not wiped by one."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

from tests.support.processor_runs import PIPELINE

#: Cursor moves and erases (CSI), which :func:`screen` follows; colours are CSI too.
_CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")
#: A token of what a program writes to the terminal: a control sequence, CR, LF, or text.
_TOKEN = re.compile(r"\x1b\[[0-9;?]*[@-~]|\x1b.|\r|\n|[^\x1b\r\n]+")
#: A progress bar's elapsed time, as rich's TimeElapsedColumn draws it (not a time of day).
_ELAPSED = re.compile(r"(?<![\d:])\d:\d\d:\d\d(?![\d.:])")


def on_a_terminal(
    *args: str, piped: str | None = None, typed: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``pipeline *args`` on a pseudo-terminal; what the terminal showed (carriage returns
    and control sequences as written), and the exit code. ``piped``: a shell command whose
    output is piped into it; ``typed``: what is typed at the terminal (stdin, otherwise)."""
    command = " ".join(shlex.quote(part) for part in (PIPELINE, *args))
    if piped is not None:
        command = f"{piped} | {command}"
    done = subprocess.run(
        ["script", "--quiet", "--return", "--command", command, "/dev/null"],
        capture_output=True,
        timeout=timeout,
        input=None if typed is None else typed.encode(),
        stdin=subprocess.DEVNULL if typed is None else None,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def screen(shown: str) -> list[str]:
    """The lines left on a terminal (without wrapping) once it showed ``shown``: text,
    carriage returns, line feeds, cursor up and line erases followed; colours ignored."""
    lines, row, column = [""], 0, 0
    for token in _TOKEN.findall(shown):
        if token == "\r":
            column = 0
        elif token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif token.startswith("\x1b"):
            control = _CSI.fullmatch(token)
            if control is None:
                continue
            count, kind = control.group(1), control.group(2)
            if kind == "A":
                row = max(0, row - int(count or 1))
            elif kind == "K":
                line = lines[row]
                if count == "2":
                    lines[row] = ""
                elif count == "1":
                    lines[row] = " " * column + line[column:]
                else:
                    lines[row] = line[:column]
        else:
            line = lines[row].ljust(column)
            lines[row] = line[:column] + token + line[column + len(token) :]
            column += len(token)
    return [line.rstrip() for line in lines]


def test_produce_record_and_replay_finish_on_a_terminal(new_topic, tmp_path):
    source, target = new_topic(partitions=2), new_topic(partitions=2)
    lines = tmp_path / "orders.ndjson"
    lines.write_text("".join(json.dumps({"id": n, "sku": f"s{n % 3}"}) + "\n" for n in range(20)))
    recording = tmp_path / "recording.ndjson"

    produced = on_a_terminal("produce", source, str(lines), "--key-field", "sku")
    assert produced.returncode == 0, produced.stdout
    recorded = on_a_terminal(
        "record", source, "--from-beginning", "--until-end", "-o", str(recording)
    )
    assert recorded.returncode == 0, recorded.stdout
    replayed = on_a_terminal("replay", str(recording), "-t", target)
    assert replayed.returncode == 0, replayed.stdout

    assert len(recording.read_text().splitlines()) == 20
    assert "20" in produced.stdout and "20" in replayed.stdout
    # The plan, said once the file is checked, while the bar shows: it was written at the end
    # of the bar ("replaying 0 messages  0:00:00replaying 20 messages from ..."), and a copy of
    # the bar stayed on screen.
    shown = screen(replayed.stdout)
    plan = f"replaying 20 messages from {recording} into {target}, as fast as possible"
    assert any(line.startswith(plan) for line in shown), shown
    for said in (produced, recorded, replayed):
        assert not _ELAPSED.search("\n".join(screen(said.stdout))), said.stdout


def test_produces_rejected_lines_are_on_lines_of_their_own(new_topic, tmp_path):
    # Each was written at the end of the bar: "producing ━━━ 1/? 0:00:01rejected line 3: ...".
    topic = new_topic(partitions=1)
    slowly = "(printf 'x\\n'; sleep 1; printf '{\"a\":1}\\ny\\n'; sleep 1; printf '{\"b\":2}\\n')"

    produced = on_a_terminal(
        "produce", topic, "--rejects", str(tmp_path / "rejects.ndjson"), piped=slowly
    )

    assert produced.returncode == 1, produced.stdout
    shown = screen(produced.stdout)
    assert [line for line in shown if "rejected line" in line] == [
        "rejected line 1: invalid JSON: Expecting value at column 1",
        "rejected line 3: invalid JSON: Expecting value at column 1",
    ], shown
    assert not _ELAPSED.search("\n".join(shown)), shown


def test_a_recording_written_to_the_terminal_has_no_progress_in_its_lines(new_topic, tmp_path):
    # "recording 74 messages  0:00:00{"topic":...}": the bar, on stderr, was drawn into the
    # recording on stdout, the same terminal, and its redraws erased lines of it.
    topic = new_topic(partitions=2)
    lines = tmp_path / "many.ndjson"
    lines.write_text("".join(json.dumps({"id": n}) + "\n" for n in range(300)))
    produced = subprocess.run(
        [PIPELINE, "produce", topic, str(lines)], capture_output=True, text=True, timeout=120
    )
    assert produced.returncode == 0, produced.stderr

    recorded = on_a_terminal("record", topic, "--from-beginning", "-n", "300", "--out", "-")

    assert recorded.returncode == 0, recorded.stdout
    shown = screen(recorded.stdout)
    messages = [json.loads(line) for line in shown if line.startswith("{")]
    assert len(messages) == 300, shown
    assert {message["topic"] for message in messages} == {topic}
    assert not _ELAPSED.search("\n".join(shown)), shown
    assert any("messages" in line and "300" in line for line in shown)  # the summary


TYPED = '{"topic":"a","partition":0,"offset":1,"key":"k","payload":"{\\"id\\":1}"}'


def test_a_recording_typed_at_the_terminal_is_not_wiped_by_a_bar(new_topic):
    # A bar's redraws erased the line being typed, and nothing said how to end the input.
    topic = new_topic(partitions=1)

    replayed = on_a_terminal("replay", "-", "--topic", topic, typed=f"{TYPED}\n\x04")

    assert replayed.returncode == 0, replayed.stdout
    shown = screen(replayed.stdout)
    assert "reading NDJSON from the terminal; end with Ctrl-D" in shown, shown
    assert TYPED in shown
    assert not _ELAPSED.search(replayed.stdout), replayed.stdout  # no bar, even for a moment
    assert any(re.search(r"│ sent \(acknowledged\) +│ +1 │", line) for line in shown), shown


def test_produce_reading_what_is_typed_says_so_and_draws_no_bar(new_topic):
    topic = new_topic(partitions=1)

    produced = on_a_terminal("produce", topic, "-", typed='{"a": 1}\n\x04')

    assert produced.returncode == 0, produced.stdout
    shown = screen(produced.stdout)
    assert "reading NDJSON from the terminal; end with Ctrl-D" in shown, shown
    assert not _ELAPSED.search(produced.stdout), produced.stdout


def _interrupted_while_typing(*args: str, partial: str) -> list[str]:
    """``pipeline *args`` reading what is typed at a pseudo-terminal: ``partial`` typed (no
    Enter), then Ctrl-C; the lines the terminal shows afterwards."""
    command = " ".join(shlex.quote(part) for part in (PIPELINE, *args))
    terminal = subprocess.Popen(
        ["script", "--quiet", "--return", "--command", command, "/dev/null"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert terminal.stdin is not None and terminal.stdout is not None
    shown = b""
    while b"end with Ctrl-D" not in shown:  # ready: reading the terminal
        chunk = terminal.stdout.read1(4096)
        assert chunk, shown
        shown += chunk
    terminal.stdin.write(partial.encode())
    terminal.stdin.flush()
    time.sleep(0.5)
    terminal.stdin.write(b"\x03")
    terminal.stdin.flush()
    rest, _ = terminal.communicate(timeout=120)
    return screen((shown + rest).decode("utf-8", "replace"))


def test_produce_interrupted_mid_line_says_so_on_a_line_of_its_own(new_topic):
    # "interrupted after line 0" was written after the ^C the terminal echoed, on the typed line.
    topic = new_topic(partitions=1)

    shown = _interrupted_while_typing("produce", topic, "-", partial='{"a": 1')

    typed = next(line for line in shown if '{"a": 1' in line)
    assert "interrupted" not in typed, shown
    assert any(line.startswith("interrupted after line 0") for line in shown), shown


def test_replay_interrupted_mid_line_starts_its_summary_on_a_line_of_its_own(new_topic):
    topic = new_topic(partitions=1)

    shown = _interrupted_while_typing("replay", "-", "--topic", topic, partial=TYPED[:20])

    typed = next(line for line in shown if TYPED[:20] in line)
    assert typed.rstrip().endswith(("^C", TYPED[:20])), shown
    assert any(line.startswith("interrupted") for line in shown), shown
