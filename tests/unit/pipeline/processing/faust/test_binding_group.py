"""A processor run under a consumer group of its own (``pipeline process --group``): the group is
the Faust app's id (the Kafka group) and the owner of the inbox rows, not the processor's name,
from ``run_processor`` down to the engine. Without a broker."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.envelope import Event
from pipeline.kafka.producer import EventProducer
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.faust import app as app_module
from pipeline.processing.faust.binding import FaustBinding
from pipeline.processing.inbox import inbox_table
from pipeline.settings import DatabaseSettings, PipelineSettings
from tests.unit.pipeline.processing.faust.test_binding import (
    TOPIC,
    TP0,
    HeldEvent,
    NoKafka,
    RecordingInternals,
)

GROUP = "fx1-group-test.test-0a1b2c3d"


def _processor() -> Processor:
    processor = Processor("fx1-group-test")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        pass

    return processor


def _binding(database: Engine, **options: Any) -> FaustBinding:
    return FaustBinding(
        _processor(),
        PipelineSettings(),
        database=database,
        producer=EventProducer(NoKafka()),  # type: ignore[arg-type]
        internals=RecordingInternals(),
        **options,
    )


def _inbox_groups(database: Engine) -> list[str]:
    with database.connect() as connection:
        return list(connection.execute(sa.select(inbox_table.c.consumer_group)).scalars())


def _handle_one(binding: FaustBinding) -> None:
    async def main() -> None:
        binding.assigned([TP0])
        await binding.deliver(HeldEvent(0))  # type: ignore[arg-type]
        await binding.engine.wait_idle()

    asyncio.run(main())


def test_a_group_given_is_the_kafka_group_and_owns_the_inbox_rows(database: Engine) -> None:
    binding = _binding(database, group=GROUP)

    _handle_one(binding)

    assert binding.app.conf.id == GROUP  # Faust's consumer group id is the app's id
    assert binding.engine.consumer_group == GROUP
    assert _inbox_groups(database) == [GROUP]


def test_without_a_group_the_processors_name_is_the_group(database: Engine) -> None:
    binding = _binding(database)

    _handle_one(binding)

    assert binding.app.conf.id == binding.engine.consumer_group == "fx1-group-test"
    assert _inbox_groups(database) == ["fx1-group-test"]


class _Worker:
    """Faust's worker, not started: the test is about the app it was given."""

    def __init__(self, app: Any, **_: Any) -> None:
        self.stdout = io.StringIO()  # not a terminal

    def execute_from_commandline(self) -> None:
        pass


@pytest.mark.parametrize(("group", "said"), [(GROUP, f" as group {GROUP} on "), (None, " on ")])
def test_run_processor_binds_the_group_and_names_it_in_the_start_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    group: str | None,
    said: str,
) -> None:
    bindings: list[FaustBinding] = []

    def binding(*args: Any, **kwargs: Any) -> FaustBinding:
        made = FaustBinding(
            *args,
            producer=EventProducer(NoKafka()),  # type: ignore[arg-type]
            internals=RecordingInternals(),
            **kwargs,
        )
        bindings.append(made)
        return made

    monkeypatch.setattr(app_module, "check_topics", lambda settings, processor: None)
    monkeypatch.setattr(app_module, "FaustBinding", binding)
    monkeypatch.setattr("faust.Worker", _Worker)
    settings = PipelineSettings(database=DatabaseSettings(url=f"sqlite:///{tmp_path}/s.db"))
    settings = settings.model_copy(
        update={"processing": settings.processing.model_copy(update={"event_loop": "asyncio"})}
    )

    with caplog.at_level(logging.INFO, logger="pipeline.processing"):
        app_module.run_processor(_processor(), settings, group=group)

    [bound] = bindings
    assert bound.group == bound.app.conf.id == (group or "fx1-group-test")
    [line] = [r.getMessage() for r in caplog.records if "in flight" in r.getMessage()]
    assert line.startswith(f"fx1-group-test{said}"), line
