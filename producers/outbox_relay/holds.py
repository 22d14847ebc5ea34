"""What the relay remembers between batches about the rows it could not publish.

- :class:`TooLarge`: rows Kafka refused as too large (the broker's ``MSG_SIZE_TOO_LARGE``, or
  the client's at once). Such a row is held from then on as the relay's own size check holds
  one (not sent, nor its aggregate's later rows), and tried again once ``recheck_s`` passed (a
  raised ``max.message.bytes`` lets it go then). Before, it was sent again with every batch,
  about once a second, and its aggregate's later rows of the same batch with it: they reached
  Kafka ahead of it, one copy per batch (18 copies in 20 s).
- :class:`LeftRows`: the rows this relay left unpublished at their last try, held back (and
  why) or sent and not acknowledged, each counted once however often it was tried. They make
  the ``pipeline_outbox_held_rows`` gauge and the relay's ``failed`` total; counting every try
  made a backlog blocked on a missing topic look like 900 failures in 12 s for 100 rows never
  sent. The rows whose send failed are also sent again *alone* for their aggregate: its later
  rows in the batch wait until the failed one is acknowledged (see ``retrying``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

from pipeline.outbox.table import OutboxRecord

__all__ = ["HELD_KINDS", "Hold", "LeftRows", "TooLarge"]

#: Why rows are held back (the ``reason`` label of ``pipeline_outbox_held_rows``):
#: ``topic_missing``, ``too_large`` (over the topic's limit, by the relay's estimate or by
#: Kafka's refusal), ``refused`` (the client refused it at once for another reason) and
#: ``behind_failed`` (later rows of an aggregate whose row is being sent again after it failed).
HELD_KINDS = ("topic_missing", "too_large", "refused", "behind_failed")


class Hold(NamedTuple):
    """Why a row is not sent: the text logged, and its kind (one of :data:`HELD_KINDS`)."""

    reason: str
    kind: str


class TooLarge:
    """The rows Kafka refused as too large, held for ``recheck_s`` after each refusal."""

    def __init__(self, recheck_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._recheck_s = recheck_s
        self._clock = clock
        self._rows: dict[int, tuple[Hold, float]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def note(self, position: int, hold: Hold) -> None:
        """``position`` was refused as too large now."""
        self._rows[position] = (hold, self._clock())

    def holds(self, records: Sequence[OutboxRecord]) -> dict[int, Hold]:
        """The rows of ``records`` still held; a row whose ``recheck_s`` passed is let go (and
        forgotten: refused again, it is noted again)."""
        if not self._rows:
            return {}
        now = self._clock()
        # Forget expired rows, claimed or not: a row deleted meanwhile is never claimed again.
        for position in [p for p, (_, at) in self._rows.items() if now - at >= self._recheck_s]:
            del self._rows[position]
        rows = self._rows
        return {r.position: rows[r.position][0] for r in records if r.position in rows}


class _Left(NamedTuple):
    topic: str
    #: One of :data:`HELD_KINDS`, or ``unacknowledged`` (sent, and Kafka did not acknowledge it).
    kind: str
    #: Kafka failed it (or refused it as too large): sent again alone for its aggregate.
    retry: bool
    seen_at: float


class LeftRows:
    """The rows this relay left unpublished at their last try, by position (see the module
    docstring); a row is forgotten once published, or when no batch of this relay claimed it
    for ``forget_s`` (another relay publishes it, or it was deleted)."""

    def __init__(self, forget_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._forget_s = forget_s
        self._clock = clock
        self._rows: dict[int, _Left] = {}
        self._purged_at = clock()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def retrying(self) -> set[int]:
        """The rows Kafka failed (or refused as too large) at their last try."""
        return {position for position, left in self._rows.items() if left.retry}

    def update(
        self,
        records: Sequence[OutboxRecord],
        held: Mapping[int, tuple[str, str]],
        unacknowledged: Collection[int],
        retry: Collection[int],
    ) -> None:
        """After a batch: ``held`` (position to the topic and kind it is held by) were not
        sent, ``unacknowledged`` were sent and not acknowledged, ``retry`` of those failed (or
        were refused as too large); every other row of ``records`` was published or is no
        longer left."""
        now = self._clock()
        if now - self._purged_at >= self._forget_s:
            self._purged_at = now
            self._rows = {p: v for p, v in self._rows.items() if now - v.seen_at < self._forget_s}
        if not (self._rows or held or unacknowledged):
            return  # the usual batch: nothing left before, nothing left now
        rows = self._rows
        for record in records:
            rows.pop(record.position, None)
        for position, (topic, kind) in held.items():
            rows[position] = _Left(topic, kind, position in retry, now)
        by_position = {record.position: record for record in records} if unacknowledged else {}
        for position in unacknowledged:
            topic = by_position[position].topic
            rows[position] = _Left(topic, "unacknowledged", position in retry, now)

    def held(self) -> Counter[tuple[str, str]]:
        """Rows held back (not published; not sent at their last try) by (topic, kind): a row
        Kafka refused as too large was sent before, and that send counted as a failure."""
        return Counter(
            (left.topic, left.kind) for left in self._rows.values() if left.kind != "unacknowledged"
        )

    def positions(self) -> Iterable[int]:
        return self._rows.keys()
