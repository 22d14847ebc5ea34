"""``unit.emit`` routes with the outbox settings the runtime was given (``settings.outbox``,
``PIPELINE_OUTBOX__ROUTES``), not the built-in routes: on every path a handler takes (alone,
in a group of synchronous handlers, an ``async`` group, an ``async`` retry), in the test driver
and the harness."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.outbox.table import Outbox, PendingEvent, outbox_table
from pipeline.processing import Processor, ProcessorTestDriver, UnitOfWork
from pipeline.processing.harness import PipelineHarness
from pipeline.processing.processor import BatchWrite
from pipeline.processing.records import Record
from pipeline.settings import OutboxSettings
from tests.support.driving import driver_settings, step_event

TOPIC = "billing.invoices"
#: As in docs/settings.md: this setting replaces the built-in routes.
ROUTES = {"invoice": "billing.events"}


def recorded(unit: UnitOfWork) -> Event:
    key = unit.event.data["key"]
    event = Event(source="/tests", type="InvoiceRecorded", partitionkey=key, data={"id": key})
    return unit.emit(event, aggregate_type="invoice", aggregate_id=key)


def outbox_topics(database: Engine) -> list[str]:
    with database.connect() as connection:
        query = select(outbox_table.c.topic).order_by(outbox_table.c.position)
        return list(connection.execute(query).scalars())


def _processor(kind: str) -> Processor:
    processor = Processor("invoice-recorder")
    calls = 0

    if kind.startswith("async"):

        @processor.handler(TOPIC)
        async def handle_async(event: Event, unit: UnitOfWork) -> None:
            nonlocal calls
            calls += 1
            if kind == "async-retried" and calls == 1:
                raise RuntimeError("the first attempt fails: the retry is a per-record attempt")
            recorded(unit)

    else:

        @processor.handler(TOPIC)
        def handle(event: Event, unit: UnitOfWork) -> None:
            recorded(unit)

    return processor


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("sync-alone", {"sync_group_wait_ms": 0}),
        ("sync-grouped", {"sync_group_wait_ms": 10}),
        ("async-grouped", {}),
        ("async-retried", {}),
    ],
)
def test_an_emit_goes_to_the_topic_the_outbox_settings_route_it_to(
    kind: str, options: dict[str, Any]
) -> None:
    driver = ProcessorTestDriver(
        _processor(kind),
        settings=driver_settings(**options),
        outbox=OutboxSettings(routes=ROUTES),
    )
    try:
        driver.send(TOPIC, step_event("inv-1", 0))
        driver.send(TOPIC, step_event("inv-2", 0))
        driver.run()

        assert driver.dead_letters(TOPIC) == []
        assert outbox_topics(driver.database) == ["billing.events", "billing.events"]
        # Routed on the path itself, not on a retry after an unrouted emit failed there.
        assert len(driver.waits) == (1 if kind == "async-retried" else 0)
    finally:
        driver.close()


def test_without_outbox_settings_the_driver_routes_with_the_built_in_routes() -> None:
    processor = Processor("order-recorder")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        key = event.data["key"]
        unit.emit(
            Event(source="/tests", type="OrderSeen", partitionkey=key, data={}),
            aggregate_type="order",
            aggregate_id=key,
        )

    driver = ProcessorTestDriver(processor, settings=driver_settings())
    try:
        driver.send(TOPIC, step_event("o-1", 0))
        driver.run()

        assert outbox_topics(driver.database) == ["orders.events"]
    finally:
        driver.close()


def test_the_harness_gives_its_outbox_settings_to_every_processor() -> None:
    with PipelineHarness(
        [_processor("sync-alone")], outbox=OutboxSettings(routes=ROUTES)
    ) as harness:
        harness.send(TOPIC, step_event("inv-1", 0))
        harness.run_until_idle()

        [published] = harness.published("billing.events")
        assert published.type == "InvoiceRecorded"


def test_async_emits_of_units_sharing_an_outbox_are_one_batch(database: Engine) -> None:
    """The engine gives every unit one outbox: a group's emits stay one insert."""
    outbox = Outbox.from_settings(OutboxSettings(routes=ROUTES))
    units = [
        UnitOfWork(
            _session=None,
            event=step_event(f"inv-{n}", 0),
            record=Record(TOPIC, 0, n, f"inv-{n}".encode(), b"{}"),
            consumer_group="invoice-recorder",
            outbox=outbox,
        )
        for n in range(3)
    ]
    for unit in units:
        recorded(unit)
    batches: dict[BatchWrite, list[Any]] = {}

    with Session(database) as session, session.begin():
        for unit in units:
            unit.apply_writes(session, batches)
        [(batch, items)] = batches.items()  # one batch for the group
        assert [item.aggregate_id for item in items] == ["inv-0", "inv-1", "inv-2"]
        assert all(isinstance(item, PendingEvent) for item in items)
        batch(session, items)

    assert outbox_topics(database) == ["billing.events"] * 3
