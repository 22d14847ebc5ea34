"""Event ids: UUIDv7 strings, unique across processes and sortable by the time they were made.

Layout (RFC 9562, UUIDv7 with "increased clock precision", section 6.2 method 3):

1. ``unix_ts_ms`` (48 bits): milliseconds since the Unix epoch, from the wall clock;
2. ``ver`` (4 bits) = 7;
3. ``rand_a`` (12 bits): the fraction of that millisecond (about 244 ns steps), so ids made in the
   same millisecond by different processes still sort by time;
4. ``var`` (2 bits) = RFC 9562;
5. ``rand_b`` (62 bits): fresh random bits from the operating system (``os.urandom``, as
   :mod:`secrets` uses) for every id, so processes (forked or not) never collide. They are read
   for 512 ids at a time (one system call instead of one per id); a forked child throws away
   the bits it inherited and reads its own.

Within a process, ids strictly increase: when the clock has not moved since the last id, the
12-bit fraction is bumped by one step. Python cannot make ids faster than one per 244 ns, so this
never pushes timestamps ahead of the clock for long. (``uuid6.uuid7()`` instead adds a whole
millisecond per id made within the same millisecond: a burst of 100,000 ids runs about 100 s
ahead of the wall clock and breaks ordering against other processes.)
"""

from __future__ import annotations

import os
import re
import struct
import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import RFC_4122

from uuid6 import UUID

__all__ = ["event_id_time", "format_uuid", "new_event_id", "new_event_id_bytes"]

_FRACTION_STEPS = 1 << 12
_NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

_lock = threading.Lock()
_last_stamp = 0  # (unix_ts_ms << 12) | fraction of the last id made by this process

_RANDOM_BATCH = 512
_UNPACK_BATCH = struct.Struct(f"<{_RANDOM_BATCH}Q").unpack
_VARIANT = 0b10 << 62
_LOW_48_BITS = (1 << 48) - 1
# The last 64 bits of ids not made yet, as their text ("vxxx-xxxxxxxxxxxx": the variant and 62
# random bits read from os.urandom), taken from the end; written 512 at a time, which costs less
# than writing each id's whole value.
_random_tails: list[bytes] = []
# The millisecond of the last id made and its text up to the version digit ("tttttttt-tttt-7"),
# as one tuple (replaced whole), which serves the ids of the same millisecond.
_last_ms: tuple[int, bytes] = (-1, b"")


def _reset_lock_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _random_tails.clear()  # the parent's: the child must never use the same ones


os.register_at_fork(after_in_child=_reset_lock_after_fork)


def _random_tails_batch() -> list[bytes]:
    values = (n >> 2 | _VARIANT for n in _UNPACK_BATCH(os.urandom(8 * _RANDOM_BATCH)))
    return [b"%04x-%012x" % (value >> 48, value & _LOW_48_BITS) for value in values]


def new_event_id() -> str:
    """A new UUIDv7 string (lowercase, hyphenated), later than any this process made before."""
    return new_event_id_bytes().decode()


def new_event_id_bytes() -> bytes:
    """:func:`new_event_id` as ASCII bytes (as a ``ce_id`` header carries it), made directly."""
    global _last_stamp, _last_ms
    ms, ns_in_ms = divmod(time.time_ns(), _NS_PER_MS)
    stamp = (ms << 12) | (ns_in_ms * _FRACTION_STEPS // _NS_PER_MS)
    with _lock:
        if stamp <= _last_stamp:
            stamp = _last_stamp + 1
        _last_stamp = stamp
        if not _random_tails:
            _random_tails.extend(_random_tails_batch())
        tail = _random_tails.pop()
    ms = stamp >> 12
    last = _last_ms
    if last[0] != ms:
        last = (ms, b"%08x-%04x-7" % (ms >> 16, ms & 0xFFFF))
        _last_ms = last
    # The layout of format_uuid(ms << 80 | 7 << 76 | fraction << 64 | variant and random bits).
    return b"%s%03x-%s" % (last[1], stamp & 0xFFF, tail)


def format_uuid(value: int) -> str:
    """The 128-bit ``value`` in the canonical UUID form, as ``str(uuid.UUID(int=value))``.

    Formatted directly (a third of the cost of building a ``UUID`` object to print it); the
    version and variant bits are the caller's to set.
    """
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


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
