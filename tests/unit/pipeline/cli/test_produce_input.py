"""pipeline produce's input read in large chunks: the same lines as iterating over the file."""

from __future__ import annotations

import io
import os
import random
import shlex
import sys

import pytest

from pipeline.cli import produce, produce_input
from pipeline.errors import PipelineError


def _iterated(data: bytes) -> list[bytes]:
    """The lines of iterating over a binary file, without their line break."""
    return [line.removesuffix(b"\n") for line in io.BytesIO(data)]


def _batched(data: bytes) -> list[bytes]:
    stream = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
    return [line for batch in produce_input.line_batches(stream.read1) for line in batch]


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"a", b"a\n", b"a\nb", b"a\r\nb\r\n", b"\n\n\nx\n\n", b"\xff\x00\n\r"],
)
def test_short_inputs_split_into_the_lines_of_the_file(data):
    assert _batched(data) == _iterated(data)


def test_lines_across_chunk_boundaries_are_whole(monkeypatch):
    monkeypatch.setattr(produce_input, "CHUNK_BYTES", 7)
    generator = random.Random(5)
    lines = [b"x" * generator.randrange(0, 20) for _ in range(500)]
    data = b"\n".join(lines) + b"\n"

    batches = list(produce_input.line_batches(io.BufferedReader(io.BytesIO(data)).read1))

    assert len(batches) > 100
    assert [line for batch in batches for line in batch] == _iterated(data) == lines


class _Report:
    """A delivered (or failed) message as librdkafka reports it: only its partition is read."""

    def __init__(self, partition: int) -> None:
        self._partition = partition

    def partition(self) -> int:
        return self._partition


def test_the_tally_counts_deliveries_per_partition_and_failures_by_line(capsys):
    from confluent_kafka import KafkaError

    tally = produce._Tally(queued=5)
    for line, partition in ((1, 0), (2, 3), (3, 3)):
        tally.report(line, None, _Report(partition))  # type: ignore[arg-type]
    tally.report(4, KafkaError(KafkaError._MSG_TIMED_OUT), _Report(-1))  # type: ignore[arg-type]

    assert (tally.sent, tally.failed, dict(tally.per_partition)) == (3, 1, {0: 1, 3: 2})
    assert "failed line 4: Local: Message timed out" in capsys.readouterr().err
    assert produce._undelivered(tally)  # one failed, one not acknowledged


def test_an_input_or_rejects_file_whose_name_is_too_long_is_a_pipeline_error(tmp_path):
    # Path.exists() and is_dir() raise ENAMETOOLONG (Python 3.11): it was a traceback.
    long = tmp_path / ("a" * 300)

    with pytest.raises(PipelineError, match=r"^cannot read .*a{300}: File name too long$"):
        produce_input.Input(str(long))
    with pytest.raises(
        PipelineError, match=r"^cannot write the rejects file .*a{300}: File name too long$"
    ):
        produce_input.RejectsFile(long).check()


def test_an_interrupted_run_gives_the_command_for_the_rest_of_a_regular_file_only(tmp_path):
    regular = tmp_path / "orders.ndjson"
    regular.write_text('{"n": 1}\n')
    fifo = tmp_path / "ff2"
    os.mkfifo(fifo)  # not opened: Input only looks at what it is

    said_file = produce._interrupted(produce_input.Input(str(regular)), 20)
    said_fifo = produce._interrupted(produce_input.Input(str(fifo)), 20)
    said_stdin = produce._interrupted(produce_input.Input("-"), 20)

    assert said_file == (
        "interrupted after line 20; waiting for what was sent "
        f"(the rest: tail -n +21 {shlex.quote(str(regular))})"
    )
    # A FIFO cannot be read again: said as for stdin.
    assert said_fifo == said_stdin == "interrupted after line 20; waiting for what was sent"


def test_past_the_rejections_shown_one_line_says_the_rest_are_in_the_file(tmp_path, capsys):
    # Only the first 10 were shown, and nothing said there were more.
    from producers.ndjson import RejectedLine

    rejects = produce_input.RejectsFile(tmp_path / "in.rejects.ndjson")
    for line in range(1, 16):
        rejects.write(RejectedLine(line, "not a JSON object", "[1]"))
    rejects.close()

    said = capsys.readouterr().err.splitlines()
    assert [row.split(":")[0] for row in said[:10]] == [f"rejected line {n}" for n in range(1, 11)]
    assert said[10:] == [
        f"(the first 10 rejected lines are shown; every one is in {tmp_path}/in.rejects.ndjson)"
    ]
    assert len((tmp_path / "in.rejects.ndjson").read_text().splitlines()) == 15


def test_the_input_is_known_under_any_name_and_through_stdin(tmp_path, monkeypatch):
    # A rejects file that is the input read its own rejects back, for ever (251 MB in 5 s).
    data = tmp_path / "in.ndjson"
    data.write_bytes(b'{"id": "r1"}\nbad\n')
    hard_link = tmp_path / "hard.ndjson"
    os.link(data, hard_link)
    symbolic = tmp_path / "soft.ndjson"
    symbolic.symlink_to(data)
    other = tmp_path / "other.ndjson"
    other.write_bytes(b"x\n")

    from_file = produce_input.Input(str(data))
    assert [
        from_file.is_the_file(path)
        for path in (data, hard_link, symbolic, other, tmp_path / "none", "/dev/null")
    ] == [True, True, True, False, False, False]

    with data.open("rb") as stdin:
        monkeypatch.setattr("sys.stdin", stdin)
        from_stdin = produce_input.Input("-")
        assert from_stdin.is_the_file(hard_link)
        assert not from_stdin.is_the_file(other)


def test_a_pipe_on_stdin_is_the_input_under_its_dev_stdin_name(monkeypatch):
    # --rejects /dev/stdin with a pipe on stdin wrote rejects into the pipe read back, and
    # then blocked for ever writing to it.
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(os.dup(read_end), "rb") as stdin:
            monkeypatch.setattr("sys.stdin", stdin)
            from_stdin = produce_input.Input("-")
            assert from_stdin.is_the_file(f"/proc/self/fd/{stdin.fileno()}")
            assert not from_stdin.is_the_file("/dev/null")
    finally:
        os.close(read_end)
        os.close(write_end)


def _strict_check(monkeypatch, tmp_path, data, *extra):
    """``pipeline produce T DATA --strict`` on a topic said to exist: only the check runs."""
    from typer.testing import CliRunner

    from pipeline.cli.main import app
    from pipeline.topics.plan import ActualTopic

    monkeypatch.setattr(produce, "require_topic", lambda _settings, topic: ActualTopic(topic, 1, 1))
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(
        app, ["produce", "t", str(data), "--key-field", "id", "--strict", *extra]
    )


def test_the_rejects_of_a_private_input_are_private_too(tmp_path, monkeypatch):
    # They hold the raw lines: -rw-r--r-- under the default umask, whatever the input's mode.
    data = tmp_path / "private.ndjson"
    data.write_bytes(b'{"id": "a"}\n{"secret": 1}\n')
    data.chmod(0o600)
    umask = os.umask(0o022)
    try:
        result = _strict_check(monkeypatch, tmp_path, data)
    finally:
        os.umask(umask)

    assert result.exit_code == 1, result.output
    rejects = tmp_path / "private.ndjson.rejects.ndjson"
    assert "secret" in rejects.read_text()
    assert rejects.stat().st_mode & 0o777 == 0o600


def test_a_rejects_file_that_exists_loses_what_the_input_does_not_allow(tmp_path):
    from producers.ndjson import RejectedLine

    data = tmp_path / "in.ndjson"
    data.write_bytes(b"bad\n")
    data.chmod(0o640)
    assert produce_input.Input(str(data)).mode == 0o640
    assert produce_input.Input("-").mode is None
    there = tmp_path / "there.ndjson"
    there.write_bytes(b"")
    there.chmod(0o754)  # an earlier run's, or made by hand
    rejects = produce_input.RejectsFile(there, 0o600)
    rejects.write(RejectedLine(1, "not a JSON object", "bad"))
    rejects.close()
    # The input's lines do not become readable by others (its execute bits are left alone).
    assert there.stat().st_mode & 0o777 == 0o710
    assert there.read_text().count("\n") == 1


def test_stdin_that_is_a_private_file_makes_private_rejects_and_a_pipe_the_default(
    tmp_path, monkeypatch
):
    # `pipeline produce TOPIC - < private.ndjson` wrote its rejects -rw-r--r--.
    data = tmp_path / "private.ndjson"
    data.write_bytes(b"bad\n")
    data.chmod(0o600)
    with data.open() as redirected:
        monkeypatch.setattr(sys, "stdin", redirected)
        assert produce_input.Input("-").mode == 0o600
    read, write = os.pipe()
    with os.fdopen(read) as piped:
        os.close(write)
        monkeypatch.setattr(sys, "stdin", piped)
        assert produce_input.Input("-").mode is None
