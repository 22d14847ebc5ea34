"""The gateway's log of its answers: a line per request, except the refusals an outage repeats
for every request, which are summed up.

Each answer is one line, at the level of what it says (:func:`log_level`): a 2xx at INFO; a 4xx
at DEBUG (a client's mistake: a burst of bad requests must not flood the log, nor the ``logs``
topic it is shipped to; ``gateway_rejections_total`` has them); ``/healthz`` and ``/metrics`` at
DEBUG; a 5xx at WARNING. But an outage answers every request with the same 503
(:data:`OUTAGE_REFUSALS`): Kafka away or slow (``kafka_unavailable``, ``not_acknowledged``,
``overloaded``), or the database away: the shared Idempotency-Key store's
(``idempotency_unavailable``), the API keys' past their last read's bound
(``keys_unavailable``). A line each was 13,771 WARNING lines in 45 s with four clients retrying
while Kafka was stopped, all shipped to the ``logs`` topic once it was back. So, for each of
those codes:

1. the first refusal is its line at WARNING, saying that the next ones are summed up;
2. the next ones are their lines at DEBUG, and every ``interval_s`` (10 s) while they come one
   WARNING counts them: ``503 kafka_unavailable: 3,412 requests refused in the last 10 s
   (13,771 in 45 s so far)`` (from the first to the latest, as the end's line counts);
3. an interval after the last one ends it, in one INFO line: ``503 kafka_unavailable: none in the
   last 10 s; 13,771 requests were refused in 45 s``; the next one is a first again (1);
4. when the gateway stops, those no line counted yet get one (:meth:`RequestLog.close`).

The counters (``gateway_requests_total``, ``gateway_rejections_total``) count every request
whatever its line. Under ``pipeline gateway --workers N`` each worker sums up its own. Not
summed up: ``shutting_down`` (only as the gateway stops, at most once per open connection,
which it closes), ``internal_error`` (a fault of the gateway: each line has its traceback) and
501 ``unsupported_transfer_coding`` (one client's requests, not an outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_INTERVAL_S", "OUTAGE_REFUSALS", "RequestLog", "log_level"]

log = logging.getLogger("producers.gateway")

#: The error codes of the 503s an outage gives every request: summed up, not a line each.
OUTAGE_REFUSALS = frozenset(
    {
        "kafka_unavailable",
        "not_acknowledged",
        "overloaded",
        "idempotency_unavailable",
        "keys_unavailable",
    }
)
#: At most one line per code and interval while its refusals last.
DEFAULT_INTERVAL_S = 10.0
#: How often the summaries due are written while the gateway runs.
_TICK_S = 1.0

#: Polled by load balancers and Prometheus: their answers are logged at DEBUG, like 4xx.
_PROBES = frozenset({"/healthz", "/metrics"})


def log_level(path: str, status: int) -> int:
    """An answer's log level: probes and 4xx DEBUG, 5xx WARNING, else INFO."""
    if path in _PROBES:
        return logging.DEBUG
    if status >= 500:
        return logging.WARNING
    if status >= 400:
        return logging.DEBUG
    return logging.INFO


@dataclass
class _Streak:
    """The refusals of one code since its first (step 1), until an interval without any."""

    status: int
    first_at: float
    last_at: float
    #: When the last line about them was written, and how many came since.
    said_at: float
    unsaid: int = 0
    total: int = 1


class RequestLog:
    """One line per answer, with the refusals of :data:`OUTAGE_REFUSALS` summed up every
    ``interval_s`` (see the module's steps); ``clock`` in seconds, monotonic."""

    def __init__(
        self,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self._interval_s = interval_s
        self._clock = clock
        self._streaks: dict[str, _Streak] = {}

    def answered(
        self,
        *,
        method: str,
        path: str,
        status: int,
        code: str | None,
        replayed: bool,
        client: str | None,
        event_id: str | None,
        elapsed_s: float,
    ) -> None:
        """The line of one answer (``code``: its error code, if an error)."""
        level = log_level(path, status)
        summed_up = ""
        if level == logging.WARNING and code in OUTAGE_REFUSALS:
            if self._refused(code, status):
                summed_up = (
                    f"; the next {status} {code} answers are logged at DEBUG and counted in a "
                    f"line every {self._interval_s:g} s"
                )
            else:
                level = logging.DEBUG
        log.log(
            level,
            "%s %s -> %d %s (client %s%s, %.1f ms)%s",
            method,
            path,
            status,
            code or ("replayed" if replayed else "ok"),
            client,
            f", event {event_id}" if event_id else "",
            elapsed_s * 1000,
            summed_up,
            extra={
                "http_method": method,
                "url_path": path,
                "http_status": status,
                "error_code": code,
                "client_id": client,
                "event_id": event_id,
                "duration_ms": round(elapsed_s * 1000, 3),
            },
        )

    def _refused(self, code: str, status: int) -> bool:
        """Count a refusal of ``code``; whether it is the first of its streak."""
        self.tick()  # a summary due is written first, were the ticker late
        now = self._clock()
        streak = self._streaks.get(code)
        if streak is None:
            self._streaks[code] = _Streak(status, first_at=now, last_at=now, said_at=now)
            return True
        streak.last_at = now
        streak.unsaid += 1
        streak.total += 1
        return False

    def tick(self) -> None:
        """Write the lines due: for each code whose last line is ``interval_s`` old, how many
        came since (step 2), or that they ended (step 3)."""
        now = self._clock()
        for code, streak in list(self._streaks.items()):
            if streak.unsaid:
                if now - streak.said_at >= self._interval_s:
                    self._summary(code, streak, now)
                continue
            if now - streak.last_at < self._interval_s:  # an interval after the last refusal
                continue
            del self._streaks[code]
            log.info(
                "%d %s: none in the last %.0f s; %s %s refused in %.0f s",
                streak.status,
                code,
                now - streak.last_at,
                _requests(streak.total),
                "was" if streak.total == 1 else "were",
                streak.last_at - streak.first_at,
                extra=_extra(streak.status, code, streak.total),
            )

    def close(self) -> None:
        """The gateway stops: a line for each code's refusals not counted in one yet (step 4)."""
        now = self._clock()
        for code, streak in self._streaks.items():
            if streak.unsaid:
                self._summary(code, streak, now)
        self._streaks.clear()

    def _summary(self, code: str, streak: _Streak, now: float) -> None:
        log.warning(
            "%d %s: %s refused in the last %.0f s (%s in %.0f s so far)",
            streak.status,
            code,
            _requests(streak.unsaid),
            now - streak.said_at,
            f"{streak.total:,}",
            streak.last_at - streak.first_at,  # as the end's line counts: to the last one
            extra=_extra(streak.status, code, streak.unsaid),
        )
        streak.said_at = now
        streak.unsaid = 0

    async def lifetime(self, _app: object) -> AsyncIterator[None]:
        """An aiohttp cleanup context: the summaries due are written every second while the
        app runs; at the end, :meth:`close`."""

        async def ticking() -> None:
            while True:
                await asyncio.sleep(_TICK_S)
                self.tick()

        ticker = asyncio.create_task(ticking())
        yield
        ticker.cancel()
        self.close()


def _requests(count: int) -> str:
    return f"{count:,} request" if count == 1 else f"{count:,} requests"


def _extra(status: int, code: str, refused: int) -> dict[str, object]:
    """The fields of a summary line: those of the requests' lines it stands for, and how many."""
    return {"http_status": status, "error_code": code, "requests_refused": refused}
