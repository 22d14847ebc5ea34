"""The inbox: which events a consumer group has handled, and which keys are parked.

A processor records ``(consumer group, event id)`` in the same database transaction as the
handler's effects; a redelivered event finds its row and is skipped (a duplicate). The insert
comes first in the transaction, so on PostgreSQL a second instance handling the same event at
the same moment (during a rebalance) waits on the row and then sees the duplicate.

A *parked* key is a key whose event was dead-lettered: its later events are dead-lettered too
(reason ``key_parked``), so nothing of that key is applied past the gap, until a redrive of the
key succeeds. The park is a row, so it survives restarts and rebalances.

The tables are created by the migration ``0001_inbox``; their rows are removed after the
configured retention by :func:`purge_inbox`, in small batches.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement, TextClause

from pipeline.database import metadata

__all__ = [
    "Claim",
    "InboxEntry",
    "Outcome",
    "ParkedKey",
    "claim",
    "claim_many",
    "inbox_table",
    "outcomes_of",
    "park_key",
    "parked_among",
    "parked_key",
    "parked_keys_table",
    "purge_inbox",
    "unpark_key",
]

Outcome = Literal["processed", "dead_lettered"]

inbox_table = Table(
    "pipeline_inbox",
    metadata,
    Column("consumer_group", String(255), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, index=True),
)

parked_keys_table = Table(
    "pipeline_parked_keys",
    metadata,
    Column("consumer_group", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("key", LargeBinary, primary_key=True),
    Column("event_id", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("redrive_id", String(64), nullable=True),
    Column("parked_at", DateTime(timezone=True), nullable=False),
)


def _utc(moment: datetime | None) -> datetime:
    """``moment`` (default: now) in UTC: SQLite keeps a time's wall clock without its offset,
    so every stored or compared time is UTC, or their order would depend on the caller's zone."""
    if moment is None:
        return datetime.now(UTC)
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment


@dataclass(frozen=True)
class Claim:
    """The result of recording an event: new, or seen before with the outcome it had then."""

    new: bool
    previous: Outcome | None = None


# The statements of the hot path are built once, with bound parameters, so SQLAlchemy compiles
# each once per dialect and caches it (building them per event cost more than running them).
# RETURNING, not rowcount: psycopg reports no row count for ON CONFLICT DO NOTHING.
# The same text on both dialects (SQLite >= 3.35 has RETURNING): SQLAlchemy's dialect inserts
# with ON CONFLICT are compiled anew for every execution, which cost more than the insert.
_INSERT = text(
    'INSERT INTO pipeline_inbox (consumer_group, event_id, topic, "partition", "offset", '
    "outcome, recorded_at) VALUES (:consumer_group, :event_id, :topic, :partition, :offset, "
    ":outcome, :recorded_at) ON CONFLICT DO NOTHING RETURNING event_id"
).bindparams(bindparam("recorded_at", type_=DateTime(timezone=True)))
_OUTCOME = select(inbox_table.c.outcome).where(
    inbox_table.c.consumer_group == bindparam("group"),
    inbox_table.c.event_id == bindparam("event"),
)
_PARKED = select(
    parked_keys_table.c.event_id,
    parked_keys_table.c.reason,
    parked_keys_table.c.redrive_id,
    parked_keys_table.c.parked_at,
).where(
    parked_keys_table.c.consumer_group == bindparam("group"),
    parked_keys_table.c.topic == bindparam("topic"),
    parked_keys_table.c.key == bindparam("key"),
)


_OUTCOMES = select(inbox_table.c.event_id, inbox_table.c.outcome).where(
    inbox_table.c.consumer_group == bindparam("group"),
    inbox_table.c.event_id.in_(bindparam("events", expanding=True)),
)
_PARKED_AMONG = select(parked_keys_table.c.topic, parked_keys_table.c.key).where(
    parked_keys_table.c.consumer_group == bindparam("group"),
    parked_keys_table.c.key.in_(bindparam("keys", expanding=True)),
)
# On PostgreSQL the statements for many events take arrays, so their text is the same for any
# number of events: psycopg parses and SQLAlchemy caches them once (a statement whose text
# grows with the group was parsed anew for every group).
_CLAIM_MANY_POSTGRES = text(
    'INSERT INTO pipeline_inbox (consumer_group, event_id, topic, "partition", "offset", '
    "outcome, recorded_at) SELECT :consumer_group, e, t, p, o, :outcome, :recorded_at "
    "FROM unnest(CAST(:event_ids AS text[]), CAST(:topics AS text[]), "
    "CAST(:partitions AS integer[]), CAST(:offsets AS bigint[])) AS u(e, t, p, o) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
).bindparams(bindparam("recorded_at", type_=DateTime(timezone=True)))
_OUTCOMES_POSTGRES = text(
    "SELECT event_id, outcome FROM pipeline_inbox WHERE consumer_group = :group "
    "AND event_id = ANY(CAST(:events AS text[]))"
)
_PARKED_AMONG_POSTGRES = text(
    "SELECT topic, key FROM pipeline_parked_keys WHERE consumer_group = :group "
    "AND key = ANY(CAST(:keys AS bytea[]))"
)


def _insert_ignoring_conflicts(connection: Connection, values: dict[str, object]) -> bool:
    return connection.execute(_INSERT, values).first() is not None


@lru_cache(maxsize=64)
def _insert_many(rows: int) -> TextClause:
    """One INSERT of ``rows`` rows (a statement per size, each compiled once and cached)."""
    values = ", ".join(
        f"(:consumer_group, :event_id_{n}, :topic_{n}, :partition_{n}, :offset_{n}, :outcome, "
        ":recorded_at)"
        for n in range(rows)
    )
    return text(
        'INSERT INTO pipeline_inbox (consumer_group, event_id, topic, "partition", "offset", '
        f"outcome, recorded_at) VALUES {values} ON CONFLICT DO NOTHING RETURNING event_id"
    ).bindparams(bindparam("recorded_at", type_=DateTime(timezone=True)))


@dataclass(frozen=True, order=True)
class InboxEntry:
    """One event to record: its id and where it was read."""

    event_id: str
    topic: str
    partition: int
    offset: int


# Rows per INSERT of claim_many: SQLite allows 32,766 bound parameters per statement.
_ROWS_PER_INSERT = 500


def claim_many(
    connection: Connection,
    entries: Sequence[InboxEntry],
    *,
    consumer_group: str,
    now: datetime | None = None,
) -> set[str]:
    """Record many processed events in the caller's transaction; returns the ids that were new
    (the others were recorded before: duplicates)."""
    new: set[str] = set()
    recorded_at = _utc(now)
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            _CLAIM_MANY_POSTGRES,
            {
                "consumer_group": consumer_group,
                "outcome": "processed",
                "recorded_at": recorded_at,
                "event_ids": [entry.event_id for entry in entries],
                "topics": [entry.topic for entry in entries],
                "partitions": [entry.partition for entry in entries],
                "offsets": [entry.offset for entry in entries],
            },
        )
        return set(rows.scalars())
    for start in range(0, len(entries), _ROWS_PER_INSERT):
        chunk = entries[start : start + _ROWS_PER_INSERT]
        values: dict[str, object] = {
            "consumer_group": consumer_group,
            "outcome": "processed",
            "recorded_at": recorded_at,
        }
        for n, entry in enumerate(chunk):
            values[f"event_id_{n}"] = entry.event_id
            values[f"topic_{n}"] = entry.topic
            values[f"partition_{n}"] = entry.partition
            values[f"offset_{n}"] = entry.offset
        new.update(connection.execute(_insert_many(len(chunk)), values).scalars())
    return new


def outcomes_of(
    connection: Connection, *, consumer_group: str, event_ids: Collection[str]
) -> dict[str, Outcome]:
    """The recorded outcomes of those of ``event_ids`` that were recorded."""
    if not event_ids:
        return {}
    statement = _OUTCOMES_POSTGRES if connection.dialect.name == "postgresql" else _OUTCOMES
    rows = connection.execute(statement, {"group": consumer_group, "events": list(event_ids)})
    return {event_id: outcome for event_id, outcome in rows}


def parked_among(
    connection: Connection, *, consumer_group: str, keys: Collection[tuple[str, bytes]]
) -> set[tuple[str, bytes]]:
    """Which of the ``(topic, key)`` pairs are parked."""
    if not keys:
        return set()
    statement = _PARKED_AMONG_POSTGRES if connection.dialect.name == "postgresql" else _PARKED_AMONG
    rows = connection.execute(
        statement, {"group": consumer_group, "keys": list({key for _, key in keys})}
    )
    parked = {(topic, bytes(key)) for topic, key in rows}
    return parked & set(keys)


def claim(
    connection: Connection,
    *,
    consumer_group: str,
    event_id: str,
    topic: str,
    partition: int,
    offset: int,
    outcome: Outcome = "processed",
    now: datetime | None = None,
) -> Claim:
    """Record the event in the caller's transaction (not committed here)."""
    inserted = _insert_ignoring_conflicts(
        connection,
        {
            "consumer_group": consumer_group,
            "event_id": event_id,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "outcome": outcome,
            "recorded_at": _utc(now),
        },
    )
    if inserted:
        return Claim(new=True)
    previous = outcome_of(connection, consumer_group=consumer_group, event_id=event_id)
    return Claim(new=False, previous=previous)


def outcome_of(connection: Connection, *, consumer_group: str, event_id: str) -> Outcome | None:
    """The recorded outcome of an event, or ``None`` when it was never recorded."""
    found: Outcome | None = connection.execute(
        _OUTCOME, {"group": consumer_group, "event": event_id}
    ).scalar_one_or_none()
    return found


def set_outcome(
    connection: Connection,
    *,
    consumer_group: str,
    event_id: str,
    outcome: Outcome,
    now: datetime | None = None,
) -> None:
    """Change a recorded event's outcome (a redriven dead letter that now succeeded)."""
    connection.execute(
        update(inbox_table)
        .where(inbox_table.c.consumer_group == consumer_group, inbox_table.c.event_id == event_id)
        .values(outcome=outcome, recorded_at=_utc(now))
    )


@dataclass(frozen=True)
class ParkedKey:
    event_id: str
    reason: str
    redrive_id: str | None
    parked_at: datetime


def _key_clause(consumer_group: str, topic: str, key: bytes) -> ColumnElement[bool]:
    table = parked_keys_table
    return and_(
        table.c.consumer_group == consumer_group, table.c.topic == topic, table.c.key == key
    )


def parked_key(
    connection: Connection, *, consumer_group: str, topic: str, key: bytes
) -> ParkedKey | None:
    row = connection.execute(
        _PARKED, {"group": consumer_group, "topic": topic, "key": key}
    ).one_or_none()
    return None if row is None else ParkedKey(*row)


def park_key(
    connection: Connection,
    *,
    consumer_group: str,
    topic: str,
    key: bytes,
    event_id: str,
    reason: str,
    redrive_id: str | None = None,
    now: datetime | None = None,
) -> None:
    """Park ``key`` (or re-park it, for a redrive that failed again)."""
    connection.execute(delete(parked_keys_table).where(_key_clause(consumer_group, topic, key)))
    connection.execute(
        parked_keys_table.insert().values(
            consumer_group=consumer_group,
            topic=topic,
            key=key,
            event_id=event_id,
            reason=reason,
            redrive_id=redrive_id,
            parked_at=_utc(now),
        )
    )


def unpark_key(connection: Connection, *, consumer_group: str, topic: str, key: bytes) -> bool:
    return (
        connection.execute(
            delete(parked_keys_table).where(_key_clause(consumer_group, topic, key))
        ).rowcount
        > 0
    )


def count_parked(connection: Connection, *, consumer_group: str) -> int:
    return int(
        connection.execute(
            select(func.count()).where(parked_keys_table.c.consumer_group == consumer_group)
        ).scalar_one()
    )


def purge_inbox(engine: Engine, *, older_than: datetime, batch_size: int = 1_000) -> int:
    """Delete inbox rows recorded before ``older_than``, ``batch_size`` rows per transaction.

    Small transactions keep the locks short, so processors writing to the inbox meanwhile are
    never held up for long. Returns how many rows were deleted.
    """
    table = inbox_table
    older_than = _utc(older_than)
    deleted = 0
    while True:
        with engine.begin() as connection:
            oldest = (
                select(table.c.consumer_group, table.c.event_id)
                .where(table.c.recorded_at < older_than)
                .limit(batch_size)
            )
            rows = connection.execute(oldest).all()
            if not rows:
                return deleted
            for group in {row.consumer_group for row in rows}:
                ids = [row.event_id for row in rows if row.consumer_group == group]
                connection.execute(
                    delete(table).where(table.c.consumer_group == group, table.c.event_id.in_(ids))
                )
            deleted += len(rows)
        if len(rows) < batch_size:
            return deleted
