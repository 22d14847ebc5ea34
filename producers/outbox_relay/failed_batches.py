"""Batches of the outbox relay failing one after another: how long to wait before the next
try, and what to log, so a database outage is neither a tight loop nor two log lines a second."""

from __future__ import annotations

import logging
import time

from pipeline.plurals import counted

__all__ = ["FAILURE_LOG_EVERY_S", "RETRY_MAX_WAIT_S", "FailedBatches"]

# The relay's own logger: these are its lines, filtered and searched with its others.
_log = logging.getLogger("producers.outbox_relay.relay")

#: The longest wait before a failed batch is tried again (unless the poll interval is longer):
#: short enough that a relay is back within seconds of its database.
RETRY_MAX_WAIT_S = 5.0
#: While batches keep failing with the same error, it is logged at most this often.
FAILURE_LOG_EVERY_S = 60.0


class FailedBatches:
    """Batches failing one after another: how long to wait before the next try, and what to log.

    The wait is ``first_wait_s``, doubled at each failure up to ``max_wait_s`` (or
    ``first_wait_s``, if longer). A failure is logged at once; the same error again at most
    once every ``every_s`` seconds, with how many tries failed so far; and one line when a
    batch works again. (Each failure logged, after a wait of the poll interval, made two lines
    a second through a database outage, with the LISTEN warnings.)
    """

    def __init__(
        self,
        name: str,
        first_wait_s: float,
        *,
        max_wait_s: float = RETRY_MAX_WAIT_S,
        every_s: float = FAILURE_LOG_EVERY_S,
    ) -> None:
        self._name = name
        self._first_wait_s = first_wait_s
        self._max_wait_s = max(max_wait_s, first_wait_s)
        self._every_s = every_s
        #: Failures since the last batch that worked.
        self.count = 0
        self._since = 0.0
        #: When each error text was last logged, in this run of failures.
        self._said: dict[str, float] = {}

    def failed(self, error: str, now: float | None = None) -> float:
        """Note a failed batch (``error``: the error on one line) and log it when due; returns
        how long to wait before the next try."""
        now = time.monotonic() if now is None else now
        if not self.count:
            self._since = now
        self.count += 1
        wait_s = min(self._first_wait_s * 2.0 ** min(self.count - 1, 32), self._max_wait_s)
        last = self._said.get(error)
        if last is not None and now - last < self._every_s:
            return wait_s
        self._said[error] = now
        if self.count == 1:
            _log.error(
                "outbox relay %s: batch failed, retrying in %g s (then less often, at least "
                "every %g s, while it fails): %s",
                self._name,
                wait_s,
                self._max_wait_s,
                error,
            )
        else:
            _log.error(
                "outbox relay %s: batches still failing, %s in %.0f s (next try in %g s; the "
                "same error is logged at most every %g s): %s",
                self._name,
                counted(self.count, "failed try", "failed tries"),
                now - self._since,
                wait_s,
                self._every_s,
                error,
            )
        return wait_s

    def worked(self, now: float | None = None) -> bool:
        """A batch worked: say so if batches were failing; ``True`` if they were."""
        if not self.count:
            return False
        now = time.monotonic() if now is None else now
        _log.info(
            "outbox relay %s: batches work again, after %s in %.0f s",
            self._name,
            counted(self.count, "failed try", "failed tries"),
            now - self._since,
        )
        self.count = 0
        self._said.clear()
        return True
