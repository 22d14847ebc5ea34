"""The orchestrator's SQL on a real PostgreSQL: deadlines fired once by concurrent
orchestrators, a stale save refused (alone, and in a batch of saves), a start that rolls back
with its caller, a second start of one saga id refused, ended sagas deleted after their
retention, a participant's log rows deleted after theirs."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pipeline.database import build_engine, migrate
from pipeline.outbox.table import outbox_table
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.orchestrator import SagaOrchestrator
from pipeline.sagas.step_log import (
    StepOutcome,
    delete_participant_outcomes,
    record_participant_outcomes,
    saga_steps_table,
)
from pipeline.sagas.store import (
    ConcurrentSagaUpdate,
    SagaExists,
    load_saga,
    load_sagas,
    sagas_table,
    save_saga,
    save_sagas,
)
from pipeline.settings import DatabaseSettings, SagaSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Data(BaseModel):
    n: int


REGISTRY = SagaRegistry(
    [
        SagaDefinition(
            "Timed",
            version=1,
            data_model=Data,
            steps=[
                Step(
                    "only",
                    participant="worker",
                    action=lambda d: Call("Do", {"n": d.n}),
                    compensation=lambda d: Call("Undo", {"n": d.n}),
                    timeout_s=5,
                )
            ],
        )
    ]
)


@pytest.fixture
def database(postgres_stack, postgres_url):
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    yield engine
    engine.dispose()


def _start(engine, saga_id: str, clock) -> None:
    with Session(engine) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=clock).start(session, "Timed", saga_id, {"n": 1})


def _commands(engine, saga_id: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(outbox_table.c.event_type)
                .where(
                    outbox_table.c.aggregate_id == saga_id,
                    outbox_table.c.topic == "saga.worker.commands",
                )
                .order_by(outbox_table.c.position)
            ).scalars()
        )


def test_two_orchestrators_firing_the_same_deadline_time_it_out_once(database):
    for n in range(20):
        _start(database, f"s-{n}", lambda: T0)
    later = T0 + timedelta(seconds=6)
    barrier = threading.Barrier(2)
    fired: list[int] = []

    def fire() -> None:
        orchestrator = SagaOrchestrator(REGISTRY, clock=lambda: later)
        barrier.wait()
        fired.append(orchestrator.fire_due(database))

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(fired) == 20  # each saga fired by exactly one of the two
    for n in range(20):
        assert _commands(database, f"s-{n}") == ["Do", "Undo"]  # one timeout, one compensation
        with Session(database) as session:
            state = load_saga(session, f"s-{n}").state
        assert [h.what for h in state.history].count("action_timed_out") == 1


def test_a_save_over_a_newer_revision_is_refused(database):
    _start(database, "s-stale", lambda: T0)
    with Session(database) as session, session.begin():
        stored = load_saga(session, "s-stale")
        save_saga(session, stored.state, stored.revision)
    with Session(database) as session, session.begin(), pytest.raises(ConcurrentSagaUpdate):
        save_saga(session, stored.state, stored.revision)


def test_a_batch_of_saves_with_one_stale_revision_is_refused_whole(database):
    for n in range(3):
        _start(database, f"s-batch-{n}", lambda: T0)
    ids = [f"s-batch-{n}" for n in range(3)]
    with Session(database) as session:
        loaded = load_sagas(session, ids)
    with Session(database) as session, session.begin():
        save_sagas(session, [(s.state, s.revision) for s in loaded.values()])  # all at 2
    with Session(database) as session:
        assert {i: s.revision for i, s in load_sagas(session, ids).items()} == dict.fromkeys(ids, 2)
        current = load_sagas(session, ids)
    with Session(database) as session, session.begin():
        save_saga(session, current["s-batch-2"].state, 2)  # s-batch-2 now at 3

    with (
        pytest.raises(ConcurrentSagaUpdate, match="1 of 3"),
        Session(database) as session,
        session.begin(),
    ):
        save_sagas(session, [(s.state, s.revision) for s in current.values()])
    with Session(database) as session:
        revisions = {i: s.revision for i, s in load_sagas(session, ids).items()}
    assert revisions == {"s-batch-0": 2, "s-batch-1": 2, "s-batch-2": 3}


def test_a_start_rolls_back_with_its_callers_transaction(database):
    with pytest.raises(RuntimeError), Session(database) as session, session.begin():
        SagaOrchestrator(REGISTRY).start(session, "Timed", "s-rolled-back", {"n": 1})
        raise RuntimeError("the caller's own change failed")
    with Session(database) as session:
        assert load_saga(session, "s-rolled-back") is None
    assert _commands(database, "s-rolled-back") == []


def test_a_second_start_of_one_saga_id_is_refused_and_changes_nothing(database):
    _start(database, "s-twice", lambda: T0)
    with Session(database) as session, session.begin():
        first = load_saga(session, "s-twice")
    later = T0 + timedelta(minutes=1)
    with pytest.raises(SagaExists), Session(database) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: later).start(session, "Timed", "s-twice", {"n": 2})
    with Session(database) as session:
        again = load_saga(session, "s-twice")
    assert again == first
    assert _commands(database, "s-twice") == ["Do"]


def test_ended_sagas_past_the_retention_are_deleted_and_the_others_kept(database):
    now = datetime.now(UTC)
    clock = lambda: now  # noqa: E731
    prefix = f"retention-{uuid.uuid4().hex[:8]}"
    settings = SagaSettings(retention_s=30 * 24 * 3600, cleanup_batch_size=1)
    orchestrator = SagaOrchestrator(REGISTRY, clock=clock, settings=settings)
    for n in range(3):
        _start(database, f"{prefix}-{n}", clock)
    with database.begin() as connection:  # two ended long ago, one still running
        connection.execute(
            sa.update(sagas_table)
            .where(sagas_table.c.saga_id.in_([f"{prefix}-0", f"{prefix}-1"]))
            .values(status="completed", updated_at=now - timedelta(days=40))
        )

    assert orchestrator.delete_ended(database) >= 2
    with database.connect() as connection:
        left = connection.execute(
            sa.select(sagas_table.c.saga_id, sagas_table.c.status).where(
                sagas_table.c.saga_id.like(f"{prefix}-%")
            )
        ).all()
    assert [tuple(row) for row in left] == [(f"{prefix}-2", "running")]


def test_a_participants_log_rows_older_than_the_retention_are_deleted_in_batches(database):
    with database.begin() as connection:
        record_participant_outcomes(
            connection,
            [
                StepOutcome(service, f"s-{n}", "only", "action", True, {}, T0 + timedelta(hours=n))
                for n in range(5)
                for service in ("stock", "payments")
            ],
        )

    deleted = delete_participant_outcomes(
        database, "stock", handled_before=T0 + timedelta(hours=3), batch_size=2
    )

    assert deleted == 3
    with database.connect() as connection:
        left = connection.execute(
            sa.select(saga_steps_table.c.service, saga_steps_table.c.saga_id).order_by(
                saga_steps_table.c.service, saga_steps_table.c.saga_id
            )
        ).all()
    assert [tuple(row) for row in left] == [
        *(("payments", f"s-{n}") for n in range(5)),
        ("stock", "s-3"),
        ("stock", "s-4"),
    ]
