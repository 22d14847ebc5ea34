"""The log shipper waiting for Elasticsearch: each request made beside the consuming thread, the
group served meanwhile, and outages (Elasticsearch not reached, or taking no writes) waited out.

1. :meth:`Outages.answer`: a request (a bulk, the index template, a probe) runs on a thread of
   its own. The consuming thread waits :data:`ANSWER_GRACE_S` for its answer (almost every
   answer comes within), then pauses every partition and serves the group until it comes
   (:meth:`Outages.serve_for`): the group is joined and rebalances are served, the lag gauge is
   measured every second and the metrics line comes every interval, also while Elasticsearch
   stalls (accepts the connection, never answers: the client waits its request timeout, 30 s).
   Only the Elasticsearch client is used on that thread; the consumer stays on its own.
2. :meth:`Outages.call`: a request that cannot reach Elasticsearch (refused, reset, no answer
   within the request timeout) starts an outage, counted from when that request was sent and
   said once (``cannot reach Elasticsearch at URL (connection refused)``, ``Elasticsearch at
   URL did not answer within 30 s``); the shipper waits (``outage_initial_backoff_s`` doubling
   up to ``outage_max_backoff_s``, serving the group), probes, and sends the request again.
3. :meth:`Outages.blocked`: a cluster that takes no writes (a block of the whole cluster, the
   flood-stage disk watermark, its queues full: :func:`consumers.log_batch.classify`'s
   ``blocked``) is an outage too, said once with Elasticsearch's reason; the documents are
   kept and sent again after the same waits, until it takes them.

An outage that lasts the ``--until-idle`` time of a run (:attr:`Outages.limit_s`) is a
:class:`PipelineError`; a stop asked meanwhile is :class:`Stopped`.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial
from typing import Literal, TypeVar

from confluent_kafka import TopicPartition
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, SerializationError, TransportError
from elasticsearch import ApiError, Elasticsearch

from consumers.log_batch import Position
from consumers.log_shipper_metrics import MetricsLine, ShipperCounters
from consumers.log_shipper_standing import LAG_REFRESH_S, ShipperConsumer
from pipeline.errors import PipelineError
from pipeline.logs.elasticsearch import (
    hung_up,
    refusal_of,
    refuse_an_https_port_over_http,
    unreachable,
    unreadable,
)
from pipeline.settings import LogSettings, masked_url

__all__ = ["ANSWER_GRACE_S", "Outages", "Stopped"]

_log = logging.getLogger("consumers.log_shipper")

T = TypeVar("T")
#: How Elasticsearch is away, as the metrics line says it.
Away = Literal["unreachable", "not taking writes"]

#: How long an answer is waited for before the partitions are paused and the group served: the
#: lag gauge's refresh (pausing makes the consumer drop what it fetched ahead, so not at once).
ANSWER_GRACE_S = LAG_REFRESH_S
#: How long one poll of the group lasts while waiting: out of an outage's back-off, and for an
#: answer (which ends the wait when it comes).
_SERVE_POLL_S = 0.5
_ANSWER_POLL_S = 0.1
_PROBE_TIMEOUT_S = 5.0


class Stopped(Exception):
    """Stop was asked while waiting for Elasticsearch."""


class Outages:
    """Elasticsearch's requests and outages for one shipper (see the module docstring).
    ``tick`` is called at each poll while the group is served: the shipper measures its lag
    there and says its metrics line when due."""

    def __init__(
        self,
        consumer: ShipperConsumer,
        es: Elasticsearch,
        settings: LogSettings,
        *,
        stop: threading.Event,
        es_url: str,
        counters: ShipperCounters,
        metrics_line: MetricsLine,
        tick: Callable[[], None],
    ) -> None:
        self._consumer = consumer
        self._es = es
        self._settings = settings
        self._stop = stop
        self._es_url = es_url
        self._counters = counters
        self._metrics_line = metrics_line
        self._tick = tick
        #: ``run(until_idle_s=...)``: how long an outage may last before the run gives up.
        self.limit_s: float | None = None
        self._away: Away | None = None
        self._since = 0.0  # when the outage started (its first unanswered request was sent)
        self._delay = settings.outage_initial_backoff_s

    # ---- requests -------------------------------------------------------------------------

    def call(self, request: Callable[[], T]) -> T:
        """``request()`` (:meth:`answer`); while Elasticsearch cannot be reached: pause, back
        off, probe, and ask again. A refusal of the credentials or of the TLS handshake, and
        an answer that is not Elasticsearch's, are a :class:`PipelineError` at once (no wait
        mends them), as is an ``http://`` URL whose server hangs up at once and speaks TLS (an
        HTTPS port: ``refuse_an_https_port_over_http``, asked only then, so that a stalled
        Elasticsearch keeps no start waiting for it); Elasticsearch's other error answers
        (``ApiError``) are raised."""
        while True:
            sent = time.monotonic()
            try:
                result = self.answer(request)
            except SerializationError as error:
                # No Elasticsearch answered (another server, one without a content type): no
                # wait mends that. Its message holds the whole answer: not for a line.
                raise PipelineError(unreadable(self._es_url, error)) from None
            except (TransportConnectionError, ConnectionTimeout, ApiError) as error:
                refusal = refusal_of(error)
                if refusal is not None:
                    raise PipelineError(refusal) from None
                if isinstance(error, ApiError):
                    raise
                waited = time.monotonic() - sent
                if hung_up(self._es_url, error):  # at once: an HTTPS port? (asked off the loop)
                    self.answer(partial(refuse_an_https_port_over_http, self._es, self._es_url))
                self._begin("unreachable", unreachable(self._url, error, waited), sent)
            else:
                if self._away == "unreachable":
                    self._end(f"Elasticsearch at {masked_url(self._url)} answers again")
                return result
            while True:  # back off (serving the group, partitions paused), then probe
                self._back_off()
                if self.answer(self._probe):
                    break

    def answer(self, request: Callable[[], T]) -> T:
        """``request()``'s result (or its exception), made on a thread of its own; the group is
        served while its answer takes longer than :data:`ANSWER_GRACE_S`. :class:`Stopped`
        when stop is asked meanwhile: the request is left to end on its own (its documents
        are not acknowledged, so they come again; a redelivery overwrites)."""
        sent = time.monotonic()
        future = _in_background(request)
        if not wait([future], timeout=ANSWER_GRACE_S).done:
            self._metrics_line.asked_since = sent
            try:
                if self.serve_for(math.inf, until=future.done):
                    raise self._stopped()
            finally:
                self._metrics_line.asked_since = None
        return future.result()

    def _probe(self) -> bool:
        """Whether Elasticsearch answers and its shards can take writes (status yellow+)."""
        try:
            health = self._es.options(
                request_timeout=_PROBE_TIMEOUT_S + 2, max_retries=0
            ).cluster.health(wait_for_status="yellow", timeout=f"{_PROBE_TIMEOUT_S:g}s")
        except (TransportError, ApiError):
            return False
        return not health.get("timed_out", False) and health.get("status") in ("green", "yellow")

    # ---- outages --------------------------------------------------------------------------

    def blocked(self, reason: str) -> None:
        """Elasticsearch answered that it takes no writes (``reason``, its own): an outage (its
        line the first time); wait its next back-off, serving the group."""
        self._begin(
            "not taking writes",
            f"Elasticsearch at {masked_url(self._url)} takes no writes ({reason}); the "
            "documents are kept and sent again",
            time.monotonic(),
        )
        self._back_off()

    def writes_taken(self) -> None:
        """Elasticsearch took the documents it was sent: an outage of no writes is over."""
        if self._away == "not taking writes":
            self._end(f"Elasticsearch at {masked_url(self._url)} takes writes again")

    @property
    def _url(self) -> str:
        return self._es_url or "PIPELINE_ELASTICSEARCH__URL"

    def _begin(self, away: Away, line: str, since: float) -> None:
        if self._away is None:
            self._counters.outages += 1
            self._since, self._delay = since, self._settings.outage_initial_backoff_s
        if away != self._away:
            _log.error("%s; consumption paused", line)
        self._away = away
        self._metrics_line.away_since, self._metrics_line.away_as = self._since, away

    def _end(self, line: str) -> None:
        self._away = None
        self._metrics_line.away_since = None
        _log.warning("%s; consumption resumed", line)

    def _back_off(self) -> None:
        """Wait the outage's next delay, serving the group; a :class:`PipelineError` once the
        outage has lasted :attr:`limit_s`, :class:`Stopped` when stop is asked."""
        limit = self.limit_s
        if limit is not None and time.monotonic() - self._since >= limit:
            # A job (--until-idle) ends rather than wait: nothing is committed past what
            # Elasticsearch acknowledged, so the next run ships the rest.
            raise PipelineError(
                f"elasticsearch {self._away} for {limit:g} s (the --until-idle time): "
                "stopped; what was not shipped is shipped by the next run"
            )
        if self.serve_for(self._delay):
            raise self._stopped()
        self._delay = min(self._delay * 2, self._settings.outage_max_backoff_s)

    def _stopped(self) -> Stopped:
        self._away = None
        self._metrics_line.away_since = None
        return Stopped()

    # ---- serving the group ----------------------------------------------------------------

    def serve_for(self, seconds: float, *, until: Callable[[], bool] | None = None) -> bool:
        """Wait ``seconds`` (or until ``until()`` is true) with every partition paused,
        serving the group (rebalances, the poll interval) and calling ``tick``; True if stop
        was asked.

        A record that still comes (fetched before the pause, or from a partition assigned
        meanwhile) is sought back to, so it is read again after the batch in hand.
        """
        deadline = time.monotonic() + seconds
        poll = _SERVE_POLL_S if until is None else _ANSWER_POLL_S
        try:
            while not self._stop.is_set():
                self._pause_all()
                self._tick()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (until is not None and until()):
                    return False
                messages = self._consumer.consume(num_messages=100, timeout=min(remaining, poll))
                first: dict[Position, int] = {}
                for message in messages:
                    if message.error() is None:
                        where = (message.topic(), message.partition())
                        first[where] = min(first.get(where, message.offset()), message.offset())
                for (topic, partition), offset in first.items():
                    self._consumer.pause([TopicPartition(topic, partition)])
                    self._consumer.seek(TopicPartition(topic, partition, offset))
            return True
        finally:
            assigned = list(self._consumer.assignment())
            if assigned:
                self._consumer.resume(assigned)

    def _pause_all(self) -> None:
        partitions = list(self._consumer.assignment())
        if partitions:
            self._consumer.pause(partitions)


def _in_background(request: Callable[[], T]) -> Future[T]:
    """``request()`` on a daemon thread of its own (one a stalled Elasticsearch holds for its
    request timeout does not keep the process from ending), with the caller's log context."""
    future: Future[T] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            result = context.run(request)
        except BaseException as error:  # raised again by whoever waits for the answer
            future.set_exception(error)
        else:
            future.set_result(result)

    threading.Thread(target=run, name="log-shipper-elasticsearch", daemon=True).start()
    return future
