"""A processor for the secure-cluster tests: each event is passed on through the outbox.

Run as ``pipeline process tests.support.relay_processor:processor``, configured by environment
variables: ``RELAY_TOPIC`` (what it reads), ``RELAY_OUT_TOPIC`` (where its outbox events go)
and ``RELAY_GROUP``. Each handled event becomes one ``Relayed`` event whose data names the
handled event's id, written to the outbox in the event's transaction, and one log line
``passed on <event id>``.
"""

from __future__ import annotations

import logging
import os

from pipeline.envelope import Event
from pipeline.processing import Processor, UnitOfWork

TOPIC = os.environ.get("RELAY_TOPIC", "relay.unset")
OUT_TOPIC = os.environ.get("RELAY_OUT_TOPIC", "relay.out.unset")
processor = Processor(os.environ.get("RELAY_GROUP", f"relay-{TOPIC}"))
logger = logging.getLogger("tests.relay")


@processor.handler(TOPIC)
def pass_on(event: Event, unit: UnitOfWork) -> None:
    unit.emit(
        Event(source="/tests/relay", type="Relayed", data={"of": event.id}),
        aggregate_type="relay",
        aggregate_id=event.partitionkey or event.id,
        topic=OUT_TOPIC,
    )
    logger.info("passed on %s", event.id)
