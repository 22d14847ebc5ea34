"""The inbox: which events a consumer group has handled.

A processor records ``(consumer group, event id)`` in the same database transaction as the
handler's effects; a redelivered event finds its row and is skipped (a duplicate). The insert
comes first in the transaction, so on PostgreSQL a second instance handling the same event at
the same moment (during a rebalance) waits on the row and then sees the duplicate.

Which keys are parked (their events dead-lettered behind one that was) is
:mod:`pipeline.processing.parked_keys`; :func:`seen_and_parked` asks both in one round trip.

The table is created by the migration ``0001_inbox``; its rows are removed after the
configured retention by :func:`purge_inbox`, in small batches.

What the table can hold: an event id of at most 255 characters, without a NUL
(:func:`id_problem`: a processor dead-letters an event with another id as
``undecodable``, since it could not be deduplicated).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

from pipeline.database import metadata
from pipeline.processing.parked_keys import parked_form, parked_forms, parked_probe, stored_time

__all__ = [
    "MAX_EVENT_ID",
    "Claim",
    "InboxEntry",
    "Outcome",
    "claim",
    "claim_many",
    "claim_many_statements",
    "id_problem",
    "inbox_table",
    "outcomes_of",
    "purge_inbox",
    "recorded_at_value",
    "seen_and_parked",
    "seen_and_parked_of",
    "seen_and_parked_statement",
]

Outcome = Literal["processed", "dead_lettered"]

#: The longest event id the inbox keeps (its column's length).
MAX_EVENT_ID = 255


def id_problem(event_id: str) -> str | None:
    """Why the inbox cannot keep ``event_id`` (CloudEvents limits neither its length nor its
    characters), or ``None``."""
    if len(event_id) > MAX_EVENT_ID:
        return (
            f"the event id is {len(event_id):,} characters long; the inbox keeps ids of at most "
            f"{MAX_EVENT_ID}, so this event could not be deduplicated"
        )
    if "\x00" in event_id:  # PostgreSQL's text cannot hold one
        return "the event id holds a NUL character, which the inbox cannot keep"
    return None


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


_OUTCOMES = select(inbox_table.c.event_id, inbox_table.c.outcome).where(
    inbox_table.c.consumer_group == bindparam("group"),
    inbox_table.c.event_id.in_(bindparam("events", expanding=True)),
)
# PostgreSQL's statement for many events takes their values as one JSON text, so its text is
# the same for any number of events (psycopg prepares it once), and one json.dumps costs far
# less than binding a list per column (psycopg dumps arrays in Python). SQLite's binds each
# event's values (a VALUES list, one text per number of rows, which sqlite3 keeps compiled):
# 2-3 us less per event than a JSON text taken apart by json_extract, for the inbox of every
# group of events that wrote nothing else (the sqlite3 module binds in C). They run as the
# driver's own SQL (``exec_driver_sql``: SQLAlchemy still wraps the driver's errors and
# notices a lost connection), which measured about half the CPU of a compiled ``text()``
# statement per transaction on SQLite: these run once per group, on every group.
_CLAIM_MANY_POSTGRES = (
    'INSERT INTO pipeline_inbox (consumer_group, event_id, topic, "partition", '
    '"offset", outcome, recorded_at) SELECT %s, r->>0, r->>1, CAST(r->>2 AS integer), '
    "CAST(r->>3 AS bigint), %s, %s FROM json_array_elements(CAST(%s AS json)) AS r "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


@functools.cache  # one per number of rows, at most _ROWS_PER_INSERT
def _claim_many_sqlite(rows: int) -> str:
    # "WHERE true": SQLite's rule for an INSERT ... SELECT with ON CONFLICT.
    return (
        'INSERT INTO pipeline_inbox (consumer_group, event_id, topic, "partition", "offset", '
        "outcome, recorded_at) SELECT ?, column1, column2, column3, column4, ?, ? FROM (VALUES "
        + ",".join(["(?,?,?,?)"] * rows)
        + ") WHERE true ON CONFLICT DO NOTHING RETURNING event_id"
    )


# The recorded events among those asked for, one index probe per id on (consumer_group,
# event_id) whatever the statistics say: the LIMIT keeps the planner from flattening the
# lateral subquery. ("event_id = ANY(...)" read every row of the consumer group, and so grew
# with the inbox, wherever the table had not been analyzed yet (a new database, a young
# service): 1,000 rows read for one id; at 1,000 rows it took 1.0 ms for 64 ids, this 0.18 ms.)
_RECORDED_POSTGRES = (
    "SELECT i.event_id, i.outcome FROM (SELECT CAST(%s AS text) AS name) AS g "
    "CROSS JOIN json_array_elements_text(CAST(%s AS json)) AS asked(event_id) "
    "CROSS JOIN LATERAL (SELECT event_id, outcome FROM pipeline_inbox "
    "WHERE consumer_group = g.name AND event_id = asked.event_id LIMIT 1) AS i"
)
# Both look-ups in one statement (one round trip): ('e', event id, outcome) for each recorded
# event, ('k', topic, key in hex) for each parked key (parked_keys.parked_probe). (Not
# "IN (SELECT ...)" on PostgreSQL: the planner hash-joins that against a scan of the whole
# inbox.)
_SEEN = {
    "postgresql": "SELECT 'e', r.* FROM (" + _RECORDED_POSTGRES + ") AS r",
    "sqlite": "SELECT 'e', event_id, outcome FROM pipeline_inbox WHERE consumer_group = ? "
    "AND event_id IN (SELECT value FROM json_each(?))",
}


def _recorded_at(connection: Connection, moment: datetime) -> object:
    return recorded_at_value(connection.dialect.name, moment)


def recorded_at_value(dialect: str, moment: datetime) -> object:
    """A time as the driver's own SQL takes it: SQLite's the text SQLAlchemy stores for a
    DateTime (UTC, no offset), so rows written either way compare alike."""
    if dialect == "sqlite":
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment


def _insert_ignoring_conflicts(connection: Connection, values: dict[str, object]) -> bool:
    return connection.execute(_INSERT, values).first() is not None


class InboxEntry(NamedTuple):
    """One event to record: its id and where it was read. (A named tuple: a group builds one
    per event and sorts them, which a tuple does in C.)"""

    event_id: str
    topic: str
    partition: int
    offset: int


# Rows per INSERT of claim_many, so no statement grows without bound: on SQLite 4 variables a
# row and 3 in all, within the 999 variables of a SQLite built before 3.32.
_ROWS_PER_INSERT = 240


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
    recorded_at = _recorded_at(connection, stored_time(now))
    for statement, values in claim_many_statements(
        connection.dialect.name, entries, consumer_group=consumer_group, recorded_at=recorded_at
    ):
        new.update(connection.exec_driver_sql(statement, values).scalars())
    return new


def claim_many_statements(
    dialect: str, entries: Sequence[InboxEntry], *, consumer_group: str, recorded_at: object
) -> Iterator[tuple[str, tuple[object, ...]]]:
    """The driver's SQL and values of :func:`claim_many` (``dialect``: ``postgresql`` or
    ``sqlite``), a statement per chunk of rows; each returns the new events' ids."""
    for start in range(0, len(entries), _ROWS_PER_INSERT):
        chunk = entries[start : start + _ROWS_PER_INSERT]
        if dialect == "postgresql":
            rows = json.dumps([(e.event_id, e.topic, e.partition, e.offset) for e in chunk])
            yield _CLAIM_MANY_POSTGRES, (consumer_group, "processed", recorded_at, rows)
        else:  # an InboxEntry is (event_id, topic, partition, offset): the VALUES' order
            values = (consumer_group, "processed", recorded_at, *itertools.chain(*chunk))
            yield _claim_many_sqlite(len(chunk)), values


def outcomes_of(
    connection: Connection, *, consumer_group: str, event_ids: Collection[str]
) -> dict[str, Outcome]:
    """The recorded outcomes of those of ``event_ids`` that were recorded."""
    if not event_ids:
        return {}
    if connection.dialect.name == "postgresql":
        values = (consumer_group, json.dumps(list(event_ids)))
        rows = connection.exec_driver_sql(_RECORDED_POSTGRES, values)
    else:
        rows = connection.execute(_OUTCOMES, {"group": consumer_group, "events": list(event_ids)})
    return {event_id: outcome for event_id, outcome in rows}


def seen_and_parked(
    connection: Connection,
    *,
    consumer_group: str,
    event_ids: Collection[str],
    keys: Collection[tuple[str, bytes]],
) -> tuple[dict[str, Outcome], set[tuple[str, bytes]]]:
    """:func:`outcomes_of` and :func:`parked_among` in one statement (one round trip)."""
    if not event_ids and not keys:
        return {}, set()
    statement, values = seen_and_parked_statement(
        connection.dialect.name, consumer_group=consumer_group, event_ids=event_ids, keys=keys
    )
    return seen_and_parked_of(connection.exec_driver_sql(statement, values), keys)


def seen_and_parked_statement(
    dialect: str,
    *,
    consumer_group: str,
    event_ids: Collection[str],
    keys: Collection[tuple[str, bytes]],
) -> tuple[str, tuple[object, ...]]:
    """The driver's SQL and values of :func:`seen_and_parked` (``dialect``: ``postgresql`` or
    ``sqlite``); its rows go to :func:`seen_and_parked_of`."""
    dialect = "postgresql" if dialect == "postgresql" else "sqlite"
    seen = (_SEEN[dialect], (consumer_group, json.dumps(list(event_ids))))
    if not keys:
        return seen
    forms = {(topic, parked_form(key)) for topic, key in keys}
    probe = parked_probe(dialect, consumer_group=consumer_group, keys=forms, key_as_hex=True)
    statement = f"{seen[0]} UNION ALL SELECT 'k', p.* FROM ({probe.select}) AS p"
    if probe.with_clause:
        statement = f"{probe.with_clause} {statement}"
    return statement, (*probe.with_values, *seen[1], *probe.select_values)


def seen_and_parked_of(
    rows: Iterable[Sequence[Any]], keys: Collection[tuple[str, bytes]]
) -> tuple[dict[str, Outcome], set[tuple[str, bytes]]]:
    """The outcomes and the parked keys in the rows of :func:`seen_and_parked_statement`."""
    outcomes: dict[str, Outcome] = {}
    parked: set[tuple[str, bytes]] = set()
    for kind, first, second in rows:
        if kind == "e":
            outcomes[first] = second
        else:
            parked.add((first, bytes.fromhex(second)))
    if not parked:
        return outcomes, parked
    forms = parked_forms(keys)
    return outcomes, {forms[found] for found in parked if found in forms}


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
            "recorded_at": stored_time(now),
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
    was: Outcome | None = None,
    now: datetime | None = None,
) -> bool:
    """Change a recorded event's outcome (a redriven dead letter that now succeeded); with
    ``was``, only if that is its outcome now. Whether it changed: on PostgreSQL an update of a
    row another transaction is changing waits for that one and then looks again."""
    statement = update(inbox_table).where(
        inbox_table.c.consumer_group == consumer_group, inbox_table.c.event_id == event_id
    )
    if was is not None:
        statement = statement.where(inbox_table.c.outcome == was)
    result = connection.execute(statement.values(outcome=outcome, recorded_at=stored_time(now)))
    return bool(result.rowcount)


def purge_inbox(engine: Engine, *, older_than: datetime, batch_size: int = 1_000) -> int:
    """Delete inbox rows recorded before ``older_than``, ``batch_size`` rows per transaction.

    Small transactions keep the locks short, so processors writing to the inbox meanwhile are
    never held up for long. Returns how many rows were deleted.
    """
    table = inbox_table
    older_than = stored_time(older_than)
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
