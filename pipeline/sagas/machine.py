"""The saga state machine: pure functions from (definition, state, input, now) to a decision.

No broker, database or clock: the orchestrator passes the time in, stores the new state and
sends the decision's commands through its outbox in one transaction; the test driver does the
same in memory with a virtual clock.

The rules, in order of the saga's life:

1. :func:`start` sends the first element's actions (a parallel group's all at once).
2. A success reply applies the step's ``on_success`` to the data; when every step of the
   element succeeded the saga moves to the next element; after the last one it sends the
   confirms of its try/confirm/cancel steps (``confirming``) or is ``completed``. An
   ``on_success`` that raises makes the saga compensate, that step included (rule 3).
3. A failure reply or a timeout is retried after the step's backoff while attempts remain
   (a reply with ``retryable=False`` is not retried); then the saga compensates: it waits for
   the other branches still in flight, then undoes every step that succeeded or timed out (its
   effect is unknown, so it is undone; compensations must accept "nothing to undo"), one at a
   time in reverse order, each confirmed before the one before it. A step that failed outright
   had no effect and is not undone.
4. A compensation or confirm that fails is retried with a doubling backoff; when its attempts
   are used up the saga stops in ``compensation_failed`` (or ``confirmation_failed``) for an
   operator: :func:`retry` tries it again, :func:`resolve` ends the saga as ``resolved``.
5. A reply to a command that is no longer awaited changes nothing: ``duplicate`` when that
   command was answered already, ``late`` when it timed out or was never sent.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from pipeline.errors import PipelineError
from pipeline.logs.redact import redact
from pipeline.sagas.definition import Call, SagaDefinition, Step
from pipeline.sagas.state import (
    STUCK,
    Awaited,
    CommandKind,
    HistoryEntry,
    Resend,
    SagaState,
    StepState,
    command_id,
)
from pipeline.topics.catalogue import SAGA_NAMESPACE

__all__ = [
    "SAGA_ID_MAX",
    "CommandToSend",
    "Decision",
    "InputEffect",
    "InvalidSagaId",
    "OperatorError",
    "Reply",
    "check_saga_id",
    "on_due",
    "on_reply",
    "resolve",
    "retry",
    "shown_saga_id",
    "start",
]

#: What an input did: ``applied``, or nothing because it was a ``duplicate`` or ``late`` reply,
#: or a reply to a command the saga never sent (``unknown``: the orchestrator dead-letters it).
InputEffect = Literal["applied", "duplicate", "late", "unknown"]
_MAX_BACKOFF_S = 60.0


class OperatorError(PipelineError):
    """An operator action that does not fit the saga's state (retrying a completed saga)."""


class InvalidSagaId(PipelineError):
    """A saga id that cannot be one: empty, longer than :data:`SAGA_ID_MAX` characters (the
    database column's), or holding a control character (a line break would split every log
    line, table row and command that shows it)."""


#: The longest saga id (the ``sagas.saga_id`` column is a VARCHAR(255)).
SAGA_ID_MAX = 255


def _breaks_lines(text: str) -> bool:
    """Whether ``text`` holds a control character (a line break, a tab, an escape) or a
    Unicode line or paragraph separator."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def shown_saga_id(saga_id: str) -> str:
    """A saga id as a message names it: as it is, unless it could be no saga's (empty, too
    long, a control character in it), then quoted and cut short, on one line."""
    if saga_id and len(saga_id) <= SAGA_ID_MAX and not _breaks_lines(saga_id):
        return saga_id
    shown = repr(saga_id)
    return shown if len(shown) <= 80 else f"{shown[:80]}..."


def check_saga_id(saga_id: str) -> str:
    """``saga_id`` if it can be a saga's id, else :class:`InvalidSagaId` saying why."""
    if not isinstance(saga_id, str) or not saga_id:
        raise InvalidSagaId(f"a saga id must be a non-empty text, got {saga_id!r:.80}")
    if len(saga_id) > SAGA_ID_MAX:
        raise InvalidSagaId(
            f"a saga id has at most {SAGA_ID_MAX} characters, got {len(saga_id):,} "
            f"({saga_id[:40]!r}...)"
        )
    if _breaks_lines(saga_id):
        raise InvalidSagaId(f"a saga id must not hold control characters, got {saga_id!r:.80}")
    return saga_id


@dataclass(frozen=True)
class Reply:
    """A participant's answer to the command ``command_id``."""

    command_id: str
    ok: bool
    data: Mapping[str, Any]
    reason: str | None = None
    #: False for a business refusal (out of stock): the step is not tried again.
    retryable: bool = True
    #: When it reached the replies topic (its record's timestamp), if known: a reply that came
    #: after its command's deadline is late, however soon it is read.
    arrived_at: datetime | None = None


@dataclass(frozen=True)
class CommandToSend:
    command_id: str
    saga_id: str
    saga_name: str
    step: str
    kind: CommandKind
    attempt: int
    participant: str
    call: Call


@dataclass(frozen=True)
class Decision:
    state: SagaState
    commands: tuple[CommandToSend, ...]
    #: The timeline entries this input added (each becomes a saga event and a log line).
    transitions: tuple[HistoryEntry, ...]
    outcome: InputEffect = "applied"


class _Run:
    """One input applied to a copy of the state; collects the commands and the timeline."""

    def __init__(self, definition: SagaDefinition[Any], state: SagaState, now: datetime) -> None:
        if (definition.name, definition.version) != (state.name, state.version):
            raise PipelineError(
                f"saga {state.saga_id} runs on {state.name} v{state.version}, "
                f"not on {definition.name} v{definition.version}"
            )
        if set(state.steps) != definition.step_names:
            # Another definition of the same name and version (a registry not the one the saga
            # runs on, or a step renamed without a new version): it would drive the wrong steps.
            raise PipelineError(
                f"saga {state.saga_id} has the steps {', '.join(state.steps)}, and "
                f"{definition.name} v{definition.version} here has "
                f"{', '.join(sorted(definition.step_names))}: not the definition it runs on "
                "(another registry?)"
            )
        self.definition = definition
        # A deep copy by pydantic-core (dump, then validate): the same copy as
        # model_copy(deep=True), about 4x cheaper than its copy.deepcopy.
        self.state = SagaState.model_validate(state.model_dump())
        self.now = now
        self.commands: list[CommandToSend] = []
        self.transitions: list[HistoryEntry] = []

    def decision(self, outcome: InputEffect = "applied") -> Decision:
        self.state.updated_at = self.now
        return Decision(self.state, tuple(self.commands), tuple(self.transitions), outcome)

    # --- bookkeeping ---------------------------------------------------------------------

    def note(
        self,
        what: str,
        step: str | None = None,
        kind: CommandKind | None = None,
        attempt: int | None = None,
        detail: str | None = None,
    ) -> None:
        entry = HistoryEntry(
            at=self.now, what=what, step=step, kind=kind, attempt=attempt, detail=detail
        )
        self.state.history.append(entry)
        self.transitions.append(entry)

    def data(self) -> BaseModel:
        model: BaseModel = self.definition.data_model.model_validate(self.state.data)
        return model

    def step_state(self, name: str) -> StepState:
        return self.state.steps[name]

    def set_status(self, status: Any, detail: str | None = None) -> None:
        self.state.status = status
        self.note(f"saga_{status}", detail=detail)

    # --- sending -------------------------------------------------------------------------

    def send(self, step: Step[Any], kind: CommandKind) -> None:
        record = self.step_state(step.name)
        factory: Callable[[Any], Call] | None
        if kind == "action":
            record.attempts += 1
            attempt, factory = record.attempts, step.action
        elif kind == "compensation":
            record.compensation_attempts += 1
            attempt, factory = record.compensation_attempts, step.compensation
        else:
            record.confirm_attempts += 1
            attempt, factory = record.confirm_attempts, step.confirm
        assert factory is not None  # only steps with a compensation or confirm get here
        try:
            call = factory(self.data())
            if not isinstance(call, Call):
                raise TypeError(f"it returned {type(call).__name__}, not a Call")
        except Exception as error:  # the definition's code: a bug, or data it did not expect
            self.not_sent(step, kind, attempt, error)
            return
        identifier = command_id(self.state.saga_id, step.name, kind, attempt)
        self.state.awaiting[identifier] = Awaited(
            step=step.name,
            kind=kind,
            attempt=attempt,
            sent_at=self.now,
            deadline=self.now + timedelta(seconds=step.timeout_s),
        )
        self.commands.append(
            CommandToSend(
                command_id=identifier,
                saga_id=self.state.saga_id,
                saga_name=self.state.name,
                step=step.name,
                kind=kind,
                attempt=attempt,
                participant=step.participant,
                call=call,
            )
        )
        self.note(f"{kind}_sent", step.name, kind, attempt, call.type)

    def not_sent(self, step: Step[Any], kind: CommandKind, attempt: int, error: Exception) -> None:
        """The definition could not make ``kind``'s command of ``step`` (its function raised).
        Making it again from the same data fails again, so it is not retried: an action that
        cannot be sent failed outright (no effect, nothing to undo) and the saga compensates;
        a compensation or confirm stops the saga in ``compensation_failed`` (or
        ``confirmation_failed``) for an operator, who retries once the definition is fixed."""
        reason = f"its {kind} could not be made: {_error_text(error)}"
        record = self.step_state(step.name)
        record.reason = reason
        self.note(f"{kind}_not_sent", step.name, kind, attempt, reason)
        if kind == "action":
            record.status, record.finished_at = "failed", self.now
            if self.state.status == "running":
                self.state.reason = f"{step.name}: {reason}"
                self.set_status("compensating", self.state.reason)
            self.begin_compensation_when_settled()
            return
        record.status = "compensation_failed" if kind == "compensation" else "confirmation_failed"
        self.set_status(record.status, f"{step.name}: {reason}")

    def later(self, step: Step[Any], kind: CommandKind, after_timeout: bool) -> None:
        """Send ``kind`` of ``step`` again after its backoff (at once when the backoff is 0)."""
        record = self.step_state(step.name)
        if kind == "action":
            delay = step.retry_backoff_s
        else:
            done = (
                record.compensation_attempts if kind == "compensation" else record.confirm_attempts
            )
            delay = min(_MAX_BACKOFF_S, step.compensation_backoff_s * 2 ** max(done - 1, 0))
        if delay <= 0:
            self.send(step, kind)
            return
        due = self.now + timedelta(seconds=delay)
        self.state.resends.append(
            Resend(step=step.name, kind=kind, due=due, after_timeout=after_timeout)
        )

    # --- forwards ------------------------------------------------------------------------

    def enter(self, position: int) -> None:
        self.state.position = position
        for step in self.definition.leaves(position):
            if self.state.status != "running":
                break  # a branch's action could not be made: the rest are not started
            record = self.step_state(step.name)
            record.status, record.started_at = "running", self.now
            self.send(step, "action")

    def advance(self) -> None:
        position = self.state.position + 1
        if position < len(self.definition.elements):
            self.enter(position)
            return
        to_confirm = [
            step
            for step in self.definition.steps()
            if step.confirm is not None and self.step_state(step.name).status == "succeeded"
        ]
        if not to_confirm:
            self.set_status("completed")
            return
        self.set_status("confirming")
        for step in to_confirm:
            self.step_state(step.name).status = "confirming"
            self.send(step, "confirm")

    def action_succeeded(self, step: Step[Any], reply: Reply) -> None:
        record = self.step_state(step.name)
        record.status, record.finished_at, record.reason = "succeeded", self.now, None
        try:
            data = step.on_success(self.data(), reply.data).model_dump(mode="json")
        except Exception as error:  # the definition's code: a bug, or a reply it did not expect
            self.reply_not_applied(step, error)
            return
        self.state.data = data
        self.note("action_succeeded", step.name, "action", record.attempts)
        if self.state.status == "compensating":
            self.begin_compensation_when_settled()
            return
        leaves = self.definition.leaves(self.state.position)
        if all(self.step_state(leaf.name).status == "succeeded" for leaf in leaves):
            self.advance()

    def reply_not_applied(self, step: Step[Any], error: Exception) -> None:
        """The step's action succeeded, but its ``on_success`` failed on the reply: the saga
        cannot go on with data it could not make, so it compensates, this step included (its
        action took effect), saying why. (Applying the same reply again fails again.)"""
        reason = f"its reply could not be applied: {_error_text(error)}"
        record = self.step_state(step.name)
        record.reason = reason
        self.note("reply_not_applied", step.name, "action", record.attempts, reason)
        if self.state.status == "running":
            self.state.reason = f"{step.name}: {reason}"
            self.set_status("compensating", self.state.reason)
        self.begin_compensation_when_settled()

    def action_failed(self, step: Step[Any], reason: str, retryable: bool, timeout: bool) -> None:
        record = self.step_state(step.name)
        record.reason = reason
        what = "action_timed_out" if timeout else "action_failed"
        self.note(what, step.name, "action", record.attempts, reason)
        if self.state.status == "running" and retryable and record.attempts < step.max_attempts:
            self.later(step, "action", after_timeout=timeout)
            return
        record.status, record.finished_at = ("timed_out" if timeout else "failed"), self.now
        if self.state.status == "running":
            self.state.reason = f"{step.name}: {reason}"
            self.set_status("compensating", self.state.reason)
        self.begin_compensation_when_settled()

    # --- backwards -----------------------------------------------------------------------

    def begin_compensation_when_settled(self) -> None:
        """Once no action is in flight or waiting to be sent again, undo what was done."""
        if any(awaited.kind == "action" for awaited in self.state.awaiting.values()):
            return
        for resend in [r for r in self.state.resends if r.kind == "action"]:
            # A branch waiting to retry: its last attempt decides whether it needs undoing.
            self.state.resends.remove(resend)
            record = self.step_state(resend.step)
            record.status = "timed_out" if resend.after_timeout else "failed"
            record.finished_at = self.now
        self.state.to_compensate = [
            step.name
            for step in reversed(list(self.definition.steps()))
            if step.compensation is not None
            and self.step_state(step.name).status in ("succeeded", "timed_out")
        ]
        self.compensate_next()

    def compensate_next(self) -> None:
        if not self.state.to_compensate:
            self.set_status("compensated", self.state.reason)
            return
        step = self.definition.step(self.state.to_compensate[0])
        self.step_state(step.name).status = "compensating"
        self.send(step, "compensation")

    def compensation_done(self, step: Step[Any]) -> None:
        record = self.step_state(step.name)
        record.status, record.finished_at = "compensated", self.now
        self.note("compensation_succeeded", step.name, "compensation", record.compensation_attempts)
        self.state.to_compensate.remove(step.name)
        self.compensate_next()

    def undo_failed(self, step: Step[Any], kind: CommandKind, reason: str, timeout: bool) -> None:
        """A compensation or confirm that failed: again after a backoff, or stop for an operator."""
        record = self.step_state(step.name)
        attempts = (
            record.compensation_attempts if kind == "compensation" else record.confirm_attempts
        )
        self.note(
            f"{kind}_{'timed_out' if timeout else 'failed'}", step.name, kind, attempts, reason
        )
        if attempts < step.compensation_attempts * (record.operator_retries + 1):
            self.later(step, kind, after_timeout=timeout)
            return
        if kind == "compensation":
            record.status = "compensation_failed"
        else:
            record.status = "confirmation_failed"
        record.reason = reason
        self.set_status(record.status, f"{step.name}: {reason}")

    def confirmed(self, step: Step[Any]) -> None:
        record = self.step_state(step.name)
        record.status = "confirmed"
        self.note("confirm_succeeded", step.name, "confirm", record.confirm_attempts)
        if not any(
            r.status in ("confirming", "confirmation_failed") for r in self.state.steps.values()
        ):
            self.set_status("completed")

    # --- inputs --------------------------------------------------------------------------

    def answer(self, awaited: Awaited, reply: Reply) -> None:
        step = self.definition.step(awaited.step)
        reason = reply.reason or "failed"
        if awaited.kind == "action":
            if reply.ok:
                self.action_succeeded(step, reply)
            else:
                self.action_failed(step, reason, reply.retryable, timeout=False)
        elif reply.ok:
            if awaited.kind == "compensation":
                self.compensation_done(step)
            else:
                self.confirmed(step)
        else:
            self.undo_failed(step, awaited.kind, reason, timeout=False)

    def time_out(self, identifier: str, awaited: Awaited) -> None:
        self.state.closed[identifier] = "timed_out"
        step = self.definition.step(awaited.step)
        reason = f"no reply within {step.timeout_s:g} s"
        if awaited.kind == "action":
            self.action_failed(step, reason, retryable=True, timeout=True)
        else:
            self.undo_failed(step, awaited.kind, reason, timeout=True)


def start(
    definition: SagaDefinition[Any],
    saga_id: str,
    data: BaseModel | Mapping[str, Any],
    now: datetime,
    namespace: str = SAGA_NAMESPACE,
) -> Decision:
    """A new instance of ``definition`` in the topic ``namespace``: its first element's
    commands (:class:`InvalidSagaId` for an id that cannot be one)."""
    check_saga_id(saga_id)
    model = definition.data_model.model_validate(
        data.model_dump(mode="json") if isinstance(data, BaseModel) else dict(data)
    )
    state = SagaState(
        saga_id=saga_id,
        name=definition.name,
        version=definition.version,
        namespace=namespace,
        data=model.model_dump(mode="json"),
        steps={step.name: StepState() for step in definition.steps()},
        started_at=now,
        updated_at=now,
    )
    run = _Run(definition, state, now)
    run.note("saga_started", detail=f"{definition.name} v{definition.version}")
    run.enter(0)
    return run.decision()


def on_reply(
    definition: SagaDefinition[Any], state: SagaState, reply: Reply, now: datetime
) -> Decision:
    """Apply a participant's reply; a reply to a command not awaited changes nothing (it is a
    ``duplicate`` of an answered one, ``late`` for one timed out, ``unknown`` for a command id
    the saga never sent).

    A reply that reached the replies topic after its command's deadline (its ``arrived_at``)
    is ``late`` even when its timeout has not fired yet (the replies before it were still being
    read): the command times out now, as it would have had the timeout fired first."""
    if reply.command_id not in state.awaiting:
        return not_awaited(state, reply)
    run = _Run(definition, state, now)
    awaited = run.state.awaiting.pop(reply.command_id)
    if reply.arrived_at is not None and reply.arrived_at > awaited.deadline:
        run.time_out(reply.command_id, awaited)
        return run.decision("late")
    run.state.closed[reply.command_id] = "answered"
    run.answer(awaited, reply)
    return run.decision()


def not_awaited(state: SagaState, reply: Reply) -> Decision:
    """A reply to a command ``state`` does not wait for (an ended saga waits for none): nothing
    changes, whatever the definition (its version may be gone): ``duplicate``, ``late`` or
    ``unknown``, as :func:`on_reply` says."""
    seen = state.closed.get(reply.command_id)
    outcome: InputEffect = (
        "unknown" if seen is None else "duplicate" if seen == "answered" else "late"
    )
    return Decision(state, (), (), outcome)


def on_due(
    definition: SagaDefinition[Any],
    state: SagaState,
    now: datetime,
    replies_read_through: datetime | None = None,
) -> Decision:
    """Fire every deadline and backoff of ``state`` that is due at ``now``, earliest first.

    ``replies_read_through``: when given, the moment before which every reply appended to the
    replies topic has been applied; a timeout whose deadline is after it waits (its reply may
    be among those still to read: one that came before the deadline wins over it)."""
    run = _Run(definition, state, now)
    timeouts_until = now if replies_read_through is None else min(now, replies_read_through)
    while True:
        timeouts = [
            (a.deadline, i) for i, a in run.state.awaiting.items() if a.deadline <= timeouts_until
        ]
        resends = [r for r in run.state.resends if r.due <= now]
        if not timeouts and not resends:
            break
        first_timeout = min(timeouts) if timeouts else None
        first_resend = min(resends, key=lambda r: r.due) if resends else None
        if first_resend is None or (first_timeout and first_timeout[0] <= first_resend.due):
            assert first_timeout is not None
            identifier = first_timeout[1]
            run.time_out(identifier, run.state.awaiting.pop(identifier))
        else:
            run.state.resends.remove(first_resend)
            run.send(run.definition.step(first_resend.step), first_resend.kind)
    return run.decision()


def retry(definition: SagaDefinition[Any], state: SagaState, now: datetime) -> Decision:
    """Operator: try the failed compensation (or confirms) again, with as many attempts as
    the step allows (attempt numbers go on, so each command keeps an id of its own)."""
    if state.status not in STUCK:
        raise OperatorError(
            f"saga {state.saga_id} is {state.status}: only a saga in "
            f"{' or '.join(sorted(STUCK))} can be retried"
        )
    run = _Run(definition, state, now)
    run.note("operator_retry")
    if state.status == "compensation_failed":
        run.state.status = "compensating"
        step = run.definition.step(run.state.to_compensate[0])
        run.step_state(step.name).operator_retries += 1
        run.compensate_next()
    else:
        run.state.status = "confirming"
        for name, record in run.state.steps.items():
            if record.status == "confirmation_failed":
                record.status = "confirming"
                record.operator_retries += 1
                run.send(run.definition.step(name), "confirm")
    return run.decision()


def resolve(
    definition: SagaDefinition[Any], state: SagaState, now: datetime, note: str = ""
) -> Decision:
    """Operator: the failure was handled by hand; the saga ends as ``resolved``."""
    if state.status not in STUCK:
        raise OperatorError(
            f"saga {state.saga_id} is {state.status}: only a saga in "
            f"{' or '.join(sorted(STUCK))} can be resolved"
        )
    run = _Run(definition, state, now)
    run.set_status("resolved", note or None)
    return run.decision()


def _error_text(error: Exception) -> str:
    """A definition's error as a saga's reason keeps it (in its row, its timeline, and the
    ``saga.events`` every reader of that topic sees): redacted as a log line's exception is
    (an action raising with a connection URL's password or an ``api_key`` kept it there)."""
    return redact(f"{type(error).__name__}: {error}")
