"""``pipeline process``'s runtime (the Faust binding) routes ``unit.emit`` with the outbox
routes of the settings it is given (``PIPELINE_OUTBOX__ROUTES``), as docs/settings.md shows."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.engine import Engine

from pipeline.envelope import Event
from pipeline.kafka.producer import EventProducer
from pipeline.outbox.table import outbox_table
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.faust.binding import FaustBinding
from pipeline.settings import OutboxSettings, PipelineSettings
from tests.unit.pipeline.processing.faust.test_binding import (
    TOPIC,
    TP0,
    HeldEvent,
    NoKafka,
    RecordingInternals,
)


def test_the_bindings_handlers_emit_to_the_topics_the_settings_route_to(
    database: Engine,
) -> None:
    processor = Processor("invoice-recorder")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        unit.emit(
            Event(source="/tests", type="InvoiceRecorded", partitionkey="k", data={}),
            aggregate_type="invoice",
            aggregate_id="k",
        )

    settings = PipelineSettings(outbox=OutboxSettings(routes={"invoice": "billing.events"}))
    binding = FaustBinding(
        processor,
        settings,
        database=database,
        producer=EventProducer(NoKafka()),  # type: ignore[arg-type]
        internals=RecordingInternals(),
    )

    async def main() -> None:
        binding.assigned([TP0])
        await binding.deliver(HeldEvent(0))  # type: ignore[arg-type]
        await binding.engine.wait_idle()
        await binding.engine.close()

    asyncio.run(main())

    with database.connect() as connection:
        topics = list(connection.execute(select(outbox_table.c.topic)).scalars())
    assert topics == ["billing.events"]
