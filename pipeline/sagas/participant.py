"""The API a service uses to take part in sagas: handle a command, reply through the outbox.

::

    inventory = Processor("inventory-service")
    participant = SagaParticipant(inventory, "inventory")

    @participant.command("ReserveStock", model=ReserveStock)
    def reserve(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
        if not enough_stock(unit.session, command.data):
            raise Refuse("out of stock")              # a failure reply; the saga compensates
        unit.session.execute(...)                     # the local transaction
        return {"reservation_id": ...}                # the success reply's data

    @participant.command("ReleaseStock")
    def release(command: SagaCommand, unit: UnitOfWork) -> None:
        unit.session.execute(...)                     # undo what ReserveStock did

A handler runs in the processor's transaction (inbox row, its writes and its reply commit
together: exactly once in effect). On top of the inbox, the participant keeps a log of the
saga steps it handled, per (saga, step, kind):

- a command sent again (a retry after a timeout, with a new command id) is answered from the
  log with the first outcome instead of being done twice;
- a compensation of an action that never ran here, or that was refused, is answered "nothing
  to undo" without calling the handler; an action that arrives after its compensation is
  refused, so a late command cannot leave an effect nobody undoes.

:class:`Refuse` replies with a failure: not retried by default (a business refusal), or tried
again by the saga with ``retryable=True``; the handler's writes are rolled back either way. Any
other exception is retried by the processor runtime and then dead-lettered, and the saga's
timeout takes over. The saga's key (its id) is not parked on the commands topic after such a
dead letter (:meth:`~pipeline.processing.processor.Processor.never_park_keys`), so the
compensation that follows is answered.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.logs.context import log_context
from pipeline.logs.redact import redact
from pipeline.outbox.table import Outbox, PendingEvent, utc_now
from pipeline.plurals import counted
from pipeline.processing.attempt import handler_log_context
from pipeline.processing.processor import Processor, Reject, UnitOfWork
from pipeline.sagas.messages import (
    CommandInfo,
    MalformedSagaMessage,
    command_info,
    reply_event,
)
from pipeline.sagas.step_log import (
    ParticipantOutcome,
    StepOutcome,
    delete_participant_outcomes,
    participant_outcomes_of,
    record_participant_outcomes,
)
from pipeline.sagas.topics import SagaTopics
from pipeline.settings import PipelineSettings, SagaSettings

__all__ = ["Refuse", "SagaCommand", "SagaParticipant"]

logger = logging.getLogger("pipeline.sagas")


class Refuse(Exception):
    """Raised by a saga command handler: reply with a failure and ``reason``."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class SagaCommand:
    """What a command handler gets: the saga's attributes, the event, and its data (validated
    by the handler's model when it declared one)."""

    saga_id: str
    step: str
    kind: str
    command_id: str
    #: 1 for the first command of this step and kind, then 2, 3, ... after failures.
    attempt: int
    event: Event
    data: Any
    #: For a compensation or a confirm: the data of this participant's own success reply to the
    #: step's action, from its log (a payment id, a hold id). Key the undo on it, not on the
    #: saga's data: when the saga timed the action out and the action ran late, the saga's data
    #: never got the reply (``on_success`` did not run), but the log has it. ``None`` for an
    #: action.
    action_reply: dict[str, Any] | None = None


CommandHandler = Callable[[SagaCommand, UnitOfWork], Mapping[str, Any] | None]


class SagaParticipant:
    """Registers saga command handlers of one participant on a :class:`Processor`.

    ``group_commit=True``: the commands take the runtime's group-commit path (see
    :mod:`pipeline.processing.group_commit`): the handlers stay plain functions with
    ``unit.session``, but the commands of many sagas run one after another in one transaction,
    in one worker thread, so far fewer transactions and thread hand-offs per command. Only for
    handlers that do nothing but database work: one that waits (a slow call, a sleep) holds up
    every command of its group. A group whose transaction fails is redone command by command.
    Without it (the default) each command has a transaction of its own: not even the runtime's
    group commit of synchronous handlers, whose groups are sized by the handlers' recent
    durations, so a command that suddenly takes long holds up no other saga.
    """

    def __init__(
        self,
        processor: Processor,
        participant: str,
        *,
        source: str | None = None,
        group_commit: bool = False,
        settings: SagaSettings | None = None,
        cleanup_every_s: float = 300.0,
        clock: Callable[[], datetime] = utc_now,
        topics: SagaTopics | None = None,
    ):
        """``settings``: ``PipelineSettings().sagas``, read when the processor starts, unless
        given here; its ``step_log_retention_s`` says how long the participant's log keeps a
        handled command (looked at every ``cleanup_every_s``; by default forever). ``topics``:
        the saga system's topics (those of the ``saga`` namespace unless given): commands come
        from ``<namespace>.<participant>.commands``, replies go to ``<namespace>.replies``."""
        self.topics = topics or SagaTopics()
        problem = self.topics.participant_problem(participant)
        if problem:
            raise ValueError(
                f"saga participant name {participant!r}: it names the topics "
                f"{self.topics.namespace}.<participant>.commands and its .dlq, and {problem}"
            )
        self.processor = processor
        self.participant = participant
        self.topic = self.topics.commands(participant)
        self.source = source or f"/services/{processor.name}"
        self.group_commit = group_commit
        self.clock = clock
        self.settings = settings or SagaSettings()
        # A command dead-lettered (its handler kept failing) must not hold up the saga's next
        # command for this participant, its compensation: the saga's timeout sends it, and the
        # log answers it ("nothing to undo" for an action that never ran).
        processor.never_park_keys(self.topic)
        if settings is None:
            processor.on_start(self._read_settings)
        processor.every(cleanup_every_s)(self._delete_old_steps)

    def _read_settings(self, database: Engine) -> None:
        self.settings = PipelineSettings().sagas

    def _delete_old_steps(self, database: Engine) -> None:
        self.delete_old_steps(database)

    def delete_old_steps(self, database: Engine) -> int:
        """Delete the rows of this participant's log handled more than
        ``settings.step_log_retention_s`` ago (none without it); returns how many."""
        retention = self.settings.step_log_retention_s
        if retention is None:
            return 0
        deleted = delete_participant_outcomes(
            database,
            self.processor.name,
            handled_before=self.clock() - timedelta(seconds=retention),
            batch_size=self.settings.cleanup_batch_size,
        )
        if deleted:
            logger.info(
                "deleted %s of %s's saga step log, handled more than %s ago",
                counted(deleted, "row"),
                self.processor.name,
                timedelta(seconds=retention),
            )
        return deleted

    def command(
        self, event_type: str, *, model: type[BaseModel] | None = None
    ) -> Callable[[CommandHandler], CommandHandler]:
        """Handle commands of ``event_type`` on ``saga.<participant>.commands``."""

        def register(function: CommandHandler) -> CommandHandler:
            if inspect.iscoroutinefunction(function):
                raise TypeError(
                    f"{function.__qualname__}: saga command handlers are plain functions "
                    "(they read the participant's log in the event's transaction)"
                )

            def handle(event: Event, unit: UnitOfWork) -> None:
                with log_context(saga_id=event.extensions.get("sagaid")):
                    self._handle_alone(function, event, unit)

            async def handle_in_group(event: Event, unit: UnitOfWork) -> None:
                try:
                    command_info(event)  # a malformed command is dead-lettered at once
                except MalformedSagaMessage as error:
                    raise Reject(str(error)) from None
                unit.write_batched(self._handle_group, (function, unit))

            chosen = handle_in_group if self.group_commit else handle
            chosen.__qualname__ = function.__qualname__
            # Without group commit, a command never waits in a group for the slow one before
            # it (a participant's handler may call a remote service): its own transaction.
            self.processor.handler(
                self.topic, event_type=event_type, model=model, grouped=self.group_commit
            )(chosen)
            return function

        return register

    def _handle_group(
        self, session: Session, commands: list[tuple[CommandHandler, UnitOfWork]]
    ) -> None:
        """The commands of a group (or one) in ``session`` (its group's transaction, or its own
        when the group's failed), each through a unit whose session that is, in its log
        context: the participant's log read for them all in one query, the handlers called one
        after another, then their log rows and their replies written in one statement each."""
        infos = [command_info(unit.event) for _, unit in commands]
        saga_ids = [info.saga_id for info in infos]
        if len(set(saga_ids)) < len(saga_ids):  # one saga twice: each sees what the one before did
            for function, unit in commands:
                self._handle_group(session, [(function, unit)])
            return
        known = participant_outcomes_of(session, self.processor.name, saga_ids)
        records: list[StepOutcome] = []
        replies: list[PendingEvent] = []
        for (function, unit), info in zip(commands, infos, strict=True):
            own = replace(unit, _session=session, _emitted=[], _writes=[], _batched=[])
            with handler_log_context(own), log_context(saga_id=info.saga_id):
                record, reply = self._answer(
                    function, own, info, known.get((info.saga_id, info.step), {})
                )
            if record is not None:
                records.append(record)
            replies.append(reply)
        record_participant_outcomes(session, records)
        _REPLIES.add_all(session, replies)

    def _handle_alone(self, function: CommandHandler, event: Event, unit: UnitOfWork) -> None:
        """A command in its own transaction (``unit.session``): a group of one."""
        try:
            command_info(event)
        except MalformedSagaMessage as error:
            raise Reject(str(error)) from None
        self._handle_group(unit.session, [(function, unit)])

    def _answer(
        self,
        function: CommandHandler,
        unit: UnitOfWork,
        info: CommandInfo,
        outcomes: Mapping[str, ParticipantOutcome],
    ) -> tuple[StepOutcome | None, PendingEvent]:
        """Handle one command given the outcomes already recorded for its step (this kind's,
        and its opposite's); returns the row for the participant's log (``None``: nothing to
        record) and the reply, for the caller to write after the handler's own writes."""
        now = self.clock()
        previous = outcomes.get(info.kind)
        if previous is not None:  # the same step sent again: the first outcome, not the effect
            return None, self._reply(unit, info, previous.ok, previous.reply, retryable=False)
        action = outcomes.get("action")
        if info.kind == "compensation":
            if action is None or not action.ok:
                body: dict[str, Any] = {"undone": False}
                return self._record(info, True, body, now), self._reply(unit, info, True, body)
        elif info.kind == "action":
            undo = outcomes.get("compensation")
            if undo is not None:
                body = {"reason": "compensated already"}
                return (
                    self._record(info, False, body, now),
                    self._reply(unit, info, False, body, retryable=False),
                )
        command = SagaCommand(
            saga_id=info.saga_id,
            step=info.step,
            kind=info.kind,
            command_id=info.command_id,
            attempt=info.attempt,
            event=unit.event,
            data=unit.data if unit.data is not None else unit.event.data,
            action_reply=(
                dict(action.reply)
                if info.kind != "action" and action is not None and action.ok
                else None
            ),
        )
        try:
            with unit.session.begin_nested():  # a refusal rolls back the handler's own writes
                result = dict(function(command, unit) or {})
        except Refuse as refusal:
            # Redacted as a log line is: the reason goes on saga.replies, into the saga's row
            # and onto saga.events (raise Refuse(str(error)) quoted a connection URL there).
            body = {"reason": redact(refusal.reason)}
            # A refused action is final (a retry is done again). A compensation or confirm is
            # never refused for good: it is tried again until it succeeds or an operator acts.
            final = not refusal.retryable and info.kind == "action"
            return (
                self._record(info, False, body, now) if final else None,
                self._reply(unit, info, False, body, retryable=refusal.retryable),
            )
        return self._record(info, True, result, now), self._reply(unit, info, True, result)

    def _record(
        self, info: CommandInfo, ok: bool, reply: dict[str, Any], now: datetime
    ) -> StepOutcome:
        return StepOutcome(self.processor.name, info.saga_id, info.step, info.kind, ok, reply, now)

    def _reply(
        self,
        unit: UnitOfWork,
        info: CommandInfo,
        ok: bool,
        body: Mapping[str, Any],
        *,
        retryable: bool = True,
    ) -> PendingEvent:
        reason = None if ok else str(body.get("reason") or "failed")
        data = body if ok else {}
        event = reply_event(
            info, ok=ok, source=self.source, data=data, reason=reason, retryable=retryable
        )
        return PendingEvent(unit.linked(event), "saga", info.saga_id, self.topics.replies)


#: Replies name their topic: no routes needed.
_REPLIES = Outbox(routes={})
