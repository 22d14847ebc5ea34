"""A processor for the integration, chaos and rebalance tests: each event's effect is a row.

Configured by environment variables, so a test can run it as `pipeline process
tests.support.effects_processor:processor` in subprocesses:

- ``EFFECTS_TOPIC`` (required) and ``EFFECTS_GROUP`` (default ``effects-<topic>``);
- ``EFFECTS_HANDLER``: ``sync`` (the default) or ``async``. Synchronous handlers run in worker
  threads, wait with ``time.sleep`` and write the effect in ``unit.session``; ``async def``
  handlers run on the event loop, wait with ``await asyncio.sleep`` and hand the same write to
  ``unit.write(...)``, so their first attempts commit in groups (group commit);
- ``EFFECTS_SLEEP_MS``: how long each handler call waits (an I/O-bound handler);
- ``EFFECTS_FAIL_MARKER``: events whose data has ``"poison": <marker>`` raise every time;
- ``EFFECTS_WRITE``: ``effects`` (the default) or ``nothing``: ``async def`` handlers that write
  nothing, so only their inbox rows are committed (on PostgreSQL, from the event loop).

Events of type ``EffectV2`` have a model (:class:`EffectV2`, an int ``seq`` required): one whose
data does not fit is dead-lettered as ``schema_invalid``; every other type has no model. Both
hold in either handler kind.

The effect row records the key, the event's sequence number within its key and the event id;
the table has no unique constraint, so a duplicate effect would show as a second row. Each
handler call logs ``effect <seq> of <key> applied``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from pydantic import BaseModel
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert
from sqlalchemy.orm import Session

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

HANDLER_KINDS = ("sync", "async")

TOPIC = os.environ.get("EFFECTS_TOPIC", "effects.unset")
HANDLER = os.environ.get("EFFECTS_HANDLER", "sync")
if HANDLER not in HANDLER_KINDS:
    raise ValueError(f"EFFECTS_HANDLER must be one of {HANDLER_KINDS}, not {HANDLER!r}")
processor = Processor(os.environ.get("EFFECTS_GROUP", f"effects-{TOPIC}"))
_SLEEP_S = float(os.environ.get("EFFECTS_SLEEP_MS", "0")) / 1000
_FAIL_MARKER = os.environ.get("EFFECTS_FAIL_MARKER")
_WRITES = os.environ.get("EFFECTS_WRITE", "effects")
if _WRITES not in ("effects", "nothing"):
    raise ValueError(f"EFFECTS_WRITE must be effects or nothing, not {_WRITES!r}")
logger = logging.getLogger("tests.effects")


class PoisonError(RuntimeError):
    pass


class EffectV2(BaseModel):
    seq: int


def _check_poison(event: Event) -> None:
    if _FAIL_MARKER is not None and event.data.get("poison") == _FAIL_MARKER:
        raise PoisonError(f"poisoned event {event.id}")


def _write_effect(session: Session, event: Event, seq: int) -> None:
    session.execute(
        insert(effects).values(
            key=event.partitionkey or "", seq=seq, event_id=event.id, pid=os.getpid()
        )
    )


def _apply(event: Event, unit: UnitOfWork, seq: int) -> None:
    _check_poison(event)
    if _SLEEP_S:
        time.sleep(_SLEEP_S)
    _write_effect(unit.session, event, seq)
    logger.info("effect %d of %s applied", seq, event.partitionkey)


async def _apply_async(event: Event, unit: UnitOfWork, seq: int) -> None:
    _check_poison(event)
    if _SLEEP_S:
        await asyncio.sleep(_SLEEP_S)
    if _WRITES == "effects":
        unit.write(lambda session: _write_effect(session, event, seq))
    logger.info("effect %d of %s applied", seq, event.partitionkey)


def apply_effect(event: Event, unit: UnitOfWork) -> None:
    _apply(event, unit, int(event.data["seq"]))


def apply_effect_v2(event: Event, unit: UnitOfWork) -> None:
    _apply(event, unit, unit.data.seq)


async def apply_effect_async(event: Event, unit: UnitOfWork) -> None:
    await _apply_async(event, unit, int(event.data["seq"]))


async def apply_effect_v2_async(event: Event, unit: UnitOfWork) -> None:
    await _apply_async(event, unit, unit.data.seq)


if HANDLER == "async":
    processor.handler(TOPIC)(apply_effect_async)
    processor.handler(TOPIC, event_type="EffectV2", model=EffectV2)(apply_effect_v2_async)
else:
    processor.handler(TOPIC)(apply_effect)
    processor.handler(TOPIC, event_type="EffectV2", model=EffectV2)(apply_effect_v2)
