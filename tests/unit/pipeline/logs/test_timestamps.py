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


# What Elasticsearch 8's strict_date_optional_time||epoch_millis (the template's @timestamp)
# refuses, checked against a running one: the shipper made that day's index for such a line,
# and Elasticsearch then refused the line (dead-lettered) and kept the empty index.
@pytest.mark.parametrize(
    "stamp",
    [
        "2026-W49-1",  # an ISO week date
        "2026-12-07 06:00:00",  # a space for the T
        "20261207T060000Z",  # the basic format
        "2026-12-07t12:00:00z",  # lower case
        "2026-12-7",
        "+2026-12-07",
        "10000-01-01",
        "2026-12-07T24:00:00",
        "2026-02-30",
        "2026-12-07TZ",  # a zone without a time
        "2026-12-07Z",
        "2026-12-07T12:00.5",  # a fraction of a minute
        "2026-12-07T12:00:00.1234567891Z",  # ten digits
        "2026-12-07T12:00:00+19:00",
        "2026-12-07T12:00:00+0100Z",  # nothing after an offset without a colon
        "2026-12-07T12:00:00.5,7",  # two fractions that disagree
        "2026-12-07T12:00:00EST",  # not in Java's time zone database
        "2026-12-07T12:00:00 ",
        "1e3",
        ".5",
        "9223372036854775808",  # beyond a Java long
        1e20,  # written 1e+20
    ],
)
def test_what_elasticsearchs_date_format_refuses_is_none(stamp):
    assert parse_timestamp(stamp) is None


@pytest.mark.parametrize(
    ("stamp", "moment"),
    [
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC)),  # a year and a month
        ("2026-12-07", datetime(2026, 12, 7, tzinfo=UTC)),
        ("2026-12-07T", datetime(2026, 12, 7, tzinfo=UTC)),
        ("2026-12-07T12", NOON),
        ("2026-12-07T12Z", NOON),
        ("2026-12-07T13+01", NOON),
        ("2026-12-07T13:00:00+0100", NOON),
        ("2026-12-07T12:00:00,5Z", NOON.replace(microsecond=500_000)),
        ("2026-12-07T12:00:00.123456789Z", NOON.replace(microsecond=123_456)),
        ("2026-12-07T13:00:00Europe/Paris", NOON),
        ("2026-12-07T13:00:00GMT+1", NOON),
        ("2026-12-07T13:00:00+01:00+0200", NOON),  # the first offset wins
        ("2026T12", datetime(1970, 1, 1, 12, tzinfo=UTC)),  # as Elasticsearch stores it
        ("-1", datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
        ("1.", datetime(1970, 1, 1, 0, 0, 0, 1_000, tzinfo=UTC)),
    ],
)
def test_what_elasticsearchs_date_format_reads_is_the_same_moment(stamp, moment):
    assert parse_timestamp(stamp) == moment


@pytest.mark.parametrize("stamp", [99_999_999_999_999_999, "99999999999999999"])
def test_epoch_milliseconds_past_pythons_dates_are_the_last_moment_they_reach(stamp):
    # Elasticsearch stores +3170843-11-07: as far from any shipper's clock as 9999-12-31.
    assert parse_timestamp(stamp) == datetime.max.replace(tzinfo=UTC)


def test_the_usual_form_read_by_the_fast_path_is_what_the_full_parse_reads() -> None:
    from pipeline.logs import timestamps

    for value in [
        "2026-12-07T06:00:00Z",
        "2026-12-07T06:00:00.1Z",
        "2026-12-07T06:00:00.123Z",
        "2026-12-07T06:00:00.123456Z",
        "2024-02-29T23:59:59.999999Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
    ]:
        iso = timestamps._ISO.fullmatch(value)
        assert iso is not None
        assert parse_timestamp(value) == timestamps._from_iso(iso), value
