"""Event ids: UUIDv7 strings, unique across processes and sortable by the time they were made.

Layout (RFC 9562, UUIDv7 with "increased clock precision", section 6.2 method 3):

1. ``unix_ts_ms`` (48 bits): milliseconds since the Unix epoch, from the wall clock;
2. ``ver`` (4 bits) = 7;
3. ``rand_a`` (12 bits): the fraction of that millisecond (about 244 ns steps), so ids made in the
   same millisecond by different processes still sort by time;
4. ``var`` (2 bits) = RFC 9562;
5. ``rand_b`` (62 bits): fresh random bits from :mod:`secrets` for every id, so processes (forked or
   not) never collide.

Within a process, ids strictly increase: when the clock has not moved since the last id, the
12-bit fraction is bumped by one step. Python cannot make ids faster than one per 244 ns, so this
never pushes timestamps ahead of the clock for long. (``uuid6.uuid7()`` instead adds a whole
millisecond per id made within the same millisecond: a burst of 100,000 ids runs about 100 s
ahead of the wall clock and breaks ordering against other processes.)
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import RFC_4122

from uuid6 import UUID

__all__ = ["event_id_time", "new_event_id"]

_FRACTION_STEPS = 1 << 12
_NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

_lock = threading.Lock()
_last_stamp = 0  # (unix_ts_ms << 12) | fraction of the last id made by this process


def _reset_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_after_fork)


def new_event_id() -> str:
    """A new UUIDv7 string (lowercase, hyphenated), later than any this process made before."""
    global _last_stamp
    ms, ns_in_ms = divmod(time.time_ns(), _NS_PER_MS)
    stamp = (ms << 12) | (ns_in_ms * _FRACTION_STEPS // _NS_PER_MS)
    with _lock:
        if stamp <= _last_stamp:
            stamp = _last_stamp + 1
        _last_stamp = stamp
    value = (stamp >> 12) << 80 | (stamp & 0xFFF) << 64 | secrets.randbits(62)
    return str(UUID(int=value, version=7))


def event_id_time(event_id: str) -> datetime:
    """The UTC time, to the millisecond, encoded in a UUIDv7 event id.

    Raises :class:`ValueError` when ``event_id`` is not a hyphenated UUID of version 7.
    """
    if not isinstance(event_id, str) or _CANONICAL.fullmatch(event_id) is None:
        raise ValueError(
            f"event id {event_id!r} is not a UUID in the form xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx"
        )
    parsed = UUID(event_id)
    if parsed.variant != RFC_4122 or parsed.version != 7:
        raise ValueError(
            f"event id {event_id!r} is not a UUIDv7 (version {parsed.version}, "
            f"variant {parsed.variant!r}); only UUIDv7 ids carry their creation time"
        )
    ms = parsed.int >> 80
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise ValueError(
            f"event id {event_id!r} encodes {ms} ms since 1970, beyond the year 9999"
        ) from None
