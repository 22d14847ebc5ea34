"""Saga commands, replies and transition events as CloudEvents (pure: no I/O).

A command is an event of its call's type on ``saga.<participant>.commands``, keyed by the saga
id, with the extensions ``sagaid``, ``sagastep``, ``sagakind`` (action, compensation, confirm),
``sagacommandid`` and ``sagaattempt``. A reply is a ``pipeline.saga.reply`` event on
``saga.replies``, keyed by the saga id, naming the command it answers; its data is ``{"ok",
"data", "reason", "retryable"}``. Every transition of a saga is a ``pipeline.saga.<what>`` event on
``saga.events``. The correlation id of all three is the saga id.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pipeline.envelope import Event
from pipeline.errors import PipelineError
from pipeline.outbox.table import PendingEvent
from pipeline.sagas.machine import CommandToSend, Decision, Reply
from pipeline.sagas.state import CommandKind, HistoryEntry, SagaState
from pipeline.sagas.topics import SagaTopics

__all__ = [
    "AGGREGATE_TYPE",
    "REPLY_TYPE",
    "CommandInfo",
    "MalformedSagaMessage",
    "UnknownCommand",
    "command_event",
    "command_info",
    "outbox_events",
    "reply_event",
    "reply_of",
    "transition_event",
]

REPLY_TYPE = "pipeline.saga.reply"
#: The outbox's aggregate type of every saga message (its aggregate id is the saga's id).
AGGREGATE_TYPE = "saga"
ORCHESTRATOR_SOURCE = "/pipeline/saga-orchestrator"
_KINDS: frozenset[str] = frozenset({"action", "compensation", "confirm"})


class MalformedSagaMessage(ValueError):
    """An event on a saga topic that lacks what a saga command or reply must carry."""


class UnknownCommand(PipelineError):
    """A reply whose command id names no command its saga sent (a participant that made one up
    or copied the wrong one): dead-lettered, since no later event could make it apply."""


@dataclass(frozen=True)
class CommandInfo:
    """What a participant reads from a saga command besides its data."""

    saga_id: str
    step: str
    kind: CommandKind
    command_id: str
    #: 1 for the first command of this step and kind, 2 for the next after a failure, ...
    attempt: int


def command_event(command: CommandToSend, source: str = ORCHESTRATOR_SOURCE) -> Event:
    return Event(
        source=source,
        type=command.call.type,
        subject=f"{command.saga_name}/{command.step}",
        partitionkey=command.saga_id,
        correlationid=command.saga_id,
        extensions={
            "sagaid": command.saga_id,
            "sagastep": command.step,
            "sagakind": command.kind,
            "sagacommandid": command.command_id,
            "sagaattempt": str(command.attempt),
        },
        data=dict(command.call.data),
    )


def command_info(event: Event) -> CommandInfo:
    """The saga attributes of a command; :class:`MalformedSagaMessage` when one is missing."""
    ext = event.extensions
    names = ("sagaid", "sagastep", "sagakind", "sagacommandid", "sagaattempt")
    missing = [name for name in names if not ext.get(name)]
    if missing:
        raise MalformedSagaMessage(f"not a saga command: no {', '.join(missing)} extension")
    if ext["sagakind"] not in _KINDS:
        raise MalformedSagaMessage(f"unknown sagakind {ext['sagakind']!r}")
    if not ext["sagaattempt"].isdigit():
        raise MalformedSagaMessage(f"sagaattempt must be a number, got {ext['sagaattempt']!r}")
    return CommandInfo(
        saga_id=ext["sagaid"],
        step=ext["sagastep"],
        kind=cast(CommandKind, ext["sagakind"]),
        command_id=ext["sagacommandid"],
        attempt=int(ext["sagaattempt"]),
    )


def reply_event(
    command: CommandInfo,
    *,
    ok: bool,
    source: str,
    data: Mapping[str, Any] | None = None,
    reason: str | None = None,
    retryable: bool = True,
) -> Event:
    return Event(
        source=source,
        type=REPLY_TYPE,
        subject=command.step,
        partitionkey=command.saga_id,
        correlationid=command.saga_id,
        extensions={"sagaid": command.saga_id, "sagacommandid": command.command_id},
        data={"ok": ok, "data": dict(data or {}), "reason": reason, "retryable": retryable},
    )


def reply_of(event: Event, arrived_at: datetime | None = None) -> tuple[str, Reply]:
    """The saga id and the :class:`Reply` in a reply event (which ``arrived_at`` the replies
    topic then, when known); :class:`MalformedSagaMessage` when it is not one."""
    saga_id = event.extensions.get("sagaid")
    command_id = event.extensions.get("sagacommandid")
    body = event.data
    if event.type != REPLY_TYPE or not saga_id or not command_id:
        raise MalformedSagaMessage(
            f"not a saga reply: type {event.type!r}, sagaid {saga_id!r}, "
            f"sagacommandid {command_id!r}"
        )
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        raise MalformedSagaMessage("a saga reply's data must be an object with a boolean 'ok'")
    data = body.get("data") or {}
    if not isinstance(data, dict):
        raise MalformedSagaMessage("a saga reply's 'data' must be an object")
    reason = body.get("reason")
    return saga_id, Reply(
        command_id=command_id,
        ok=body["ok"],
        data=data,
        reason=None if reason is None else str(reason),
        retryable=bool(body.get("retryable", True)),
        arrived_at=arrived_at,
    )


def transition_event(state: SagaState, entry: HistoryEntry) -> Event:
    return Event(
        source=ORCHESTRATOR_SOURCE,
        type=f"pipeline.saga.{entry.what}",
        subject=state.name,
        time=entry.at,
        partitionkey=state.saga_id,
        correlationid=state.saga_id,
        extensions={"sagaid": state.saga_id},
        data={
            "saga_id": state.saga_id,
            "saga": state.name,
            "version": state.version,
            "status": state.status,
            "step": entry.step,
            "kind": entry.kind,
            "attempt": entry.attempt,
            "detail": entry.detail,
        },
    )


def outbox_events(decision: Decision) -> list[PendingEvent]:
    """The decision's commands, then its transition events, as outbox rows, to the topics of
    the saga's namespace."""
    state = decision.state
    topics = _topics_of(state.namespace)
    pending = [
        PendingEvent(
            command_event(command),
            AGGREGATE_TYPE,
            state.saga_id,
            topics.commands(command.participant),
        )
        for command in decision.commands
    ]
    pending.extend(
        PendingEvent(transition_event(state, entry), AGGREGATE_TYPE, state.saga_id, topics.events)
        for entry in decision.transitions
    )
    return pending


@functools.cache
def _topics_of(namespace: str) -> SagaTopics:
    return SagaTopics(namespace)
