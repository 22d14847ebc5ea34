"""The demo counts its own sagas only: another program's sagas in the same database, started
while it runs, are neither counted nor checked (one stuck saga of theirs made the demo fail)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from consumers import saga_invariants
from pipeline.cli.demo_sagas import SagaReport, _counts, saga_report
from pipeline.sagas.state import SagaState
from pipeline.sagas.store import insert_saga
from tests.support.demo_sagas import saga_at

STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def _saga(saga_id: str, status: str, minutes: int) -> SagaState:
    return saga_at(STARTED, saga_id, status, minutes)


def test_the_demo_counts_and_checks_the_sagas_of_its_run_only(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[list[str]] = []
    monkeypatch.setattr(
        saga_invariants, "check_invariants", lambda _c, order_ids: checked.append(order_ids) or []
    )
    with Session(database) as session, session.begin():
        for state in (
            _saga("8d1a8bb14666-o1", "completed", 1),
            _saga("8d1a8bb14666-o2", "compensated", 2),
            _saga("someone-elses", "compensation_failed", 1),  # during the run, not of it
            _saga("8d1a8bb14666_o3", "running", 1),  # "_" is no LIKE wildcard here
            _saga("8d1a8bb14666-o0", "completed", -5),  # before the run
        ):
            insert_saga(session, state)

    counts = _counts(database, STARTED, "8d1a8bb14666-")
    report = saga_report(
        database, SagaReport(by_state=counts), since=STARTED, prefix="8d1a8bb14666-"
    )

    assert counts == {"completed": 1, "compensated": 1}
    assert report.examples == {"completed": "8d1a8bb14666-o1", "compensated": "8d1a8bb14666-o2"}
    assert [sorted(ids) for ids in checked] == [["8d1a8bb14666-o1", "8d1a8bb14666-o2"]]
