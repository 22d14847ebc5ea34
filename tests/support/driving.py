"""What the broker-free processing tests share: quick retry settings, step events, drivers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData

from pipeline.envelope import Event
from pipeline.processing import Processor, ProcessorTestDriver
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

    def __call__(self, processor: Processor, **options: Any) -> ProcessorTestDriver:
        driver = ProcessorTestDriver(processor, settings=driver_settings(**options))
        self._metadata.create_all(driver.database)
        self._drivers.append(driver)
        return driver

    def close(self) -> None:
        for driver in self._drivers:
            driver.close()
