"""Claiming on SQLite (and any database without advisory locks): one relay holds a lease.

The lease is one row of ``pipeline_outbox_lease`` (owner, expiry). The relay that holds it
renews it every batch and while waiting for Kafka; another relay waits and takes over once the
lease expired (or was released at a clean stop). Reading, publishing and marking are three
short steps, so writers are never blocked while Kafka is slow.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from pipeline.outbox.table import (
    RELAY_COLUMNS,
    outbox_lease_table,
    outbox_table,
    records_of,
    utc_now,
)
from pipeline.settings import OutboxSettings
from producers.outbox_relay.claims import Claim, LeaseState

__all__ = ["Lease", "LeaseClaims"]

_LEASE_NAME = "relay"


class Lease:
    """The one lease row: held by ``owner`` until ``expires_at``; see the module docstring."""

    def __init__(self, engine: Engine, owner: str, duration_s: float) -> None:
        self._engine = engine
        self.owner = owner
        self._duration = timedelta(seconds=duration_s)
        #: Who held the lease at the last :meth:`hold`.
        self.holder: str | None = None

    def hold(self) -> bool:
        """Take or renew the lease; ``False`` while another relay's lease is valid."""
        table = outbox_lease_table
        now = utc_now()
        with self._engine.begin() as connection:
            renewed = connection.execute(
                sa.update(table)
                .where(
                    table.c.name == _LEASE_NAME,
                    sa.or_(table.c.owner == self.owner, table.c.expires_at < now),
                )
                .values(owner=self.owner, expires_at=now + self._duration)
            ).rowcount
            if renewed:
                self.holder = self.owner
                return True
            holder = connection.execute(
                sa.select(table.c.owner).where(table.c.name == _LEASE_NAME)
            ).scalar_one_or_none()
            if holder is None:
                try:
                    with connection.begin_nested():
                        connection.execute(
                            sa.insert(table).values(
                                name=_LEASE_NAME,
                                owner=self.owner,
                                expires_at=now + self._duration,
                            )
                        )
                except IntegrityError:  # another relay inserted it first
                    self.holder = None
                    return False
                self.holder = self.owner
                return True
        self.holder = str(holder)
        return False

    def release(self) -> None:
        """Let another relay take over at once (a clean stop)."""
        table = outbox_lease_table
        with self._engine.begin() as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.name == _LEASE_NAME, table.c.owner == self.owner)
                .values(expires_at=utc_now() - timedelta(seconds=1))
            )


class LeaseClaims:
    """Claims the oldest unpublished rows while this relay holds the lease."""

    notifies = False
    #: The next claim reads the oldest unpublished rows again: only after the marks commit.
    concurrent_claims = False

    def __init__(self, engine: Engine, settings: OutboxSettings, owner: str) -> None:
        self._engine = engine
        self.lease = Lease(engine, owner, settings.lease_s)
        self._delete_published = settings.retention_s == 0
        #: Renewed three times per lease period while Kafka is slow: never lost to one delay.
        self.renew_every_s: float | None = settings.lease_s / 3

    @contextmanager
    def claim(self, limit: int) -> Iterator[Claim]:
        """Take or renew the lease, then read the rows; no transaction stays open meanwhile."""
        if not self.lease.hold():
            yield Claim((), lease=LeaseState(held=False, holder=self.lease.holder))
            return
        table = outbox_table
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(*RELAY_COLUMNS)
                .where(table.c.published_at.is_(None))
                .order_by(table.c.position)
                .limit(limit)
            ).all()
        yield Claim(
            records_of(rows),
            self._mark,
            lease=LeaseState(held=True, holder=self.lease.owner),
        )

    def _mark(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        table = outbox_table
        published = table.c.position.in_(positions)
        with self._engine.begin() as connection:
            if self._delete_published:  # outbox.retention_s 0: nothing kept
                connection.execute(sa.delete(table).where(published))
            else:
                connection.execute(sa.update(table).where(published).values(published_at=utc_now()))

    def renew(self) -> None:
        self.lease.hold()

    def close(self) -> None:
        """Release the lease if this relay holds it."""
        if self.lease.holder == self.lease.owner:
            self.lease.release()
