"""The processor of bench/e2e_latency.py and bench/scale_out.py: each event's effect is a row.

Run as ``pipeline process bench.effect_rows:processor`` (from the repository's root), configured
by the environment:

- ``BENCH_EFFECTS_TOPIC`` (required) and ``BENCH_EFFECTS_GROUP`` (the consumer group);
- ``BENCH_EFFECTS_SLEEP_MS``: how long each handler call waits first (``await asyncio.sleep``:
  an I/O-bound handler, e.g. a call to another service), 0 by default.

The handler is ``async``, so events take the runtime's group-commit path (inbox rows and
effects of many events in one transaction). The effect row holds the event id, the wall-clock
time (``time.time()``) at which the row was written in the event's transaction, and the pid:
the "processed effect" the benches time. The transaction commits right after, with the rest
of its group (a few ms), so an effect time is the moment the effect was applied, not yet
committed.
"""

from __future__ import annotations

import asyncio
import os
import time

from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.processing import Processor, UnitOfWork

tables = MetaData()
effects = Table(
    "bench_effects",
    tables,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(64), nullable=False, index=True),
    Column("handled_at", Float, nullable=False, index=True),  # the benches read by time
    Column("pid", Integer, nullable=False),
)

TOPIC = os.environ.get("BENCH_EFFECTS_TOPIC", "bench.effects.unset")
processor = Processor(os.environ.get("BENCH_EFFECTS_GROUP", "bench-effects"))
_SLEEP_S = float(os.environ.get("BENCH_EFFECTS_SLEEP_MS", "0")) / 1000


@processor.on_start
def create_table(database: Engine) -> None:
    tables.create_all(database)


@processor.handler(TOPIC)
async def apply_effect(event: Event, unit: UnitOfWork) -> None:
    if _SLEEP_S:
        await asyncio.sleep(_SLEEP_S)

    def write(session: Session) -> None:
        session.execute(
            insert(effects).values(event_id=event.id, handled_at=time.time(), pid=os.getpid())
        )

    unit.write(write)
