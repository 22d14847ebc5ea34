"""Whether the gateway can reach Kafka and the topics it sends to, for ``GET /healthz`` and for
refusing requests at once while it cannot.

A cluster metadata request (``list_topics``) with a short timeout, its answer kept for a few
seconds. Chosen over librdkafka's ``error_cb`` because it is a positive, end-to-end answer both
ways: ``error_cb`` reports trouble (``_ALL_BROKERS_DOWN``, ``_TRANSPORT``) but never the
recovery, ``_ALL_BROKERS_DOWN`` comes only once every known broker is down, and a client that
has sent nothing yet may not have tried to connect at all. The cache bounds the cost: one
request per ``cache_s`` however often ``/healthz`` is polled, and concurrent checks share it.

The same answer lists the cluster's topics: one the gateway sends to that is missing (deleted
while it runs) is a problem too, named, where a request to it waited 30 s for a 503 that said
only "no answer".

While the gateway runs, :meth:`KafkaHealth.watch` asks every ``cache_s`` (every ``recheck_s``
while there is a problem, so that the end of it is seen soon), and says in the log when a
problem starts and when it ends. Once ``failures_to_refuse`` answers in a row found the same
kind of trouble, :meth:`KafkaHealth.standing_problem` makes a request answered 503 at once with
it, rather than held ``produce_timeout_s`` for a 503; a single failed probe (a blip) refuses
nothing, and the first good answer ends the refusals.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaException

from pipeline.topics.admin import MissingTopicsError

__all__ = ["KafkaHealth", "KafkaHealthCheck", "watch_kafka"]

log = logging.getLogger("producers.gateway")

#: How long one metadata request may take before Kafka counts as unreachable.
DEFAULT_TIMEOUT_S = 2.0
#: How long an answer is kept.
DEFAULT_CACHE_S = 5.0
#: How often :meth:`KafkaHealth.watch` asks again while there is a problem.
DEFAULT_RECHECK_S = 1.0
#: Answers in a row that must find a problem before requests are refused at once with it.
DEFAULT_FAILURES_TO_REFUSE = 2


class KafkaHealthCheck(Protocol):
    """What ``/healthz`` asks: ``None`` when Kafka answers, else a one-line reason."""

    async def problem(self) -> str | None: ...

    def known_problem(self) -> str | None:
        """The reason of the last answer, without asking Kafka again (``None``: it answered,
        or it was not asked yet)."""

    def standing_problem(self, topic: str) -> str | None:
        """Why a request to ``topic`` is refused at once, without asking Kafka: the problem
        the last answers in a row found (Kafka not answering, or ``topic`` missing);
        ``None``: send it."""

    async def watch(self) -> None:
        """Ask now and then until cancelled, saying in the log when a problem starts and
        ends (see :func:`watch_kafka`)."""


@dataclass(frozen=True)
class _Answer:
    """One probe's answer: when, Kafka's own problem, and the topics found missing."""

    at: float
    kafka: str | None
    missing: tuple[str, ...]
    #: What ``/healthz`` says: Kafka's problem, else the missing topics, else ``None``.
    problem: str | None


class KafkaHealth:
    """Kafka's reachability through ``list_topics`` (an admin client's or a producer's).

    ``list_topics(timeout=...)`` raises when the cluster does not answer in time. The reason
    names the bootstrap address and librdkafka's error, never a credential; ``refusal()`` says
    why the broker refused the client's login or TLS handshake since it was last asked, if it
    did (the admin client's ``take_security_failure``, read from librdkafka's log: the request
    itself only times out). ``topics``: those the gateway sends to; one the answer does not
    list (or lists without partitions: being deleted or created) is missing.
    """

    def __init__(
        self,
        list_topics: Callable[..., Any],
        *,
        bootstrap: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cache_s: float = DEFAULT_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
        refusal: Callable[[], str | None] = lambda: None,
        not_answering: Callable[[str], str] | None = None,
        topics: Collection[str] = (),
        recheck_s: float = DEFAULT_RECHECK_S,
        failures_to_refuse: int = DEFAULT_FAILURES_TO_REFUSE,
    ) -> None:
        if failures_to_refuse < 1:
            raise ValueError(f"failures_to_refuse must be >= 1, got {failures_to_refuse!r}")
        self._list_topics = list_topics
        self._refusal = refusal
        #: The reason given librdkafka's error when no refusal explains it (default: "Kafka at
        #: <bootstrap> does not answer (<error>)").
        self._not_answering = not_answering
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._recheck_s = recheck_s
        self._clock = clock
        self._topics = tuple(dict.fromkeys(topics))
        self._failures_to_refuse = failures_to_refuse
        #: An answer older than this is not held against a request (no one asked for a while).
        self._stale_s = 2 * (cache_s + recheck_s + timeout_s)
        self._answer: _Answer | None = None
        #: The answers in a row that found a problem (0: the last found none).
        self._failures = 0
        self._probing: asyncio.Future[str | None] | None = None

    async def problem(self) -> str | None:
        """``None`` if Kafka answered (within the last ``cache_s``) and every topic exists,
        else why it is unhealthy."""
        answer = self._answer
        if answer is not None and self._clock() - answer.at < self._cache_s:
            return answer.problem
        return await self.check()

    async def check(self) -> str | None:
        """:meth:`problem`, asked now (concurrent checks share one request)."""
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe_and_keep())
        probing = self._probing
        try:
            return await asyncio.shield(probing)
        finally:
            if probing.done() and self._probing is probing:
                self._probing = None

    def known_problem(self) -> str | None:
        """The last probe's reason, however old (``None``: Kafka answered, or no probe yet)."""
        return None if self._answer is None else self._answer.problem

    def standing_problem(self, topic: str) -> str | None:
        """The problem of the last ``failures_to_refuse`` answers in a row, if the latest is
        recent and concerns ``topic``: Kafka's own, or ``topic`` missing. Asks nothing."""
        answer = self._answer
        if (
            answer is None
            or self._failures < self._failures_to_refuse
            or self._clock() - answer.at > self._stale_s
        ):
            return None
        if answer.kafka is not None:
            return answer.kafka
        if topic in answer.missing:
            return str(MissingTopicsError([topic], self._bootstrap))
        return None

    async def watch(self) -> None:
        """Ask every ``cache_s`` (every ``recheck_s`` while there is a problem) until
        cancelled: a WARNING when a problem starts or changes, an INFO line when it ends."""
        said: str | None = None
        while True:
            problem = await self.check()
            if _kind(problem) != _kind(said):
                if problem is not None:
                    log.warning("%s; GET /healthz answers 503 meanwhile", problem)
                else:
                    log.info("Kafka answers again and every topic exists: GET /healthz is ok")
                said = problem
            await asyncio.sleep(self._cache_s if problem is None else self._recheck_s)

    async def _probe_and_keep(self) -> str | None:
        kafka, missing = await asyncio.get_running_loop().run_in_executor(None, self._probe)
        problem = kafka
        if problem is None and missing:
            problem = str(MissingTopicsError(missing, self._bootstrap))
        self._answer = _Answer(self._clock(), kafka, missing, problem)
        self._failures = 0 if problem is None else self._failures + 1
        return problem

    def _probe(self) -> tuple[str | None, tuple[str, ...]]:
        """Kafka's problem (``None``: it answered), and the topics its answer lacks."""
        try:
            metadata = self._list_topics(timeout=self._timeout_s)
        except KafkaException as exception:
            # A refusal since the last probe (``refusal`` forgets what it told): not one long
            # past, which would be blamed for every later outage of this long-running program.
            refused = self._refusal()
            if refused is not None:  # a login or TLS handshake the broker refused
                return (
                    f"Kafka at {self._bootstrap} refused the connection ({refused}); check the "
                    "PIPELINE_KAFKA__SASL_* and PIPELINE_KAFKA__SSL_* settings"
                ), ()
            error = exception.args[0] if exception.args else exception
            detail = error.str() if hasattr(error, "str") else str(error)
            if self._not_answering is not None:
                return self._not_answering(detail), ()
            return f"Kafka at {self._bootstrap} does not answer ({detail})", ()
        except Exception as error:  # anything else the client raises: still one line
            return f"Kafka at {self._bootstrap} does not answer ({type(error).__name__})", ()
        self._refusal()  # answered: a refusal logged before it is past
        return None, self._missing(metadata)

    def _missing(self, metadata: Any) -> tuple[str, ...]:
        """The topics among ``topics`` the cluster's metadata does not have (with partitions)."""
        listed = getattr(metadata, "topics", None)
        if not self._topics or not isinstance(listed, Mapping):
            return ()
        return tuple(
            name
            for name in self._topics
            if name not in listed or not getattr(listed[name], "partitions", None)
        )


#: librdkafka's words for one outage change from probe to probe ("Local: Timed out", then
#: "Local: Broker transport failure", and again): a warning each time is not "when a problem
#: starts or changes". Problems are compared without them.
_LIBRDKAFKA_DETAIL = re.compile(r" does not answer \([^)]*\)")


def _kind(problem: str | None) -> str | None:
    """``problem`` without librdkafka's detail of why Kafka does not answer."""
    if problem is None:
        return None
    return _LIBRDKAFKA_DETAIL.sub(" does not answer (...)", problem, count=1)


async def watch_kafka(kafka_health: KafkaHealthCheck, _app: object) -> AsyncIterator[None]:
    """While the app runs (its ``cleanup_ctx``), ``kafka_health.watch()`` in the background: a
    warning at the start if Kafka does not answer or a topic is missing (the gateway serves
    anyway; ``/healthz`` says 503 meanwhile), and requests are refused at once while it
    lasts."""
    task = asyncio.create_task(kafka_health.watch())
    yield
    task.cancel()
