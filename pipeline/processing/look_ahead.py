"""Inbox look-ups started ahead: for the events that wait for a place of ``max_in_flight``.

An ``async`` handler's event is looked up in the inbox (seen before? its key parked?) before
its handler runs. Done when the event gets its place, the look-up's round trip held that place
while the handler could not start yet: on PostgreSQL, on a busy machine, a group look-up took
1.5-2.5 ms (median) against a 2 ms handler, so the events in flight spent more time waiting
for it than in their handlers.

:class:`LookAhead` starts the look-up as soon as an event is its key's next one to run (its
lane's head, every event of its key before it finished: committed or dead-lettered), while it
still waits for a place; when it gets one, the answer is usually there. The answer is what
the look-up at its start would have said, since what it reads only changes by:

- the events of its own key before it (a dead letter parks the key): all finished before it
  became its lane's head, so before the look-up was sent;
- another instance handling the same event during a rebalance, or an operator's redrive: the
  same window the look-up at the start had (between look-up and commit), which the commit
  closes as before (the inbox row is claimed there; an event found recorded then is a
  duplicate and its writes are dropped).

Without an order to wait for (``ordering=none``) an event is ready as soon as it arrives,
before the earlier events of its key ran (the one that parks the key, the first copy of a
duplicate): such events are looked up when they start, as before (the lanes name only their
heads, :meth:`~pipeline.processing.lanes.KeyLanes.take_waiting`).

Only the first attempt uses it (retries take the per-record attempt, which looks up in its own
transaction); the look-ups of revoked partitions are dropped, never used by their next owner's
events at the same offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from typing import NamedTuple

from pipeline.envelope import EnvelopeError, Event
from pipeline.processing.attempt import Redrive, decode_record
from pipeline.processing.group_commit import Seen
from pipeline.processing.grouper import Grouper
from pipeline.processing.lanes import Work
from pipeline.processing.processor import Processor, Route
from pipeline.processing.records import Record

__all__ = ["LookAhead", "LookedUp"]

LookUps = Grouper[tuple[str, str, bytes | None], Seen]
TopicPartition = tuple[str, int]


class LookedUp(NamedTuple):
    """An event decoded and routed ahead, and its inbox look-up (running or done)."""

    event: Event
    route: Route
    seen: asyncio.Future[Seen]


class LookAhead:
    """The look-ups started ahead of ``processor``'s ``async`` handlers' events, through
    ``look_ups`` (the engine's grouper)."""

    def __init__(self, processor: Processor, look_ups: LookUps) -> None:
        self._processor = processor
        self._look_ups = look_ups
        self._started: dict[Work[Record], LookedUp] = {}

    def __len__(self) -> int:
        return len(self._started)

    def start(self, works: Iterable[Work[Record]]) -> None:
        """Start the look-ups of ``works`` (lanes' heads waiting for a place) that take the
        group path: an ``async`` handler's event, decodable, routed, not a redrive."""
        for work in works:
            if work in self._started:
                continue
            record = work.payload
            try:
                event = decode_record(record)
            except EnvelopeError:
                continue  # the per-record attempt dead-letters it
            route = self._processor.route(record.topic, event.type)
            if route is None or not route.is_async or Redrive.of(record) is not None:
                continue
            # The grouper's own future: a task to await it cost more than the look-up saved
            # when the look-up is quick (SQLite on the loop, a no-op handler).
            # (A failed look-up nobody awaits any more, its partition revoked, logs nothing:
            # the grouper marks a group's error as retrieved.)
            seen = self._look_ups.submit_nowait((event.id, record.topic, record.key))
            self._started[work] = LookedUp(event, route, seen)

    def take(self, work: Work[Record]) -> LookedUp | None:
        """``work``'s look-up started ahead, if any (once)."""
        return self._started.pop(work, None)

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """Drop the look-ups of ``partitions`` (revoked, or assigned anew)."""
        wanted = set(partitions)
        for work in [w for w in self._started if (w.topic, w.partition) in wanted]:
            del self._started[work]
