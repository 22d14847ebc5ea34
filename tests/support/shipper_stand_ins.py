"""Stand-ins for the log shipper's Kafka clients in unit tests that never dead-letter."""

from __future__ import annotations

from typing import Any

__all__ = ["NoDeadLetters"]


class NoDeadLetters:
    """The shipper's dead-letter producer where no record may be dead-lettered."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is dead-lettered here")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0
