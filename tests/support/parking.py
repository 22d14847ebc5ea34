"""Parking a key in a test's database, as a processor does when it dead-letters its event."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from pipeline.processing import parked_keys

GROUP = "orders"


def park(connection: Connection, key: bytes = b"k1", **options: Any) -> None:
    values: dict[str, Any] = {
        "consumer_group": GROUP,
        "topic": "requests.orders",
        "key": key,
        "event_id": "e1",
        "reason": "retries_exhausted: boom",
    }
    values.update(options)
    parked_keys.park_key(connection, **values)


def parked(connection: Connection, key: bytes = b"k1") -> parked_keys.ParkedKey | None:
    return parked_keys.parked_key(
        connection, consumer_group=GROUP, topic="requests.orders", key=key
    )
