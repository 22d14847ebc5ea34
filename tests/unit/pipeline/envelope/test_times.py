"""format_time: RFC 3339 in UTC with microseconds and Z, whatever the offset of the value."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pipeline.envelope.times import format_time, now_text


def _reference(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@pytest.mark.parametrize("seed", range(3))
def test_format_time_writes_the_isoformat_text_for_utc_and_other_offsets(seed):
    generator = random.Random(seed)
    span_us = (datetime(9999, 1, 1) - datetime(1, 1, 2)).days * 86_400_000_000
    for _ in range(2_000):
        value = datetime(1, 1, 2, tzinfo=UTC) + timedelta(microseconds=generator.randrange(span_us))
        offset = timezone(timedelta(minutes=generator.randrange(-720, 720)))

        assert format_time(value) == _reference(value)
        assert format_time(value.astimezone(offset)) == _reference(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "9999-12-31T23:59:59.999999Z"),
        (datetime(2024, 7, 15, 13, 45, 35, 22_000, tzinfo=UTC), "2024-07-15T13:45:35.022000Z"),
    ],
)
def test_format_time_edges(value, text):
    assert format_time(value) == text


def test_format_time_of_runs_of_times_in_many_seconds_as_isoformat_writes_them():
    """Times close together (the seconds' texts are reused) over more seconds than are kept,
    back and forth across second, day and year boundaries, and before the epoch."""
    for start in (
        datetime(2026, 12, 31, 23, 59, 50, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 55, tzinfo=UTC),
    ):
        values = [start + timedelta(microseconds=n * 333_331) for n in range(200)]
        for value in values + values[::-1]:
            assert format_time(value) == _reference(value)


def test_now_text_is_format_time_of_the_current_time(monkeypatch):
    before = datetime.now(UTC)
    text = now_text()
    after = datetime.now(UTC)

    assert format_time(before).encode() <= text <= format_time(after).encode()
    for ns in (1_721_051_135_022_000_999, 1_721_051_135_999_999_000, 1_721_051_136_000_000_000):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        expected = datetime.fromtimestamp(ns // 1000 / 1e6, UTC)

        assert now_text() == format_time(expected).encode()  # the second changes too
