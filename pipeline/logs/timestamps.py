"""A log document's ``@timestamp`` read as Elasticsearch reads it: one parser for the shipper's
index choice, the search's paging and the tables' time column.

The index template maps ``@timestamp`` as a ``date`` of the default format,
``strict_date_optional_time||epoch_millis`` (:mod:`pipeline.logs.schema`), and this reads what
that format reads, no more and no less, as Elasticsearch 8 does (checked against a running
one): a value it would refuse is ``None`` here, so the shipper dead-letters it at once rather
than create that day's index for a document Elasticsearch then refuses.

``strict_date_optional_time``: a year of four digits (a ``-`` before it for years before 0);
then optionally ``-MM`` and ``-dd``; then optionally ``T``, and after it optionally ``HH``,
``:mm``, ``:ss``, a fraction of up to nine digits after ``.`` and/or ``,``, then a zone: ``Z``,
an offset (``+01``, ``+0100``, ``+01:00``, ``+01:00:30``, up to 18 hours), ``UTC``/``GMT``/``UT``
with or without an offset, or a region (``Europe/Paris``), optionally followed by a second
offset without a colon (``+0100`` or ``Z``), which the first one overrides. Upper case only; no
space, no ISO week date (``2026-W49-1``), no basic format (``20261207T060000Z``). A date that
has a time but no month (``2026T12``) is on 1970-01-01, as Elasticsearch stores it.

``epoch_millis``: digits with an optional sign and fraction (``1796644800000``, ``-1``, ``1.5``)
within a Java ``long``; a JSON number too. Four digits are a year first (the ISO format comes
first): ``2026`` is 2026-01-01, not 2.026 s.

A moment Python's dates do not reach (a year before 1 or after 9999) is the nearest one they
do, which is as far from any shipper's clock; but an ISO time of the year 1 that only its
offset takes before the year 1 is ``None``, as it was.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cache
from typing import Any

__all__ = ["parse_timestamp"]

#: A string Elasticsearch reads as epoch milliseconds (when it is no ISO date).
_EPOCH_MILLIS = re.compile(r"(-?[0-9]+)(?:\.[0-9]*)?")
#: The range of a Java long, of which Elasticsearch's epoch_millis refuses the lowest value.
_LONG_MAX = 2**63 - 1
#: strict_date_optional_time without its zone, which is read by :func:`_zone`.
_ISO = re.compile(
    r"(?P<year>-?[0-9]{4})(?:-(?P<month>[0-9]{2})(?:-(?P<day>[0-9]{2}))?)?"
    r"(?:T(?:(?P<hour>[0-9]{2})"
    r"(?::(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})"
    r"(?:\.(?P<point>[0-9]{1,9}))?(?:,(?P<comma>[0-9]{1,9}))?)?)?"
    r"(?P<zone>.*))?)?",
    re.DOTALL,
)
_COLON_OFFSET = re.compile(r"[+-]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
_PLAIN_OFFSET = re.compile(r"[+-]([0-9]{2})(?:([0-9]{2})([0-9]{2})?)?")
#: ``UTC+1``, ``GMT+01:00``: a prefix with an offset (Java's ZoneOffset.of forms).
_PREFIXED_OFFSET = re.compile(
    r"(?:UTC|GMT|UT)[+-](?:([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?|"
    r"([0-9]{2})([0-9]{2})([0-9]{2})?|([0-9]{1,2}))"
)
#: After the zone: an offset without a colon, which changes nothing (the zone before wins).
_SECOND_OFFSET = re.compile(r"Z|[+-][0-9]{2}(?:[0-9]{2})?")
_REGION = re.compile(r"[A-Za-z][A-Za-z0-9~/._+-]*")
#: Region ids Python's time zone database has and Java's does not (the old fixed ones).
_NOT_JAVA_REGIONS = frozenset({"EST", "HST", "MST"})
_MOST_OFFSET = timedelta(hours=18)
#: The usual form (this package's own records write it), which both read alike: read by
#: datetime.fromisoformat (C) at a fifth of the cost of the parse below, per log record.
_USUAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")


def parse_timestamp(value: Any) -> datetime | None:
    """The moment of an ``@timestamp``, in UTC; ``None`` for what Elasticsearch's
    ``strict_date_optional_time||epoch_millis`` refuses (see the module docstring).

    ISO 8601 (UTC when it names no offset, as Elasticsearch reads it), or epoch milliseconds: a
    JSON number or a string of digits, but for four digits, which Elasticsearch reads as a year.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        value = repr(value)  # as a JSON encoder writes it: 1e+20 is no epoch_millis
    if not isinstance(value, str):
        return None
    if _USUAL.fullmatch(value) is not None:
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:  # a month 13, a second 60: refused below as well
            pass
    iso = _ISO.fullmatch(value)
    if iso is not None:
        moment = _from_iso(iso)
        if moment is not None:
            return moment
    epoch = _EPOCH_MILLIS.fullmatch(value)
    if epoch is not None and -_LONG_MAX <= int(epoch.group(1)) <= _LONG_MAX:
        return _from_epoch_millis(float(value))
    return None


def _from_iso(found: re.Match[str]) -> datetime | None:
    year = int(found["year"])
    month = int(found["month"] or 1)
    day = int(found["day"] or 1)
    hour, minute, second = (int(found[name] or 0) for name in ("hour", "minute", "second"))
    if not 1 <= month <= 12 or not 1 <= day <= _days_in(year, month):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    point, comma = found["point"], found["comma"]
    if point is not None and comma is not None and _nanos(point) != _nanos(comma):
        return None  # two fractions that disagree
    fraction = point if point is not None else comma
    zone = _zone(found["zone"] or "")
    if zone is None:
        return None
    if found["hour"] is not None and found["month"] is None:
        year, month, day = 1970, 1, 1  # a time without a month: Elasticsearch's 1970-01-01
    if year < 1:
        return datetime.min.replace(tzinfo=UTC)
    local = datetime(year, month, day, hour, minute, second, _nanos(fraction or "") // 1000)
    try:
        # In UTC: 0001-01-01T00:00:00+01:00 is no UTC time (OverflowError).
        return local.replace(tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return None


def _days_in(year: int, month: int) -> int:
    """The days of ``month`` in the proleptic Gregorian ``year`` (0 and before too)."""
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return calendar.monthrange(2001, month)[1]  # 2001: no leap year


def _nanos(digits: str) -> int:
    return int(digits.ljust(9, "0")) if digits else 0


def _zone(text: str) -> tzinfo | None:
    """The zone after a time (``UTC`` when there is none), ``None`` when Elasticsearch refuses
    it: what Java's ``appendZoneOrOffsetId`` reads, then an optional offset without colon."""
    if not text:
        return UTC
    zone: tzinfo | None
    region = _REGION.match(text)
    if (prefixed := _PREFIXED_OFFSET.match(text)) is not None:  # before the region UTC
        sign = "+" if "+" in prefixed.group() else "-"
        hours, minutes, seconds = (
            prefixed[1] or prefixed[4] or prefixed[7],
            prefixed[2] or prefixed[5],
            prefixed[3] or prefixed[6],
        )
        zone, rest = _offset(sign, hours, minutes, seconds), text[prefixed.end() :]
        if prefixed[1] is None and rest:  # as after +0100: nothing may follow it
            return None
    elif region is not None and (named := _region_prefix(region.group())) is not None:
        zone, rest = named[0], named[1] + text[region.end() :]  # Zulu, UTC, Europe/Paris
    elif text.startswith("Z"):
        zone, rest = UTC, text[1:]
    elif (plain := _PLAIN_OFFSET.fullmatch(text)) is not None:
        return _offset(text[0], *plain.groups())  # nothing may follow one without a colon
    elif (colon := _COLON_OFFSET.match(text)) is not None:
        zone, rest = _offset(text[0], *colon.groups()), text[colon.end() :]
    else:
        return None
    if zone is None or (rest and not _SECOND_OFFSET.fullmatch(rest)):
        return None
    return zone


def _offset(sign: str, hours: str, minutes: str | None, seconds: str | None) -> tzinfo | None:
    if int(minutes or 0) > 59 or int(seconds or 0) > 59:
        return None
    size = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
    if size > _MOST_OFFSET:
        return None
    return timezone(-size if sign == "-" else size)


def _region_prefix(text: str) -> tuple[tzinfo, str] | None:
    """The zone of the longest region id ``text`` starts with, and what follows it."""
    regions = _regions()
    for end in range(len(text), 0, -1):
        if text[:end] in regions:
            from zoneinfo import ZoneInfo

            return ZoneInfo(text[:end]), text[end:]
    return None


@cache
def _regions() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones()) - _NOT_JAVA_REGIONS


def _from_epoch_millis(millis: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # beyond the years 1 to 9999
        if millis != millis or millis in (float("inf"), float("-inf")):
            return None
        return (datetime.max if millis > 0 else datetime.min).replace(tzinfo=UTC)
