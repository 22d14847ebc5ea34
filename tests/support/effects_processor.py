"""A processor for the integration, chaos and rebalance tests: each event's effect is a row.

Configured by environment variables, so a test can run it as `pipeline process
tests.support.effects_processor:processor` in subprocesses:

- ``EFFECTS_TOPIC`` (required) and ``EFFECTS_GROUP`` (default ``effects-<topic>``);
- ``EFFECTS_SLEEP_MS``: how long each handler call waits (an I/O-bound handler);
- ``EFFECTS_FAIL_MARKER``: events whose data has ``"poison": <marker>`` raise every time.

Events of type ``EffectV2`` have a model (:class:`EffectV2`, an int ``seq`` required): one whose
data does not fit is dead-lettered as ``schema_invalid``; every other type has no model.

The effect row records the key, the event's sequence number within its key and the event id;
the table has no unique constraint, so a duplicate effect would show as a second row.
"""

from __future__ import annotations

import logging
import os
import time

from pydantic import BaseModel
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert

from pipeline.envelope import Event
from pipeline.processing import Processor, UnitOfWork

effects_metadata = MetaData()
effects = Table(
    "test_effects",
    effects_metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("key", String(255), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("pid", Integer, nullable=False),
)

TOPIC = os.environ.get("EFFECTS_TOPIC", "effects.unset")
processor = Processor(os.environ.get("EFFECTS_GROUP", f"effects-{TOPIC}"))
_SLEEP_S = float(os.environ.get("EFFECTS_SLEEP_MS", "0")) / 1000
_FAIL_MARKER = os.environ.get("EFFECTS_FAIL_MARKER")
logger = logging.getLogger("tests.effects")


class PoisonError(RuntimeError):
    pass


class EffectV2(BaseModel):
    seq: int


def _apply(event: Event, unit: UnitOfWork, seq: int) -> None:
    if _FAIL_MARKER is not None and event.data.get("poison") == _FAIL_MARKER:
        raise PoisonError(f"poisoned event {event.id}")
    if _SLEEP_S:
        time.sleep(_SLEEP_S)
    unit.session.execute(
        insert(effects).values(
            key=event.partitionkey or "", seq=seq, event_id=event.id, pid=os.getpid()
        )
    )
    logger.info("effect %d of %s applied", seq, event.partitionkey)


@processor.handler(TOPIC)
def apply_effect(event: Event, unit: UnitOfWork) -> None:
    _apply(event, unit, int(event.data["seq"]))


@processor.handler(TOPIC, event_type="EffectV2", model=EffectV2)
def apply_effect_v2(event: Event, unit: UnitOfWork) -> None:
    _apply(event, unit, unit.data.seq)
