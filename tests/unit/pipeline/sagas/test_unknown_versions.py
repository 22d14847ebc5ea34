"""A reply of a saga version an orchestrator's registry lacks (a rolling deploy): it waits on
that orchestrator, never dead-lettered, and no orchestrator times its saga out meanwhile."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.processing.group_commit import commit
from pipeline.processing.harness import PipelineHarness
from pipeline.processing.processor import NotYet
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.definition import SagaDefinitionError, UnknownSagaVersion
from pipeline.sagas.messages import CommandInfo, reply_event
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.state import SagaState
from pipeline.sagas.store import load_sagas
from pipeline.settings import SagaSettings
from pipeline.topics.catalogue import SAGA_REPLIES
from tests.support.driving import handled_units


class Trip(BaseModel):
    n: int


def _trip(version: int) -> SagaDefinition[Trip]:
    return SagaDefinition(
        "TripBooking",
        version=version,
        data_model=Trip,
        steps=[
            Step(
                "book",
                participant="hotels",
                action=lambda d: Call("Book", {"n": d.n}),
                compensation=lambda d: Call("Cancel", {"n": d.n}),
                timeout_s=1,
            )
        ],
    )


def _reply_to(state: SagaState) -> Event:
    [(command_id, awaited)] = state.awaiting.items()
    info = CommandInfo(state.saga_id, awaited.step, awaited.kind, command_id, awaited.attempt)
    return reply_event(info, ok=True, source="/hotels")


def _saga(database: Engine, saga_id: str) -> SagaState:
    with Session(database) as session:
        return load_sagas(session, [saga_id])[saga_id].state


def test_the_registry_says_a_missing_version_apart_from_other_definition_errors() -> None:
    registry = SagaRegistry([_trip(1)])
    with pytest.raises(UnknownSagaVersion) as raised:
        registry.get("TripBooking", 2)
    assert isinstance(raised.value, SagaDefinitionError)
    assert (raised.value.name, raised.value.version, raised.value.held) == (
        "TripBooking",
        2,
        "TripBooking v1",
    )
    assert str(raised.value) == (
        "saga 'TripBooking' version 2 is not in this registry (it holds: TripBooking v1)"
    )


def test_a_reply_of_a_version_the_registry_lacks_waits_and_the_rest_of_its_group_commits(
    database: Engine,
) -> None:
    starter = SagaOrchestrator(SagaRegistry([_trip(1), _trip(2)]))
    with Session(database) as session, session.begin():
        old = starter.start(session, _trip(1), "trip-1", {"n": 1})
        new = starter.start(session, _trip(2), "trip-2", {"n": 2})
    v1_only = SagaOrchestrator(SagaRegistry([_trip(1)]))
    processor = orchestrator_processor(v1_only, settings=SagaSettings())

    outcomes = commit(
        database,
        handled_units(processor, SAGA_REPLIES, [_reply_to(old), _reply_to(new)]),
        consumer_group="saga-orchestrator",
        use_inbox=True,
    )

    assert [o.kind for o in outcomes] == ["processed", "waiting"]  # not dead-lettered
    assert isinstance(outcomes[1].error, NotYet)
    assert str(outcomes[1].error) == (
        "saga TripBooking version 2 is not in this orchestrator's registry (it holds: "
        "TripBooking v1): the reply waits for it (roll the version out to every orchestrator)"
    )
    assert _saga(database, "trip-1").status == "completed"
    assert _saga(database, "trip-2").status == "running"


def test_a_reply_no_saga_waits_for_changes_nothing_though_its_version_is_gone(
    database: Engine,
) -> None:
    # A code review: a duplicate reply of a saga that had ended, its version dropped (as the
    # docs allow once its sagas ended), waited for ever, holding its partition's commits and
    # every orchestrator's timeouts; it needs no definition to be told a duplicate.
    both = SagaOrchestrator(SagaRegistry([_trip(1), _trip(2)]))
    with Session(database) as session, session.begin():
        state = both.start(session, _trip(1), "trip-1", {"n": 1})
    reply = _reply_to(state)
    with_v1 = orchestrator_processor(both, settings=SagaSettings())
    first = commit(
        database, handled_units(with_v1, SAGA_REPLIES, [reply]), consumer_group="g", use_inbox=False
    )
    v2_only = SagaOrchestrator(SagaRegistry([_trip(2)]))
    processor = orchestrator_processor(v2_only, settings=SagaSettings())

    again = commit(
        database,
        handled_units(processor, SAGA_REPLIES, [reply]),
        consumer_group="g",
        use_inbox=False,
    )

    assert [o.kind for o in first] == ["processed"]
    assert [o.kind for o in again] == ["processed"]  # applied as a duplicate: nothing waits
    assert _saga(database, "trip-1").status == "completed"
    ignored = v2_only.metrics.registry.get_sample_value(
        "pipeline_saga_replies_ignored_total", {"saga": "TripBooking", "outcome": "duplicate"}
    )
    assert ignored == 1.0


def test_a_reply_waits_on_the_orchestrator_lacking_its_version_and_no_timeout_fires_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A rolling deploy: orchestrator A (v1 only) owns the replies' partition, B (v1 and v2,
    # the same consumer group) fires every saga's deadlines from the group's read-through
    # time. A service started a v2 saga and its participant answered in time: the reply used
    # to be dead-lettered on A, the group read past it, and B timed the saga out.
    registry_a = SagaRegistry([_trip(1)])
    a = SagaOrchestrator(registry_a)
    b = SagaOrchestrator(SagaRegistry([_trip(1), _trip(2)]))
    harness = PipelineHarness([orchestrator_processor(a)], clocked=[a, b])
    caplog.set_level(logging.INFO)
    with harness:
        with Session(harness.database) as session, session.begin():
            state = b.start(session, "TripBooking", "trip-2", {"n": 2})  # the latest: v2
        assert state.version == 2
        harness.run_until_idle()
        harness.send(SAGA_REPLIES, _reply_to(state))  # the participant answered in time

        harness.run_until_idle()  # returns: the reply waits on A
        harness.advance(30)  # far past the step's 1 s timeout
        group = harness.driver("saga-orchestrator")  # the group's progress, as B sees it
        assert b.fire_due(harness.database, replies_read_through=b.replies_read_through(group)) == 0

        assert harness.dead_letters(SAGA_REPLIES) == []
        assert harness.inbox("saga-orchestrator") == []  # not committed: it waits
        assert _saga(harness.database, "trip-2").status == "running"  # not timed out
        waits = [r.getMessage() for r in caplog.records if "cannot be handled yet" in r.message]
        assert (
            waits
            and "saga TripBooking version 2 is not in this orchestrator's registry" in (waits[0])
        )

        registry_a.register(_trip(2))  # the version reaches A too
        harness.run_until_idle()
        after = _saga(harness.database, "trip-2")
        assert harness.dead_letters(SAGA_REPLIES) == []

    assert after.status == "completed"
    assert "action_timed_out" not in [entry.what for entry in after.history]


def test_the_start_warning_says_the_replies_of_a_missing_version_wait_and_are_not_dead_lettered(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    starter = SagaOrchestrator(SagaRegistry([_trip(1), _trip(2)]))
    with Session(database) as session, session.begin():
        starter.start(session, _trip(2), "trip-2", {"n": 2})
    v1_only = SagaOrchestrator(SagaRegistry([_trip(1)]))

    with caplog.at_level(logging.WARNING, logger="pipeline.sagas"), Session(database) as session:
        assert v1_only.warn_unknown_versions(session) == {("TripBooking", 2): 1}

    [line] = [r.getMessage() for r in caplog.records if "not ended" in r.getMessage()]
    assert "1 saga of TripBooking version 2 not ended" in line
    assert "wait here (never dead-lettered)" in line
    assert "no orchestrator times out a saga" in line
    assert "redrive" not in line
