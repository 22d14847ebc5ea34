"""The broker-neutral consumed record the processing engine works on.

Faust's messages, confluent-kafka's messages and the test driver's inputs all become a
:class:`Record`; nothing below the bindings knows which client delivered it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Record"]


@dataclass(frozen=True)
class Record:
    """One consumed Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    #: The message's timestamp in milliseconds since the epoch, when the broker gave one.
    timestamp_ms: int | None = None

    @property
    def topic_partition(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    def header(self, name: str) -> str | None:
        """The last header called ``name``, as text."""
        for header_name, data in reversed(self.headers):
            if header_name == name:
                return data.decode("utf-8", errors="replace") if data is not None else ""
        return None
