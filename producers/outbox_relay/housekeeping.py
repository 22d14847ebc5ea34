"""What a relay does besides publishing, each on its own schedule: delete published rows past
their retention, refresh the outbox status (metrics), and log its counts.

While the relay's batches fail on a database error (:meth:`Housekeeping.database_failed`, until
:meth:`Housekeeping.database_works`), the status is not read (it would fail the same way, one
more connection attempt and warning each time): its gauges are NaN, ``database_up`` is 0, and
the log line, which keeps coming, says for how long the database has been down.

While a round waits instead (a lock on the outbox table, a database or Kafka that does not
answer), the loop writes nothing: :meth:`Housekeeping.watch` writes the log line from a thread
of its own meanwhile, from the counters alone, saying for how long the relay has been stalled
and what it waits on (before, no line came for 52 s of a 45 s lock, and none said why)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.database import error_text
from pipeline.outbox.table import OutboxStatus, delete_published, outbox_status
from pipeline.plurals import counted
from pipeline.settings import OutboxSettings
from producers.outbox_relay.metrics import STALLED_AFTER_S, STATUS_INTERVAL_S, RelayMetrics

__all__ = ["STATUS_INTERVAL_S", "Housekeeping"]

_log = logging.getLogger(__name__)


@dataclass
class _Down:
    """The database failing the relay's batches: since when (monotonic), how many tries."""

    since: float
    tries: int = 0
    #: The last error, on one line.
    error: str = ""


class Housekeeping:
    """The relay's periodic chores (monotonic clock; called from the relay's loop, but for the
    thread of :meth:`watch`, which only writes the log line)."""

    def __init__(
        self, engine: Engine, settings: OutboxSettings, metrics: RelayMetrics, name: str
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._metrics = metrics
        self._name = name
        now = time.monotonic()
        self._next_cleanup = now + settings.cleanup_interval_s
        self._next_status = 0.0
        self._next_log = now + settings.log_interval_s
        self._logged_published = 0
        self._last_log = now
        #: The outbox status as last read (``None`` before the first read, and while it cannot
        #: be read).
        self.last_status: OutboxStatus | None = None
        #: Set while the relay's batches fail on a database error.
        self._down: _Down | None = None
        #: The log line's schedule is shared with the thread of :meth:`watch`.
        self._log_lock = threading.Lock()

    def cleanup(self) -> int:
        """Delete published rows older than the retention now; returns how many."""
        self._metrics.now_doing("deleting published rows")
        deleted = delete_published(
            self._engine,
            retention_s=self._settings.retention_s,
            batch_size=self._settings.cleanup_batch_size,
        )
        self._metrics.deleted.inc(deleted)
        return deleted

    def clean_up_next(self) -> None:
        """Make the next :meth:`cleanup_if_due` clean up (a ``--once`` run ends before the
        first interval would: its summary's "expired rows deleted" was always 0)."""
        self._next_cleanup = 0.0

    def cleanup_if_due(self) -> int:
        """:meth:`cleanup` once per ``cleanup_interval_s``; returns how many were deleted."""
        if time.monotonic() < self._next_cleanup:
            return 0
        self._next_cleanup = time.monotonic() + self._settings.cleanup_interval_s
        return self.cleanup()

    def database_failed(self, error: str) -> None:
        """A batch failed on a database error (``error``: its text on one line): the status is
        unknown from now on, and not read until :meth:`database_works`."""
        if self._down is None:
            self._down = _Down(time.monotonic())
        self._down.tries += 1
        self._down.error = error
        self._metrics.database_up.set(0)
        self._unknown()

    def database_works(self) -> None:
        """A batch used the database (its marks are committed): read the status again at once
        if it was down."""
        self._metrics.database_up.set(1)
        if self._down is not None:
            self._down = None
            self._next_status = 0.0

    def _unknown(self) -> None:
        self.last_status = None
        self._metrics.unknown()

    def report(self, published: int, *, final: bool = False) -> None:
        """Refresh the status when due; log ``published`` (the relay's running total) and the
        rate since the last line when due, or at once when ``final``."""
        now = time.monotonic()
        interval = self._settings.log_interval_s
        log_due = final or (interval > 0 and now >= self._next_log)
        # Read afresh for the log line (and the final figures): one read before, it showed the
        # backlog from before the rows it said were published.
        due = now >= self._next_status or log_due
        if due and self._down is None:
            self._next_status = now + STATUS_INTERVAL_S
            self._metrics.now_doing("reading the outbox status")
            try:
                self.last_status = outbox_status(self._engine)
                self._metrics.observe(self.last_status)
            except SQLAlchemyError as error:
                # Not the last figures, which read as current (a backlog of 0 for as long).
                self._unknown()
                _log.warning("cannot read the outbox status: %s", error_text(error))
        if log_due:
            self._log_line(published, final=final)

    def report_stalled(self, published: int) -> None:
        """The log line, when due while the relay has been stalled for
        :data:`~producers.outbox_relay.metrics.STALLED_AFTER_S` or more (the loop, waiting in
        its round, does not write it); reads nothing from the database."""
        if self._metrics.stalled_s() >= STALLED_AFTER_S:
            self._log_line(published, final=False)

    def watch(self, published: Callable[[], int], every_s: float = 1.0) -> Callable[[], None]:
        """Call :meth:`report_stalled` with ``published()`` every ``every_s`` from a thread of
        its own, until the function returned is called."""
        done = threading.Event()

        def run() -> None:
            while not done.wait(every_s):
                self.report_stalled(published())

        thread = threading.Thread(target=run, name="outbox-relay-watch", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(timeout=5.0)

        return stop

    def _log_line(self, published: int, *, final: bool) -> None:
        with self._log_lock:
            now = time.monotonic()
            interval = self._settings.log_interval_s
            if not final and not (interval > 0 and now >= self._next_log):
                return  # the other thread wrote it meanwhile
            self._next_log = now + interval
            count = published - self._logged_published
            elapsed = max(now - self._last_log, 1e-9)
            self._logged_published, self._last_log = published, now
            # From the watch's thread, the last figures only while they are recent.
            status = self.last_status if self._metrics.status_fresh() else None
            down = self._down
            _log.info(
                "outbox relay %s: published %d in %.0f s (%.0f/s); %s%sbacklog %s, "
                "oldest unpublished %s",
                self._name,
                count,
                elapsed,
                count / elapsed,
                ""
                if down is None
                else f"database down for {now - down.since:.0f} s, "
                f"{counted(down.tries, 'try', 'tries')} failed ({down.error}); ",
                self._stall_text(),
                "?" if status is None else status.backlog,
                "?"
                if status is None
                else "-"
                if status.oldest_unpublished_age_s is None
                else f"{status.oldest_unpublished_age_s:.1f} s",
            )

    def _stall_text(self) -> str:
        """``stalled for 45 s (claiming rows); `` while stalled, else ``was stalled ...`` for
        a round that was since the line before, else nothing."""
        stalled_s, doing = self._metrics.current_stall()
        past = self._metrics.take_stall()
        if stalled_s >= STALLED_AFTER_S:
            return f"stalled for {stalled_s:.0f} s ({doing}); "
        if past is not None:
            return f"was stalled for {past[0]:.0f} s since the line before ({past[1]}); "
        return ""
