"""The state of one saga instance: what the orchestrator stores, and the timeline it shows.

Plain pydantic data, stored as JSON in the saga's row (``pipeline/sagas/store.py``) and changed
only by the pure functions of :mod:`pipeline.sagas.machine`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.topics.catalogue import SAGA_NAMESPACE

__all__ = [
    "TERMINAL",
    "Awaited",
    "CommandKind",
    "HistoryEntry",
    "Resend",
    "SagaState",
    "SagaStatus",
    "StepState",
    "StepStatus",
    "command_id",
]

SagaStatus = Literal[
    "running",
    "compensating",
    "confirming",
    "completed",
    "compensated",
    "compensation_failed",
    "confirmation_failed",
    "resolved",
]
#: A saga in one of these changes no more (an operator resolved it, or it ended by itself).
TERMINAL: frozenset[str] = frozenset({"completed", "compensated", "resolved"})
#: A saga in one of these waits for an operator: ``pipeline saga retry`` or ``resolve``.
STUCK: frozenset[str] = frozenset({"compensation_failed", "confirmation_failed"})

StepStatus = Literal[
    "pending",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "compensating",
    "compensated",
    "compensation_failed",
    "confirming",
    "confirmed",
    "confirmation_failed",
]
CommandKind = Literal["action", "compensation", "confirm"]


def command_id(saga_id: str, step: str, kind: CommandKind, attempt: int) -> str:
    """The id of one command: the same inputs give the same id, so an orchestrator that handles
    a reply again after a crash sends the same commands, which participants recognise."""
    return f"{saga_id}/{step}/{kind}/{attempt}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepState(_Model):
    status: StepStatus = "pending"
    attempts: int = 0
    compensation_attempts: int = 0
    confirm_attempts: int = 0
    #: Times an operator asked for more attempts of its compensation or confirm.
    operator_retries: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None


class Awaited(_Model):
    """A command sent and not yet answered; past ``deadline`` it has timed out."""

    step: str
    kind: CommandKind
    attempt: int
    sent_at: datetime
    deadline: datetime


class Resend(_Model):
    """A command to send again at ``due``, after its backoff."""

    step: str
    kind: CommandKind
    due: datetime
    #: The failed attempt timed out (its effect is unknown) rather than being refused.
    after_timeout: bool = False


class HistoryEntry(_Model):
    """One line of the saga's timeline."""

    at: datetime
    what: str
    step: str | None = None
    kind: CommandKind | None = None
    attempt: int | None = None
    detail: str | None = None


class SagaState(_Model):
    saga_id: str
    name: str
    version: int
    #: The topic namespace the saga was started in (pipeline.sagas.SagaTopics): every command
    #: and event of it goes to that namespace's topics, whoever handles it.
    namespace: str = SAGA_NAMESPACE
    status: SagaStatus = "running"
    data: dict[str, Any]
    #: The element (step or parallel group) the saga is at, forwards.
    position: int = 0
    steps: dict[str, StepState]
    awaiting: dict[str, Awaited] = Field(default_factory=dict)
    resends: list[Resend] = Field(default_factory=list)
    #: Steps still to compensate, the next first (reverse order of the steps).
    to_compensate: list[str] = Field(default_factory=list)
    #: Commands that will be answered no more: "answered" or "timed_out" (a reply then is late).
    closed: dict[str, str] = Field(default_factory=dict)
    started_at: datetime
    updated_at: datetime
    reason: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def next_deadline(self) -> datetime | None:
        """When the orchestrator must look at this saga again without a reply, if ever."""
        times = [a.deadline for a in self.awaiting.values()] + [r.due for r in self.resends]
        return min(times) if times else None

    @property
    def next_resend(self) -> datetime | None:
        """When the earliest backoff ends (a command to send again), if any."""
        return min((r.due for r in self.resends), default=None)
