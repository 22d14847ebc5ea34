"""Where a recording starts and stops, and which messages it keeps."""

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from pipeline.errors import PipelineError
from pipeline.replay.bounds import (
    FromGroup,
    FromTime,
    RecordingBounds,
    Stop,
    parse_time,
    start_of,
)

A0, A1 = ("a", 0), ("a", 1)


def test_at_end_keeps_up_to_the_end_offsets_and_then_is_finished():
    bounds = RecordingBounds({A0: 3, A1: 0}, Stop(at_end=True), ends={A0: 5, A1: 1})
    assert bounds.keep(A0, 3, None)
    assert not bounds.finished
    assert bounds.keep(A1, 0, None)
    assert bounds.keep(A0, 4, None)
    assert bounds.finished
    assert bounds.kept == 3


def test_a_message_past_the_end_is_not_kept_and_closes_its_partition():
    bounds = RecordingBounds({A0: 0, A1: 0}, Stop(at_end=True), ends={A0: 2, A1: 9})
    assert not bounds.keep(A0, 2, None)  # e.g. the end was a transaction marker
    assert A0 in bounds.done
    assert not bounds.keep(A0, 3, None)


def test_partitions_already_at_their_end_are_done_from_the_start():
    bounds = RecordingBounds({A0: 4, A1: 0}, Stop(at_end=True), ends={A0: 4, A1: 0})
    assert bounds.finished


def test_the_end_of_a_partition_reported_by_the_reader_closes_it():
    bounds = RecordingBounds({A0: 0}, Stop(at_end=True), ends={A0: 3})
    assert bounds.keep(A0, 1, None)  # offset 2 is a transaction marker, never delivered
    bounds.reached_end(A0, 2)
    assert not bounds.finished
    bounds.reached_end(A0, 3)
    assert bounds.finished


def test_until_ms_closes_a_partition_at_its_first_message_stamped_at_or_after_it():
    bounds = RecordingBounds({A0: 0, A1: 0}, Stop(until_ms=1_000))
    assert bounds.keep(A0, 0, 999)
    assert not bounds.keep(A0, 1, 1_000)
    assert not bounds.keep(A0, 2, 5)  # closed: later messages are not kept, even older-stamped
    assert bounds.keep(A1, 0, None)  # without a timestamp, it is kept
    assert not bounds.finished


def test_once_the_clock_passes_until_ms_the_end_offsets_of_that_moment_close_the_rest():
    bounds = RecordingBounds({A0: 0, A1: 4}, Stop(until_ms=1_000))
    assert not bounds.clock_passed_until(999)
    assert bounds.keep(A0, 0, 10)
    assert bounds.clock_passed_until(1_000)
    bounds.close_at({A0: 3, A1: 4})
    assert A1 in bounds.done and A0 not in bounds.done
    assert not bounds.clock_passed_until(2_000)  # asked once
    assert bounds.keep(A0, 2, 20)
    assert bounds.finished


def test_max_messages_stops_across_partitions():
    bounds = RecordingBounds({A0: 0, A1: 0}, Stop(max_messages=2))
    assert bounds.keep(A0, 0, None)
    assert bounds.keep(A1, 0, None)
    assert bounds.finished
    assert not bounds.keep(A0, 1, None)
    assert bounds.kept == 2


def test_without_a_stop_it_never_finishes():
    stop = Stop()
    assert stop.unbounded
    bounds = RecordingBounds({A0: 0}, stop)
    for offset in range(1_000):
        assert bounds.keep(A0, offset, offset)
    bounds.reached_end(A0, 1_000)
    assert not bounds.finished


def test_max_below_one_is_refused():
    with pytest.raises(PipelineError, match="--max must be at least 1"):
        Stop(max_messages=0)


NOW = datetime(2025, 12, 2, 14, 30, tzinfo=UTC)


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets the process's local time zone (``TZ``) for one test, and the previous one after."""

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def utc_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1764685800000", 1764685800000),
        ("2025-12-02T14:30:00Z", 1764685800000),
        ("2025-12-02 15:30+01:00", 1764685800000),
        ("2025-12-02T14:30:00.250", 1764685800250),  # no zone: local time (UTC here)
        ("2025-12-02", 1764633600000),
        ("-15m", 1764685800000 - 15 * 60_000),
        ("-30s", 1764685800000 - 30_000),
        ("-2h", 1764685800000 - 2 * 3_600_000),
        ("-1d", 1764685800000 - 86_400_000),
        ("-1.5s", 1764685800000 - 1_500),
    ],
)
def test_times_are_read_in_every_documented_form(text, expected, local_zone):
    local_zone("UTC")
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # In December (standard time, -05:00) a June time is still in daylight saving time.
        ("2026-06-01T06:10:00", "2026-06-01T10:10:00"),
        ("2026-06-01", "2026-06-01T04:00:00"),
        ("2026-01-15T06:10", "2026-01-15T11:10:00"),
        # 01:30 is shown twice the night the clocks go back: the first time (-04:00).
        ("2026-11-01T01:30", "2026-11-01T05:30:00"),
        # 02:30 is never shown the night they go forward: 03:00 (-04:00), when they did.
        ("2026-03-08T02:30", "2026-03-08T07:00:00"),
        ("2026-06-01T06:10:00+02:00", "2026-06-01T04:10:00"),  # a zone given is kept
    ],
)
def test_a_time_without_a_zone_is_local_time_at_its_own_date(text, expected, local_zone):
    local_zone("America/New_York")
    december = datetime(2025, 12, 2, 9, 30).astimezone()  # -05:00, as the CLI passes it
    assert parse_time(text, now=december) == utc_ms(expected)


def test_a_date_is_the_start_of_its_day_where_the_day_starts_at_one(local_zone):
    # Chile moves its clocks forward at midnight: 2026-09-06 starts at 01:00 (-03:00).
    local_zone("America/Santiago")
    assert parse_time("2026-09-06", now=NOW) == utc_ms("2026-09-06T04:00:00")


def test_a_local_time_past_what_datetime_holds_is_out_of_range(local_zone):
    local_zone("America/New_York")
    for text in ("0001-01-01", "9999-12-31T23:00"):
        with pytest.raises(PipelineError, match="is out of range"):
            parse_time(text, now=NOW)


@pytest.mark.parametrize("text", ["yesterday", "15m", "-15 minutes", "", "2025-13-01"])
def test_anything_else_is_refused_with_the_forms(text):
    with pytest.raises(PipelineError, match=r"not a time.*-15m"):
        parse_time(text, now=NOW)


def test_start_of_gives_the_one_start_asked_for():
    assert start_of() == "end"
    assert start_of(beginning=True) == "beginning"
    assert start_of(time_ms=5) == FromTime(5)
    assert start_of(group="billing") == FromGroup("billing")


def test_two_starts_are_refused_naming_them():
    with pytest.raises(PipelineError, match="--from-beginning or --from-group"):
        start_of(beginning=True, group="g")
    with pytest.raises(PipelineError, match="needs a group name"):
        start_of(group=" ")


@pytest.mark.parametrize(
    "text", ["99999999999999999999", "9999999999999999", "-99999999999999999m", "-999999999d"]
)
def test_a_time_out_of_range_is_a_one_line_error(text):
    with pytest.raises(PipelineError, match="is out of range"):
        parse_time(text, now=NOW)


def test_the_last_day_datetime_holds_is_a_time_as_a_far_end(local_zone):
    # 9999-12-31, a common "no end", read its second (fold) reading as year 10000 and was
    # refused as out of range.
    local_zone("UTC")

    assert parse_time("9999-12-31", now=NOW) == utc_ms("9999-12-31T00:00:00")
    assert parse_time("9999-12-31T23:59:59", now=NOW) == utc_ms("9999-12-31T23:59:59")
