"""A log document's ``@timestamp`` read as Elasticsearch reads it (its default date format,
``strict_date_optional_time||epoch_millis``): one parser for the shipper's index choice, the
search's paging and the tables' time column."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["parse_timestamp"]

#: A string of digits Elasticsearch reads as epoch milliseconds.
_EPOCH_MILLIS = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: Four digits (an integer, or a string of them) Elasticsearch reads as a year first
#: (``strict_date_optional_time`` before ``epoch_millis``): 2026 is 2026-01-01, not 2.026 s.
_YEAR = re.compile(r"-?[0-9]{4}")


def parse_timestamp(value: Any) -> datetime | None:
    """The moment of an ``@timestamp``, in UTC; ``None`` for what reads as no time.

    ISO 8601 (UTC when it names no offset, as Elasticsearch reads it), or epoch milliseconds: a
    JSON number or a string of digits, but for four digits, which Elasticsearch reads as a year.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, int) and _YEAR.fullmatch(str(value)):
            return _new_year(int(value))
        return _from_epoch_millis(value)
    if not isinstance(value, str):
        return None
    if _YEAR.fullmatch(value):
        return _new_year(int(value))
    if _EPOCH_MILLIS.fullmatch(value):
        return _from_epoch_millis(float(value))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    try:
        # In UTC: 0001-01-01T00:00:00+01:00 is no UTC time (OverflowError).
        return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except OverflowError:
        return None


def _new_year(year: int) -> datetime:
    """The first moment of ``year``; the year 1 for one Python's dates do not reach (0, -1000),
    which is as far from any shipper's clock."""
    return datetime(max(1, year), 1, 1, tzinfo=UTC)


def _from_epoch_millis(millis: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # JSON's 1e999 is inf; NaN is no JSON number
        return None
