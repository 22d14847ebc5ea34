"""Parking a key in a test's database, as a processor does when it dead-letters its event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
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


def plans_of_parked_keys(connection: Connection, look: Callable[[], object]) -> list[str]:
    """SQLite's query plan lines for the parked keys table, of every statement ``look()`` ran."""
    statements: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith("EXPLAIN"):
            statements.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", note)
    try:
        look()
    finally:
        event.remove(connection, "before_cursor_execute", note)
    return [
        row[3]
        for statement, parameters in statements
        for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        if "parked_keys" in row[3]
    ]
