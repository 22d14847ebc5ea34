"""The outbox relay's ordering rules, pure, so they are tested without a database.

- :func:`lock_bucket`: the advisory-lock bucket of an aggregate (PostgreSQL relays share the
  backlog by bucket, so one aggregate is only ever published by one relay at a time);
- :class:`ClaimPlan`: which buckets a relay tries, and which rows are then its own;
- :func:`publishable_positions`: which rows of a sent batch may be marked published (never one
  after a failed row of its aggregate).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.outbox.table import OutboxRecord

__all__ = ["ClaimPlan", "lock_bucket", "publishable_positions"]


def lock_bucket(aggregate_type: str, aggregate_id: str, buckets: int) -> int:
    """The advisory-lock bucket of an aggregate: the same in every process and run (CRC-32,
    not Python's salted ``hash``)."""
    key = f"{aggregate_type}\x00{aggregate_id}".encode()
    return zlib.crc32(key) % buckets


class ClaimPlan:
    """Which advisory-lock buckets a relay tries, and which rows are then its own (pure).

    The relay reads the head of the backlog in windows (``(position, aggregate_type,
    aggregate_id)`` in position order, each window after the last) and feeds them to
    :meth:`add_window`. :meth:`to_try` names the untried buckets, oldest first row first, just
    enough to fill a batch if every lock is granted; :meth:`granted` records the answer. The
    rows owned are every row *seen so far* in a granted bucket: a bucket granted in a later
    round brings its rows from earlier windows too, so an aggregate is always published from
    its oldest unpublished row on.

    ``held`` are the buckets of this relay's previous claim, still open while its marks
    commit: they are left out, as if tried and refused, without counting as contention.
    """

    def __init__(self, buckets: int, batch_size: int, *, held: Iterable[int] = ()) -> None:
        self.buckets = buckets
        self.batch_size = batch_size
        self._rows: list[tuple[int, int]] = []  # (position, bucket)
        self._counts: dict[int, int] = {}  # rows seen per bucket, in first-seen order
        #: ``held``: buckets this relay's earlier claim still holds, never tried (not contention).
        self.tried: set[int] = set(held)
        self.owned: set[int] = set()
        self.contended = False

    def add_window(self, window: Iterable[tuple[int, str, str]]) -> int:
        """Add the next window; returns how many buckets it showed for the first time."""
        rows, counts, buckets = self._rows, self._counts, self.buckets
        seen = len(counts)
        for position, aggregate_type, aggregate_id in window:
            bucket = lock_bucket(aggregate_type, aggregate_id, buckets)
            rows.append((position, bucket))
            counts[bucket] = counts.get(bucket, 0) + 1
        return len(counts) - seen

    @property
    def owned_rows(self) -> int:
        return sum(self._counts[bucket] for bucket in self.owned)

    @property
    def full(self) -> bool:
        return self.owned_rows >= self.batch_size

    @property
    def can_fill(self) -> bool:
        """The owned buckets and those not tried yet hold a batch among the rows seen so far
        (no need to read another window first)."""
        rows = sum(
            count
            for bucket, count in self._counts.items()
            if bucket in self.owned or bucket not in self.tried
        )
        return rows >= self.batch_size

    def to_try(self) -> list[int]:
        have = self.owned_rows
        chosen: list[int] = []
        for bucket, rows in self._counts.items():
            if have >= self.batch_size:
                break
            if bucket in self.tried:
                continue
            chosen.append(bucket)
            have += rows
        return chosen

    def granted(self, tried: Iterable[int], granted: Iterable[int]) -> None:
        tried, granted = set(tried), set(granted)
        self.tried |= tried
        self.owned |= granted
        if granted != tried:
            self.contended = True

    @property
    def positions(self) -> list[int]:
        """The owned rows' positions, in position order."""
        return [position for position, bucket in self._rows if bucket in self.owned]


def publishable_positions(
    records: Sequence[OutboxRecord], acknowledged: Sequence[bool]
) -> list[int]:
    """The positions that may be marked published after a batch was sent.

    A row counts only if the broker acknowledged it *and* every earlier row of its aggregate
    in the batch was acknowledged: after a failure the aggregate's later rows stay unpublished
    too, so the relay sends them again after the failed one (duplicates by id, never a gap).
    """
    if len(records) != len(acknowledged):
        raise ValueError(f"{len(records)} records but {len(acknowledged)} acknowledgements")
    if all(acknowledged):  # the usual batch: every row, without a look at aggregates
        return [record.position for record in records]
    broken: set[tuple[str, str]] = set()
    positions = []
    for record, ok in zip(records, acknowledged, strict=True):
        if record.aggregate in broken:
            continue
        if not ok:
            broken.add(record.aggregate)
            continue
        positions.append(record.position)
    return positions
