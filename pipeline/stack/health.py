"""Whether the gateway can reach Kafka, for ``GET /healthz``.

A cluster metadata request (``list_topics``) with a short timeout, its answer kept for a few
seconds. Chosen over librdkafka's ``error_cb`` because it is a positive, end-to-end answer both
ways: ``error_cb`` reports trouble (``_ALL_BROKERS_DOWN``, ``_TRANSPORT``) but never the
recovery, ``_ALL_BROKERS_DOWN`` comes only once every known broker is down, and a client that
has sent nothing yet may not have tried to connect at all. The cache bounds the cost: one
request per ``cache_s`` however often ``/healthz`` is polled, and concurrent checks share it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from confluent_kafka import KafkaException

__all__ = ["KafkaHealth", "KafkaHealthCheck", "warn_without_kafka"]

log = logging.getLogger("producers.gateway")

#: How long one metadata request may take before Kafka counts as unreachable.
DEFAULT_TIMEOUT_S = 2.0
#: How long an answer is kept.
DEFAULT_CACHE_S = 5.0


class KafkaHealthCheck(Protocol):
    """What ``/healthz`` asks: ``None`` when Kafka answers, else a one-line reason."""

    async def problem(self) -> str | None: ...

    def known_problem(self) -> str | None:
        """The reason of the last answer, without asking Kafka again (``None``: it answered,
        or it was not asked yet)."""


class KafkaHealth:
    """Kafka's reachability through ``list_topics`` (an admin client's or a producer's).

    ``list_topics(timeout=...)`` raises when the cluster does not answer in time. The reason
    names the bootstrap address and librdkafka's error, never a credential; ``refusal()`` says
    why the broker refused the client's login or TLS handshake since it was last asked, if it
    did (the admin client's ``take_security_failure``, read from librdkafka's log: the request
    itself only times out).
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
    ) -> None:
        self._list_topics = list_topics
        self._refusal = refusal
        #: The reason given librdkafka's error when no refusal explains it (default: "Kafka at
        #: <bootstrap> does not answer (<error>)").
        self._not_answering = not_answering
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._answer: tuple[float, str | None] | None = None
        self._probing: asyncio.Future[str | None] | None = None

    async def problem(self) -> str | None:
        """``None`` if Kafka answered (within the last ``cache_s``), else why it is unhealthy."""
        if self._answer is not None and self._clock() - self._answer[0] < self._cache_s:
            return self._answer[1]
        if self._probing is None:
            loop = asyncio.get_running_loop()
            self._probing = loop.run_in_executor(None, self._probe)
        probing = self._probing
        try:
            answer = await asyncio.shield(probing)
        finally:
            if probing.done() and self._probing is probing:
                self._probing = None
        self._answer = (self._clock(), answer)
        return answer

    def known_problem(self) -> str | None:
        """The last probe's reason, however old (``None``: Kafka answered, or no probe yet)."""
        return None if self._answer is None else self._answer[1]

    def _probe(self) -> str | None:
        try:
            self._list_topics(timeout=self._timeout_s)
        except KafkaException as exception:
            # A refusal since the last probe (``refusal`` forgets what it told): not one long
            # past, which would be blamed for every later outage of this long-running program.
            refused = self._refusal()
            if refused is not None:  # a login or TLS handshake the broker refused
                return (
                    f"Kafka at {self._bootstrap} refused the connection ({refused}); check the "
                    "PIPELINE_KAFKA__SASL_* and PIPELINE_KAFKA__SSL_* settings"
                )
            error = exception.args[0] if exception.args else exception
            detail = error.str() if hasattr(error, "str") else str(error)
            if self._not_answering is not None:
                return self._not_answering(detail)
            return f"Kafka at {self._bootstrap} does not answer ({detail})"
        except Exception as error:  # anything else the client raises: still one line
            return f"Kafka at {self._bootstrap} does not answer ({type(error).__name__})"
        self._refusal()  # answered: a refusal logged before it is past
        return None


async def warn_without_kafka(kafka_health: KafkaHealthCheck, _app: object) -> AsyncIterator[None]:
    """At start, in the background: a warning if Kafka does not answer (the gateway serves
    anyway; ``/healthz`` says 503 until Kafka answers)."""

    async def check() -> None:
        problem = await kafka_health.problem()
        if problem is not None:
            log.warning("%s; GET /healthz answers 503 until it does", problem)

    task = asyncio.create_task(check())
    yield
    task.cancel()
