"""A processor's database not answering: what its log and its metrics say meanwhile.

While the database is away, every event in flight finds it unavailable and waits to try again
(the engine's backoff, without limit: the outage is not the event's fault). Each of them
logged a WARNING: about 50 lines in the first second of an outage and more than one a second
after it, with the default 16 in flight, each also shipped to the logs topic and on to
Elasticsearch; and no metric said the processor was stuck (its lag's age stayed low, as it
still fetched). Now:

1. the first attempt that finds the database unavailable is logged at once, with its event;
   unless all it found was a pooled connection the database had dropped (it restarted, or
   ended the session): the next attempt takes a new connection, and only if that one fails
   too is the outage logged (with its error). Every service logged a second outage of 0 s
   after each restart of PostgreSQL, of one such connection;
2. later ones are counted, and logged at most once every ``every_s`` seconds (a minute);
3. the first attempt that gets through after that says the database answers again, and after
   how long (nothing, after a dropped connection alone); or, with a ``probe``, the database
   answering it while no attempt failed for a probe's interval: attempts that hold their
   transaction long (a handler waiting 30 s on another system) got through only that long
   after the database was back, and all that time the processor said it was unavailable;
4. meanwhile ``pipeline_database_up`` is 0 and the summary line says for how long
   (:class:`~pipeline.processing.metrics.ProcessorMetrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from pipeline.database import error_text
from pipeline.plurals import counted
from pipeline.processing.attempt import record_log_context
from pipeline.processing.metrics import ProcessorMetrics
from pipeline.processing.records import Record

__all__ = ["OUTAGE_LOG_EVERY_S", "PROBE_EVERY_S", "DatabaseOutage", "database_answers"]

logger = logging.getLogger("pipeline.processing")

#: While the database stays away, the outage is logged again at most this often.
OUTAGE_LOG_EVERY_S = 60.0
#: Dropped pooled connections alone are said after this long (each attempt takes a new one, so
#: only a database that keeps dropping them gets there).
_DROPPED_QUIET_S = 5.0
#: While the database is unavailable, the probe asks it this often whether it answers.
PROBE_EVERY_S = 2.0


class DatabaseOutage:
    """Attempts of processor ``name`` that found the database unavailable, and when it came back
    (``clock``: monotonic seconds; ``probe``: asks the database whether it answers, every
    ``probe_every_s`` by ``sleep`` while it is unavailable; started by the first failure, on
    the running event loop)."""

    def __init__(
        self,
        name: str,
        metrics: ProcessorMetrics,
        *,
        consumer_group: str,
        every_s: float = OUTAGE_LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[], Awaitable[bool]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        probe_every_s: float = PROBE_EVERY_S,
    ) -> None:
        self._name = name
        self._metrics = metrics
        self._consumer_group = consumer_group
        self._every_s = every_s
        self._clock = clock
        #: When the first attempt of this outage failed; ``None`` while the database answers.
        self.since: float | None = None
        self._failures = 0
        #: When the outage was last logged; ``None`` while it was not (a dropped connection).
        self._logged_at: float | None = None
        self._failed_at = 0.0  # the latest failed attempt
        #: Whether the latest failure was the database not reached (what the probe can tell).
        self._unreached = False
        self._probe, self._sleep, self._probe_every_s = probe, sleep, probe_every_s
        self._watch: asyncio.Task[None] | None = None

    def failed(self, record: Record, event_id: str, error: BaseException, delay_s: float) -> None:
        """An attempt of ``event_id`` found the database unavailable; it is tried again in
        ``delay_s`` seconds."""
        now = self._clock()
        self._failures += 1
        self._failed_at = now
        self._unreached = _not_reached(error)
        if self.since is None:
            self.since = now
            self._metrics.set_database_down_since(now)
            if self._probe is not None and (self._watch is None or self._watch.done()):
                self._watch = asyncio.get_running_loop().create_task(self._probing())
        if self._logged_at is None:
            if _dropped_connection(error) and now - self.since < _DROPPED_QUIET_S:
                return  # said once an attempt on a new connection fails too
            self._logged_at = now
            with record_log_context(record, event_id, self._consumer_group):
                logger.warning(
                    "%s: the database is unavailable (%s); retrying %s in %.1f s (the other "
                    "events wait too; said again at most every %.0f s while it lasts)",
                    self._name,
                    error_text(error, most=200),
                    event_id,
                    delay_s,
                    self._every_s,
                )
            return
        if now - self._logged_at < self._every_s:
            return
        self._logged_at = now
        logger.warning(
            "%s: the database is still unavailable after %.0f s (%s so far): %s",
            self._name,
            now - self.since,
            counted(self._failures, "failed attempt"),
            error_text(error, most=200),
        )

    def answered(self) -> None:
        """An attempt got through: the end of the outage, if there was one."""
        if self.since is None:
            return
        if self._logged_at is None:  # a dropped connection, replaced: no outage to end
            self._ended()
            return
        logger.info(
            "%s: the database answers again, after %.0f s unavailable (%s)",
            self._name,
            self._clock() - self.since,
            counted(self._failures, "failed attempt"),
        )
        self._ended()

    async def _probing(self) -> None:
        """Until the outage ends: ask the database every probe interval; it is over when the
        database answers, no attempt failed since the probe before, and the latest failure was
        the database not reached (a read-only database, a full disk or a lock not granted
        answers a probe all the while: only an attempt that gets through ends those)."""
        assert self._probe is not None
        while self.since is not None:
            await self._sleep(self._probe_every_s)
            quiet = self._clock() - self._failed_at >= self._probe_every_s
            if self.since is not None and quiet and self._unreached and await self._probe():
                self.answered()

    async def stop(self) -> None:
        """No more probing (the processor stops)."""
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    def _ended(self) -> None:
        self.since = self._logged_at = None
        self._failures = 0
        self._metrics.set_database_down_since(None)


#: PostgreSQL's SQLSTATEs of a database not reached: a connection exception (class 08), the
#: server shutting down or starting (57P01-03).
_NOT_REACHED_CLASS = "08"
_NOT_REACHED = frozenset({"57P01", "57P02", "57P03"})


def _not_reached(error: BaseException) -> bool:
    """Whether ``error`` says the database was not reached (lost, refused, shutting down or
    starting), rather than reached and unable to do the work (read-only, disk full, a lock or
    a serialization failure, SQLite busy)."""
    if isinstance(error, DisconnectionError) or _dropped_connection(error):
        return True
    if not isinstance(error, OperationalError) or isinstance(error.orig, sqlite3.Error):
        return False
    state = getattr(error.orig, "sqlstate", None)
    if not isinstance(state, str):
        return True  # the driver's own: a connection it could not make, or lost
    return state[:2] == _NOT_REACHED_CLASS or state in _NOT_REACHED


def _dropped_connection(error: BaseException) -> bool:
    """Whether ``error`` is only a pooled connection the database had dropped: SQLAlchemy
    found it closed (a disconnect) and threw it and the pool's older ones away."""
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def database_answers(engine: Engine) -> bool:
    """Whether ``engine``'s database answers a statement now (blocking: run it in a thread)."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception:  # unavailable, whatever the reason: the outage goes on
        return False
    return True
