"""The orchestrator's processor on the runtime's group commit: the replies of a group are applied
together, and a reply for no known saga fails only itself (the group is redone reply by reply)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.processing.group_commit import commit
from pipeline.processing.processor import Reject
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.messages import CommandInfo, reply_event
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.state import SagaState
from pipeline.sagas.store import load_sagas
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


def test_a_reply_for_an_unknown_saga_fails_alone_and_the_rest_of_its_group_is_applied(
    database: Engine,
) -> None:
    orchestrator = SagaOrchestrator(REGISTRY)
    with Session(database) as session, session.begin():
        for n in range(2):
            orchestrator.start(session, "Pair", f"s-{n}", {"n": n})
        started = load_sagas(session, ["s-0", "s-1"])
    stranger = reply_to(started["s-0"].state.model_copy(update={"saga_id": "s-unknown"}))
    events = [reply_to(started["s-0"].state), stranger, reply_to(started["s-1"].state)]

    outcomes = commit(
        database,
        handled_units(
            orchestrator_processor(orchestrator, settings=SagaSettings()), SAGA_REPLIES, events
        ),
        consumer_group="saga-orchestrator",
        use_inbox=True,
    )

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


def test_the_orchestrator_never_parks_a_sagas_replies_after_a_dead_letter() -> None:
    # A parked saga would wait for a redrive for ever; its step's timeout covers a lost reply.
    processor = orchestrator_processor(SagaOrchestrator(REGISTRY), settings=SagaSettings())
    assert SAGA_REPLIES in processor.keys_never_parked
