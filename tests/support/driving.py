"""What the broker-free processing tests share: quick retry settings, step events, drivers, the
units of work an async handler leaves for the group commit."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import MetaData

from pipeline.envelope import Event
from pipeline.processing import Processor, ProcessorTestDriver
from pipeline.processing.processor import UnitOfWork
from pipeline.processing.records import Record
from pipeline.retry import RetryPolicy
from pipeline.settings import ProcessingSettings


def driver_settings(**options: Any) -> ProcessingSettings:
    """8 in flight and 3 attempts without jitter, unless ``options`` say otherwise."""
    values: dict[str, Any] = {
        "max_in_flight": 8,
        "retry": RetryPolicy(
            max_attempts=3, initial_backoff_s=0.1, multiplier=2, max_backoff_s=10, jitter=0
        ),
    }
    values.update(options)
    return ProcessingSettings(**values)


def step_event(key: str, seq: int, type: str = "Step", data: Any = None) -> Event:
    """The ``seq``-th event of ``key`` (its data says both, unless ``data`` is given)."""
    return Event(
        source="/tests",
        type=type,
        partitionkey=key,
        data={"key": key, "seq": seq} if data is None else data,
    )


class DriverFactory:
    """Makes test drivers whose databases also hold ``metadata``'s tables; closes them all."""

    def __init__(self, metadata: MetaData) -> None:
        self._metadata = metadata
        self._drivers: list[ProcessorTestDriver] = []

    def __call__(
        self, processor: Processor, *, partitions: Any = 1, **options: Any
    ) -> ProcessorTestDriver:
        driver = ProcessorTestDriver(
            processor, settings=driver_settings(**options), partitions=partitions
        )
        self._metadata.create_all(driver.database)
        self._drivers.append(driver)
        return driver

    def close(self) -> None:
        for driver in self._drivers:
            driver.close()


def handled_units(processor: Processor, topic: str, events: list[Event]) -> list[UnitOfWork]:
    """Each event's unit of work after ``processor``'s async handler for it ran (offsets 0, 1,
    ... of partition 0 of ``topic``), as the engine hands them to the group commit."""
    units = []
    for offset, event in enumerate(events):
        key = event.partitionkey.encode() if event.partitionkey is not None else None
        unit = UnitOfWork(
            _session=None,
            event=event,
            record=Record(topic, 0, offset, key, b"{}"),
            consumer_group=processor.name,
        )
        route = processor.route(topic, event.type)
        assert route is not None and route.is_async, f"no async handler for {event.type}"
        asyncio.run(route.handler(event, unit))  # type: ignore[arg-type]
        units.append(unit)
    return units
