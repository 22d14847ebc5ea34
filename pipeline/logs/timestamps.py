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


def parse_timestamp(value: Any) -> datetime | None:
    """The moment of an ``@timestamp``, in UTC; ``None`` for what reads as no time.

    ISO 8601 (UTC when it names no offset, as Elasticsearch reads it), or epoch milliseconds: a
    JSON number or a string of digits. (Elasticsearch reads a few-digit one as a year; either
    way it is far from any shipper's clock, which is all the index choice asks of it.)
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _from_epoch_millis(value)
    if not isinstance(value, str):
        return None
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


def _from_epoch_millis(millis: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # JSON's 1e999 is inf; NaN is no JSON number
        return None
