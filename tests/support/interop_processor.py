"""A processor for the CloudEvents interoperability test: each event it is handed is a row.

Run as ``pipeline process tests.support.interop_processor:processor`` with ``INTEROP_TOPIC``
and ``INTEROP_GROUP`` set. The row records what the handler saw: the event's id, type, content
type, whether it had a time, its partition key, and its data (JSON as JSON text, bytes as
``bytes:<base64>``), so the test can compare it with what each producer sent.
"""

from __future__ import annotations

import base64
import json
import os

from sqlalchemy import Boolean, Column, MetaData, String, Table, Text, insert

from pipeline.envelope import Event
from pipeline.processing import Processor, UnitOfWork

interop_metadata = MetaData()
seen_events = Table(
    "test_interop_events",
    interop_metadata,
    Column("event_id", String(255), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("has_time", Boolean, nullable=False),
    Column("partitionkey", String(255)),
    Column("data", Text),
)

TOPIC = os.environ.get("INTEROP_TOPIC", "interop.unset")
processor = Processor(os.environ.get("INTEROP_GROUP", f"interop-{TOPIC}"))


def data_text(event: Event) -> str | None:
    """The event's data as the row keeps it."""
    if isinstance(event.data, bytes):
        return "bytes:" + base64.b64encode(event.data).decode("ascii")
    return None if event.data is None else json.dumps(event.data, sort_keys=True)


@processor.handler(TOPIC)
def record(event: Event, unit: UnitOfWork) -> None:
    unit.session.execute(
        insert(seen_events).values(
            event_id=event.id,
            type=event.type,
            content_type=event.datacontenttype,
            has_time=event.time is not None,
            partitionkey=event.partitionkey,
            data=data_text(event),
        )
    )
