"""What a fake Kafka client's ``produce`` was given, read as confluent-kafka reads it."""

from __future__ import annotations

from typing import Any, NamedTuple


class ProduceCall(NamedTuple):
    """The arguments of ``confluent_kafka.Producer.produce``, in its own order (the product
    passes them by position): ``ProduceCall(*args, **kwargs)`` in a fake's ``produce``."""

    topic: str
    value: Any = None
    key: Any = None
    partition: int = -1
    callback: Any = None
    on_delivery: Any = None
    timestamp: int = 0
    headers: Any = None

    @property
    def report(self) -> Any:
        """The delivery callback (``callback`` is confluent-kafka's other name for it)."""
        return self.callback or self.on_delivery
