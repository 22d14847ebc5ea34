"""An interrupted demo says what its run left unfinished, read from the database once every
process has stopped: its sagas not ended, by state, and the outbox rows not published, and
what finishes them. (It said only "the demo's processes are stopped", with 5 rows unpublished
and a saga compensating.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.cli import demo, demo_services
from pipeline.cli.demo_sagas import SAGA_PROCESSES, LeftOver, left_over, left_over_lines
from pipeline.outbox.table import outbox_table
from pipeline.sagas.state import SagaState
from pipeline.sagas.store import insert_saga
from pipeline.settings import DatabaseSettings, PipelineSettings
from tests.support.demo_sagas import saga_at

STARTED = datetime(2026, 12, 7, 20, 29, tzinfo=UTC)
PREFIX = "8d1a8bb14666-"
HINT = "the demo's data is in the stack's PostgreSQL: export PIPELINE_DATABASE__URL=postgresql..."


def _saga(saga_id: str, status: str, minutes: int = 1) -> SagaState:
    return saga_at(STARTED, saga_id, status, minutes)


def _row(n: int, minutes: int, published: bool) -> dict[str, object]:
    at = STARTED + timedelta(minutes=minutes)
    return {
        "event_id": f"e-{n}",
        "aggregate_type": "saga",
        "aggregate_id": f"s-{n}",
        "event_type": "t",
        "topic": "saga.inventory.commands",
        "payload": b"{}",
        "headers": {},
        "created_at": at,
        "published_at": at if published else None,
    }


def _fill(database: Engine) -> None:
    with Session(database) as session, session.begin():
        for state in (
            _saga(f"{PREFIX}o1", "completed"),
            _saga(f"{PREFIX}o2", "compensating"),
            _saga(f"{PREFIX}o3", "running"),
            _saga(f"{PREFIX}o4", "running"),
            _saga(f"{PREFIX}o5", "compensation_failed"),
            _saga("someone-elses", "running"),
            _saga(f"{PREFIX}o0", "running", minutes=-5),  # before the run
        ):
            insert_saga(session, state)
    with database.begin() as connection:
        connection.execute(
            sa.insert(outbox_table),
            [
                _row(1, 1, published=False),
                _row(2, 2, published=False),
                _row(3, 2, published=True),
                _row(4, -5, published=False),  # before the run
            ],
        )


def test_what_the_run_left_is_read_from_the_database(database: Engine) -> None:
    _fill(database)

    left = left_over(database, since=STARTED, prefix=PREFIX)

    assert left == LeftOver(
        sagas={"compensating": 1, "running": 2, "compensation_failed": 1}, unpublished=2
    )


def test_the_lines_say_what_is_left_and_what_finishes_it() -> None:
    left = LeftOver(sagas={"compensating": 1, "running": 2}, unpublished=5)

    said = "\n".join(left_over_lines(left, HINT))

    assert HINT in said
    assert "3 sagas not ended: 1 compensating, 2 running" in said
    assert "5 outbox rows written since the run began, not published to Kafka" in said
    assert "the next `pipeline demo` runs them all" in said
    assert "    pipeline outbox relay\n" in said
    for spec in SAGA_PROCESSES:
        assert f"    pipeline process {spec}" in said
    assert "times out then, and its saga compensates" in said
    assert "pipeline saga list --state running" in said


def test_rows_alone_need_only_a_relay() -> None:
    said = "\n".join(left_over_lines(LeftOver(sagas={}, unpublished=1), HINT))

    assert "1 outbox row written since the run began" in said
    assert "pipeline outbox relay --once" in said
    assert "pipeline process" not in said and "saga" not in said


def test_a_saga_waiting_for_an_operator_is_named_with_the_operators_commands() -> None:
    said = "\n".join(
        left_over_lines(LeftOver(sagas={"compensation_failed": 2}, unpublished=0), HINT)
    )

    assert "2 sagas compensation_failed: waiting for an operator" in said
    assert "pipeline saga retry ID" in said and "pipeline saga resolve ID" in said
    assert "pipeline process" not in said


def test_nothing_left_says_so() -> None:
    (line,) = left_over_lines(LeftOver(sagas={}, unpublished=0), HINT)

    assert line.startswith("nothing of this run is left unfinished")


def test_the_interrupt_message_ends_with_what_is_left() -> None:
    step = demo._Step()
    step.now = "running the orders service and the sagas"

    step.services_left(LeftOver(sagas={"compensating": 1}, unpublished=5), HINT)
    lines = step.interrupted().splitlines()

    assert lines[0].startswith("interrupted while running the orders service and the sagas")
    assert lines[1] == f"left unfinished by this run ({HINT}):"
    assert "  1 saga not ended: 1 compensating" in lines

    step.services_left("no such table: pipeline_sagas", HINT)
    assert step.interrupted().splitlines()[1] == (
        "what this run left unfinished could not be read: no such table: pipeline_sagas"
    )


class _Consumer:
    def close(self) -> None:
        pass


def test_interrupted_services_hand_over_what_is_left_once_stopped(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(database)
    settings = PipelineSettings(database=DatabaseSettings(url=str(database.url)))
    monkeypatch.setattr("pipeline.kafka.clients.build_consumer", lambda *_a, **_k: _Consumer())

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_services, "_run_services", interrupted)
    monkeypatch.setattr(demo_services, "datetime", _At(STARTED))
    handed: list[object] = []

    with pytest.raises(KeyboardInterrupt):
        demo_services.run_services(
            settings,
            None,  # type: ignore[arg-type]
            [],
            "",
            lambda _text: None,
            orders=5,
            saga_prefix=PREFIX,
            console=None,  # type: ignore[arg-type]
            on_interrupted=handed.append,
        )

    assert handed == [
        LeftOver(sagas={"compensating": 1, "running": 2, "compensation_failed": 1}, unpublished=2)
    ]


class _At:
    """``datetime`` whose ``now`` is a fixed moment (the run's start)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self, _tz: object = None) -> datetime:
        return self.moment
