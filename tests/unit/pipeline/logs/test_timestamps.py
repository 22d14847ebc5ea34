from datetime import UTC, datetime

import pytest

from pipeline.logs.timestamps import parse_timestamp

NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-12-07T12:00:00Z",
        "2026-12-07T12:00:00.000+00:00",
        "2026-12-07T07:00:00-05:00",
        "2026-12-07T12:00:00",  # no offset: UTC, as Elasticsearch reads it
        1_796_644_800_000,  # epoch milliseconds, a JSON number
        1_796_644_800_000.0,
        "1796644800000",  # ... or a string of digits (Elasticsearch's epoch_millis)
    ],
)
def test_iso_times_and_epoch_milliseconds_read_as_the_same_moment(stamp):
    assert parse_timestamp(stamp) == NOON


@pytest.mark.parametrize(
    "stamp", [None, True, "yesterday", "", float("inf"), 1e999, "0001-01-01T00:00:00+01:00", {}]
)
def test_what_reads_as_no_time_is_none(stamp):
    assert parse_timestamp(stamp) is None


@pytest.mark.parametrize("stamp", [2026, "2026"])
def test_four_digits_are_a_year_as_elasticsearch_reads_them(stamp):
    assert parse_timestamp(stamp) == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("stamp", [-1000, "0000"])
def test_a_year_pythons_dates_do_not_reach_is_the_year_1(stamp):
    assert parse_timestamp(stamp) == datetime(1, 1, 1, tzinfo=UTC)


def test_five_digits_or_a_fraction_are_milliseconds():
    assert parse_timestamp(20260) == datetime(1970, 1, 1, 0, 0, 20, 260_000, tzinfo=UTC)
    assert parse_timestamp(2026.0) == datetime(1970, 1, 1, 0, 0, 2, 26_000, tzinfo=UTC)
