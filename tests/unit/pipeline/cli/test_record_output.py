"""``pipeline record``'s file: what is left of it when a write fails; an ``--out`` that can be
no file is refused before anything is said or asked of Kafka."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import record
from pipeline.cli.main import app
from pipeline.cli.record import _cut_after_last_line, _describe, _output
from pipeline.errors import PipelineError
from pipeline.replay.bounds import FromTime, Stop


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        (b'{"a":1}\n{"b":2}\n{"c"', b'{"a":1}\n{"b":2}\n'),
        (b'{"a":1}\n', b'{"a":1}\n'),
        (b'{"a"', b""),
        (b"", b""),
    ],
)
def test_a_cut_off_last_line_is_dropped_and_whole_lines_kept(
    tmp_path: Path, written: bytes, kept: bytes
) -> None:
    path = tmp_path / "r.ndjson"
    path.write_bytes(written)

    _cut_after_last_line(path)

    assert path.read_bytes() == kept


def test_a_long_file_is_cut_at_its_last_newline_across_read_chunks(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"
    whole = b"x" * 100_000 + b"\n"
    path.write_bytes(whole + b"y" * 150_000)

    _cut_after_last_line(path)

    assert path.read_bytes() == whole


def test_a_failed_write_is_one_error_and_leaves_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"

    refused = pytest.raises(PipelineError, match="No space left on device; it holds the messages")
    with refused, _output(str(path)) as file:
        file.write(b'{"a":1}\n{"b"')
        file.flush()
        raise OSError(28, "No space left on device")

    assert path.read_bytes() == b'{"a":1}\n'


def test_an_out_file_whose_name_is_too_long_is_a_pipeline_error(tmp_path: Path) -> None:
    # Path.is_dir() raises ENAMETOOLONG (Python 3.11): it was a traceback.
    long = tmp_path / ("a" * 300)

    with (
        pytest.raises(PipelineError, match=r"^cannot write .*a{300}: File name too long$"),
        _output(str(long)),
    ):
        pass


def test_the_first_line_gives_a_bound_to_the_millisecond_when_it_has_milliseconds(monkeypatch):
    # It said "until 2026-01-01T09:00:00+00:00" of a bound at 09:00:00.200.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        said = _describe(
            ["t"], FromTime(1_767_258_005_200), Stop(until_ms=1_767_258_000_200, at_end=True)
        )
        whole = _describe(["t"], "beginning", Stop(until_ms=1_767_258_000_000))
    finally:
        monkeypatch.undo()
        time.tzset()

    assert said == (
        "recording t from 2026-01-01T09:00:05.200+00:00, "
        "until the end offsets of now or 2026-01-01T09:00:00.200+00:00"
    )
    assert whole == "recording t from the beginning, until 2026-01-01T09:00:00+00:00"


# --- --out is checked before anything is said or asked of Kafka ---------------------------


@pytest.fixture
def kafka_asked(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The topics ``record`` asked Kafka about (they all exist); it records nothing."""
    asked: list[list[str]] = []
    monkeypatch.setattr(record, "_require_topics", lambda settings, topics: asked.append(topics))

    def record_topics(*args, **kwargs):  # a generator, as the recorder's: it has close()
        yield from ()

    monkeypatch.setattr("pipeline.replay.recorder.record_topics", record_topics)
    return asked


def _record(*args: str):
    return CliRunner().invoke(app, ["record", "rv2.t", "--until-end", *args])


@pytest.mark.parametrize(
    ("out", "error"),
    [
        ("adir", "--out {tmp}/adir is a directory"),
        ("missing/x", "cannot write {tmp}/missing/x: No such file or directory"),
        ("afile/x", "cannot write {tmp}/afile/x: Not a directory"),
    ],
    ids=["a directory", "no such folder", "a file as folder"],
)
def test_an_out_that_can_be_no_file_is_the_only_line(
    tmp_path: Path, kafka_asked: list[list[str]], out: str, error: str
) -> None:
    # It said "recording rv2.t from now on, until the end offsets of now" first.
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")

    result = _record("-o", str(tmp_path / out))

    assert isinstance(result.exception, PipelineError), result.exception
    assert str(result.exception) == error.format(tmp=tmp_path)
    assert result.stderr == ""
    assert kafka_asked == []


@pytest.mark.parametrize(
    ("out", "error"),
    [
        ("new/", "--out {tmp}/new/ names a folder, and a recording is a file"),
        ("", "--out is empty: give a file, or - for stdout"),
    ],
    ids=["a folder not there yet", "empty"],
)
def test_a_folder_to_be_or_nothing_is_refused_before_anything(
    tmp_path: Path, kafka_asked: list[list[str]], out: str, error: str
) -> None:
    # An outside re-check: "-o DIR/" wrote a file named DIR and said "recorded to DIR/"; "-o ''"
    # said "--out . is a directory".
    result = _record("-o", f"{tmp_path}/{out}" if out else "")

    assert isinstance(result.exception, PipelineError), result.exception
    assert str(result.exception) == error.format(tmp=tmp_path)
    assert kafka_asked == []
    assert not (tmp_path / "new").exists()


def test_a_good_out_is_announced_once_the_topics_exist_and_the_file_is_open(
    tmp_path: Path, kafka_asked: list[list[str]]
) -> None:
    out = tmp_path / "r.jsonl"

    result = _record("-o", str(out))

    assert result.exit_code == 0, result.output
    assert kafka_asked == [["rv2.t"]]
    assert result.stderr.splitlines()[0] == (
        "recording rv2.t from now on, until the end offsets of now"
    )
    assert out.read_bytes() == b""
