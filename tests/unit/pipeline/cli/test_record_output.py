"""``pipeline record``'s file: what is left of it when a write fails."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
