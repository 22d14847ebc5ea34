"""The sagas-by-state counts (SQLite): the same as counting every row, without reading every
row at each refresh; and the deletion of ended sagas past their retention, which the counts
follow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.database import build_engine, migrate
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.state import SagaStatus
from pipeline.sagas.state_counts import DELETE_MARGIN, SagaStateCounts, deletable_before
from pipeline.sagas.store import delete_ended_sagas, sagas_table
from pipeline.settings import DatabaseSettings, SagaSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Engine:
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'sagas.db'}"))
    migrate(engine)
    return engine


def put(database: Engine, saga_id: str, status: str, at: datetime, name: str = "Order") -> None:
    """Insert the saga, or move it to ``status`` at ``at``."""
    values = {"name": name, "status": status, "updated_at": at}
    with database.begin() as connection:
        moved = connection.execute(
            sa.update(sagas_table).where(sagas_table.c.saga_id == saga_id).values(**values)
        ).rowcount
        if not moved:
            connection.execute(
                sa.insert(sagas_table).values(
                    saga_id=saga_id, version=1, state={}, revision=1, created_at=at, **values
                )
            )


def every_row(database: Engine) -> dict[tuple[str, str], int]:
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(sagas_table.c.name, sagas_table.c.status, sa.func.count()).group_by(
                sagas_table.c.name, sagas_table.c.status
            )
        )
        return {(name, status): count for name, status, count in rows}


def refresh(counts: SagaStateCounts, database: Engine, now: datetime) -> dict[tuple[str, str], int]:
    with Session(database) as session:
        return counts.refresh(session, now)


def test_refreshes_give_what_counting_every_row_gives_as_sagas_start_end_and_end_late(
    database: Engine,
) -> None:
    counts = SagaStateCounts(overlap=timedelta(minutes=1))
    put(database, "old-done", "completed", T0 - timedelta(hours=1))
    put(database, "old-undone", "compensated", T0 - timedelta(hours=1), name="Refund")
    put(database, "open", "running", T0)
    assert refresh(counts, database, T0) == every_row(database)

    now = T0 + timedelta(seconds=5)
    put(database, "open", "completed", now)  # ends
    put(database, "new", "running", now)  # starts
    assert refresh(counts, database, now) == every_row(database)

    # Decided 30 s ago, committed only now: inside the overlap, so still counted (once).
    now += timedelta(seconds=5)
    put(database, "late", "completed", now - timedelta(seconds=30))
    assert refresh(counts, database, now) == every_row(database)
    assert refresh(counts, database, now + timedelta(seconds=5)) == every_row(database)

    now += timedelta(minutes=10)
    put(database, "new", "compensating", now)
    put(database, "stuck", "compensation_failed", now)
    put(database, "stuck", "resolved", now + timedelta(seconds=1))
    assert refresh(counts, database, now + timedelta(seconds=2)) == every_row(database)
    assert every_row(database)[("Order", "completed")] == 3


def test_after_the_first_refresh_ended_sagas_are_read_only_from_the_overlap_on(
    database: Engine,
) -> None:
    """A terminal row written with a time before the last cutoff (which no transaction does:
    it would have committed more than the overlap after its decision) is not read again,
    which shows the refresh does not count the whole table."""
    counts = SagaStateCounts(overlap=timedelta(minutes=1))
    put(database, "a", "completed", T0)
    refresh(counts, database, T0 + timedelta(minutes=5))
    put(database, "hidden", "completed", T0)  # before the cutoff of T0 + 4 min

    assert refresh(counts, database, T0 + timedelta(minutes=6)) == {("Order", "completed"): 1}
    assert every_row(database) == {("Order", "completed"): 2}


def test_the_gauge_sets_each_state_and_drops_a_state_no_saga_is_in_any_more_to_zero(
    database: Engine,
) -> None:
    now = T0
    orchestrator = SagaOrchestrator(SagaRegistry([]), clock=lambda: now)
    put(database, "s-1", "running", T0)
    put(database, "s-2", "running", T0)

    def gauge(state: str) -> float | None:
        return orchestrator.metrics.registry.get_sample_value(
            "pipeline_sagas", {"saga": "Order", "state": state}
        )

    with Session(database) as session:
        assert orchestrator.refresh_state_gauge(session) == {"running": 2}
    assert gauge("running") == 2

    now = T0 + timedelta(seconds=5)
    put(database, "s-1", "completed", now)
    put(database, "s-2", "completed", now)
    with Session(database) as session:
        assert orchestrator.refresh_state_gauge(session) == {"completed": 2}
    assert (gauge("running"), gauge("completed")) == (0, 2)


def test_every_state_of_every_saga_defined_is_gauged_from_the_start_at_zero(
    database: Engine,
) -> None:
    class Job(BaseModel):
        n: int = 0

    order = SagaDefinition(
        "Order",
        version=1,
        data_model=Job,
        steps=[Step("do", participant="worker", action=lambda job: Call("Do", {}))],
    )
    orchestrator = SagaOrchestrator(SagaRegistry([order]), clock=lambda: T0)
    put(database, "s-1", "running", T0)

    with Session(database) as session:
        orchestrator.refresh_state_gauge(session)

    samples = {
        sample.labels["state"]: sample.value
        for metric in orchestrator.metrics.registry.collect()
        if metric.name == "pipeline_sagas"
        for sample in metric.samples
        if sample.labels["saga"] == "Order"
    }
    assert samples == {state: (1 if state == "running" else 0) for state in get_args(SagaStatus)}


def test_only_sagas_that_ended_before_the_cutoff_are_deleted_batch_by_batch(
    database: Engine,
) -> None:
    old = T0 - timedelta(days=31)
    for n in range(5):
        put(database, f"done-{n}", "completed", old)
    put(database, "undone", "compensated", old, name="Refund")
    put(database, "by-hand", "resolved", old)
    put(database, "still-running", "running", old)
    put(database, "stuck", "compensation_failed", old)
    put(database, "stuck-confirm", "confirmation_failed", old)
    put(database, "recent", "completed", T0 - timedelta(days=29))

    deleted = delete_ended_sagas(database, ended_before=T0 - timedelta(days=30), batch_size=2)

    assert deleted == {
        ("Order", "completed"): 5,
        ("Refund", "compensated"): 1,
        ("Order", "resolved"): 1,
    }
    assert every_row(database) == {
        ("Order", "running"): 1,
        ("Order", "compensation_failed"): 1,
        ("Order", "confirmation_failed"): 1,
        ("Order", "completed"): 1,
    }
    assert delete_ended_sagas(database, ended_before=T0 - timedelta(days=30)) == {}


def ended_within(database: Engine, start: datetime) -> dict[tuple[str, str], int]:
    """What the counts give with a retention: open sagas, and those that ended since ``start``."""
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(sagas_table.c.name, sagas_table.c.status, sa.func.count())
            .where(
                sa.or_(
                    sagas_table.c.status.not_in(["completed", "compensated", "resolved"]),
                    sagas_table.c.updated_at >= start,
                )
            )
            .group_by(sagas_table.c.name, sagas_table.c.status)
        )
        return {(name, status): count for name, status, count in rows}


def test_with_a_retention_ended_sagas_count_while_they_are_within_it(database: Engine) -> None:
    day = timedelta(days=1)
    counts = SagaStateCounts(overlap=timedelta(minutes=1), retention=day)
    put(database, "long-ago", "completed", T0 - 2 * day)
    put(database, "nearly-out", "completed", T0 - day + timedelta(minutes=5))
    put(database, "lately", "compensated", T0 - timedelta(hours=1))
    put(database, "open", "running", T0)
    assert refresh(counts, database, T0) == ended_within(database, T0 - day)
    assert refresh(counts, database, T0)[("Order", "completed")] == 1

    now = T0 + timedelta(minutes=10)  # nearly-out leaves the window; open ends
    put(database, "open", "completed", now)
    assert refresh(counts, database, now) == ended_within(database, now - day)
    assert refresh(counts, database, now)[("Order", "completed")] == 1

    now += day + timedelta(seconds=1)  # every one of them is out now
    assert refresh(counts, database, now) == {} == ended_within(database, now - day)


def test_the_gauge_follows_deletions_made_by_another_orchestrator(database: Engine) -> None:
    now = T0
    settings = SagaSettings(retention_s=24 * 3600, cleanup_batch_size=1)
    here = SagaOrchestrator(SagaRegistry([]), clock=lambda: now, settings=settings)
    elsewhere = SagaOrchestrator(SagaRegistry([]), clock=lambda: now, settings=settings)
    put(database, "a", "completed", T0 - timedelta(hours=23, minutes=55))
    put(database, "b", "completed", T0 - timedelta(hours=1))
    put(database, "c", "completed", T0 - timedelta(minutes=50))
    with Session(database) as session:
        assert here.refresh_state_gauge(session) == {"completed": 3}

    now = T0 + timedelta(minutes=10)  # a is out of the retention, deleted after the margin
    assert elsewhere.delete_ended(database) == 0
    with Session(database) as session:
        assert here.refresh_state_gauge(session) == {"completed": 2}

    now = T0 + timedelta(minutes=16)
    assert elsewhere.delete_ended(database) == 1
    with Session(database) as session:
        assert here.refresh_state_gauge(session) == {"completed": 2}
    assert every_row(database) == {("Order", "completed"): 2}
    deleted = elsewhere.metrics.registry.get_sample_value(
        "pipeline_sagas_deleted_total", {"saga": "Order", "state": "completed"}
    )
    assert deleted == 1


def test_the_orchestrators_cleanup_task_uses_the_retention_and_none_keeps_every_saga(
    database: Engine,
) -> None:
    now = datetime.now(UTC)
    put(database, "ended-long-ago", "completed", now - timedelta(hours=3))
    put(database, "ended-lately", "compensated", now - timedelta(minutes=65))  # in the margin

    def cleanup(settings: SagaSettings) -> None:
        processor = orchestrator_processor(SagaOrchestrator(SagaRegistry([])), settings=settings)
        (task,) = [t for t in processor.periodic_tasks if t.name.endswith("delete_old_sagas")]
        task.run(database)

    cleanup(SagaSettings(retention_s=None))
    assert sum(every_row(database).values()) == 2
    cleanup(SagaSettings(retention_s=3600))
    assert every_row(database) == {("Order", "compensated"): 1}


def test_an_ended_saga_may_be_deleted_once_its_retention_and_the_margin_have_passed():
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    cutoff = deletable_before(now, timedelta(days=1))
    assert cutoff == datetime(2026, 12, 3, 12, 0, tzinfo=UTC) - DELETE_MARGIN
    assert cutoff < now - timedelta(days=1)  # kept longer than the retention alone
