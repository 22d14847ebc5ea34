"""How a relay claims rows: one strategy per database, chosen once when the relay is built.

A claim is the rows a relay may publish now without breaking any aggregate's order, because no
other relay publishes that aggregate meanwhile. The relay uses it as a block::

    with claims.claim(batch_size) as claim:
        ...send claim.records and wait for Kafka...
        claim.mark(positions)      # the acknowledged rows
    # committed: the marks are durable, and the claim is released (or kept: the SQLite lease)

- :class:`~producers.outbox_relay.postgres_claims.BucketClaims` (PostgreSQL, several relays):
  advisory locks on hash buckets of aggregates, held by the block's transaction;
- :class:`~producers.outbox_relay.sqlite_claims.LeaseClaims` (SQLite and any other database,
  one relay at a time): a lease row, renewed while the relay waits for Kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from pipeline.outbox.table import OutboxRecord

__all__ = ["Claim", "ClaimStrategy", "LeaseState", "nothing_to_mark"]


class LeaseState(NamedTuple):
    """Who holds the lease, where there is one (SQLite)."""

    held: bool
    #: The holder's name: this relay's when ``held``; another relay's, or ``None``, when not.
    holder: str | None


def nothing_to_mark(positions: Sequence[int]) -> None:
    """The ``mark`` of a claim without rows."""
    if positions:
        raise ValueError(f"this claim holds no rows, cannot mark {list(positions)}")


@dataclass(frozen=True)
class Claim:
    """The rows one batch may publish, in position order."""

    records: Sequence[OutboxRecord]
    #: Marks these positions published, committed when the claim's block ends without error.
    mark: Callable[[Sequence[int]], None] = nothing_to_mark
    #: Another relay held some of the aggregates at the head of the backlog (PostgreSQL).
    contended: bool = False
    #: The lease after this claim (SQLite); ``None`` where there is no lease.
    lease: LeaseState | None = None


class ClaimStrategy(Protocol):
    """Claims rows no other relay publishes at the same time (see the module docstring)."""

    @property
    def notifies(self) -> bool:
        """The database announces new rows (PostgreSQL's NOTIFY): an idle relay may LISTEN."""

    @property
    def concurrent_claims(self) -> bool:
        """A claim may be made while an earlier one is still open, and never holds an aggregate
        the open one holds (PostgreSQL's locks): the relay claims and sends the next batch
        while the previous one's marks commit."""

    @property
    def renew_every_s(self) -> float | None:
        """How often :meth:`renew` must be called while a claim waits for Kafka (``None``:
        never, the claim lasts as long as its block)."""

    def claim(self, limit: int) -> AbstractContextManager[Claim]:
        """Claim up to ``limit`` unpublished rows, oldest position first, for the block."""

    def renew(self) -> None:
        """Keep the claim while Kafka is slow (see :attr:`renew_every_s`)."""

    def close(self) -> None:
        """At a clean stop: let another relay take over at once."""
