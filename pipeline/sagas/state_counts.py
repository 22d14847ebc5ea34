"""Saga instances by definition and state, counted from the database without reading every row.

The ``pipeline_sagas`` gauge is refreshed every few seconds. Counting the whole table each time
(``GROUP BY name, status``) read every saga ever started, and the table only grows: at a
million sagas that is a scan of gigabytes of saga state every five seconds. So
:class:`SagaStateCounts` counts:

1. sagas in a live state (running, compensating, confirming, or stuck waiting for an operator)
   afresh at each refresh, through the ``(status, updated_at)`` index: as many rows as sagas
   are open;
2. sagas in a terminal state (completed, compensated, resolved: they never change again) once,
   at the first refresh, up to a cutoff a minute (``overlap``) before it; afterwards only those
   whose ``updated_at`` is at or after the previous cutoff, each saga id counted once (the ids
   of the last ``overlap`` are remembered for that).

The overlap covers the clocks of several orchestrators and transactions that commit a while
after their decision: a terminal transition that commits more than ``overlap`` after its
``updated_at`` is not counted until the orchestrator restarts.

With a retention (``sagas.retention_s``: ended sagas are deleted that long after they ended),
the terminal states count the sagas that ended within it: at each refresh the ones that have
just aged out of it are read (a range of the index, as many rows as ended in the time since the
previous refresh) and taken off. Ended sagas are deleted only a margin later
(:data:`DELETE_MARGIN`), so every orchestrator has seen them leave before they go, whichever
orchestrator deletes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pipeline.outbox.table import as_utc
from pipeline.sagas.state import TERMINAL, SagaStatus
from pipeline.sagas.store import in_namespace, sagas_table

__all__ = ["DELETE_MARGIN", "LIVE", "SagaStateCounts", "by_state", "deletable_before"]

#: The states a saga may still leave: counted afresh at every refresh.
LIVE: tuple[str, ...] = tuple(sorted(set(get_args(SagaStatus)) - TERMINAL))
_TERMINAL = tuple(sorted(TERMINAL))

_t = sagas_table.c
_LIVE_COUNTS = (
    sa.select(_t.name, _t.status, sa.func.count())
    .where(_t.status.in_(LIVE))
    .group_by(_t.name, _t.status)
)
_TERMINAL_BEFORE = (
    sa.select(_t.name, _t.status, sa.func.count())
    .where(_t.status.in_(_TERMINAL), _t.updated_at < sa.bindparam("cutoff"))
    .group_by(_t.name, _t.status)
)
_TERMINAL_BETWEEN = (
    sa.select(_t.name, _t.status, sa.func.count())
    .where(
        _t.status.in_(_TERMINAL),
        _t.updated_at >= sa.bindparam("start"),
        _t.updated_at < sa.bindparam("end"),
    )
    .group_by(_t.name, _t.status)
)
#: Ended sagas are deleted this long after they left the counts' retention window (longer
#: than any refresh interval and the clock differences of several orchestrators).
DELETE_MARGIN = timedelta(minutes=10)


def deletable_before(now: datetime, retention: timedelta) -> datetime:
    """The end time before which an ended saga may be deleted: ``retention`` and
    :data:`DELETE_MARGIN` before ``now`` (what the orchestrators and ``pipeline saga prune``
    delete)."""
    return now - retention - DELETE_MARGIN


_TERMINAL_SINCE = sa.select(_t.saga_id, _t.name, _t.status, _t.updated_at).where(
    _t.status.in_(_TERMINAL), _t.updated_at >= sa.bindparam("since")
)

Key = tuple[str, str]  # (saga name, state)

_Select = TypeVar("_Select", bound=sa.Select[Any])


def _of_namespace(namespace: str | None) -> Callable[[_Select], _Select]:
    """What narrows a query to the sagas of ``namespace`` (nothing for ``None``)."""
    if namespace is None:
        return lambda query: query
    return lambda query: query.where(in_namespace(namespace))


class SagaStateCounts:
    """Running counts of sagas by ``(name, state)``; see the module docstring. One per
    process (it remembers what it counted); not thread-safe."""

    def __init__(
        self,
        overlap: timedelta = timedelta(minutes=1),
        retention: timedelta | None = None,
        namespace: str | None = None,
    ) -> None:
        """``namespace``: count only the sagas of that topic namespace (one saga system's, in
        a database several share)."""
        of_namespace = _of_namespace(namespace)
        self._live_counts = of_namespace(_LIVE_COUNTS)
        self._terminal_before = of_namespace(_TERMINAL_BEFORE)
        self._terminal_between = of_namespace(_TERMINAL_BETWEEN)
        self._terminal_since = of_namespace(_TERMINAL_SINCE)
        self._overlap = overlap
        self._retention = retention
        self._terminal: Counter[Key] = Counter()  # terminal sagas counted so far
        # The next refresh reads terminal rows from here; None before the first (a full count).
        self._since: datetime | None = None
        self._recent: dict[str, datetime] = {}  # terminal ids counted at or after _since
        self._window_start: datetime | None = None  # with a retention: older ones are off

    def refresh(self, connection: Connection | Session, now: datetime) -> dict[Key, int]:
        """The counts as of now (``now``: the orchestrator's clock, as ``updated_at``)."""
        cutoff = now - self._overlap
        start = None if self._retention is None else now - self._retention
        if self._since is None:
            rows = (
                connection.execute(self._terminal_before, {"cutoff": cutoff})
                if start is None
                else connection.execute(self._terminal_between, {"start": start, "end": cutoff})
            )
            for name, status, count in rows:
                self._terminal[(name, status)] = int(count)
            self._since = cutoff
            self._window_start = start
        for saga_id, name, status, updated_at in connection.execute(
            self._terminal_since, {"since": self._since}
        ):
            if saga_id not in self._recent:
                self._recent[saga_id] = as_utc(updated_at)
                self._terminal[(name, status)] += 1
        if cutoff > self._since:
            self._since = cutoff
            self._recent = {id_: at for id_, at in self._recent.items() if at >= cutoff}
        if start is not None and self._window_start is not None and start > self._window_start:
            window = {"start": self._window_start, "end": start}
            for name, status, count in connection.execute(self._terminal_between, window):
                key = (name, status)
                self._terminal[key] = max(0, self._terminal[key] - int(count))
            self._window_start = start
        counts: dict[Key, int] = {key: n for key, n in self._terminal.items() if n}
        for name, status, count in connection.execute(self._live_counts):
            counts[(name, status)] = int(count)
        return counts


def by_state(counts: Mapping[Key, int]) -> dict[str, int]:
    """The counts summed over saga names."""
    totals: dict[str, int] = {}
    for (_, status), count in counts.items():
        totals[status] = totals.get(status, 0) + count
    return totals
