"""The ``time`` attribute as text: RFC 3339, written in UTC with ``Z``, read in any offset."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

from pipeline.envelope.errors import EnvelopeError

__all__ = ["format_time", "now_text", "parse_time"]


_UTC_SECOND_TEXT = "%04d-%02d-%02dT%02d:%02d:%02d."
# %-formatting, not an f-string: no format spec to parse for every call.
_WITH_MICROSECONDS = "%s%06dZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The text up to the fraction of the last few seconds written, by seconds since the epoch
# (events made together share their second). Cleared, not trimmed, when full: a miss only
# writes the text again, so threads sharing it need no lock.
_SECOND_TEXTS: dict[int, str] = {}
_SECOND_TEXTS_KEPT = 16


def format_time(value: datetime) -> str:
    """``value`` as RFC 3339 in UTC, with microseconds and ``Z``."""
    if value.tzinfo is UTC:  # every event's time (the model converts it): no conversion to make
        # The text isoformat writes, at half the cost of formatting all seven fields (about a
        # fifth of encoding an event was this): a subtraction finds the second, whose text is
        # most often written already, and only the microseconds are formatted.
        since = value - _EPOCH
        second = since.days * 86_400 + since.seconds
        text = _SECOND_TEXTS.get(second)
        if text is None:
            if len(_SECOND_TEXTS) >= _SECOND_TEXTS_KEPT:
                _SECOND_TEXTS.clear()
            text = _SECOND_TEXTS[second] = _UTC_SECOND_TEXT % (
                value.year,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
            )
        return _WITH_MICROSECONDS % (text, value.microsecond)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# The second now_text wrote last and its text up to the fraction, as one tuple (replaced whole,
# so that a thread never reads one second's number with another's text).
_last_second: tuple[int, bytes] = (-1, b"")


def now_text() -> bytes:
    """``format_time(datetime.now(UTC))`` as UTF-8, at a fraction of the cost: the text up to the
    second is written once a second, and only the microseconds for every call."""
    global _last_second
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    last = _last_second
    if second != last[0]:
        last = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode())
        _last_second = last
    return b"%s%06dZ" % (last[1], nanoseconds // 1000)


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)

# A strict subset of _RFC3339: what format_time writes.
_ENCODED_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def parse_time(text: str, where: str = "ce_time header") -> datetime:
    """The UTC time an RFC 3339 ``text`` names; :class:`EnvelopeError` naming ``where`` if none.

    Fractions beyond microseconds are cut, offsets converted to UTC.
    """
    # The form format_time writes, read by the C parser; 24:00 (read as the next day by newer
    # Pythons) and any error take the general path below.
    if _ENCODED_TIME.fullmatch(text) is not None and text[11:13] != "24":
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise EnvelopeError(
            f"invalid {where} {text!r}: expected an RFC 3339 time such as "
            "'2024-01-31T12:00:00.000000Z'"
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        tz = UTC
        if zulu is None:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        micros = int((fraction or "0")[:6].ljust(6, "0"))
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError as exc:
        raise EnvelopeError(f"invalid {where} {text!r}: {exc}") from None
    return parsed.astimezone(UTC)
