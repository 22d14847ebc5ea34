"""The saga orchestrator's logic over SQL and the outbox (the program is consumers/).

Each input is one database transaction that loads the saga, runs the pure state machine, saves
the new state (checking the revision it loaded) and puts the commands and the transition events
into the outbox, in this order, so a crash anywhere leaves either all of it or none:

1. :meth:`SagaOrchestrator.start`, in the *caller's* transaction: the instance row and its
   first commands commit with the caller's own change, or neither does.
2. :meth:`SagaOrchestrator.handle_reply`: a participant's reply from ``saga.replies`` (consumed
   by the processor runtime: inbox, ordered per saga id).
3. :meth:`SagaOrchestrator.fire_due`: deadlines and backoffs stored in the rows, fired by the
   orchestrator itself (no scheduler), so they survive restarts and rebalances.
4. :meth:`SagaOrchestrator.retry` and :meth:`SagaOrchestrator.resolve`: the operator's.

Sagas that ended are deleted after ``sagas.retention_s`` (:meth:`SagaOrchestrator.delete_ended`,
which the orchestrator's processor runs every few minutes).

Every transition is also a ``pipeline.saga.*`` event on ``saga.events`` and a log line whose
correlation id is the saga id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, get_args

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pipeline.database import is_postgres
from pipeline.envelope import Event
from pipeline.errors import PipelineError
from pipeline.logs.context import log_context
from pipeline.outbox.table import Outbox
from pipeline.plurals import counted
from pipeline.processing.attempt import handler_log_context
from pipeline.processing.processor import NotYet, Processor, Reject, UnitOfWork
from pipeline.processing.read_through import TopicProgress
from pipeline.sagas import machine
from pipeline.sagas.definition import SagaDefinition, SagaRegistry, UnknownSagaVersion
from pipeline.sagas.messages import (
    REPLY_TYPE,
    MalformedSagaMessage,
    UnknownCommand,
    outbox_events,
    reply_of,
)
from pipeline.sagas.metrics import SagaMetrics
from pipeline.sagas.replies_behind import RepliesBehind
from pipeline.sagas.state import SagaState, SagaStatus
from pipeline.sagas.state_counts import SagaStateCounts, by_state, deletable_before
from pipeline.sagas.store import (
    ConcurrentSagaUpdate,
    delete_ended_sagas,
    due_saga_ids,
    insert_saga,
    load_saga,
    load_sagas,
    open_saga_versions,
    sagas_table,
    save_saga,
    save_sagas,
    set_derived_columns,
)
from pipeline.sagas.topics import SagaTopics, check_participants
from pipeline.settings import PipelineSettings, SagaSettings

__all__ = ["SagaOrchestrator", "UnknownSaga", "orchestrator_processor"]

logger = logging.getLogger("pipeline.sagas")
#: How long a saga whose deadlines raised is left aside before they are tried again.
_HELD_BACK_FOR = timedelta(seconds=60)


class UnknownSaga(PipelineError):
    """A reply or an operator action for a saga id that is not in the database."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SagaOrchestrator:
    """Applies starts, replies, deadlines and operator actions to stored sagas."""

    def __init__(
        self,
        registry: SagaRegistry,
        *,
        metrics: SagaMetrics | None = None,
        clock: Callable[[], datetime] = _utc_now,
        outbox: Outbox | None = None,
        settings: SagaSettings | None = None,
        topics: SagaTopics | None = None,
    ) -> None:
        self.registry = registry
        #: Where commands go and replies come from (the ``saga`` namespace unless given).
        self.topics = topics or SagaTopics()
        check_participants(registry, self.topics)
        self.metrics = metrics or SagaMetrics()
        self.clock = clock
        # Commands and saga events name their topics, so no route is needed.
        self.outbox = outbox or Outbox(routes={})
        # The gauge's labels set so far: from the start every state of every saga defined here
        # (at 0 until a saga is in it), so the series are the same after a restart as before.
        self._gauged: set[tuple[str, str]] = {
            (name, status) for name in registry.names for status in get_args(SagaStatus)
        }
        # Sagas whose deadlines raised, and when they are tried again (see fire_due).
        self._held_back: dict[str, datetime] = {}
        self._replies_behind = RepliesBehind(
            self.topics.replies, self.metrics.replies_behind, lambda: self.clock()
        )
        self.use_settings(settings or SagaSettings())

    def use_settings(self, settings: SagaSettings) -> None:
        """Keep ended sagas for ``settings.retention_s`` (the gauge counts those that ended
        within it, from its next refresh on, which counts them in full again)."""
        self.settings = settings
        self._state_counts = SagaStateCounts(
            retention=self.retention, namespace=self.topics.namespace
        )

    @property
    def retention(self) -> timedelta | None:
        """How long ended sagas are kept (``None``: forever)."""
        seconds = self.settings.retention_s
        return None if seconds is None else timedelta(seconds=seconds)

    # --- inputs --------------------------------------------------------------------------

    def start(
        self,
        session: Session,
        saga: str | SagaDefinition[Any],
        saga_id: str,
        data: BaseModel | Mapping[str, Any],
    ) -> SagaState:
        """Start a saga in ``session``'s transaction (the latest version of a name)."""
        definition = self.registry.latest(saga) if isinstance(saga, str) else saga
        decision = machine.start(
            definition, saga_id, data, self.clock(), namespace=self.topics.namespace
        )
        insert_saga(session, decision.state)
        self._publish(session, decision)
        return decision.state

    def handle_reply(
        self, session: Session, event: Event, arrived_at: datetime | None = None
    ) -> machine.InputEffect:
        """Apply one reply event in ``session``'s transaction; a duplicate or late reply
        changes nothing and is counted (one that ``arrived_at`` the replies topic after its
        command's deadline times the command out). :class:`UnknownSaga`, or
        :class:`~pipeline.sagas.messages.MalformedSagaMessage`, for a reply that belongs to no
        saga here; :class:`UnknownCommand` for one to a command its saga never sent."""
        return self.handle_replies(session, [event], arrived_at=[arrived_at])[0]

    def handle_replies(
        self,
        session: Session,
        events: Sequence[Event],
        log_context_of: Callable[[int], AbstractContextManager[object]] | None = None,
        arrived_at: Sequence[datetime | None] | None = None,
    ) -> list[machine.InputEffect]:
        """:meth:`handle_reply` for each of ``events`` (which ``arrived_at`` the replies topic
        at these times, when given) in ``session``'s transaction, with one statement each to
        load the sagas, save them and fill the outbox, whatever their number (replies of one
        saga are applied one after the other). ``log_context_of(i)``: the log context of the
        lines about the ``i``-th reply. An unknown saga or command fails them all."""
        arrivals = list(arrived_at) if arrived_at is not None else [None] * len(events)
        replies = [
            reply_of(event, arrival) for event, arrival in zip(events, arrivals, strict=True)
        ]
        saga_ids = [saga_id for saga_id, _ in replies]
        if len(set(saga_ids)) < len(saga_ids):  # each on the state the one before it left
            return [
                self.handle_replies(
                    session,
                    [event],
                    log_context_of and partial(log_context_of, i),
                    [arrivals[i]],
                )[0]
                for i, event in enumerate(events)
            ]
        stored = load_sagas(session, saga_ids)
        for saga_id in saga_ids:
            if saga_id not in stored:
                raise UnknownSaga(
                    f"a reply for saga {saga_id}, which is not in this database (an ended saga "
                    "is deleted after sagas.retention_s)"
                )
            namespace = stored[saga_id].state.namespace
            if namespace != self.topics.namespace:
                raise UnknownSaga(
                    f"a reply for saga {saga_id}, which runs in the saga topic namespace "
                    f"{namespace!r}, not in {self.topics.namespace!r} (give each saga system a "
                    "database of its own)"
                )
        now = self.clock()
        effects: list[machine.InputEffect] = []
        decisions: list[tuple[int, machine.Decision]] = []
        saves: list[tuple[SagaState, int]] = []
        for i, (saga_id, reply) in enumerate(replies):
            state = stored[saga_id].state
            if reply.command_id not in state.awaiting:  # no definition needed: it may be gone
                decision = machine.not_awaited(state, reply)
            else:
                definition = self.registry.get(state.name, state.version)
                decision = machine.on_reply(definition, state, reply, now)
            if decision.outcome == "unknown":
                raise UnknownCommand(
                    f"a reply to command {reply.command_id!r}, which saga "
                    f"{machine.shown_saga_id(saga_id)} never sent (a participant replies with "
                    "the sagacommandid of the command it handled)"
                )
            effects.append(decision.outcome)
            decisions.append((i, decision))
            if decision.outcome == "applied" or decision.transitions:  # late: timed out now
                saves.append((decision.state, stored[saga_id].revision))
        save_sagas(session, saves)
        self.outbox.add_all(
            session,
            [pending for _, decision in decisions for pending in outbox_events(decision)],
        )
        for i, decision in decisions:
            with log_context_of(i) if log_context_of is not None else nullcontext():
                reply = replies[i][1]
                state = stored[replies[i][0]].state
                if decision.outcome != "applied":
                    self._ignored(state, reply, decision)
                    self._announce(decision)  # the timeout a reply that came too late fired
                    continue
                awaited = state.awaiting[reply.command_id]
                self.metrics.step_seconds.labels(state.name, awaited.step, awaited.kind).observe(
                    max((now - awaited.sent_at).total_seconds(), 0.0)
                )
                self._announce(decision)
        return effects

    def _ignored(self, state: SagaState, reply: machine.Reply, decision: machine.Decision) -> None:
        self.metrics.ignored_replies.labels(state.name, decision.outcome).inc()
        with log_context(correlation_id=state.saga_id, saga_id=state.saga_id):
            if decision.transitions:  # it came after its deadline, before the timeout fired
                logger.info(
                    "late reply to %s ignored: it reached the topic after its deadline, so the "
                    "command times out now",
                    reply.command_id,
                )
            else:
                logger.info(
                    "%s reply to %s ignored: it changes nothing", decision.outcome, reply.command_id
                )

    def fire_due(
        self,
        database: Engine,
        limit: int = 200,
        *,
        replies_read_through: datetime | None = None,
    ) -> int:
        """Fire the deadlines and backoffs due now, one transaction per saga; returns how many
        sagas changed. Sagas another orchestrator is handling are skipped on PostgreSQL; on
        SQLite the revision check makes the second of two concurrent writers try again.

        ``replies_read_through``: the moment before which every reply that reached the
        replies topic has been applied (:meth:`replies_read_through`); a timeout due after it
        waits, so that a reply that came in time wins over it however late it is read."""
        now = self.clock()
        self._held_back = {k: until for k, until in self._held_back.items() if until > now}
        with Session(database) as session:
            # Only sagas a definition here can run: one of a version this registry lacks must
            # not stop the others' deadlines (warn_unknown_versions says so at the start).
            due = due_saga_ids(
                session,
                now,
                limit,
                self.registry.held(),
                replies_read_through,
                namespace=self.topics.namespace,
                excluded=self._held_back,
            )
        changed = 0
        for saga_id in due:
            try:
                changed += self._fire(database, saga_id, replies_read_through)
            except ConcurrentSagaUpdate:
                continue  # a reply changed it meanwhile: the next round looks again
            except SQLAlchemyError:
                raise  # the database's trouble, not this saga's: the caller reports it
            except Exception as error:
                # One saga that cannot go on (a definition's code raising on its data, a
                # stored state this version cannot read) must not stop every other saga's
                # deadlines: it is said once and left aside for a while, the others go on.
                self._held_back[saga_id] = now + _HELD_BACK_FOR
                with log_context(correlation_id=saga_id, saga_id=saga_id):
                    logger.error(
                        "saga %s: what is due could not be done (%s: %s); it is tried again "
                        "in %d s, the other sagas go on",
                        saga_id,
                        type(error).__name__,
                        error,
                        _HELD_BACK_FOR.total_seconds(),
                        exc_info=True,
                    )
        return changed

    def replies_read_through(self, progress: TopicProgress | None) -> datetime | None:
        """The moment before which every reply that reached the replies topic has been applied,
        from the runtime's ``progress`` (``None`` without one: timeouts then fire at their
        deadlines); sets ``pipeline_saga_replies_behind_seconds`` and warns when timeouts wait
        long (:class:`~pipeline.sagas.replies_behind.RepliesBehind`)."""
        return self._replies_behind.read_through(progress)

    def replies_not_known_yet(self) -> None:
        """From now on (a start), how far the replies are read is not known: the gauge says
        +Inf, and the warning counts the time from here."""
        self._replies_behind.not_known_yet()

    def _fire(
        self, database: Engine, saga_id: str, replies_read_through: datetime | None = None
    ) -> int:
        """Fire what is due of one saga in its own transaction; 1 when it changed."""
        with Session(database) as session, session.begin():
            if is_postgres(database):
                locked = session.execute(
                    sa.select(sagas_table.c.saga_id)
                    .where(sagas_table.c.saga_id == saga_id)
                    .with_for_update(skip_locked=True)
                ).first()
                if locked is None:
                    return 0  # another orchestrator is handling it
            stored = load_saga(session, saga_id)
            if stored is None or stored.state.is_terminal:
                return 0
            if stored.state.namespace != self.topics.namespace:
                # Found with no namespace column (inserted by a version before it): the state
                # decides, the column is set from it, for that namespace's orchestrators.
                set_derived_columns(session, stored.state, stored.revision)
                return 0
            definition = self.registry.get(stored.state.name, stored.state.version)
            decision = machine.on_due(definition, stored.state, self.clock(), replies_read_through)
            if not decision.transitions and not decision.commands:
                # Found due with nothing due now (a timeout waiting for the replies aside):
                # its columns were not set by this version; set them, or it is found every round.
                set_derived_columns(session, stored.state, stored.revision)
                return 0
            save_saga(session, decision.state, stored.revision)
            self._publish(session, decision)
            return 1

    def warn_unknown_versions(self, session: Session) -> dict[tuple[str, int], int]:
        """Log a warning for each (name, version) of open sagas that this registry does not
        hold: their deadlines do not fire here, and their replies that come here wait (tried
        again without limit, never dead-lettered) until it holds that version. Returns them
        with their counts."""
        held = set(self.registry.held())
        unknown = {
            key: n
            for key, n in open_saga_versions(session, self.topics.namespace).items()
            if key not in held
        }
        for (name, version), count in sorted(unknown.items()):
            logger.warning(
                "%s of %s version %s not ended, and this orchestrator's registry does not hold "
                "that version (it holds: %s): their replies on this orchestrator's partitions "
                "of %s wait here (never dead-lettered), and meanwhile no orchestrator times "
                "out a saga (timeouts wait for the replies), until it holds it (roll a "
                "version out to every orchestrator; keep old ones until their sagas end)",
                counted(count, "saga"),
                name,
                version,
                ", ".join(f"{n} v{v}" for n, v in sorted(held)) or "none",
                self.topics.replies,
            )
        return unknown

    def retry(self, session: Session, saga_id: str) -> SagaState:
        """Operator: try a stuck saga's failed compensation (or confirms) again."""
        return self._operate(session, saga_id, machine.retry)

    def resolve(self, session: Session, saga_id: str, note: str = "") -> SagaState:
        """Operator: a stuck saga was handled by hand; it ends as ``resolved``."""
        return self._operate(
            session,
            saga_id,
            lambda definition, state, now: machine.resolve(definition, state, now, note),
        )

    def delete_ended(self, database: Engine) -> int:
        """Delete this saga system's sagas (those of its topic namespace) that ended more
        than the retention (and :data:`~pipeline.sagas.state_counts.DELETE_MARGIN`, so that
        every orchestrator's gauge has let them go first) ago, by this orchestrator's clock, in
        batches; counted in ``pipeline_sagas_deleted_total``. Returns how many; none without a
        retention."""
        retention = self.retention
        if retention is None:
            return 0
        deleted = delete_ended_sagas(
            database,
            ended_before=deletable_before(self.clock(), retention),
            batch_size=self.settings.cleanup_batch_size,
            namespace=self.topics.namespace,
        )
        for (name, status), count in deleted.items():
            self.metrics.deleted.labels(name, status).inc(count)
        return sum(deleted.values())

    def refresh_state_gauge(self, session: Session) -> dict[str, int]:
        """Set the ``pipeline_sagas`` gauge from the database (reading the open sagas and the
        ones that ended lately, see :mod:`pipeline.sagas.state_counts`); a state no saga is in
        any more goes to 0. Returns the counts by state."""
        counts = self._state_counts.refresh(session, self.clock())
        for name, status in self._gauged - counts.keys():
            self.metrics.by_state.labels(name, status).set(0)
        for (name, status), count in counts.items():
            self.metrics.by_state.labels(name, status).set(count)
        self._gauged |= counts.keys()
        return by_state(counts)

    # --- the edge ------------------------------------------------------------------------

    def _operate(
        self,
        session: Session,
        saga_id: str,
        action: Callable[[SagaDefinition[Any], SagaState, datetime], machine.Decision],
    ) -> SagaState:
        stored = load_saga(session, saga_id)
        if stored is None:
            raise UnknownSaga(f"no saga {machine.shown_saga_id(saga_id)} in this database")
        definition = self.registry.get(stored.state.name, stored.state.version)
        decision = action(definition, stored.state, self.clock())
        save_saga(session, decision.state, stored.revision)
        self._publish(session, decision)
        return decision.state

    def _publish(self, session: Session, decision: machine.Decision) -> None:
        """The decision's commands, then its transition events, into the outbox in one
        statement; a log line and the metrics for each transition."""
        self.outbox.add_all(session, outbox_events(decision))
        self._announce(decision)

    def _announce(self, decision: machine.Decision) -> None:
        """The metrics and the log line of each of the decision's commands and transitions."""
        state = decision.state
        for command in decision.commands:
            if command.kind == "compensation":
                self.metrics.compensations.labels(state.name, command.step).inc()
        with log_context(correlation_id=state.saga_id, saga_id=state.saga_id):
            for entry in decision.transitions:
                self.metrics.transitions.labels(state.name, entry.what).inc()
                if entry.what.endswith("_timed_out") and entry.step and entry.kind:
                    self.metrics.timeouts.labels(state.name, entry.step, entry.kind).inc()
                where = f" {entry.step}" if entry.step else ""
                detail = f": {entry.detail}" if entry.detail else ""
                logger.info(
                    "saga %s %s%s%s",
                    state.name,
                    entry.what.replace("_", " "),
                    where,
                    detail,
                    extra={
                        "event_action": entry.what,
                        "saga_name": state.name,
                        "saga_status": state.status,
                    },
                )


def _apply_replies(
    orchestrator: SagaOrchestrator, session: Session, units: list[UnitOfWork]
) -> None:
    """The replies of a group (or one) in its transaction (a batched write), each logged in the
    context of its event. A reply that belongs to no saga fails the group; alone, it is
    dead-lettered. One of a saga version this registry lacks fails the group too; alone, it
    waits (:class:`NotYet`: not committed, so the timeouts wait for it too) until the
    orchestrator holds that version: it is not the reply's fault, and dead-lettering it let
    another orchestrator time its saga out although its participant had answered."""
    try:
        orchestrator.handle_replies(
            session,
            [unit.event for unit in units],
            lambda i: handler_log_context(units[i]),
            [_arrived_at(unit) for unit in units],
        )
    except (MalformedSagaMessage, UnknownSaga, UnknownCommand) as error:
        raise Reject(str(error)) from None
    except UnknownSagaVersion as error:
        raise NotYet(
            f"saga {error.name} version {error.version} is not in this orchestrator's registry "
            f"(it holds: {error.held}): the reply waits for it (roll the version out to every "
            "orchestrator)"
        ) from None


def _arrived_at(unit: UnitOfWork) -> datetime | None:
    """When the reply reached the replies topic: its record's timestamp (the relay's producer
    sets it as it sends, or the broker as it appends, per the topic's timestamp type)."""
    timestamp_ms = unit.record.timestamp_ms
    return None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def orchestrator_processor(
    orchestrator: SagaOrchestrator,
    *,
    name: str = "saga-orchestrator",
    deadline_every_s: float = 0.2,
    state_gauge_every_s: float = 5.0,
    cleanup_every_s: float = 300.0,
    settings: SagaSettings | None = None,
) -> Processor:
    """The processor of ``saga.replies`` for ``orchestrator``: replies applied through the
    runtime's group commit (inbox, ordered per saga id; the replies of many sagas, each applied
    on its own, commit in one transaction), the deadlines fired every ``deadline_every_s``
    seconds, the sagas-by-state gauge counted every ``state_gauge_every_s``, the sagas that
    ended more than ``settings.retention_s`` ago deleted every ``cleanup_every_s`` (``settings``:
    ``PipelineSettings().sagas``, read when the processor starts, unless given here); the
    orchestrator's metrics are served with the processor's (``--metrics-port``).

    Run it with ``pipeline process MODULE:NAME`` where the module builds it; several instances
    share the replies by partition (one consumer group) and the deadlines by row lock.
    """
    processor = Processor(name)

    # An async handler, so replies take the group-commit path: one transaction (inbox rows,
    # saga rows, outbox rows) for all the replies that arrive while the previous group commits,
    # instead of a transaction and a worker thread each. The replies of a group are applied
    # together (unit.write_batched: one load, one save and one outbox insert for the group);
    # a group that fails is redone reply by reply.
    apply_replies = partial(_apply_replies, orchestrator)

    # A reply that was dead-lettered (a database refusal; one of a version missing from the
    # registry waits instead) must not park its saga's later replies: the saga would wait for
    # a redrive for ever. The state machine needs no order between replies (each answers the
    # command id it names; one not awaited is ignored), and the timeout of a step whose reply
    # was lost takes over.
    processor.never_park_keys(orchestrator.topics.replies)

    @processor.handler(orchestrator.topics.replies, event_type=REPLY_TYPE)
    async def on_reply(event: Event, unit: UnitOfWork) -> None:
        try:
            reply_of(event)  # a malformed reply is dead-lettered now, without the database
        except MalformedSagaMessage as error:
            raise Reject(str(error)) from None
        unit.write_batched(apply_replies, unit)

    @processor.on_start
    def check_versions(database: Engine) -> None:
        with Session(database) as session:
            orchestrator.warn_unknown_versions(session)

    @processor.on_start
    def replies_not_read_yet(database: Engine) -> None:
        # Until the group has joined and read, nothing is known: +Inf, not a reassuring 0.
        orchestrator.replies_not_known_yet()

    @processor.every(deadline_every_s)
    def fire_deadlines(database: Engine) -> None:
        # A reply sent before its step's deadline wins over the timeout, however late it is
        # read (the orchestrator was down, or behind): timeouts wait for the replies.
        read_through = orchestrator.replies_read_through(processor.progress)
        while orchestrator.fire_due(database, replies_read_through=read_through) > 0:
            pass

    if settings is not None:
        orchestrator.use_settings(settings)
    else:

        @processor.on_start
        def read_saga_settings(database: Engine) -> None:
            orchestrator.use_settings(PipelineSettings().sagas)

    @processor.every(cleanup_every_s)
    def delete_old_sagas(database: Engine) -> None:
        deleted = orchestrator.delete_ended(database)
        if deleted:
            logger.info(
                "deleted %s that ended more than %s ago",
                counted(deleted, "saga"),
                orchestrator.retention,
            )

    @processor.every(state_gauge_every_s)
    def count_sagas(database: Engine) -> None:
        with Session(database) as session:
            orchestrator.refresh_state_gauge(session)

    processor.metric_registries.append(orchestrator.metrics.registry)
    return processor
