"""The orchestrator's processor on the runtime's group commit: the replies of a group are applied
together, and a reply for no known saga fails only itself (the group is redone reply by reply)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.processing.group_commit import commit
from pipeline.processing.harness import PipelineHarness
from pipeline.processing.processor import Reject
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.messages import CommandInfo, reply_event
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.state import SagaState
from pipeline.sagas.store import load_sagas, sagas_table
from pipeline.settings import SagaSettings
from pipeline.topics.catalogue import SAGA_REPLIES
from tests.support.driving import handled_units


class Data(BaseModel):
    n: int


REGISTRY = SagaRegistry(
    [
        SagaDefinition(
            "Pair",
            version=1,
            data_model=Data,
            steps=[
                Step("first", participant="worker", action=lambda d: Call("Do", {"n": d.n})),
                Step("second", participant="worker", action=lambda d: Call("Do2", {"n": d.n})),
            ],
        )
    ]
)


def reply_to(state: SagaState) -> Event:
    [(command_id, awaited)] = state.awaiting.items()
    info = CommandInfo(state.saga_id, awaited.step, awaited.kind, command_id, awaited.attempt)
    return reply_event(info, ok=True, source="/worker")


def _two_started(database: Engine) -> tuple[SagaOrchestrator, dict[str, Any]]:
    """An orchestrator and the two "Pair" sagas s-0 and s-1 it started, as stored."""
    orchestrator = SagaOrchestrator(REGISTRY)
    with Session(database) as session, session.begin():
        for n in range(2):
            orchestrator.start(session, "Pair", f"s-{n}", {"n": n})
        started = load_sagas(session, ["s-0", "s-1"])
    return orchestrator, started


def _handled(database: Engine, orchestrator: SagaOrchestrator, events: list[Event]) -> list[Any]:
    """The replies through the orchestrator's processor, in one group commit: each outcome."""
    return commit(
        database,
        handled_units(
            orchestrator_processor(orchestrator, settings=SagaSettings()), SAGA_REPLIES, events
        ),
        consumer_group="saga-orchestrator",
        use_inbox=True,
    )


def test_a_reply_for_an_unknown_saga_fails_alone_and_the_rest_of_its_group_is_applied(
    database: Engine,
) -> None:
    orchestrator, started = _two_started(database)
    stranger = reply_to(started["s-0"].state.model_copy(update={"saga_id": "s-unknown"}))
    events = [reply_to(started["s-0"].state), stranger, reply_to(started["s-1"].state)]

    outcomes = _handled(database, orchestrator, events)

    # Dead-lettered at once, as a Reject from a handler is (it was retried first).
    assert [o.kind for o in outcomes] == ["processed", "dead_letter", "processed"]
    failure = outcomes[1].failure
    assert failure is not None and failure.reason == "rejected"
    assert failure.error_type == f"{Reject.__module__}.{Reject.__name__}"
    assert "s-unknown" in failure.message
    with Session(database) as session:
        after = load_sagas(session, ["s-0", "s-1"])
    for saga_id in ("s-0", "s-1"):
        [awaited] = after[saga_id].state.awaiting.values()
        assert awaited.step == "second"  # the first step's reply applied once
        assert after[saga_id].revision == 2


def test_a_reply_to_a_command_its_saga_never_sent_is_dead_lettered_and_changes_nothing(
    database: Engine,
) -> None:
    orchestrator, started = _two_started(database)
    [(real_id, awaited)] = started["s-0"].state.awaiting.items()
    made_up = CommandInfo("s-0", awaited.step, awaited.kind, "made-up-command", awaited.attempt)
    events = [
        reply_event(made_up, ok=True, source="/worker"),
        reply_to(started["s-1"].state),
    ]

    outcomes = _handled(database, orchestrator, events)

    assert [o.kind for o in outcomes] == ["dead_letter", "processed"]
    failure = outcomes[0].failure
    assert failure is not None and failure.reason == "rejected"
    assert "'made-up-command', which saga s-0 never sent" in failure.message
    with Session(database) as session:
        after = load_sagas(session, ["s-0", "s-1"])
    assert list(after["s-0"].state.awaiting) == [real_id]  # still waits for its own reply
    assert after["s-0"].revision == 1
    assert after["s-1"].revision == 2


def _timed(version: int) -> SagaDefinition[Data]:
    return SagaDefinition(
        "Timed",
        version=version,
        data_model=Data,
        steps=[
            Step("only", participant="worker", action=lambda d: Call("Do", {"n": d.n}), timeout_s=1)
        ],
    )


def test_a_saga_of_a_version_the_registry_lacks_holds_up_no_other_sagas_deadline(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # A deploy that dropped version 1 while a saga of it still runs: the version 2 saga's
    # timeout must still fire (the first due saga's error used to end every round).
    started_at = datetime(2026, 1, 1, tzinfo=UTC)
    old = SagaOrchestrator(SagaRegistry([_timed(1), _timed(2)]), clock=lambda: started_at)
    with Session(database) as session, session.begin():
        old.start(session, _timed(1), "old-1", {"n": 1})
        old.start(session, _timed(2), "new-1", {"n": 2})
    later = started_at + timedelta(seconds=5)
    new = SagaOrchestrator(SagaRegistry([_timed(2)]), clock=lambda: later)

    with caplog.at_level(logging.WARNING, logger="pipeline.sagas"), Session(database) as session:
        assert new.warn_unknown_versions(session) == {("Timed", 1): 1}
    assert "1 saga of Timed version 1 not ended" in caplog.text
    assert "it holds: Timed v2" in caplog.text

    assert new.fire_due(database) == 1
    with Session(database) as session:
        after = load_sagas(session, ["old-1", "new-1"])
    assert after["new-1"].state.status == "compensated"  # timed out, nothing to undo
    assert after["old-1"].revision == 1  # left for a registry that holds its version


def test_a_saga_whose_deadline_raises_is_left_aside_and_the_others_deadlines_fire(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # "Broken" v1 was redeployed with its step renamed while a saga of it waited: firing its
    # timeout finds no step "only". It is due first; the saga after it must time out anyway.
    started_at = datetime(2026, 1, 1, tzinfo=UTC)
    old = SagaOrchestrator(
        SagaRegistry([_timed(1), _renamed_step("Broken")]), clock=lambda: started_at
    )
    with Session(database) as session, session.begin():
        old.start(session, _renamed_step("Broken", "only"), "broken-1", {"n": 1})
    with Session(database) as session, session.begin():
        old.start(session, _timed(1), "fine-1", {"n": 2})
    now = started_at + timedelta(seconds=5)
    clock = [now]
    new = SagaOrchestrator(
        SagaRegistry([_timed(1), _renamed_step("Broken")]), clock=lambda: clock[0]
    )

    with caplog.at_level(logging.ERROR, logger="pipeline.sagas"):
        assert new.fire_due(database) == 1
        assert new.fire_due(database) == 0  # left aside: said once, not every round

    with Session(database) as session:
        after = load_sagas(session, ["broken-1", "fine-1"])
    assert after["fine-1"].state.status == "compensated"
    assert after["broken-1"].revision == 1
    [record] = [r for r in caplog.records if "broken-1" in r.getMessage()]
    assert "not the definition it runs on" in record.getMessage()
    assert "the other sagas go on" in record.getMessage()
    caplog.clear()
    clock[0] = now + timedelta(seconds=61)  # then tried again
    with caplog.at_level(logging.ERROR, logger="pipeline.sagas"):
        assert new.fire_due(database) == 0
    assert "broken-1" in caplog.text


def _renamed_step(name: str, step: str = "renamed") -> SagaDefinition[Data]:
    return SagaDefinition(
        name,
        version=1,
        data_model=Data,
        steps=[Step(step, participant="worker", action=lambda d: Call("Do", {}), timeout_s=1)],
    )


def test_the_orchestrator_never_parks_a_sagas_replies_after_a_dead_letter() -> None:
    # A parked saga would wait for a redrive for ever; its step's timeout covers a lost reply.
    processor = orchestrator_processor(SagaOrchestrator(REGISTRY), settings=SagaSettings())
    assert SAGA_REPLIES in processor.keys_never_parked


def _saga_after(database: Engine, saga_id: str) -> SagaState:
    with Session(database) as session:
        return load_sagas(session, [saga_id])[saga_id].state


def test_a_reply_sent_before_the_deadline_wins_over_the_timeout_however_late_it_is_read() -> None:
    # The orchestrator was down (or behind): its deadline task runs before the reply that came
    # in time is read. The timeout waits for the replies; the reply is applied.
    orchestrator = SagaOrchestrator(SagaRegistry([_timed(1)]))
    harness = PipelineHarness([orchestrator_processor(orchestrator)], clocked=[orchestrator])
    with harness:
        with Session(harness.database) as session, session.begin():
            state = orchestrator.start(session, "Timed", "late-read", {"n": 1})
        harness.run_until_idle()
        harness.send(SAGA_REPLIES, reply_to(state))  # sent in time, not read yet
        harness.clock.advance(30)  # far past the step's 1 s timeout

        harness.run_periodic_tasks()
        assert _saga_after(harness.database, "late-read").status == "running"

        harness.run_until_idle()
        after = _saga_after(harness.database, "late-read")
    assert after.status == "completed"
    assert "action_timed_out" not in [entry.what for entry in after.history]


def test_without_a_reply_the_timeout_fires_once_the_replies_are_read_past_it() -> None:
    orchestrator = SagaOrchestrator(SagaRegistry([_timed(1)]))
    harness = PipelineHarness([orchestrator_processor(orchestrator)], clocked=[orchestrator])
    with harness:
        with Session(harness.database) as session, session.begin():
            orchestrator.start(session, "Timed", "silent", {"n": 1})
        harness.run_until_idle()
        harness.advance(2)
        after = _saga_after(harness.database, "silent")
    assert after.status == "compensated"
    assert "action_timed_out" in [entry.what for entry in after.history]


def _retried() -> SagaDefinition[Data]:
    """One step tried twice, a second apart."""
    return SagaDefinition(
        "Retried",
        version=1,
        data_model=Data,
        steps=[
            Step(
                "only",
                participant="worker",
                action=lambda d: Call("Do", {"n": d.n}),
                timeout_s=1,
                retries=1,
                retry_backoff_s=1,
            )
        ],
    )


def _failure(state: SagaState) -> Event:
    """A retryable failure in reply to the saga's only awaited command."""
    [(command_id, awaited)] = state.awaiting.items()
    info = CommandInfo(state.saga_id, awaited.step, awaited.kind, command_id, awaited.attempt)
    return reply_event(info, ok=False, reason="busy", source="/worker")


def test_fire_due_leaves_a_timeout_past_what_is_read_and_ends_a_backoff_at_its_time(
    database: Engine,
) -> None:
    started_at = datetime(2026, 1, 1, tzinfo=UTC)
    now = started_at
    orchestrator = SagaOrchestrator(SagaRegistry([_timed(1), _retried()]), clock=lambda: now)
    with Session(database) as session, session.begin():
        orchestrator.start(session, "Timed", "waiting", {"n": 1})
        backing_off = orchestrator.start(session, "Retried", "backing-off", {"n": 2})
        orchestrator.handle_reply(session, _failure(backing_off))
    now = started_at + timedelta(seconds=5)

    assert orchestrator.fire_due(database, replies_read_through=started_at) == 1

    assert _saga_after(database, "waiting").status == "running"  # its timeout waits
    resent = _saga_after(database, "backing-off")
    assert [a.attempt for a in resent.awaiting.values()] == [2]  # the backoff ended
    assert orchestrator.fire_due(database, replies_read_through=now) == 1
    assert _saga_after(database, "waiting").status == "compensated"


class _Progress:
    def __init__(self, moment: datetime | None) -> None:
        self.moment = moment
        self.asked: list[str] = []

    def read_through(self, topic: str) -> datetime | None:
        self.asked.append(topic)
        return self.moment


def test_the_replies_read_through_time_is_a_gauge_and_a_warning_when_far_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    orchestrator = SagaOrchestrator(REGISTRY, clock=lambda: now)
    behind = orchestrator.metrics.registry

    def gauge() -> float | None:
        return behind.get_sample_value("pipeline_saga_replies_behind_seconds")

    assert orchestrator.replies_read_through(None) is None  # no runtime that knows: not held
    progress = _Progress(now - timedelta(seconds=2))
    with caplog.at_level(logging.WARNING, logger="pipeline.sagas"):
        assert orchestrator.replies_read_through(progress) == now - timedelta(seconds=2)
        assert gauge() == 2.0 and progress.asked == [SAGA_REPLIES]
        assert caplog.records == []

        progress.moment = now - timedelta(seconds=90)
        orchestrator.replies_read_through(progress)
        orchestrator.replies_read_through(progress)  # said once a minute, not every round
        assert gauge() == 90.0
        [warning] = caplog.records
        assert warning.getMessage().startswith(
            "timeouts wait: the replies that reached saga.replies are applied only up to "
            "2025-12-31T23:58:30+00:00, 90 s behind"
        )


def test_a_read_through_time_not_known_yet_fires_no_timeout_and_warns_only_after_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    orchestrator = SagaOrchestrator(REGISTRY, clock=lambda: now)
    progress = _Progress(None)  # just started: nothing known yet

    with caplog.at_level(logging.WARNING, logger="pipeline.sagas"):
        assert orchestrator.replies_read_through(progress) == datetime.min.replace(tzinfo=UTC)
        assert caplog.records == []  # not at every start
        now += timedelta(seconds=31)
        orchestrator.replies_read_through(progress)

    gauge = orchestrator.metrics.registry.get_sample_value("pipeline_saga_replies_behind_seconds")
    assert gauge == float("inf")
    [warning] = caplog.records
    assert (
        "are not known to be applied yet (since this orchestrator started), 31 s behind"
        in warning.getMessage()
    )


def test_a_reply_that_reached_the_topic_after_its_deadline_times_its_command_out(
    database: Engine,
) -> None:
    started_at = datetime(2026, 1, 1, tzinfo=UTC)
    now = started_at
    orchestrator = SagaOrchestrator(SagaRegistry([_timed(1)]), clock=lambda: now)
    with Session(database) as session, session.begin():
        state = orchestrator.start(session, "Timed", "too-late", {"n": 1})
    now = started_at + timedelta(seconds=5)  # its 1 s timeout has not fired yet

    with Session(database) as session, session.begin():
        outcome = orchestrator.handle_reply(
            session, reply_to(state), arrived_at=started_at + timedelta(seconds=2)
        )

    assert outcome == "late"
    after = _saga_after(database, "too-late")
    assert after.status == "compensated"
    assert "action_timed_out" in [entry.what for entry in after.history]
    metrics = orchestrator.metrics.registry
    labels = {"saga": "Timed", "step": "only", "kind": "action"}
    assert metrics.get_sample_value("pipeline_saga_timeouts_total", labels) == 1
    late = {"saga": "Timed", "outcome": "late"}
    assert metrics.get_sample_value("pipeline_saga_replies_ignored_total", late) == 1


def test_rows_saved_before_next_resend_existed_hold_up_no_backoff_while_their_timeouts_wait(
    database: Engine,
) -> None:
    # Migration 0007 gave old rows their next_deadline (a timeout) as next_resend: while the
    # replies are behind, such rows are found due with nothing due. They must not fill every
    # round's batch (the limit) and keep a real backoff from firing.
    started_at = datetime(2026, 1, 1, tzinfo=UTC)
    now = started_at
    orchestrator = SagaOrchestrator(SagaRegistry([_timed(1), _retried()]), clock=lambda: now)
    with Session(database) as session, session.begin():
        for n in range(3):
            orchestrator.start(session, "Timed", f"old-{n}", {"n": n})
        backing_off = orchestrator.start(session, "Retried", "backing-off", {"n": 9})
        orchestrator.handle_reply(session, _failure(backing_off))
    with database.begin() as connection:  # what the migration left on the old rows
        connection.execute(
            sa.update(sagas_table)
            .where(sagas_table.c.saga_id.like("old-%"))
            .values(next_resend=sagas_table.c.next_deadline)
        )
    now = started_at + timedelta(seconds=5)

    fired = [orchestrator.fire_due(database, 2, replies_read_through=started_at) for _ in range(3)]

    assert sum(fired) == 1
    resent = _saga_after(database, "backing-off")
    assert [a.attempt for a in resent.awaiting.values()] == [2]
    assert {_saga_after(database, f"old-{n}").status for n in range(3)} == {"running"}


def test_at_its_start_the_orchestrator_says_the_replies_read_is_not_known_not_zero(
    database: Engine,
) -> None:
    # Joining the group can take a minute (a killed member's session): no reassuring 0 meanwhile.
    orchestrator = SagaOrchestrator(REGISTRY)
    processor = orchestrator_processor(orchestrator, settings=SagaSettings())

    processor.start(database)

    gauge = orchestrator.metrics.registry.get_sample_value("pipeline_saga_replies_behind_seconds")
    assert gauge == float("inf")


def test_a_late_reply_that_times_its_command_out_says_so_in_its_log_line(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    started_at = datetime(2026, 1, 1, tzinfo=UTC)
    now = started_at
    orchestrator = SagaOrchestrator(SagaRegistry([_timed(1)]), clock=lambda: now)
    with Session(database) as session, session.begin():
        state = orchestrator.start(session, "Timed", "late-log", {"n": 1})
    now = started_at + timedelta(seconds=5)

    with (
        caplog.at_level(logging.INFO, logger="pipeline.sagas"),
        Session(database) as session,
        session.begin(),
    ):
        orchestrator.handle_reply(
            session, reply_to(state), arrived_at=started_at + timedelta(seconds=2)
        )

    [said] = [r.getMessage() for r in caplog.records if "reply to" in r.getMessage()]
    assert "reached the topic after its deadline, so the command times out now" in said
    assert "changes nothing" not in said
