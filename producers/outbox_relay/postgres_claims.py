"""Claiming on PostgreSQL, where several relays may run: advisory locks on aggregate buckets.

An aggregate is hashed to one of ``outbox.lock_buckets`` advisory locks (CRC-32 of type and id,
:func:`pipeline.outbox.table.lock_bucket`). A relay reads the oldest unpublished rows (one
batch's worth, no row locks) and tries the locks of their buckets with
``pg_try_advisory_xact_lock`` (oldest first, only as many as fill a batch); when other relays
hold some, it reads the next window and tries again (up to 3 rounds, see
:class:`pipeline.outbox.table.ClaimPlan`). Then, in a new statement (so a new snapshot, taken
after the locks), it reads the rows of the buckets it got that are still unpublished. A relay
therefore only ever publishes aggregates no other relay holds, and holds them until its marks
are committed: per aggregate, rows reach Kafka in position order whichever relay sends them.

Row locks (``FOR UPDATE SKIP LOCKED``) alone would not do: relay B would skip A's locked rows
of aggregate X and publish X's *next* row, ahead of them. Locking per aggregate row by row
would take one lock per row and scan the whole backlog to find each aggregate's head; buckets
bound the locks per batch (``lock_buckets``) and the scan to the head of the backlog. Hash
collisions only make two aggregates share a lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.outbox.table import (
    RECORD_COLUMNS,
    ClaimPlan,
    OutboxRecord,
    outbox_table,
    record_of,
    utc_now,
)
from pipeline.settings import OutboxSettings
from producers.outbox_relay.claims import Claim

__all__ = ["LOCK_NAMESPACE", "BucketClaims", "claim_rows", "mark_published", "try_locks"]

#: The first argument of the two-key advisory locks (int4): "obx\0". The one-key (bigint)
#: locks, such as the migration lock, live in a separate key space.
LOCK_NAMESPACE = 0x6F627800
#: Windows of the backlog read (and rounds of lock attempts) per batch while other relays
#: hold some of the buckets at its head.
LOCK_ROUNDS = 3

_table = outbox_table


def _window(after: int, limit: int) -> sa.Select[tuple[int, str, str]]:
    """The next ``limit`` unpublished rows after position ``after``: what picks the buckets."""
    return (
        sa.select(_table.c.position, _table.c.aggregate_type, _table.c.aggregate_id)
        .where(_table.c.published_at.is_(None), _table.c.position > after)
        .order_by(_table.c.position)
        .limit(limit)
    )


def try_locks(buckets: Sequence[int]) -> sa.Select[tuple[int]]:
    """The buckets whose advisory lock this transaction got (held until it ends)."""
    bucket = sa.func.unnest(sa.bindparam("buckets", list(buckets), sa.ARRAY(sa.Integer)))
    b = bucket.column_valued("b")
    granted = sa.func.pg_try_advisory_xact_lock(
        sa.bindparam("namespace", LOCK_NAMESPACE, sa.Integer), b, type_=sa.Boolean
    )
    return sa.select(b).where(granted)


def claim_rows(positions: Sequence[int], limit: int) -> sa.Select[tuple[object, ...]]:
    """The rows at ``positions`` that are still unpublished, in position order."""
    mine = sa.bindparam("mine", list(positions), sa.ARRAY(sa.BigInteger))
    return (
        sa.select(*RECORD_COLUMNS)
        .where(_table.c.position == sa.any_(mine), _table.c.published_at.is_(None))
        .order_by(_table.c.position)
        .limit(limit)
    )


def mark_published(positions: Sequence[int]) -> sa.Update:
    """Marks the rows at ``positions`` published now (one statement, one array parameter)."""
    marked = sa.bindparam("positions", list(positions), sa.ARRAY(sa.BigInteger))
    return (
        sa.update(_table).where(_table.c.position == sa.any_(marked)).values(published_at=utc_now())
    )


class BucketClaims:
    """Claims by advisory-lock buckets, held by the claim's transaction (see the module doc)."""

    notifies = True
    renew_every_s: float | None = None

    def __init__(self, engine: Engine, settings: OutboxSettings) -> None:
        self._engine = engine
        self._buckets = settings.lock_buckets

    @contextmanager
    def claim(self, limit: int) -> Iterator[Claim]:
        """One transaction: lock buckets, read their rows, yield them, commit the marks (which
        releases the locks); an error in the block rolls back and releases them too."""
        with self._engine.connect() as connection, connection.begin():
            records, contended = self._claim(connection, limit)

            def mark(positions: Sequence[int]) -> None:
                if positions:
                    connection.execute(mark_published(positions))

            yield Claim(records, mark, contended=contended)

    def _claim(self, connection: Connection, limit: int) -> tuple[list[OutboxRecord], bool]:
        plan = ClaimPlan(self._buckets, limit)
        after = 0
        for _ in range(LOCK_ROUNDS):
            window = connection.execute(_window(after, limit)).all()
            if window:
                after = window[-1][0]
                plan.add_window(cast(Sequence[tuple[int, str, str]], window))
            chosen = plan.to_try()
            if chosen:
                plan.granted(chosen, connection.execute(try_locks(chosen)).scalars())
            if plan.full or len(window) < limit:
                break  # a batch, or the end of the backlog
        mine = plan.positions
        if not mine:
            return [], plan.contended
        # A new statement, so a snapshot taken after the locks: rows another relay published
        # while it held a bucket are seen as published now.
        rows = connection.execute(claim_rows(mine, limit)).all()
        return [record_of(row) for row in rows], plan.contended

    def renew(self) -> None:
        """Nothing to renew: the locks last as long as the claim's transaction."""

    def close(self) -> None:
        """Nothing to release: the locks ended with the last claim's transaction."""
