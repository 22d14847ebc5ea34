"""Parked keys: a key whose event was dead-lettered, so that its later events are too.

A processor parks a key when it dead-letters one of its events: the key's later events are
dead-lettered as well (reason ``key_parked``), so nothing of that key is applied past the gap,
until a redrive of the key succeeds or an operator discards its dead letters. The park is a row
(table ``pipeline_parked_keys``, created by the migration ``0001_inbox``), so it survives
restarts and rebalances. A key of any size can be parked: one longer than 1 KiB is kept under
its SHA-256 (:func:`parked_form`: a B-tree index entry has a size limit).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from pipeline.database import metadata

__all__ = [
    "MAX_PARKED_KEY",
    "ParkedKey",
    "ParkedProbe",
    "count_parked",
    "note_last_pending",
    "note_parked_dead_letter",
    "park_key",
    "parked_among",
    "parked_form",
    "parked_forms",
    "parked_key",
    "parked_keys_table",
    "parked_probe",
    "stored_time",
    "unpark_key",
    "unpark_settled",
]

#: Keys longer than this are parked under their SHA-256 (PostgreSQL's B-tree index entries are
#: at most about 2.7 KB, and the key is part of the parked keys' primary key with the group
#: and the topic; an 8 KB key could not be parked, and its processor retried for ever).
MAX_PARKED_KEY = 1024
_LONG_KEY = b"\x00sha256:"


def parked_form(key: bytes) -> bytes:
    """``key`` as the parked keys table holds it: as it is, or its SHA-256 when longer than
    :data:`MAX_PARKED_KEY` bytes (with a prefix no key of that size starts with)."""
    if len(key) <= MAX_PARKED_KEY:
        return key
    return _LONG_KEY + hashlib.sha256(key).digest()


def parked_forms(
    keys: Collection[tuple[str, bytes]],
) -> dict[tuple[str, bytes], tuple[str, bytes]]:
    """Each ``(topic, key)`` by ``(topic, parked form)``."""
    return {(topic, parked_form(key)): (topic, key) for topic, key in keys}


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
    # The key's latest dead letter (its key_parked ones too): a redrive lets the key go only
    # when its last record is that one. NULL on rows parked before revision 0006.
    Column("last_event_id", String(255), nullable=True),
)


def stored_time(moment: datetime | None) -> datetime:
    """``moment`` (default: now) in UTC: SQLite keeps a time's wall clock without its offset,
    so every stored or compared time is UTC, or their order would depend on the caller's zone."""
    if moment is None:
        return datetime.now(UTC)
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment


_PARKED = select(
    parked_keys_table.c.event_id,
    parked_keys_table.c.reason,
    parked_keys_table.c.redrive_id,
    parked_keys_table.c.parked_at,
    parked_keys_table.c.last_event_id,
).where(
    parked_keys_table.c.consumer_group == bindparam("group"),
    parked_keys_table.c.topic == bindparam("topic"),
    parked_keys_table.c.key == bindparam("key"),
)
# Which of the keys asked for are parked: one probe of the primary key (consumer_group, topic,
# key) for each. Matching the group's rows on the key alone read every parked key of the group
# (the topic comes before the key in the index): with 10,000 parked keys a look-up took 2.5 ms
# on SQLite (on the event loop) and with 30,000 5.8 ms on PostgreSQL, against 0.03 ms.
_PROBE_POSTGRES = (
    "SELECT p.topic, {key} FROM json_array_elements(CAST(%s AS json)) AS asked "
    "CROSS JOIN LATERAL (SELECT topic, key FROM pipeline_parked_keys WHERE consumer_group = %s "
    "AND topic = asked->>0 AND key = decode(asked->>1, 'hex') LIMIT 1) AS p"
)
# SQLite has no unhex() before 3.41: the keys go as parameters, in a VALUES list that CROSS JOIN
# keeps as the outer loop. A statement has at most 32,766 parameters; more keys than
# _MOST_PROBED read the group's rows as before.
_PROBE_SQLITE = (
    "SELECT p.topic, {key} FROM asked CROSS JOIN pipeline_parked_keys AS p "
    "WHERE p.consumer_group = ? AND p.topic = asked.topic AND p.key = asked.key"
)
_SCAN_SQLITE = (
    "SELECT topic, {key} FROM pipeline_parked_keys AS p WHERE consumer_group = ? "
    "AND lower(hex(key)) IN (SELECT value FROM json_each(?))"
)
_MOST_PROBED = 10_000


class ParkedProbe(NamedTuple):
    """SQL that selects ``(topic, key)`` of the parked ones among keys asked for: a ``WITH``
    clause to put first in the statement (may be empty) and its values, the ``SELECT`` and
    its values."""

    with_clause: str
    with_values: tuple[object, ...]
    select: str
    select_values: tuple[object, ...]

    def statement(self) -> tuple[str, tuple[object, ...]]:
        """The probe as a statement of its own, and its values."""
        statement = f"{self.with_clause} {self.select}" if self.with_clause else self.select
        return statement, (*self.with_values, *self.select_values)


def parked_probe(
    dialect: str, *, consumer_group: str, keys: Collection[tuple[str, bytes]], key_as_hex: bool
) -> ParkedProbe:
    """The probe of which of ``keys`` (in their parked forms) are parked (``dialect``:
    ``postgresql`` or ``sqlite``), selecting the key as stored or, with ``key_as_hex``, in
    lowercase hex."""
    if dialect == "postgresql":
        pairs = json.dumps([(topic, key.hex()) for topic, key in keys])
        key = "encode(p.key, 'hex')" if key_as_hex else "p.key"
        return ParkedProbe("", (), _PROBE_POSTGRES.format(key=key), (pairs, consumer_group))
    key = "lower(hex(p.key))" if key_as_hex else "p.key"
    if len(keys) > _MOST_PROBED:
        hexes = json.dumps(sorted({key.hex() for _, key in keys}))
        return ParkedProbe("", (), _SCAN_SQLITE.format(key=key), (consumer_group, hexes))
    with_clause = "WITH asked(topic, key) AS (VALUES " + ", ".join(["(?, ?)"] * len(keys)) + ")"
    pairs_values = tuple(part for pair in keys for part in pair)
    return ParkedProbe(with_clause, pairs_values, _PROBE_SQLITE.format(key=key), (consumer_group,))


def parked_among(
    connection: Connection, *, consumer_group: str, keys: Collection[tuple[str, bytes]]
) -> set[tuple[str, bytes]]:
    """Which of the ``(topic, key)`` pairs are parked."""
    if not keys:
        return set()
    forms = parked_forms(keys)
    statement, values = parked_probe(
        connection.dialect.name, consumer_group=consumer_group, keys=forms, key_as_hex=False
    ).statement()
    rows = connection.exec_driver_sql(statement, values)
    return {
        forms[found] for found in ((topic, bytes(key)) for topic, key in rows) if found in forms
    }


@dataclass(frozen=True)
class ParkedKey:
    event_id: str
    reason: str
    redrive_id: str | None
    parked_at: datetime
    #: The key's latest dead letter (``None``: parked before this was kept).
    last_event_id: str | None = None

    def let_go_by(self, event_id: str) -> bool:
        """Whether a redrive whose last record of the key is ``event_id`` may let it go: no
        dead letter of the key came after that one (one that was still in the topic when the
        redrive read the dead-letter topic would be left behind)."""
        return self.last_event_id is None or self.last_event_id == event_id


def _key_clause(consumer_group: str, topic: str, key: bytes) -> ColumnElement[bool]:
    table = parked_keys_table
    return and_(
        table.c.consumer_group == consumer_group,
        table.c.topic == topic,
        table.c.key == parked_form(key),
    )


def parked_key(
    connection: Connection, *, consumer_group: str, topic: str, key: bytes
) -> ParkedKey | None:
    row = connection.execute(
        _PARKED, {"group": consumer_group, "topic": topic, "key": parked_form(key)}
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
            key=parked_form(key),
            event_id=event_id,
            reason=reason,
            redrive_id=redrive_id,
            parked_at=stored_time(now),
            last_event_id=event_id,
        )
    )


def note_parked_dead_letter(
    connection: Connection, *, consumer_group: str, topic: str, key: bytes, event_id: str
) -> None:
    """Note ``event_id`` as the parked key's latest dead letter (one dead-lettered behind the
    park, as ``key_parked``)."""
    connection.execute(
        update(parked_keys_table)
        .where(_key_clause(consumer_group, topic, key))
        .values(last_event_id=event_id)
    )


def unpark_key(connection: Connection, *, consumer_group: str, topic: str, key: bytes) -> bool:
    return (
        connection.execute(
            delete(parked_keys_table).where(_key_clause(consumer_group, topic, key))
        ).rowcount
        > 0
    )


def unpark_settled(
    connection: Connection,
    *,
    consumer_group: str,
    topic: str,
    key: bytes,
    settled: Collection[str],
) -> Literal["let go", "not parked", "parked after"]:
    """Let ``key`` go when the dead letter that parked it last is among ``settled`` (the event
    ids of the key's dead letters an operator discarded or redrove, none of the key's left
    pending): nothing of the key was dead-lettered after them. ``parked after``: one was, after
    the dead-letter topic was read (the key stays parked behind it)."""
    parked = parked_key(connection, consumer_group=consumer_group, topic=topic, key=key)
    if parked is None:
        return "not parked"
    last = parked.last_event_id or parked.event_id
    if last not in settled:
        return "parked after"
    # Only while it is still that dead letter: one dead-lettered meanwhile keeps the key parked.
    deleted = connection.execute(
        delete(parked_keys_table).where(
            _key_clause(consumer_group, topic, key),
            or_(
                parked_keys_table.c.last_event_id == last,
                and_(
                    parked_keys_table.c.last_event_id.is_(None),
                    parked_keys_table.c.event_id == last,
                ),
            ),
        )
    ).rowcount
    return "let go" if deleted else "parked after"


def note_last_pending(
    connection: Connection,
    *,
    consumer_group: str,
    topic: str,
    key: bytes,
    last_pending: str,
    settled: Collection[str],
) -> bool:
    """Note ``last_pending`` as the parked key's latest dead letter when the one noted is among
    ``settled`` (discarded, say): a redrive of the key's pending ones, whose last is
    ``last_pending``, then lets the key go (:meth:`ParkedKey.let_go_by`). Whether it changed."""
    if not settled:
        return False
    return (
        connection.execute(
            update(parked_keys_table)
            .where(
                _key_clause(consumer_group, topic, key),
                parked_keys_table.c.last_event_id.in_(list(settled)),
            )
            .values(last_event_id=last_pending)
        ).rowcount
        > 0
    )


def count_parked(connection: Connection, *, consumer_group: str) -> int:
    return int(
        connection.execute(
            select(func.count()).where(parked_keys_table.c.consumer_group == consumer_group)
        ).scalar_one()
    )
