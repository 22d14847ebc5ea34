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
timeout takes over.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.logs.context import log_context
from pipeline.processing.attempt import handler_log_context
from pipeline.processing.processor import Processor, Reject, UnitOfWork
from pipeline.sagas.messages import (
    CommandInfo,
    MalformedSagaMessage,
    command_info,
    reply_event,
)
from pipeline.sagas.store import participant_outcomes, record_participant_outcome
from pipeline.topics.catalogue import SAGA_REPLIES, saga_commands_topic

__all__ = ["Refuse", "SagaCommand", "SagaParticipant"]


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


CommandHandler = Callable[[SagaCommand, UnitOfWork], Mapping[str, Any] | None]


class SagaParticipant:
    """Registers saga command handlers of one participant on a :class:`Processor`.

    ``group_commit=True``: the commands take the runtime's group-commit path (see
    :mod:`pipeline.processing.group_commit`): the handlers stay plain functions with
    ``unit.session``, but the commands of many sagas run one after another in one transaction,
    in one worker thread, so far fewer transactions and thread hand-offs per command. Only for
    handlers that do nothing but database work: one that waits (a slow call, a sleep) holds up
    every command of its group. A group whose transaction fails is redone command by command.
    """

    def __init__(
        self,
        processor: Processor,
        participant: str,
        *,
        source: str | None = None,
        group_commit: bool = False,
    ):
        self.processor = processor
        self.participant = participant
        self.topic = saga_commands_topic(participant)
        self.source = source or f"/services/{processor.name}"
        self.group_commit = group_commit

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
                    self._handle(function, event, unit)

            async def handle_in_group(event: Event, unit: UnitOfWork) -> None:
                try:
                    command_info(event)  # a malformed command is dead-lettered at once
                except MalformedSagaMessage as error:
                    raise Reject(str(error)) from None
                unit.write(partial(self._handle_in, function, unit))

            chosen = handle_in_group if self.group_commit else handle
            chosen.__qualname__ = function.__qualname__
            self.processor.handler(self.topic, event_type=event_type, model=model)(chosen)
            return function

        return register

    def _handle_in(self, function: CommandHandler, unit: UnitOfWork, session: Session) -> None:
        """A grouped command in ``session`` (its group's transaction, or its own when the
        group's failed), through a unit whose session that is, in the command's log context."""
        own = replace(unit, _session=session, _emitted=[], _writes=[], _batched=None)
        with handler_log_context(own), log_context(saga_id=unit.event.extensions.get("sagaid")):
            self._handle(function, unit.event, own)

    def _handle(self, function: CommandHandler, event: Event, unit: UnitOfWork) -> None:
        try:
            info = command_info(event)
        except MalformedSagaMessage as error:
            raise Reject(str(error)) from None
        session = unit.session
        service = self.processor.name
        now = datetime.now(UTC)
        # Every kind's outcome of this step in one query: this command's, and its opposite's.
        outcomes = participant_outcomes(session, service, info.saga_id, info.step)
        previous = outcomes.get(info.kind)
        if previous is not None:  # the same step sent again: the first outcome, not the effect
            self._reply(unit, info, previous.ok, previous.reply, retryable=False)
            return
        if info.kind == "compensation":
            action = outcomes.get("action")
            if action is None or not action.ok:
                self._record(unit, info, True, {"undone": False}, now)
                self._reply(unit, info, True, {"undone": False})
                return
        elif info.kind == "action":
            undo = outcomes.get("compensation")
            if undo is not None:
                reply = {"reason": "compensated already"}
                self._record(unit, info, False, reply, now)
                self._reply(unit, info, False, reply, retryable=False)
                return
        command = SagaCommand(
            saga_id=info.saga_id,
            step=info.step,
            kind=info.kind,
            command_id=info.command_id,
            attempt=info.attempt,
            event=event,
            data=unit.data if unit.data is not None else event.data,
        )
        try:
            with session.begin_nested():  # a refusal rolls back the handler's own writes
                result = dict(function(command, unit) or {})
        except Refuse as refusal:
            reply = {"reason": refusal.reason}
            # A refused action is final (a retry is done again). A compensation or confirm is
            # never refused for good: it is tried again until it succeeds or an operator acts.
            if not refusal.retryable and info.kind == "action":
                self._record(unit, info, False, reply, now)
            self._reply(unit, info, False, reply, retryable=refusal.retryable)
            return
        self._record(unit, info, True, result, now)
        self._reply(unit, info, True, result)

    def _record(
        self, unit: UnitOfWork, info: CommandInfo, ok: bool, reply: dict[str, Any], now: datetime
    ) -> None:
        record_participant_outcome(
            unit.session,
            service=self.processor.name,
            saga_id=info.saga_id,
            step=info.step,
            kind=info.kind,
            ok=ok,
            reply=reply,
            now=now,
        )

    def _reply(
        self,
        unit: UnitOfWork,
        info: CommandInfo,
        ok: bool,
        body: Mapping[str, Any],
        *,
        retryable: bool = True,
    ) -> None:
        reason = None if ok else str(body.get("reason") or "failed")
        data = body if ok else {}
        unit.emit(
            reply_event(
                info, ok=ok, source=self.source, data=data, reason=reason, retryable=retryable
            ),
            aggregate_type="saga",
            aggregate_id=info.saga_id,
            topic=SAGA_REPLIES,
        )
