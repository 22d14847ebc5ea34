"""Two saga systems on one cluster, each in a topic namespace of its own: neither reads the
other's replies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.harness import PipelineHarness
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, SagaTopics, Step
from pipeline.sagas.definition import SagaDefinitionError
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.participant import SagaCommand, SagaParticipant
from pipeline.sagas.store import sagas_table, save_saga
from pipeline.settings import SagaSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Job(BaseModel):
    n: int


def _system(namespace: str) -> tuple[SagaOrchestrator, list[Processor]]:
    """A saga system: one saga of one step, its orchestrator and its participant."""
    topics = SagaTopics(namespace)
    saga = SagaDefinition(
        f"Job-{namespace}",
        version=1,
        data_model=Job,
        steps=[Step("do", participant="worker", action=lambda job: Call("Do", {"n": job.n}))],
    )
    orchestrator = SagaOrchestrator(SagaRegistry([saga]), topics=topics)
    worker = Processor(f"worker-{namespace}")
    participant = SagaParticipant(worker, "worker", topics=topics)

    @participant.command("Do")
    def do(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
        return {"done": command.data["n"]}

    orchestrator_runs = orchestrator_processor(orchestrator, name=f"orchestrator-{namespace}")
    return orchestrator, [orchestrator_runs, worker]


def test_two_saga_systems_in_their_own_namespaces_each_complete_their_sagas_alone():
    first, first_processors = _system("saga")
    second, second_processors = _system("billing-saga")
    with PipelineHarness(
        [*first_processors, *second_processors], clocked=[first, second]
    ) as harness:
        with Session(harness.database) as session, session.begin():
            first.start(session, "Job-saga", "a-1", {"n": 1})
            second.start(session, "Job-billing-saga", "b-1", {"n": 2})
        harness.run_until_idle()
        sagas = harness.sagas()

        assert {saga_id: state.status for saga_id, state in sagas.items()} == {
            "a-1": "completed",
            "b-1": "completed",
        }
        assert harness.dead_letters("saga.replies") == []
        assert harness.dead_letters("billing-saga.replies") == []
        assert [e.type for e in harness.published("billing-saga.worker.commands")] == ["Do"]
        assert "saga_completed" in {
            e.type.rsplit(".", 1)[-1] for e in harness.published("billing-saga.events")
        }
    assert sagas["b-1"].data == {"n": 2}


def test_a_namespace_that_cannot_name_a_topic_is_refused():
    with pytest.raises(ValueError, match="saga topic namespace 'billing saga'"):
        SagaTopics("billing saga")
    with pytest.raises(ValueError, match="it is empty"):
        SagaTopics("")


def test_an_operator_action_from_an_orchestrator_of_no_namespace_goes_to_the_sagas_own_topics():
    # `pipeline saga retry` builds a SagaOrchestrator(registry): the saga's namespace decides.
    billing, _ = _system("billing-saga")
    with PipelineHarness([], clocked=[billing]) as harness:
        with Session(harness.database) as session, session.begin():
            started = billing.start(session, "Job-billing-saga", "b-2", {"n": 2})
            stuck = started.model_copy(update={"status": "compensation_failed"})
            save_saga(session, stuck, revision=1)
        before = len(harness.outbox())
        operator = SagaOrchestrator(billing.registry)  # no topics given
        with Session(harness.database) as session, session.begin():
            operator.resolve(session, "b-2", note="handled by hand")

        sent = harness.outbox()[before:]
    assert [(r.topic, dict(r.headers)["ce_type"]) for r in sent] == [
        ("billing-saga.events", "pipeline.saga.saga_resolved")
    ]


def test_an_orchestrator_leaves_the_sagas_of_another_namespace_in_its_database_alone():
    billing, _ = _system("billing-saga")
    other, other_processors = _system("saga")
    other.registry = billing.registry  # the same saga names, as two copies of one system
    with PipelineHarness(other_processors, clocked=[billing, other]) as harness:
        with Session(harness.database) as session, session.begin():
            billing.start(session, "Job-billing-saga", "b-3", {"n": 3})
        harness.run_until_idle()
        harness.advance(60)  # past the step's timeout: not this orchestrator's to fire

        state = harness.sagas()["b-3"]
        published = [m.topic for m in harness.published_messages("saga.worker.commands")]
    assert state.status == "running"
    assert [h.what for h in state.history] == ["saga_started", "action_sent"]
    assert published == []


def _shared_database_systems(
    harness_database: Engine, *, ours: int, theirs: int
) -> tuple[SagaOrchestrator, SagaOrchestrator]:
    """Two copies of one saga system (the same saga names and versions) in their own
    namespaces, sharing one database: ``theirs`` sagas started first, then ``ours``."""
    mine, _ = _system("saga")
    billing, _ = _system("billing-saga")
    mine.registry = billing.registry
    for orchestrator in (mine, billing):
        orchestrator.clock = lambda: T0
    with Session(harness_database) as session, session.begin():
        for n in range(theirs):
            billing.start(session, "Job-billing-saga", f"theirs-{n}", {"n": n})
    mine.clock = billing.clock = lambda: T0 + timedelta(seconds=1)
    with Session(harness_database) as session, session.begin():
        for n in range(ours):
            mine.start(session, "Job-billing-saga", f"ours-{n}", {"n": n})
    return mine, billing


def test_overdue_sagas_of_another_system_in_the_database_hold_up_none_of_an_orchestrators_own():
    with PipelineHarness([]) as harness:
        mine, _ = _shared_database_systems(harness.database, ours=1, theirs=3)
        mine.clock = lambda: T0 + timedelta(minutes=5)  # every step timed out

        # A round of one: theirs are due earlier, and would be found (and skipped) first.
        fired = mine.fire_due(harness.database, limit=1)

        sagas = harness.sagas()
    assert fired == 1
    assert "action_timed_out" in [h.what for h in sagas["ours-0"].history]
    assert sagas["ours-0"].status == "compensated"  # one step, no retries: nothing to undo
    assert {sagas[f"theirs-{n}"].status for n in range(3)} == {"running"}


def test_the_state_gauge_and_the_unknown_version_warning_count_an_orchestrators_own_sagas(caplog):
    with PipelineHarness([]) as harness:
        mine, _ = _shared_database_systems(harness.database, ours=2, theirs=3)
        with Session(harness.database) as session:
            counts = mine.refresh_state_gauge(session)
            newer = SagaOrchestrator(SagaRegistry([]))  # holds no version of the saga
            with caplog.at_level("WARNING", logger="pipeline.sagas"):
                newer.warn_unknown_versions(session)

    assert counts == {"running": 2}
    assert "2 sagas of Job-billing-saga version 1 not ended" in caplog.text


def test_the_retention_deletes_an_orchestrators_own_ended_sagas_only():
    with PipelineHarness([]) as harness:
        mine, _ = _shared_database_systems(harness.database, ours=2, theirs=3)
        with harness.database.begin() as connection:
            connection.execute(sa.update(sagas_table).values(status="completed"))
        mine.use_settings(SagaSettings(retention_s=3600))
        mine.clock = lambda: T0 + timedelta(days=1)

        deleted = mine.delete_ended(harness.database)

        left = sorted(harness.sagas())
    assert deleted == 2
    assert left == ["theirs-0", "theirs-1", "theirs-2"]


@pytest.mark.parametrize(
    ("found_by", "fired", "status"),
    [("billing-saga", 1, "compensated"), ("saga", 0, "running")],
)
def test_a_saga_inserted_by_a_version_before_the_namespace_column_gets_its_namespace_set(
    found_by, fired, status
):
    # A process of the version before, in a rolling deploy, inserts no namespace column: the
    # saga's own system fires its timeout (and the save sets the column); another system that
    # finds it due sets the column and leaves it alone.
    with PipelineHarness([]) as harness:
        mine, billing = _shared_database_systems(harness.database, ours=0, theirs=1)
        with harness.database.begin() as connection:
            connection.execute(sa.update(sagas_table).values(namespace=None))
        mine.clock = billing.clock = lambda: T0 + timedelta(minutes=5)
        finder = {"saga": mine, "billing-saga": billing}[found_by]

        fired_now = finder.fire_due(harness.database)

        with harness.database.connect() as connection:
            column = connection.execute(sa.select(sagas_table.c.namespace)).scalar_one()
        state = harness.sagas()["theirs-0"]
    assert (fired_now, state.status, column) == (fired, status, "billing-saga")
    assert ("action_timed_out" in [h.what for h in state.history]) == bool(fired)


def test_a_namespace_whose_replies_dead_letter_topic_would_be_too_long_is_refused():
    # 240 + ".replies" is a Kafka name; 240 + ".replies.dlq" (252 characters) is not.
    with pytest.raises(ValueError, match="252 characters long"):
        SagaTopics("n" * 240)


def test_an_orchestrator_refuses_a_participant_that_cannot_name_its_topics_in_its_namespace():
    saga = SagaDefinition(
        "Long",
        version=1,
        data_model=Job,
        steps=[Step("do", participant="p" * 225, action=lambda job: Call("Do", {}))],
    )
    SagaOrchestrator(SagaRegistry([saga]))  # saga.<225>.commands.dlq: 243 characters

    with pytest.raises(SagaDefinitionError, match=r"participant 'ppp.*251 characters long"):
        SagaOrchestrator(SagaRegistry([saga]), topics=SagaTopics("billing-saga"))


def test_a_saga_of_the_default_namespace_is_stored_as_before_namespaces_existed():
    # An orchestrator of the version before, in a rolling deploy, refuses a field it does not
    # know: a default-namespace saga's stored state has none.
    first, _ = _system("saga")
    second, _ = _system("billing-saga")
    with PipelineHarness([], clocked=[first, second]) as harness:
        with Session(harness.database) as session, session.begin():
            first.start(session, "Job-saga", "a-9", {"n": 1})
            second.start(session, "Job-billing-saga", "b-9", {"n": 2})
        with harness.database.connect() as connection:
            stored = dict(
                connection.execute(sa.select(sagas_table.c.saga_id, sagas_table.c.state)).all()
            )
        read_back = harness.sagas()

    assert "namespace" not in stored["a-9"]
    assert stored["b-9"]["namespace"] == "billing-saga"
    assert (read_back["a-9"].namespace, read_back["b-9"].namespace) == ("saga", "billing-saga")


def test_the_unknown_version_warning_names_the_namespaces_replies_topic(caplog):
    billing, _ = _system("billing-saga")
    with PipelineHarness([], clocked=[billing]) as harness:
        with Session(harness.database) as session, session.begin():
            billing.start(session, "Job-billing-saga", "b-10", {"n": 1})
        newer = SagaOrchestrator(SagaRegistry([]), topics=SagaTopics("billing-saga"))
        with caplog.at_level("WARNING", logger="pipeline.sagas"), Session(harness.database) as s:
            newer.warn_unknown_versions(s)

    assert "partitions of billing-saga.replies wait here" in caplog.text
