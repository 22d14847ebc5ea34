"""One attempt at one record: decode, check the inbox and the park, run the handler, commit.

This is synchronous and blocking (a database transaction around a plain function); the engine
runs it in a worker thread and decides about retries from the :class:`AttemptResult` it returns.

A redriven record of another consumer group's dead letter (its ``pipeline.redrive.group``
header names that group) is skipped before anything else, as a duplicate: this group neither
handles it nor lets it pass or release its own park of the key.

In one transaction, in this order:

1. record ``(consumer group, event id)`` in the inbox; a row already there means a duplicate
   (unless this is a redrive of an event that was dead-lettered: then it is handled now). On
   SQLite the row is only looked up here and inserted after step 3 (see :func:`attempt`);
2. if the record's key is parked, stop: the record is dead-lettered as ``key_parked`` (a
   redrive passes the park, unless this same redrive already failed for that key);
3. call the handler inside a log context naming the event;
4. a redrive's last record of its key lets the key go;
5. commit: the effects, the inbox row and the emitted events together.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session

from pipeline.dead_letters import letter as dead_letters
from pipeline.dead_letters.letter import Failure, position_id
from pipeline.envelope import EnvelopeError, Event, decode
from pipeline.errors import PipelineError
from pipeline.logs.context import log_context
from pipeline.outbox.table import Outbox
from pipeline.processing import inbox, parked_keys
from pipeline.processing.processor import NotYet, Processor, Reject, Route, UnitOfWork
from pipeline.processing.records import Record

__all__ = [
    "AttemptResult",
    "Redrive",
    "attempt",
    "call_async",
    "decode_record",
    "handler_log_context",
    "inbox_id",
    "is_unavailable",
    "position_id",
    "record_dead_letter",
    "record_log_context",
]

_log = logging.getLogger("pipeline.processing")


@dataclass(frozen=True)
class Redrive:
    """The redrive headers of a record, when it was sent back from a dead-letter topic."""

    redrive_id: str
    last_of_key: bool
    #: The consumer group whose dead letter was redriven; ``None`` when the record does not
    #: say (a redrive of an older version): every group handles it, as before.
    group: str | None = None

    @classmethod
    def of(cls, record: Record) -> Redrive | None:
        redrive_id = record.header(dead_letters.REDRIVE_ID)
        if not redrive_id:
            return None
        last = record.header(dead_letters.REDRIVE_LAST) == "true"
        return cls(redrive_id, last, record.header(dead_letters.REDRIVE_GROUP) or None)

    def is_for(self, consumer_group: str) -> bool:
        """Whether ``consumer_group`` handles this redriven record: the group whose dead letter
        it was (any group, when the record does not say)."""
        return self.group is None or self.group == consumer_group


@dataclass(frozen=True)
class AttemptResult:
    """What came of an attempt.

    - ``processed``: committed; ``duplicate``: seen before, nothing done;
    - ``dead_letter``: dead-letter it now (``failure`` says why), no retry;
    - ``failed``: the handler raised; retry while attempts remain, then dead-letter;
    - ``unavailable``: the database could not be used; retry without limit (it is not the
      event's fault, and dead-lettering every event during an outage would lose the order);
    - ``waiting``: the handler raised :class:`~pipeline.processing.processor.NotYet`: retry
      without limit, with the same backoff, and never dead-letter it (no outage, though).
    """

    kind: Literal["processed", "duplicate", "dead_letter", "failed", "unavailable", "waiting"]
    event_id: str
    failure: Failure | None = None
    error: BaseException | None = None
    event: Event | None = None


def inbox_id(record: Record, event: Event | None) -> str:
    """The inbox's id for a record: its event id, or its position when it is not an event (or
    its ``ce_id`` header is no id the inbox can keep)."""
    if event is not None:
        return event.id
    header_id = record.header("ce_id")
    if header_id and inbox.id_problem(header_id) is None:
        return header_id
    return position_id(record.topic, record.partition, record.offset)


def decode_record(record: Record) -> Event:
    """The record's event; an :class:`EnvelopeError` when it is none, or when its id is one the
    inbox cannot keep (:func:`pipeline.processing.inbox.id_problem`): the event could not be
    deduplicated, and recording it would fail for ever."""
    event = decode(record.value, record.headers, record.key)
    problem = inbox.id_problem(event.id)
    if problem is not None:
        raise EnvelopeError(problem)
    return event


class _Parked(Exception):
    def __init__(self, event_id: str) -> None:
        self.event_id = event_id


class _Duplicate(Exception):
    pass


def _claim(
    connection: Connection, record: Record, event: Event, consumer_group: str
) -> inbox.Claim:
    return inbox.claim(
        connection,
        consumer_group=consumer_group,
        event_id=event.id,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )


def handler_log_context(unit: UnitOfWork) -> AbstractContextManager[Mapping[str, str | int]]:
    """The log context a handler runs in: it names the event it handles."""
    event, record = unit.event, unit.record
    return log_context(
        event_id=event.id,
        correlation_id=event.correlationid,
        causation_id=event.causationid,
        saga_id=event.extensions.get("sagaid"),
        topic=record.topic,
        event_type=event.type,
        consumer_group=unit.consumer_group,
        partition=record.partition,
        offset=record.offset,
    )


def record_log_context(
    record: Record, event_id: str, consumer_group: str
) -> AbstractContextManager[Mapping[str, str | int]]:
    """The log context of the runtime's lines about ``record`` (retries, outages, dead
    letters): the event it holds, as a handler's lines name it, read from its headers."""
    return log_context(
        event_id=event_id,
        correlation_id=record.header("ce_correlationid"),
        causation_id=record.header("ce_causationid"),
        saga_id=record.header("ce_sagaid"),
        topic=record.topic,
        event_type=record.header("ce_type"),
        consumer_group=consumer_group,
        partition=record.partition,
        offset=record.offset,
    )


async def call_async(route: Route, unit: UnitOfWork) -> None:
    """An ``async`` handler, on the event loop, inside its log context."""
    with handler_log_context(unit):
        await cast(Awaitable[None], route.handler(unit.event, unit))


def _call(
    route: Route, unit: UnitOfWork, session: Session, loop: asyncio.AbstractEventLoop | None
) -> None:
    """The handler, in this worker thread (an ``async`` one on ``loop``, waited for here; its
    writes then run in ``session``)."""
    if not route.is_async:
        with handler_log_context(unit):
            route.handler(unit.event, unit)
        return
    if loop is None:
        raise PipelineError(f"{route.name} is async: attempt() needs the engine's event loop")
    asyncio.run_coroutine_threadsafe(call_async(route, unit), loop).result()
    unit.apply_writes(session)


# SQLite's primary result codes that say the database cannot be used just now (busy, locked,
# read-only, I/O, full, cannot open...). Its plain SQLITE_ERROR, which it also raises as an
# OperationalError, is a mistake in the statement or the schema: "no such table", "no such
# column", a syntax error. PostgreSQL raises those as ProgrammingError, the handler's error.
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)


# PostgreSQL's SQLSTATEs (classes by their first two characters) that say the database cannot
# be used just now: a lost connection (08), too few resources (53: disk full, out of memory,
# too many connections), a system error (58: I/O), a transaction rolled back for another's
# sake (40: serialization failure, deadlock), the server shutting down or starting (57P01-03),
# a lock not granted in time (55P03). psycopg raises every one as an OperationalError, and
# also some that an event causes itself and that never go away: a program limit (54: "index
# row size exceeds maximum", too many columns) and a statement cancelled by its timeout
# (57014); those are the handler's errors, retried as its policy says, then dead-lettered.
_POSTGRES_UNAVAILABLE_CLASSES = frozenset({"08", "53", "58", "40"})
_POSTGRES_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03", "55P03"})
# A transaction that may not write (25006): a hot standby, the primary gone read-only after a
# failover, default_transaction_read_only. The database's state, not the event's fault.
_READ_ONLY = "25006"


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be used (retried without limit), rather
    than that the handler's statement is wrong (a missing table or column, on every database:
    retried as the handler's error, then dead-lettered)."""
    if isinstance(error, DisconnectionError):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) == _READ_ONLY:
        return True  # psycopg's InternalError, not an OperationalError
    if not isinstance(error, OperationalError):
        return False
    code = getattr(error.orig, "sqlite_errorcode", None)
    if isinstance(error.orig, sqlite3.Error) and isinstance(code, int):
        return code & 0xFF in _SQLITE_UNAVAILABLE  # the extended code's primary part
    state = getattr(error.orig, "sqlstate", None)
    if isinstance(state, str):  # psycopg: the server's code
        return state[:2] in _POSTGRES_UNAVAILABLE_CLASSES or state in _POSTGRES_UNAVAILABLE
    return True  # the driver's own (a connection it could not make or lost), or no code


def _dead_letter_unless_seen(
    record: Record,
    engine: Engine,
    consumer_group: str,
    event: Event | None,
    failure: Failure,
) -> AttemptResult:
    """A record that cannot be handled: dead-letter it, unless it was dead-lettered before."""
    event_id = inbox_id(record, event)
    try:
        with engine.connect() as connection:
            seen = inbox.outcome_of(connection, consumer_group=consumer_group, event_id=event_id)
    except Exception as error:
        return AttemptResult("unavailable", event_id, error=error, event=event)
    if seen is not None and Redrive.of(record) is None:
        return AttemptResult("duplicate", event_id, event=event)
    return AttemptResult("dead_letter", event_id, failure, event=event)


def _another_groups_redrive(record: Record) -> AttemptResult:
    """A redriven record of another consumer group's dead letter: none of this group's business.
    It counts as a ``duplicate``, the outcome of a record this group has nothing (more) to do
    with (counted, not logged, its offset committed): no inbox row, no handler call, and this
    group's park of its key is neither passed nor let go."""
    try:
        event: Event | None = decode_record(record)
    except EnvelopeError:
        event = None
    return AttemptResult("duplicate", inbox_id(record, event), event=event)


def attempt(
    record: Record,
    *,
    processor: Processor,
    engine: Engine,
    consumer_group: str,
    park_keys: bool = True,
    use_inbox: bool = True,
    loop: asyncio.AbstractEventLoop | None = None,
    outbox: Outbox | None = None,
) -> AttemptResult:
    """Handle ``record`` once (see the module's docstring for the steps).

    ``use_inbox=False`` skips steps 1, 2 and 4: no duplicate detection and no parked keys.
    ``loop``: where an ``async`` handler runs (the engine's loop; this thread waits for it).
    ``outbox``: where the handler's emits go, with the routes of the settings (``None``: the
    built-in routes).

    A redrive of another consumer group's dead letter is skipped first, whatever the options.
    """
    redrive = Redrive.of(record)
    if redrive is not None and not redrive.is_for(consumer_group):
        return _another_groups_redrive(record)
    try:
        event = decode_record(record)
    except EnvelopeError as error:
        return _dead_letter_unless_seen(
            record, engine, consumer_group, None, Failure.from_exception("undecodable", error)
        )
    route = processor.route(record.topic, event.type)
    if route is None:
        missing = LookupError(
            f"{processor.name} has no handler for {event.type!r} on {record.topic}"
        )
        return _dead_letter_unless_seen(
            record, engine, consumer_group, event, Failure.from_exception("unhandled_type", missing)
        )
    data = event.data
    if route.model is not None:
        try:
            data = route.model.model_validate(event.data)
        except Exception as error:
            # Pydantic wraps only a validator's ValueError and AssertionError in its
            # ValidationError: a TypeError or KeyError of a validator says as much that the
            # event's data does not fit (and left to the engine, it held the key for ever).
            return _dead_letter_unless_seen(
                record,
                engine,
                consumer_group,
                event,
                Failure.from_exception("schema_invalid", error),
            )
    try:
        with Session(engine) as session, session.begin():
            unit = UnitOfWork(
                _session=None if route.is_async else session,
                event=event,
                record=record,
                consumer_group=consumer_group,
                data=data,
                outbox=outbox,
            )
            if not use_inbox:
                _call(route, unit, session, loop)
                return AttemptResult("processed", event.id, event=event)
            connection = session.connection()
            # PostgreSQL: claim first, so a second instance handling the same event waits on
            # the row, then sees the duplicate. SQLite has one writer for the whole database:
            # claiming first would hold its lock through the handler and serialise every key,
            # so there the claim comes last (a conflict then rolls everything back).
            claim_last = connection.dialect.name == "sqlite"
            if claim_last:
                previous = inbox.outcome_of(
                    connection, consumer_group=consumer_group, event_id=event.id
                )
                claimed = inbox.Claim(new=previous is None, previous=previous)
            else:
                claimed = _claim(connection, record, event, consumer_group)
            if not claimed.new and not (redrive and claimed.previous == "dead_lettered"):
                return AttemptResult("duplicate", event.id, event=event)
            parked = None
            if park_keys and record.key is not None:
                parked = parked_keys.parked_key(
                    connection, consumer_group=consumer_group, topic=record.topic, key=record.key
                )
                if parked is not None and (
                    redrive is None or parked.redrive_id == redrive.redrive_id
                ):
                    raise _Parked(parked.event_id)
            _call(route, unit, session, loop)
            if (
                claimed.new
                and claim_last
                and not _claim(connection, record, event, consumer_group).new
            ):
                raise _Duplicate()
            if not claimed.new and not inbox.set_outcome(
                connection,
                consumer_group=consumer_group,
                event_id=event.id,
                outcome="processed",
                was="dead_lettered",
            ):
                # Another attempt of the same redriven event (a second owner during a
                # rebalance) committed first: its effects stand, these roll back. On PostgreSQL
                # the update waited for that attempt's commit, then found the row changed.
                raise _Duplicate()
            if parked is not None and redrive is not None and redrive.last_of_key:
                assert record.key is not None
                if parked.let_go_by(event.id):
                    parked_keys.unpark_key(
                        connection,
                        consumer_group=consumer_group,
                        topic=record.topic,
                        key=record.key,
                    )
                else:
                    _log.warning(
                        "%s: key %r of %s stays parked: dead letter %s came after redrive %s "
                        "read the dead-letter topic; redrive the key again",
                        consumer_group,
                        record.key.decode("utf-8", "backslashreplace"),
                        record.topic,
                        parked.last_event_id,
                        redrive.redrive_id,
                    )
    except _Duplicate:
        return AttemptResult("duplicate", event.id, event=event)
    except _Parked as parked_by:
        failure = Failure(
            reason="key_parked",
            error_type="LookupError",
            message=f"key parked behind dead-lettered event {parked_by.event_id}",
            parked_by=parked_by.event_id,
        )
        return AttemptResult("dead_letter", event.id, failure, event=event)
    except Reject as error:
        return AttemptResult(
            "dead_letter", event.id, Failure.from_exception("rejected", error), event=event
        )
    except NotYet as error:  # not the event's fault: it waits, without limit
        return AttemptResult("waiting", event.id, error=error, event=event)
    except Exception as error:
        kind: Literal["failed", "unavailable"] = (
            "unavailable" if is_unavailable(error) else "failed"
        )
        return AttemptResult(kind, event.id, error=error, event=event)
    return AttemptResult("processed", event.id, event=event)


def record_dead_letter(
    record: Record,
    *,
    engine: Engine,
    consumer_group: str,
    event_id: str,
    failure: Failure,
    park_keys: bool = True,
) -> None:
    """After the dead letter was acknowledged: note it in the inbox, and park its key.

    A redelivery of the record then counts as a duplicate instead of a second dead letter.
    """
    redrive = Redrive.of(record)
    with engine.begin() as connection:
        claimed = inbox.claim(
            connection,
            consumer_group=consumer_group,
            event_id=event_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            outcome="dead_lettered",
        )
        if not claimed.new and claimed.previous == "processed":
            # Handled meanwhile by the partition's next owner (this attempt's owner lost the
            # partition while its dead letter was being sent): the event's effects stand, and
            # the stale dead letter is a duplicate if it is ever redriven. Neither the outcome
            # nor the key's park may change.
            return
        if park_keys and record.key is not None and failure.reason == "key_parked":
            parked_keys.note_parked_dead_letter(
                connection,
                consumer_group=consumer_group,
                topic=record.topic,
                key=record.key,
                event_id=event_id,
            )
        elif park_keys and record.key is not None:
            parked_keys.park_key(
                connection,
                consumer_group=consumer_group,
                topic=record.topic,
                key=record.key,
                event_id=event_id,
                reason=f"{failure.reason}: {failure.message}"[:2000],
                redrive_id=redrive.redrive_id if redrive else None,
            )
