"""Saga rows on SQLite (the embedded default): a start is one insert, a known id refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pipeline.database import build_engine, migrate
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.orchestrator import SagaOrchestrator
from pipeline.sagas.store import SagaExists, load_saga
from pipeline.settings import DatabaseSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Data(BaseModel):
    n: int


REGISTRY = SagaRegistry(
    [
        SagaDefinition(
            "One",
            version=1,
            data_model=Data,
            steps=[Step("only", participant="worker", action=lambda d: Call("Do", {"n": d.n}))],
        )
    ]
)


def test_a_second_start_of_one_saga_id_is_refused_and_the_first_row_stays(tmp_path: Path) -> None:
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'sagas.db'}"))
    migrate(engine)
    with Session(engine) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: T0).start(session, "One", "s-1", {"n": 1})
    later = T0 + timedelta(minutes=1)
    with pytest.raises(SagaExists), Session(engine) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: later).start(session, "One", "s-1", {"n": 2})
    with Session(engine) as session:
        stored = load_saga(session, "s-1")
    assert stored is not None
    assert stored.state.started_at == T0
    assert stored.state.data == {"n": 1}
    assert stored.revision == 1
    engine.dispose()
