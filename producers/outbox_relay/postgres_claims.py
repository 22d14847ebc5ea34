"""Claiming on PostgreSQL, where several relays may run: advisory locks on aggregate buckets.

An aggregate is hashed to one of ``outbox.lock_buckets`` advisory locks (CRC-32 of type and id,
:func:`pipeline.outbox.ordering.lock_bucket`). A relay reads the oldest unpublished rows (two
batches' worth, no row locks) and tries the locks of their buckets with
``pg_try_advisory_xact_lock`` (oldest first, only as many as fill a batch, so about half the
buckets at the head of the backlog are left for another relay); when other relays hold some, it
tries the buckets it has not tried yet, reading the next window when those cannot fill a batch
and the last window showed new buckets (up to 3 rounds, see
:class:`pipeline.outbox.ordering.ClaimPlan`). Then, in a new statement (so a new snapshot, taken
after the locks), it reads the rows of the buckets it got that are still unpublished. A relay
therefore only ever publishes aggregates no other relay (and no other open claim of its own)
holds, and holds them until its marks are committed: per aggregate, rows reach Kafka in
position order whichever relay sends them.

Row locks (``FOR UPDATE SKIP LOCKED``) alone would not do: relay B would skip A's locked rows
of aggregate X and publish X's *next* row, ahead of them. Locking per aggregate row by row
would take one lock per row and scan the whole backlog to find each aggregate's head; buckets
bound the locks per batch (``lock_buckets``) and the scan to the head of the backlog. Hash
collisions only make two aggregates share a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline.outbox.ordering import ClaimPlan
from pipeline.outbox.table import (
    RELAY_COLUMNS,
    OutboxRecord,
    outbox_table,
    records_of,
    utc_now,
)
from pipeline.settings import OutboxSettings
from producers.outbox_relay.claims import Claim

__all__ = [
    "CLAIM_SETTINGS",
    "LOCK_NAMESPACE",
    "BucketClaims",
    "claim_rows",
    "delete_published",
    "fetch_all",
    "mark_published",
    "try_locks",
    "window",
]

#: The first argument of the two-key advisory locks (int4): "obx\0". The one-key (bigint)
#: locks, such as the migration lock, live in a separate key space.
LOCK_NAMESPACE = 0x6F627800
#: Windows of the backlog read (and rounds of lock attempts) per batch while other relays
#: hold some of the buckets at its head.
LOCK_ROUNDS = 3
#: A window is this many batches: a relay takes the buckets of the oldest rows until they fill
#: one batch, so about half the buckets of the window are left for a second relay. (With a
#: window of one batch a relay took every bucket at the head of the backlog, and a second relay
#: found them all held: two relays were slower than one.)
WINDOW_BATCHES = 2

# The claim's statements as the driver's SQL, written once: a claim runs four or five, and at a
# low rate (one or two rows per NOTIFY) SQLAlchemy building each statement and its cache key
# again cost more than the database answering it.
_T = outbox_table.name
# RELAY_COLUMNS, the headers as their stored JSON text.
_RELAY_COLUMN_SQL = ", ".join([*(column.key for column in RELAY_COLUMNS[:-1]), "headers::text"])

#: Settings for the rest of the claim's transaction (``set_config(..., is_local)``):
#:
#: - ``synchronous_commit`` off: the transaction writes nothing but the marks, and a mark lost
#:   to a database crash only means the row is published again, with the same id (at least
#:   once holds; WAL order keeps a later relay's marks from surviving an earlier one's). So the
#:   commit need not wait for the WAL to reach the disk.
#: - bitmap and sequential scans off: the head of the backlog is read from the unpublished
#:   index in position order, whatever the statistics say. After a large commit they still
#:   described a small table, and each batch sorted every unpublished row instead.
CLAIM_SETTINGS = "SELECT " + ", ".join(
    f"set_config('{name}', 'off', true)"
    for name in ("synchronous_commit", "enable_bitmapscan", "enable_seqscan")
)
_WINDOW = (
    f"SELECT position, aggregate_type, aggregate_id FROM {_T} "
    "WHERE published_at IS NULL AND position > %s ORDER BY position LIMIT %s"
)
_TRY_LOCKS = "SELECT b FROM unnest(%s::integer[]) AS b WHERE pg_try_advisory_xact_lock(%s, b)"
_CLAIM_ROWS = (
    f"SELECT {_RELAY_COLUMN_SQL} FROM {_T} WHERE position = ANY(%s::bigint[]) "
    "AND published_at IS NULL ORDER BY position LIMIT %s"
)
_MARK = f"UPDATE {_T} SET published_at = %s WHERE position = ANY(%s::bigint[])"
_DELETE = f"DELETE FROM {_T} WHERE position = ANY(%s::bigint[])"

Statement = tuple[str, tuple[object, ...]]


def fetch_all(connection: Connection, statement: Statement) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` as plain tuples, read in the claim's transaction through
    psycopg's own cursor in binary format. The two reads of a claim (a window of twice a batch,
    then the batch's rows) were most of the claiming thread's time, and SQLAlchemy's rows on
    top of psycopg's, and text-format numbers and bytea, much of that; nothing here needs a
    SQLAlchemy row. (Another driver than psycopg 3, the one installed with the pipeline, is
    read through SQLAlchemy.)"""
    if connection.dialect.driver != "psycopg":
        return [tuple(row) for row in connection.exec_driver_sql(*statement)]
    driver_connection: Any = connection.connection.driver_connection
    try:
        with driver_connection.cursor(binary=True) as cursor:
            cursor.execute(*statement)
            return cast(list[tuple[Any, ...]], cursor.fetchall())
    except psycopg.Error as error:
        # As SQLAlchemy's own statements raise it: the relay takes a refused statement (no
        # privilege on the table, the table renamed) as the database failing, and tries the
        # batch again later, where psycopg's own error ended it with a traceback.
        raise DBAPIError.instance(*statement, error, psycopg.Error) from error


def window(after: int, limit: int) -> Statement:
    """The next ``limit`` unpublished rows after position ``after``: what picks the buckets."""
    return _WINDOW, (after, limit)


def try_locks(buckets: Sequence[int]) -> Statement:
    """The buckets whose advisory lock this transaction got (held until it ends)."""
    return _TRY_LOCKS, (list(buckets), LOCK_NAMESPACE)


def claim_rows(positions: Sequence[int], limit: int) -> Statement:
    """The rows at ``positions`` that are still unpublished, in position order."""
    return _CLAIM_ROWS, (list(positions), limit)


def mark_published(positions: Sequence[int]) -> Statement:
    """Marks the rows at ``positions`` published now (one statement, one array parameter)."""
    return _MARK, (utc_now(), list(positions))


def delete_published(positions: Sequence[int]) -> Statement:
    """Deletes the rows at ``positions``, published now (``outbox.retention_s`` 0)."""
    return _DELETE, (list(positions),)


class BucketClaims:
    """Claims by advisory-lock buckets, held by the claim's transaction (see the module doc).

    Two claims may be open at once (the relay claims and sends the next batch while the
    previous one's marks commit, from another thread): each has its own connection and
    transaction, so the locks keep their aggregates apart, and the buckets of the open claim
    are not even tried by the next.
    """

    notifies = True
    renew_every_s: float | None = None
    concurrent_claims = True

    def __init__(self, engine: Engine, settings: OutboxSettings) -> None:
        self._engine = engine
        self._buckets = settings.lock_buckets
        self._marks = delete_published if settings.retention_s == 0 else mark_published
        self._held: set[int] = set()  # the buckets of the open claims
        self._lock = threading.Lock()

    @contextmanager
    def claim(self, limit: int) -> Iterator[Claim]:
        """One transaction: lock buckets, read their rows, yield them, commit the marks (which
        releases the locks); an error in the block rolls back and releases them too."""
        owned: set[int] = set()
        try:
            with self._engine.connect() as connection, connection.begin():
                plan = self._lock_buckets(connection, limit)
                owned = plan.owned
                with self._lock:
                    self._held |= owned
                records = self._read_rows(connection, plan, limit)

                def mark(positions: Sequence[int]) -> None:
                    if positions:
                        connection.exec_driver_sql(*self._marks(positions))

                yield Claim(records, mark, contended=plan.contended)
        finally:
            with self._lock:
                self._held -= owned

    def _lock_buckets(self, connection: Connection, limit: int) -> ClaimPlan:
        connection.exec_driver_sql(CLAIM_SETTINGS)
        with self._lock:
            held = set(self._held)
        plan = ClaimPlan(self._buckets, limit, held=held)
        window_rows = limit * WINDOW_BATCHES
        after = 0
        more = True  # rows past the last window
        for _ in range(LOCK_ROUNDS):
            if more and not plan.can_fill:
                rows = fetch_all(connection, window(after, window_rows))
                more = len(rows) == window_rows
                if rows:
                    after = rows[-1][0]
                    if not plan.add_window(cast(Sequence[tuple[int, str, str]], rows)):
                        # No bucket it had not seen: a window further on would most likely
                        # show none either (every bucket at the head is held elsewhere).
                        more = False
            chosen = plan.to_try()
            if chosen:
                plan.granted(chosen, connection.exec_driver_sql(*try_locks(chosen)).scalars())
            if plan.full or not (more or plan.to_try()):
                break  # a batch, or nothing left to try
        return plan

    @staticmethod
    def _read_rows(connection: Connection, plan: ClaimPlan, limit: int) -> list[OutboxRecord]:
        mine = plan.positions
        if not mine:
            return []
        # A new statement, so a snapshot taken after the locks: rows another relay published
        # while it held a bucket are seen as published now.
        return records_of(fetch_all(connection, claim_rows(mine, limit)))

    def renew(self) -> None:
        """Nothing to renew: the locks last as long as the claim's transaction."""

    def close(self) -> None:
        """Nothing to release: the locks ended with the last claim's transaction."""
