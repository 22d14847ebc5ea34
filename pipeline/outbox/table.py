"""The transactional outbox: events written in the caller's own database transaction.

A service that changes its state and emits events adds the events to the outbox table in the
same transaction as the change (:meth:`Outbox.add`, which never commits). A rollback leaves no
event; a commit leaves it for the relay (``producers/outbox_relay/``), which publishes it to
Kafka and marks it published only after the broker acknowledged it.

Ordering. Each row gets a ``position`` from an autoincrement BIGINT primary key, and the relay
publishes one aggregate's rows in ``position`` order. On PostgreSQL a sequence value is taken
when the row is inserted, not when it commits, so two *concurrent* transactions may commit out
of position order. For one aggregate that cannot happen as long as the application serialises
the writes of one aggregate (the processors do: one key lane handles one key at a time, and the
key is the aggregate id); events of different aggregates carry no order between them.

The stored row is the encoded Kafka message: ``payload`` is the value and ``headers`` the
CloudEvents ``ce_*`` headers (plus ``content-type``) as produced by
:func:`pipeline.envelope.encode`; the key is the aggregate id (the event's ``partitionkey``).

Also here: the status of the outbox (backlog, oldest unpublished age, publish rate, per topic)
and housekeeping (deleting published rows past their retention). The relay's ordering rules are
pure helpers of their own (:mod:`pipeline.outbox.ordering`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from pipeline.database import metadata
from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.envelope.event import control_character_at
from pipeline.errors import PipelineError
from pipeline.settings import OutboxSettings
from pipeline.topic_names import kafka_name_problem

__all__ = [
    "NOTIFY_CHANNEL",
    "RELAY_COLUMNS",
    "Outbox",
    "OutboxError",
    "OutboxRecord",
    "OutboxStatus",
    "PendingEvent",
    "TopicStatus",
    "add_to_outbox",
    "delete_published",
    "outbox_lease_table",
    "outbox_row",
    "outbox_status",
    "outbox_table",
    "records_of",
    "route_topic",
]

#: The channel the insert trigger (PostgreSQL) notifies at commit; relays LISTEN on it.
NOTIFY_CHANNEL = "pipeline_outbox"

# SQLite's rowid alias must be INTEGER to autoincrement; PostgreSQL gets a BIGINT identity.
_Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

outbox_table = sa.Table(
    "pipeline_outbox",
    metadata,
    sa.Column("position", _Position, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(255), nullable=False, unique=True),
    sa.Column("aggregate_type", sa.String(255), nullable=False),
    sa.Column("aggregate_id", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=True),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    # The relay's scan: unpublished rows by position, with what it needs to pick aggregates.
    sa.Index(
        "ix_pipeline_outbox_unpublished",
        "position",
        "aggregate_type",
        "aggregate_id",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    ),
    # Housekeeping and the publish rate: published rows by time.
    sa.Index(
        "ix_pipeline_outbox_published_at",
        "published_at",
        postgresql_where=sa.text("published_at IS NOT NULL"),
        sqlite_where=sa.text("published_at IS NOT NULL"),
    ),
    sqlite_autoincrement=True,
)

#: Where only one relay may run (SQLite): the one lease row, held by ``owner`` until it expires.
outbox_lease_table = sa.Table(
    "pipeline_outbox_lease",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


class OutboxError(PipelineError):
    """An event that cannot go into the outbox as asked (no topic for it, a conflicting key, an
    aggregate id, aggregate type, event type, event id or topic its column cannot hold)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the outbox only ever writes UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- adding events ----------------------------------------------------------------------------

#: The text columns of a row checked before it is written, and what to call each in an error.
_TEXT_COLUMNS = {
    "aggregate_type": "aggregate_type",
    "aggregate_id": "aggregate_id",
    "event_type": "the event's type",
    "event_id": "the event's id",
    "topic": "topic",
}
#: Their lengths in the table (characters; the migration's are the same).
_TEXT_LIMITS: dict[str, int | None] = {
    column: getattr(outbox_table.c[column].type, "length", None) for column in _TEXT_COLUMNS
}


def _check_text(column: str, value: str) -> None:
    """:class:`OutboxError` unless ``value`` fits ``column`` alike on every database: at most
    its length in characters (PostgreSQL refused a longer one with its own error, SQLite took
    it whole), valid UTF-8 (a lone surrogate, from bytes decoded with ``surrogateescape``, say,
    was a bare ``UnicodeEncodeError``), and no NUL character (PostgreSQL refuses it)."""
    limit = _TEXT_LIMITS[column]
    if value.isascii() and "\x00" not in value and (limit is None or len(value) <= limit):
        return  # the usual case, at the cost of three scans
    what = _TEXT_COLUMNS[column]
    shown = repr(value) if len(value) <= 40 else f"{value[:40]!r}..."
    if limit is not None and len(value) > limit:
        raise OutboxError(
            f"{what} is {len(value):,} characters long ({shown}): the outbox holds at most "
            f"{limit} (column {outbox_table.name}.{column}); use a shorter one"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise OutboxError(
            f"{what} {shown} is not valid text ({error.reason}, at position {error.start}): "
            "decode its bytes as UTF-8, or use another one"
        ) from None
    if "\x00" in value:
        raise OutboxError(
            f"{what} {shown} has a NUL character (at position {value.index(chr(0))}), which "
            "PostgreSQL cannot store: use another one"
        )


def route_topic(
    routes: Mapping[str, str], *, event_type: str, aggregate_type: str, topic: str | None = None
) -> str:
    """The topic of an event: ``topic`` if given, else the route of its event type, else the
    route of its aggregate type; :class:`OutboxError` when there is none."""
    if topic is not None:
        if not topic:
            raise OutboxError("topic must not be empty")
        problem = kafka_name_problem(topic)
        if problem is not None:  # the relay could only hold it for ever, as "does not exist"
            raise OutboxError(f"topic {problem}")
        return topic
    for name in (event_type, aggregate_type):
        routed = routes.get(name)
        if routed:
            return routed
    emptied = [name for name in (event_type, aggregate_type) if name in routes]
    if emptied:
        raise OutboxError(
            f"the route of {emptied[0]!r} is empty (outbox.routes, PIPELINE_OUTBOX__ROUTES), "
            "which routes it nowhere: give it a topic, or pass topic=..."
        )
    raise OutboxError(
        f"no topic for aggregate type {aggregate_type!r} (event type {event_type!r}): pass "
        "topic=... or add a route (outbox.routes, PIPELINE_OUTBOX__ROUTES)"
    )


def outbox_row(
    event: Event,
    *,
    aggregate_type: str,
    aggregate_id: str,
    topic: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The outbox row of ``event``: its encoded value and CloudEvents headers, keyed by the
    aggregate id (which becomes the event's ``partitionkey`` when it has none)."""
    if not isinstance(event, Event):
        raise TypeError(f"expected a pipeline.envelope.Event, got {type(event).__name__}")
    if not aggregate_type or not aggregate_id:
        raise OutboxError("aggregate_type and aggregate_id must not be empty")
    for column, value in (
        ("aggregate_type", aggregate_type),
        ("aggregate_id", aggregate_id),
        ("event_type", event.type),
        ("event_id", event.id),
        ("topic", topic),
    ):
        _check_text(column, value)
    if event.partitionkey is None:
        at = control_character_at(aggregate_id)
        if at is not None:  # model_copy does not validate: checked as Event(partitionkey=) does
            raise OutboxError(
                f"aggregate_id {aggregate_id[:40]!r} holds a control character "
                f"(U+{ord(aggregate_id[at]):04X} at offset {at}), which the event's partitionkey "
                "(the Kafka key) must not: use another one"
            )
        event = event.model_copy(update={"partitionkey": aggregate_id})
    elif event.partitionkey != aggregate_id:
        raise OutboxError(
            f"event {event.id} has partitionkey {event.partitionkey!r} but aggregate id "
            f"{aggregate_id!r}: the Kafka key is the aggregate id, so they must agree"
        )
    message = encode(event)
    return {
        "event_id": event.id,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "event_type": event.type,
        "topic": topic,
        "payload": message.value,
        "headers": [[name, value.decode("utf-8")] for name, value in message.headers],
        "created_at": created_at,
    }


class PendingEvent(NamedTuple):
    """One event for :meth:`Outbox.add_all`."""

    event: Event
    aggregate_type: str
    aggregate_id: str
    topic: str | None = None


class Outbox:
    """Adds events to the outbox table inside the caller's transaction (never commits).

    ``target`` is a SQLAlchemy ``Session`` or ``Connection`` with a transaction the caller
    commits or rolls back::

        outbox = Outbox.from_settings(settings.outbox)
        with Session(engine) as session, session.begin():
            session.execute(...)                       # the state change
            outbox.add(session, event, aggregate_type="order", aggregate_id="order-1")
        # committed: the relay publishes the event to orders.events, keyed by "order-1"
    """

    def __init__(self, routes: Mapping[str, str] | None = None) -> None:
        self.routes: dict[str, str] = dict(OutboxSettings().routes if routes is None else routes)

    @classmethod
    def from_settings(cls, settings: OutboxSettings) -> Outbox:
        return cls(settings.routes)

    def row(
        self, event: Event, *, aggregate_type: str, aggregate_id: str, topic: str | None = None
    ) -> dict[str, Any]:
        """The row :meth:`add` would insert (for inspection and tests)."""
        if not isinstance(event, Event):
            raise TypeError(f"expected a pipeline.envelope.Event, got {type(event).__name__}")
        chosen = route_topic(
            self.routes, event_type=event.type, aggregate_type=aggregate_type, topic=topic
        )
        return outbox_row(
            event,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            topic=chosen,
            created_at=utc_now(),
        )

    def add(
        self,
        target: Session | Connection,
        event: Event,
        *,
        aggregate_type: str,
        aggregate_id: str,
        topic: str | None = None,
    ) -> str:
        """Insert ``event`` in ``target``'s transaction; returns the topic it will go to.

        On PostgreSQL the insert trigger queues a NOTIFY, delivered to relays at commit.
        """
        row = self.row(event, aggregate_type=aggregate_type, aggregate_id=aggregate_id, topic=topic)
        target.execute(sa.insert(outbox_table), [row])
        return str(row["topic"])

    def add_all(self, target: Session | Connection, pending: Iterable[PendingEvent]) -> int:
        """Insert many events in one statement (in the given order); returns how many."""
        rows = [
            self.row(
                item.event,
                aggregate_type=item.aggregate_type,
                aggregate_id=item.aggregate_id,
                topic=item.topic,
            )
            for item in pending
        ]
        if rows:
            target.execute(sa.insert(outbox_table), rows)
        return len(rows)


def add_to_outbox(
    target: Session | Connection,
    event: Event,
    *,
    aggregate_type: str,
    aggregate_id: str,
    topic: str | None = None,
    routes: Mapping[str, str] | None = None,
) -> str:
    """:meth:`Outbox.add` with the default (or given) routes; returns the topic."""
    return Outbox(routes).add(
        target, event, aggregate_type=aggregate_type, aggregate_id=aggregate_id, topic=topic
    )


# --- what the relay reads ---------------------------------------------------------------------


class OutboxRecord(NamedTuple):
    """One unpublished row, as the relay publishes it.

    A named tuple rather than a frozen dataclass: the relay makes one per row, and a frozen
    dataclass's ``__init__`` (a guarded ``__setattr__`` per field) costs several times as much.
    """

    position: int
    event_id: str
    aggregate_type: str
    aggregate_id: str
    topic: str
    payload: bytes | None
    #: Text as stored; bytes for a value with a NUL in it (see :func:`records_of`).
    headers: Sequence[tuple[str, str | bytes]]

    @property
    def aggregate(self) -> tuple[str, str]:
        return (self.aggregate_type, self.aggregate_id)

    @property
    def value(self) -> bytes | None:
        """The Kafka message's value: the payload as bytes (a driver may hand back a buffer)."""
        payload = self.payload
        return payload if type(payload) is bytes or payload is None else bytes(payload)

    def message(self) -> KafkaMessage:
        return KafkaMessage(  # positional, and str.encode's default UTF-8: cheaper per row
            self.aggregate_id.encode(),
            self.value,
            [
                (name, value.encode() if isinstance(value, str) else value)
                for name, value in self.headers
            ],
        )


RECORD_COLUMNS = (
    outbox_table.c.position,
    outbox_table.c.event_id,
    outbox_table.c.aggregate_type,
    outbox_table.c.aggregate_id,
    outbox_table.c.topic,
    outbox_table.c.payload,
    outbox_table.c.headers,
)


def record_of(row: Sequence[Any]) -> OutboxRecord:
    return OutboxRecord(*row)


#: What the relay reads of a row: :data:`RECORD_COLUMNS`, but the headers as their stored JSON
#: text, for :func:`records_of` to decode a whole batch in one call. (Through the JSON column
#: type each row's headers went through ``json.loads`` on their own: the relay's largest cost
#: per row.)
RELAY_COLUMNS = (*RECORD_COLUMNS[:-1], sa.cast(outbox_table.c.headers, sa.Text).label("headers"))

# msgspec decodes and checks the type in C; json.loads plus checks in Python cost several times
# as much for these small arrays.
_HEADER_LISTS = msgspec.json.Decoder(list[list[tuple[str, str]]])


#: A NUL character as JSON writes it. A header value with one goes to the producer as bytes:
#: confluent-kafka hands a text header value to librdkafka as a C string, cut at the first NUL.
_NUL = "\\u0000"


def _nul_safe(pairs: list[tuple[str, str]]) -> list[tuple[str, str | bytes]]:
    return [(name, value.encode() if "\x00" in value else value) for name, value in pairs]


def records_of(rows: Sequence[Sequence[Any]]) -> list[OutboxRecord]:
    """The records of rows read with :data:`RELAY_COLUMNS` (in that order), every row's
    headers decoded in one call; :class:`OutboxError` when some are not ``[[name, value],
    ...]`` of strings (as :func:`outbox_row` writes them)."""
    if not rows:
        return []
    text = "[" + ",".join(row[6] for row in rows) + "]"
    try:
        decoded = _HEADER_LISTS.decode(text)
    except msgspec.MsgspecError as error:
        first, last = rows[0][0], rows[-1][0]
        raise OutboxError(
            f"outbox rows {first}..{last}: headers are not [[name, value], ...] of strings: {error}"
        ) from None
    # One look at the whole batch's text; a NUL is rare.
    headers: Sequence[Sequence[tuple[str, str | bytes]]] = (
        [_nul_safe(pairs) for pairs in decoded] if _NUL in text else decoded
    )
    return [
        OutboxRecord(position, event_id, aggregate_type, aggregate_id, topic, payload, pairs)
        for (position, event_id, aggregate_type, aggregate_id, topic, payload, _), pairs in zip(
            rows, headers, strict=True
        )
    ]


# --- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicStatus:
    topic: str
    backlog: int
    oldest_unpublished_age_s: float | None
    published_last_minute: int


@dataclass(frozen=True)
class OutboxStatus:
    """What is waiting and how fast it goes, over all relays."""

    backlog: int
    oldest_unpublished_age_s: float | None
    published_last_minute: int
    topics: tuple[TopicStatus, ...]

    @property
    def publish_rate_per_s(self) -> float:
        return self.published_last_minute / 60.0


def outbox_status(bind: Engine | Connection, *, now: datetime | None = None) -> OutboxStatus:
    """Backlog, age of the oldest unpublished row and rows published in the last minute,
    in total and per topic (two indexed queries)."""
    now = utc_now() if now is None else now
    since = now - timedelta(minutes=1)
    table = outbox_table
    waiting = (
        sa.select(table.c.topic, sa.func.count(), sa.func.min(table.c.created_at))
        .where(table.c.published_at.is_(None))
        .group_by(table.c.topic)
    )
    recent = (
        sa.select(table.c.topic, sa.func.count())
        .where(table.c.published_at.is_not(None), table.c.published_at >= since)
        .group_by(table.c.topic)
    )

    def query(connection: Connection) -> tuple[list[Any], list[Any]]:
        return list(connection.execute(waiting)), list(connection.execute(recent))

    if isinstance(bind, Engine):
        with bind.connect() as connection:
            backlog_rows, recent_rows = query(connection)
    else:
        backlog_rows, recent_rows = query(bind)
    per_topic: dict[str, list[Any]] = {}
    for topic, count, oldest in backlog_rows:
        age = max(0.0, (now - as_utc(oldest)).total_seconds()) if oldest is not None else None
        per_topic[topic] = [int(count), age, 0]
    for topic, count in recent_rows:
        per_topic.setdefault(topic, [0, None, 0])[2] = int(count)
    topics = tuple(
        TopicStatus(topic, backlog, age, published)
        for topic, (backlog, age, published) in sorted(per_topic.items())
    )
    ages = [t.oldest_unpublished_age_s for t in topics if t.oldest_unpublished_age_s is not None]
    return OutboxStatus(
        backlog=sum(t.backlog for t in topics),
        oldest_unpublished_age_s=max(ages) if ages else None,
        published_last_minute=sum(t.published_last_minute for t in topics),
        topics=topics,
    )


# --- housekeeping -----------------------------------------------------------------------------


def delete_published(
    engine: Engine,
    *,
    retention_s: float,
    batch_size: int = 10_000,
    now: datetime | None = None,
) -> int:
    """Delete rows published more than ``retention_s`` ago, ``batch_size`` per transaction
    (short transactions: writers and relays are never blocked for long); returns how many.

    Unpublished rows are never deleted, whatever their age.
    """
    cutoff = (utc_now() if now is None else now) - timedelta(seconds=retention_s)
    table = outbox_table
    expired = (
        sa.select(table.c.position)
        .where(table.c.published_at.is_not(None), table.c.published_at < cutoff)
        .limit(batch_size)
        .scalar_subquery()
    )
    statement = sa.delete(table).where(table.c.position.in_(expired))
    deleted = 0
    while True:
        with engine.begin() as connection:
            count = connection.execute(statement).rowcount
        deleted += count
        if count < batch_size:
            return deleted
