"""Group commit: many events' database work in one transaction.

An ``async`` handler runs on the event loop, so many run at once without a thread each; what
they need from the database is gathered and done in groups, in a worker thread:

- :func:`look_up` (before the handlers): which events the inbox has seen and which keys are
  parked, two queries for the whole group;
- :func:`commit` (after the handlers): one transaction records every event in the inbox, runs
  the writes of those that were new (their effects and outbox rows) and commits; the writes
  given to :meth:`~pipeline.processing.processor.UnitOfWork.write_batched` run once for the
  group (a saga orchestrator loads, saves and publishes the sagas of a whole group in three
  statements). An event the inbox already had is a duplicate and its writes are dropped.
  When the group's transaction fails (one event's write broke a constraint, or the database
  went away), each event is committed on its own, so one bad write fails only its own event.

:class:`~pipeline.processing.grouper.Grouper` forms the groups: items arriving while a group is
in the database make up the next one, so a group is as large as the load makes it and an item
waits at most one group.

Synchronous handlers take a path of their own (:func:`run_calls`): a pool of worker threads,
each running a group of events in one transaction on one connection: the inbox and the park
looked up for the whole group, the handlers called one after another with the group's
session, the inbox rows written and committed once. A handler that raises rolls the group
back and the others run again without it, so its event is retried alone (on the per-record
path) and theirs commit once. Events of one key are never in one group (a key has one event in
flight), so the order per key is the lanes' as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.dead_letters.letter import Failure
from pipeline.envelope import Event
from pipeline.outbox.table import Outbox
from pipeline.processing import inbox, parked_keys
from pipeline.processing.attempt import AttemptResult, handler_log_context, is_unavailable
from pipeline.processing.processor import BatchWrite, NotYet, Reject, Route, UnitOfWork
from pipeline.processing.records import Record

__all__ = [
    "Call",
    "HandlerPace",
    "Seen",
    "claimed_outcomes",
    "commit",
    "commit_claims",
    "inbox_entries",
    "look_up",
    "look_up_keys",
    "run_calls",
    "seen_of",
]


@dataclass(frozen=True)
class Seen:
    """What the inbox knows of an event before its handler runs."""

    outcome: inbox.Outcome | None  # recorded before: a duplicate (or a dead letter)
    parked: bool  # its key is parked


def look_up(
    database: Engine,
    items: Sequence[tuple[str, str, bytes | None]],
    *,
    consumer_group: str,
    park_keys: bool,
) -> list[Seen]:
    """For each ``(event id, topic, key)``: whether it was recorded, and whether it is parked."""
    keys = look_up_keys(items, park_keys)
    with database.connect() as connection:
        if connection.dialect.name == "postgresql":
            # One statement that only reads needs no BEGIN and ROLLBACK round trips.
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        outcomes, parked = inbox.seen_and_parked(
            connection,
            consumer_group=consumer_group,
            event_ids={item[0] for item in items},
            keys=keys,
        )
    return seen_of(items, outcomes, parked)


class LookUp(NamedTuple):
    """A group's look-up as the driver's SQL, for the loop inboxes that run it themselves
    (:mod:`pipeline.processing.loop_inbox`, :mod:`pipeline.processing.sqlite_loop_inbox`)."""

    statement: str
    values: tuple[object, ...]
    keys: set[tuple[str, bytes]]  # the (topic, key) pairs whose park it checks


def look_up_statement(
    dialect: str,
    items: Sequence[tuple[str, str, bytes | None]],
    *,
    consumer_group: str,
    park_keys: bool,
) -> LookUp:
    """:func:`look_up`'s statement for ``items`` (``dialect``: ``postgresql`` or ``sqlite``);
    its rows go to :func:`seen_in_rows`."""
    keys = look_up_keys(items, park_keys)
    statement, values = inbox.seen_and_parked_statement(
        dialect, consumer_group=consumer_group, event_ids={item[0] for item in items}, keys=keys
    )
    return LookUp(statement, values, keys)


def seen_in_rows(
    items: Sequence[tuple[str, str, bytes | None]], rows: Iterable[Sequence[Any]], look: LookUp
) -> list[Seen]:
    """:func:`look_up`'s answer for each item, from the rows of ``look``'s statement."""
    outcomes, parked = inbox.seen_and_parked_of(rows, look.keys)
    return seen_of(items, outcomes, parked)


def look_up_keys(
    items: Sequence[tuple[str, str, bytes | None]], park_keys: bool
) -> set[tuple[str, bytes]]:
    """The ``(topic, key)`` pairs whose park :func:`look_up` checks."""
    return {(topic, key) for _, topic, key in items if key is not None} if park_keys else set()


def seen_of(
    items: Sequence[tuple[str, str, bytes | None]],
    outcomes: dict[str, inbox.Outcome],
    parked: set[tuple[str, bytes]],
) -> list[Seen]:
    """:func:`look_up`'s answer for each item, from the inbox's outcomes and parked keys."""
    if not outcomes and not parked:  # the usual group: nothing seen before, nothing parked
        return [_NOT_SEEN] * len(items)
    return [
        Seen(outcomes.get(event_id), key is not None and (topic, key) in parked)
        for event_id, topic, key in items
    ]


_NOT_SEEN = Seen(None, False)


def _claim_alone(
    database: Engine, entries: list[inbox.InboxEntry], consumer_group: str
) -> set[str] | None:
    """PostgreSQL, a group with no writes: the inbox rows in one statement that commits by
    itself (autocommit: one round trip, where BEGIN, INSERT and COMMIT take three), as durable
    as any commit. ``None`` on SQLite, where it saves nothing."""
    if database.dialect.name != "postgresql":
        return None
    with database.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        return inbox.claim_many(connection, entries, consumer_group=consumer_group)


def inbox_entries(units: Sequence[UnitOfWork]) -> list[inbox.InboxEntry]:
    """The inbox rows of ``units``, in event id order: two instances committing overlapping
    groups during a rebalance then take the rows' locks in the same order (no deadlock on
    PostgreSQL)."""
    return sorted(
        inbox.InboxEntry(u.event.id, u.record.topic, u.record.partition, u.record.offset)
        for u in units
    )


def claimed_outcomes(units: Sequence[UnitOfWork], new: set[str]) -> list[AttemptResult]:
    """``processed`` for each unit whose event id the claim found ``new``, else ``duplicate``
    (``new`` is used up)."""
    outcomes = []
    for unit in units:
        kind: Literal["processed", "duplicate"] = (
            "processed" if unit.event.id in new else "duplicate"
        )
        new.discard(unit.event.id)  # the same event twice: the second is a copy
        outcomes.append(AttemptResult(kind, unit.event.id, event=unit.event))
    return outcomes


def _commit_together(
    database: Engine, units: Sequence[UnitOfWork], consumer_group: str, use_inbox: bool
) -> list[AttemptResult]:
    entries = inbox_entries(units)
    if use_inbox and not any(unit.has_writes for unit in units):
        new = _claim_alone(database, entries, consumer_group)
        if new is not None:
            return claimed_outcomes(units, new)
    with database.begin() as connection, Session(bind=connection) as session:
        if use_inbox:
            new = inbox.claim_many(connection, entries, consumer_group=consumer_group)
        else:
            new = {unit.event.id for unit in units}
        outcomes = []
        batches: dict[BatchWrite, list[Any]] = {}
        for unit in units:
            event_id = unit.event.id
            if event_id in new:
                new.discard(event_id)  # the same event twice in one group: the second is a copy
                unit.apply_writes(session, batches)
                outcomes.append(AttemptResult("processed", event_id, event=unit.event))
            else:
                outcomes.append(AttemptResult("duplicate", event_id, event=unit.event))
        for batch, items in batches.items():
            batch(session, items)
        session.flush()  # the writes, in this transaction (the connection's, committed here)
        return outcomes


def commit_claims(
    database: Engine, units: Sequence[UnitOfWork], *, consumer_group: str
) -> list[AttemptResult]:
    """:func:`commit` with the inbox, for units whose handlers left no writes: only their inbox
    rows, in one statement that commits by itself (PostgreSQL) or one short transaction, with
    no session and no pass over the units' writes. When that fails, :func:`commit` decides."""
    entries = inbox_entries(units)
    try:
        new = _claim_alone(database, entries, consumer_group)
        if new is None:
            with database.begin() as connection:
                new = inbox.claim_many(connection, entries, consumer_group=consumer_group)
    except Exception:
        return commit(database, units, consumer_group=consumer_group, use_inbox=True)
    return claimed_outcomes(units, new)


def commit(
    database: Engine, units: Sequence[UnitOfWork], *, consumer_group: str, use_inbox: bool
) -> list[AttemptResult]:
    """Commit the handled events of ``units``: ``processed`` or ``duplicate`` each, or
    ``failed``/``unavailable`` for one whose own transaction failed too (``dead_letter`` when
    its batched write raised :class:`Reject`, ``waiting`` when it raised :class:`NotYet`)."""
    try:
        return _commit_together(database, units, consumer_group, use_inbox)
    except Exception as error:
        if len(units) == 1:
            unit = units[0]
            if is_unavailable(error):
                return [AttemptResult("unavailable", unit.event.id, error=error, event=unit.event)]
            if isinstance(error, Reject):  # from a batched write: dead-lettered at once
                failure = Failure.from_exception("rejected", error)
                return [AttemptResult("dead_letter", unit.event.id, failure, event=unit.event)]
            if isinstance(error, NotYet):  # from a batched write: it waits, without limit
                return [AttemptResult("waiting", unit.event.id, error=error, event=unit.event)]
            return [AttemptResult("failed", unit.event.id, error=error, event=unit.event)]
    # Each on its own: a write of one event must not fail the others.
    return [
        commit(database, [unit], consumer_group=consumer_group, use_inbox=use_inbox)[0]
        for unit in units
    ]


# --- synchronous handlers ---------------------------------------------------------------------


class HandlerPace:
    """How many events a group of synchronous handlers may hold: an event waits for the
    handlers before it in its group, so the group holds as many as the handlers' recent mean
    duration (wall clock) fits in ``wait_s``, plus one, at most half of ``most`` (the events
    in flight). Before the first handler has been timed, groups hold one event. Short handlers
    (CPU or a quick query) are grouped; slow ones (a call to another service) keep a thread
    and a transaction each."""

    def __init__(self, wait_s: float, most: int) -> None:
        self._wait_s = wait_s
        self._most = most
        self._mean: float | None = None

    @property
    def mean_s(self) -> float | None:
        return self._mean

    def observe(self, seconds: float) -> None:
        """One handler call took ``seconds``. The estimate follows shorter calls quickly and
        longer ones slowly: on a busy machine a call's wall time includes its wait for the
        interpreter, which says nothing about the handler, and counting it in would shrink
        the groups just when saving work matters most."""
        if self._mean is None:
            self._mean = seconds
        else:
            weight = 0.3 if seconds < self._mean else 0.02
            self._mean += weight * (seconds - self._mean)

    def group_size(self) -> int:
        if self._mean is None:
            return 1
        fits = 1 + int(self._wait_s / max(self._mean, 1e-6))
        # At most half the events in flight, so that two groups at least may run: a handler
        # that suddenly hangs holds up the events after it in its group, not every event of
        # the processor waiting for the one group slot.
        return max(1, min(self._most // 2, fits))

    def groups(self) -> int:
        """How many groups may run at once: enough for ``most`` events in groups of
        :meth:`group_size` (so waiting events fill the next group instead of each taking a
        thread of its own)."""
        return -(-self._most // self.group_size())


@dataclass(frozen=True)
class Call:
    """A synchronous handler's event, decoded and routed, ready to run in a group."""

    record: Record
    event: Event
    route: Route
    data: Any


class _HandlerFailed(Exception):
    """A handler of the group raised: its transaction is rolled back, the others run again."""

    def __init__(self, index: int, result: AttemptResult) -> None:
        self.index = index
        self.result = result


class _Claimed(Exception):
    """SQLite: events another processor recorded while the group ran (duplicates)."""

    def __init__(self, event_ids: set[str]) -> None:
        self.event_ids = event_ids


def _failure_of(call: Call, error: Exception) -> AttemptResult:
    """What a handler's exception means (as :func:`~pipeline.processing.attempt.attempt`)."""
    event = call.event
    if isinstance(error, Reject):
        return AttemptResult(
            "dead_letter", event.id, Failure.from_exception("rejected", error), event=event
        )
    if isinstance(error, NotYet):
        return AttemptResult("waiting", event.id, error=error, event=event)
    kind: Literal["failed", "unavailable"] = "unavailable" if is_unavailable(error) else "failed"
    return AttemptResult(kind, event.id, error=error, event=event)


def _entry(call: Call) -> inbox.InboxEntry:
    record = call.record
    return inbox.InboxEntry(call.event.id, record.topic, record.partition, record.offset)


def _run_together(
    database: Engine,
    calls: Sequence[Call],
    consumer_group: str,
    use_inbox: bool,
    park_keys: bool,
    pace: HandlerPace | None,
    outbox: Outbox | None = None,
) -> list[AttemptResult | None]:
    """One transaction for ``calls``: look up the inbox and the park, run the handlers in
    order, record the events, commit. Raises :class:`_HandlerFailed` for the first handler that
    raised, :class:`_Claimed` when another processor recorded some meanwhile (SQLite), or the
    database's error (everything rolled back in each case)."""
    results: list[AttemptResult | None] = [None] * len(calls)
    runnable = list(range(len(calls)))
    # The connection's transaction, joined by the handlers' session (cheaper per group than a
    # session's own).
    with database.begin() as connection, Session(bind=connection) as session:
        postgres = connection.dialect.name == "postgresql"
        if use_inbox:
            keys = (
                {(c.record.topic, c.record.key) for c in calls if c.record.key is not None}
                if park_keys
                else set()
            )
            if postgres:
                parked = parked_keys.parked_among(
                    connection, consumer_group=consumer_group, keys=keys
                )
            else:
                seen, parked = inbox.seen_and_parked(
                    connection,
                    consumer_group=consumer_group,
                    event_ids={c.event.id for c in calls},
                    keys=keys,
                )
            # A parked key's event takes the per-record attempt (which dead-letters it).
            runnable = [
                i for i in runnable if (calls[i].record.topic, calls[i].record.key) not in parked
            ]
            if postgres:
                # Claimed first, in event id order: a second instance handling the same events
                # (a rebalance) waits on the rows, then sees the duplicates; sorted, so two
                # overlapping groups take the rows' locks in one order (no deadlock).
                entries = sorted({_entry(calls[i]) for i in runnable})
                new = (
                    inbox.claim_many(connection, entries, consumer_group=consumer_group)
                    if entries
                    else set()
                )
            else:
                # SQLite has one writer: the rows are inserted after the handlers, so the write
                # lock is not held while they run (as in the per-record attempt).
                new = {calls[i].event.id for i in runnable} - seen.keys()
        else:
            new = {calls[i].event.id for i in runnable}
        to_run = []
        for i in runnable:
            event = calls[i].event
            if event.id in new:
                new.discard(event.id)  # the same event twice in one group: the second is a copy
                to_run.append(i)
            else:
                results[i] = AttemptResult("duplicate", event.id, event=event)
        for i in to_run:
            call = calls[i]
            unit = UnitOfWork(
                _session=session,
                event=call.event,
                record=call.record,
                consumer_group=consumer_group,
                data=call.data,
                outbox=outbox,
            )
            began = time.monotonic()
            try:
                with handler_log_context(unit):
                    call.route.handler(call.event, unit)
                session.flush()  # its ORM changes now, so an error in them is its own
            except Exception as error:
                raise _HandlerFailed(i, _failure_of(call, error)) from error
            finally:
                if pace is not None:
                    pace.observe(time.monotonic() - began)
            results[i] = AttemptResult("processed", call.event.id, event=call.event)
        if use_inbox and not postgres and to_run:
            entries = sorted(_entry(calls[i]) for i in to_run)
            claimed = inbox.claim_many(connection, entries, consumer_group=consumer_group)
            late = {calls[i].event.id for i in to_run} - claimed
            if late:
                raise _Claimed(late)
    return results


def run_calls(
    database: Engine,
    calls: Sequence[Call],
    *,
    consumer_group: str,
    use_inbox: bool,
    park_keys: bool,
    pace: HandlerPace | None = None,
    outbox: Outbox | None = None,
) -> list[AttemptResult | None]:
    """Run synchronous handlers of a group in one transaction; each call's result, or ``None``
    for one that needs the per-record attempt (its key is parked). ``outbox``: where the
    handlers' emits go, with the routes of the settings (``None``: the built-in routes).

    A handler that raises rolls the group's transaction back, gets its own result (``failed``,
    ``unavailable``, ``dead_letter`` for :class:`Reject`, ``waiting`` for :class:`NotYet`) and
    the others run again without it, in a new transaction: its effects are never committed,
    and theirs are committed once.
    When the database fails outside the handlers (the look-up, the inbox rows, the commit),
    each call runs alone, so one event's bad write fails only that event.
    """
    results: list[AttemptResult | None] = [None] * len(calls)
    remaining = list(range(len(calls)))
    while remaining:
        group = [calls[i] for i in remaining]
        try:
            outcomes = _run_together(
                database, group, consumer_group, use_inbox, park_keys, pace, outbox
            )
        except _HandlerFailed as failed:
            results[remaining[failed.index]] = failed.result
            del remaining[failed.index]
            continue
        except _Claimed as claimed:
            for i in list(remaining):
                if calls[i].event.id in claimed.event_ids:
                    results[i] = AttemptResult("duplicate", calls[i].event.id, event=calls[i].event)
                    remaining.remove(i)
            continue
        except Exception as error:
            if len(group) == 1:
                results[remaining[0]] = _failure_of(group[0], error)
                return results
            for i in remaining:
                [results[i]] = run_calls(
                    database,
                    [calls[i]],
                    consumer_group=consumer_group,
                    use_inbox=use_inbox,
                    park_keys=park_keys,
                    pace=pace,
                    outbox=outbox,
                )
            return results
        for i, outcome in zip(remaining, outcomes, strict=True):
            results[i] = outcome
        return results
    return results
