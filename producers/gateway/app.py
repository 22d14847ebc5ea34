"""The request gateway: HTTP in, one acknowledged Kafka event out.

``POST /v1/requests/{type}`` goes through these steps, cheapest first, and the first that fails
answers with a JSON error ``{"error": {"code", "message", "details"}}`` and produces nothing:

1. the API key or JWT, once keys exist or JWT is configured (see :mod:`producers.gateway.auth`):
   401 ``unauthorized`` (400 ``invalid_header`` for a repeated ``Authorization``); client
   identity and its token bucket: 429 ``rate_limited`` with ``Retry-After``. The client is the
   key's name (a token's: ``jwt:<sub>``); in an open gateway (no keys) the peer address, and
   only a peer in ``trusted_proxies`` may name it with ``X-Client-Id`` (see
   :mod:`producers.gateway.identity`), so a client cannot get a fresh bucket, or another
   client's idempotency scope, by changing a header. A request without valid credentials takes
   a token from its address's bucket (429 instead of the 401 once it is empty; see
   :mod:`producers.gateway.admission`);
2. the request type: 404 ``unknown_request_type`` (the answer lists the known ones); 403
   ``forbidden`` when the key or token may not send it;
3. ``Content-Type`` must be JSON in UTF-8 (or US-ASCII): 415 ``unsupported_media_type``; a
   ``Content-Encoding`` other than gzip or deflate: 415 ``unsupported_encoding``; a
   ``Transfer-Encoding`` besides ``chunked``: 501 ``unsupported_transfer_coding``;
4. the ``Idempotency-Key`` / ``X-Correlation-Id`` headers (and ``X-Client-Id`` from a trusted
   proxy): 400 ``invalid_header``, and so is a repeated ``traceparent`` (each of these, like
   ``Authorization``, is taken once: a repeat is refused, not the first taken);
5. the body (:mod:`producers.gateway.body`): at most ``max_body_bytes`` as sent and decoded
   (413 ``body_too_large``), valid in its coding (400 ``invalid_body``; 503 ``shutting_down``
   if still coming as the gateway stops), UTF-8 JSON (400 ``invalid_json``), an object (400
   ``not_an_object``), valid for the type's model (422 ``schema_violation``, one per field);
6. the Idempotency-Key, if any (see :mod:`producers.gateway.idempotency`): a replay of the first
   answer, a wait for a first request still in flight, or 422 ``idempotency_key_reused``;
7. the event goes to ``requests.<type>`` keyed by the entity id, and the answer waits for the
   broker: 202 ``{"event_id", "topic", "partition", "offset"}``, or 503 ``not_acknowledged``
   when delivery failed or took longer than ``produce_timeout_s``, or 503 ``overloaded`` past
   ``max_in_flight`` unacknowledged events; at once 503 ``kafka_unavailable`` (nothing produced)
   while the health checks say Kafka or the topic is away (:mod:`producers.gateway.health`).

A timeout is not a failure: librdkafka keeps trying to deliver the event for
``producer.delivery_timeout_ms``. So once an event is handed to the producer, its
Idempotency-Key is settled by the delivery report, not by the request (a timeout, or the client
hanging up, leaves it claimed):

- delivered, even after the 503: the key completes with the 202 it would have had, and a retry
  with the key gets that 202 (``Idempotent-Replayed: true``) and the first event's id; nothing
  is produced twice;
- failed: the key is released (the 503 is never remembered), and a retry produces anew;
- not yet known: a retry waits for the report at most ``produce_timeout_s`` like the first
  request, then gets 409 ``request_in_flight`` saying what is known of the claim (when it was
  claimed, by this process; when it expires, in the shared store, whose rows do not keep when),
  with ``Retry-After`` (409, as the IETF Idempotency-Key draft asks for a request still being
  processed); nothing is produced. A shared store that cannot be asked
  is 503 ``idempotency_unavailable`` with ``Retry-After`` (nothing produced).

Only ``max_in_flight`` events may await their report, late ones included. Without an
Idempotency-Key a retry after a 503 may produce a second event: send one. Every request is
counted in :class:`~producers.gateway.metrics.GatewayMetrics` and logged: at INFO when
answered 2xx, at DEBUG when rejected with a 4xx (a client's mistake: a burst of bad requests
must not flood the log, nor the ``logs`` topic it is shipped to; the rejections counter has
them), at WARNING for a 5xx, except the 503s an outage gives every request, summed up in a
line every 10 s (:mod:`producers.gateway.request_log`); probes at DEBUG. ``GET /metrics``
(Prometheus text) and ``GET /healthz`` complete the API: 200 ``{"status": "ok"}``, or 503
``{"status": "unavailable", "reason": ...}`` while Kafka does not answer or a topic the
gateway sends to does not exist (see :mod:`producers.gateway.health`).

This module handles the requests; the checks of steps 3 to 5 and the event are
:mod:`producers.gateway.intake`, the answers :mod:`producers.gateway.answers`, and serving the
application until a signal :mod:`producers.gateway.server`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from aiohttp import HttpVersion11, web
from confluent_kafka import KafkaException

from pipeline.envelope import Event, KafkaMessage
from pipeline.errors import PipelineError
from pipeline.kafka.producer import Delivery
from pipeline.request_types import REQUEST_TYPES, RequestType, RequestValidationError
from pipeline.settings import GatewaySettings
from producers.gateway.admission import Admission
from producers.gateway.answers import (
    JSON_CONTENT_TYPE,
    ErrorAnswer,
    delivery_answer,
    dumps,
    kafka_unavailable,
    not_acknowledged,
    still_in_flight,
    store_unavailable,
    unknown_request_type,
)
from producers.gateway.auth import DEFAULT_REFRESH_S, Authorizer, KeyLoader, KeyRefresher
from producers.gateway.body import BodyReader
from producers.gateway.content_coding import check_transfer_coding, content_coding, too_large
from producers.gateway.health import KafkaHealthCheck, watch_kafka
from producers.gateway.idempotency import (
    IdempotencyKeyReused,
    IdempotencyKeys,
    IdempotencyUnavailable,
    InFlight,
    Replay,
    Settle,
    StoredAnswer,
    fingerprint,
    local_idempotency,
)
from producers.gateway.intake import (
    build_event,
    check_content_type,
    header_id,
    idempotency_key,
    parse_body,
    single_header,
)
from producers.gateway.metrics import UNKNOWN_TYPE, GatewayMetrics
from producers.gateway.rate_limit import Clock
from producers.gateway.request_log import RequestLog
from producers.gateway.server import HEADERS_LATE
from producers.gateway.tokens import TokenVerifier

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "REQUESTS_ROUTE", "GatewayProducer", "create_app"]

log = logging.getLogger("producers.gateway")

REQUESTS_ROUTE = "/v1/requests/{type}"
#: Unacknowledged events at most (counted until their delivery report, even after a 503 for a
#: timeout); beyond, 503. Far below librdkafka's local queue (100,000 messages), so a send
#: never finds the queue full and never blocks the event loop.
DEFAULT_MAX_IN_FLIGHT = 10_000


class GatewayProducer(Protocol):
    """What the gateway uses of :class:`pipeline.kafka.producer.EventProducer`."""

    def send_awaitable(
        self, topic: str, event: Event | KafkaMessage
    ) -> asyncio.Future[Delivery]: ...

    def serving_on_loop(self) -> AbstractAsyncContextManager[None]: ...


# ---- the application ------------------------------------------------------------------------


@dataclass
class _Exchange:
    """What one request's handling found out, for its log line and metrics."""

    type_label: str | None = None
    client: str | None = None
    code: str | None = None
    event_id: str | None = None
    replayed: bool = False


# Each request is handled in a task of its own, so this is per request.
_exchange: ContextVar[_Exchange] = ContextVar("gateway_exchange")


class _Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        producer: GatewayProducer,
        *,
        clock: Clock,
        topic_for: Callable[[RequestType], str],
        request_types: Mapping[str, RequestType],
        metrics: GatewayMetrics,
        max_in_flight: int,
        kafka_health: KafkaHealthCheck | None,
        idempotency: IdempotencyKeys | None,
        tokens: TokenVerifier | None,
        request_log: RequestLog,
    ) -> None:
        self.settings = settings
        self.request_log = request_log
        self.bodies = BodyReader(settings.max_body_bytes, settings.body_timeout_s)
        self.kafka_health = kafka_health
        self.producer = producer
        self.topic_for = topic_for
        self.request_types = dict(request_types)
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # Open until keys are loaded (create_app's ``keys``), unless JWTs are accepted.
        self.authorizer = Authorizer(tokens=tokens)
        self.admission = Admission(self.authorizer, settings, clock=clock)
        self.store = idempotency or local_idempotency(
            ttl_s=settings.idempotency_ttl_s,
            max_keys=settings.idempotency_max_keys,
            clock=clock,
            count_eviction=metrics.keys_evicted.inc,
        )

    # ---- middleware: JSON errors, one log line and the counters for every request ----------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        exchange = _Exchange()
        _exchange.set(exchange)
        response: web.StreamResponse
        try:
            response = await handler(request)
        except ErrorAnswer as rejection:
            response = self._reject(rejection, exchange)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            response = self._reject(self._http_error(request, error), exchange)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            internal = ErrorAnswer(500, "internal_error", "the gateway failed; see its log")
            response = self._reject(internal, exchange)
        self._account(request, response, exchange, time.perf_counter() - started)
        return response

    def _reject(self, rejection: ErrorAnswer, exchange: _Exchange) -> web.Response:
        exchange.code = rejection.code
        response = web.Response(
            status=rejection.status,
            body=rejection.body(),
            content_type=JSON_CONTENT_TYPE,
            headers=rejection.headers,
        )
        if rejection.close:
            response.force_close()
        return response

    def _account(
        self,
        request: web.Request,
        response: web.StreamResponse,
        exchange: _Exchange,
        elapsed_s: float,
    ) -> None:
        status = response.status
        if exchange.type_label is not None:
            self.metrics.requests.labels(exchange.type_label, str(status)).inc()
        if exchange.code is not None:
            self.metrics.rejections.labels(exchange.code).inc()
        if exchange.replayed:
            self.metrics.replays.inc()
        self.request_log.answered(
            method=request.method,
            path=request.path,
            status=status,
            code=exchange.code,
            replayed=exchange.replayed,
            client=exchange.client or request.remote,
            event_id=exchange.event_id,
            elapsed_s=elapsed_s,
        )

    def _http_error(self, request: web.Request, error: web.HTTPException) -> ErrorAnswer:
        """aiohttp's own error answers (no route, wrong method, ...) as our JSON errors."""
        where = f"{request.method} {request.path}"
        if error.status == 404:
            return ErrorAnswer(
                404, "not_found", f"no endpoint for {where}; try POST {REQUESTS_ROUTE}"
            )
        if error.status == 405:
            allowed = error.headers.get("Allow", "")
            return ErrorAnswer(
                405,
                "method_not_allowed",
                f"{where} is not allowed; allowed: {allowed}",
                headers={"Allow": allowed},
            )
        if error.status == 413:
            return too_large(self.settings.max_body_bytes)
        return ErrorAnswer(error.status, "http_error", error.reason)

    async def expect_continue(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: a request without a valid key (where keys are needed), of
        an unknown type or of one its key may not send is refused at once (401, 404, 403; a
        repeated ``Authorization`` 400, and 429 once the address's bucket for requests without
        valid credentials is empty), as without ``Expect``; a body announced larger than
        ``max_body_bytes`` too (413, before the client sends it: it was asked for with ``100
        Continue``, uploaded whole, then refused); another expectation is a JSON 417.

        aiohttp's own handler (``100 Continue``, or 417 for another expectation) is private,
        so its few lines are written here again.
        """
        try:  # the key, the type and its permission first, as without Expect
            authenticated = self.admission.authenticate(request.headers, request.remote)
            name = request.match_info.get("type", "")
            if name not in self.request_types:
                raise unknown_request_type(name, sorted(self.request_types))
            self.authorizer.authorise(authenticated, name)
        except ErrorAnswer as refused:
            return self._refuse_unread(request, refused)
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            return self._refuse_unread(request, too_large(self.settings.max_body_bytes))
        expect = request.headers.get("Expect", "")
        if request.version == HttpVersion11:
            if expect.lower() != "100-continue":
                # A JSON error like every other refusal, counted (aiohttp's was plain text).
                return self._refuse_unread(
                    request,
                    ErrorAnswer(
                        417,
                        "expectation_failed",
                        f"unknown expectation {expect!r}: only 100-continue is taken",
                    ),
                )
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer's own bytes start after it
        return None

    def _refuse_unread(self, request: web.Request, answer: ErrorAnswer) -> web.Response:
        """``answer`` before the body is asked for, counted and logged as the middleware does;
        the body is never read, so the connection serves no next request."""
        exchange = _Exchange()
        name = request.match_info.get("type", "")
        exchange.type_label = name if name in self.request_types else UNKNOWN_TYPE
        response = self._reject(answer, exchange)
        response.force_close()
        self._account(request, response, exchange, 0.0)
        return response

    # ---- POST /v1/requests/{type} -------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        exchange = _exchange.get()
        name = request.match_info["type"]
        request_type = self.request_types.get(name)
        exchange.type_label = name if request_type is not None else UNKNOWN_TYPE

        # The API key or token (None: an open gateway), the client and its bucket: 400, 401, 429.
        admitted = self.admission.admit(request.headers, request.remote)
        exchange.client = client = admitted.client
        if request_type is None:
            raise unknown_request_type(name, sorted(self.request_types))
        self.authorizer.authorise(admitted.credential, name)  # or 403
        headers = request.headers
        codec = check_content_type(headers.get("Content-Type"), request.charset)
        coding = content_coding(headers.getall("Content-Encoding", []))
        check_transfer_coding(headers.getall("Transfer-Encoding", []))  # or 501
        key = idempotency_key(headers.getall("Idempotency-Key", []))
        correlation_id = header_id("X-Correlation-Id", single_header(headers, "X-Correlation-Id"))
        traceparent = single_header(headers, "traceparent")  # each at most once, or 400

        data = parse_body(await self.bodies.read(request, coding), codec)
        try:
            valid = request_type.validate(data)
        except RequestValidationError as error:
            raise ErrorAnswer(422, "schema_violation", str(error), error.errors) from None

        def make_event() -> Event:
            return build_event(
                request_type,
                valid,
                correlation_id=correlation_id,
                traceparent=traceparent,
            )

        topic = self.topic_for(request_type)
        if key is None:
            sent = self._send(topic, make_event())
            if isinstance(sent, StoredAnswer):
                return self._answer(sent)
            return self._answer(await self._acknowledgement(sent))
        return await self._submit_once(client, key, fingerprint(name, data), topic, make_event)

    async def _submit_once(
        self,
        client: str,
        key: str,
        body_fingerprint: str,
        topic: str,
        make_event: Callable[[], Event],
    ) -> web.Response:
        """Produce once per (client, key): replay, wait for the first, or claim and produce."""
        exchange = _exchange.get()
        while True:
            try:
                begun = await self.store.begin(client, key, body_fingerprint)
            except IdempotencyUnavailable as error:
                raise store_unavailable(str(error)) from None
            except IdempotencyKeyReused as error:
                raise ErrorAnswer(
                    422,
                    "idempotency_key_reused",
                    str(error),
                    [{"field": "Idempotency-Key", "message": "already used with another body"}],
                ) from None
            if isinstance(begun, Replay):
                exchange.replayed = True
                return self._answer(begun.answer, replayed=True)
            if isinstance(begun, InFlight):
                # asyncio.wait, unlike wait_for, never cancels the shared future on timeout.
                first_answer = asyncio.wrap_future(begun.future)
                started = time.monotonic()
                done, _ = await asyncio.wait({first_answer}, timeout=self._timeout_s)
                if not done or first_answer.cancelled():
                    waited = time.monotonic() - started
                    claimed, expires = begun.claimed_s_ago, begun.expires_in_s
                    raise still_in_flight(
                        None if claimed is None else claimed + waited,
                        None if expires is None else expires - waited,
                    )
                first = first_answer.result()
                if first is None:  # the first was abandoned: try to claim the key ourselves
                    continue
                exchange.replayed = True
                return self._answer(first, replayed=True)
            return await self._produce_claimed(begun, topic, make_event)

    async def _produce_claimed(
        self, claim: Settle, topic: str, make_event: Callable[[], Event]
    ) -> web.Response:
        """Produce for ``claim``; from the send on, the delivery report settles the claim."""
        try:
            sent = self._send(topic, make_event())
        except BaseException:
            claim.abandon()  # nothing was sent: waiters may claim the key
            raise
        if isinstance(sent, StoredAnswer):  # the producer refused it: nothing was sent
            claim.complete(sent)
            return self._answer(sent)
        # Settled from the loop when the report comes, whether or not this request still waits
        # (a timeout, a client hanging up): a late 202 is remembered, a late failure released.
        sent.add_done_callback(lambda delivered: claim.complete(delivery_answer(delivered)))
        return self._answer(await self._acknowledgement(sent))

    @property
    def _timeout_s(self) -> float:
        return self.settings.produce_timeout_s

    def _send(self, topic: str, event: Event) -> asyncio.Future[Delivery] | StoredAnswer:
        """Hand ``event`` to the producer: its delivery report to come, or 503 if refused."""
        problem = None if self.kafka_health is None else self.kafka_health.standing_problem(topic)
        if problem is not None:  # Kafka away, or the topic gone: said now, not after 30 s
            raise kafka_unavailable(problem)
        if self.in_flight >= self.max_in_flight:
            raise ErrorAnswer(
                503,
                "overloaded",
                f"{self.in_flight} requests are waiting for Kafka; retry shortly",
                headers={"Retry-After": "1"},
            )
        _exchange.get().event_id = event.id
        started = time.perf_counter()
        try:
            delivered = self.producer.send_awaitable(topic, event)
        except (KafkaException, PipelineError) as error:
            return not_acknowledged(f"the producer refused it: {error}")
        self.in_flight += 1

        def reported(_delivered: asyncio.Future[Delivery]) -> None:
            self.in_flight -= 1
            self.metrics.produce_latency.labels(topic).observe(time.perf_counter() - started)

        # The report is served on this loop (serving_on_loop), where every callback below runs
        # (the store and the counters are the loop's only).
        delivered.add_done_callback(reported)
        return delivered

    async def _acknowledgement(self, delivered: asyncio.Future[Delivery]) -> StoredAnswer:
        """The answer once Kafka reports, or 503 after ``produce_timeout_s`` (still trying)."""
        # asyncio.wait, unlike wait_for, never cancels the delivery future on timeout.
        done, _ = await asyncio.wait({delivered}, timeout=self._timeout_s)
        if not done:
            # What the health check last found, if Kafka is the trouble (a refused login, an
            # outage): a client told only "no answer" could not tell it from a slow broker. Not
            # asked again: a probe would hold the answer past produce_timeout_s.
            problem = None if self.kafka_health is None else self.kafka_health.known_problem()
            return not_acknowledged(
                f"no answer in {self._timeout_s:g} s; librdkafka is still trying to deliver it"
                + (f"; {problem}" if problem else "")
            )
        return delivery_answer(delivered)

    def _answer(self, answer: StoredAnswer, *, replayed: bool = False) -> web.Response:
        exchange = _exchange.get()
        headers: dict[str, str] = {}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        if answer.status >= 500:
            headers["Retry-After"] = "1"
            exchange.code = "not_acknowledged"
        return web.Response(
            status=answer.status, body=answer.body, content_type=JSON_CONTENT_TYPE, headers=headers
        )

    # ---- GET /healthz, GET /metrics -----------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        problem = None if self.kafka_health is None else await self.kafka_health.problem()
        problem = problem or self.authorizer.keys_problem()  # keys unread past their bound
        if problem is not None:
            return web.Response(
                status=503,
                body=dumps({"status": "unavailable", "reason": problem}),
                content_type=JSON_CONTENT_TYPE,
            )
        return web.Response(body=dumps({"status": "ok"}), content_type=JSON_CONTENT_TYPE)

    async def prometheus(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": self.metrics.content_type}
        )


def create_app(
    settings: GatewaySettings,
    producer: GatewayProducer,
    *,
    clock: Clock = time.monotonic,
    topic_for: Callable[[RequestType], str] | None = None,
    request_types: Mapping[str, RequestType] = REQUEST_TYPES,
    metrics: GatewayMetrics | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    kafka_health: KafkaHealthCheck | None = None,
    keys: KeyLoader | None = None,
    key_refresh_s: float = DEFAULT_REFRESH_S,
    idempotency: IdempotencyKeys | None = None,
    tokens: TokenVerifier | None = None,
    announce: bool = True,
    request_log: RequestLog | None = None,
) -> web.Application:
    """The gateway as an aiohttp application; nothing connects until it starts.

    ``producer`` is owned by the caller, who flushes it after the app has stopped; the app serves
    its delivery reports on its event loop (``producer.serving_on_loop()``) while it runs.
    ``clock`` drives the rate limiter and the idempotency TTL; ``topic_for`` picks the topic of
    a request type (default: its catalogue topic, ``requests.<type>``); ``metrics`` defaults to
    a fresh registry.
    ``kafka_health`` is asked by ``GET /healthz`` and watched while the app runs (requests are
    refused at once while a problem stands); without it ``/healthz`` says only that it serves.
    ``keys`` reads the API keys (at start, then every ``key_refresh_s``; see
    :mod:`producers.gateway.auth`); without it the gateway is open. ``idempotency`` is the
    Idempotency-Key store (default: this process's memory; a
    :class:`~producers.gateway.shared_idempotency.PostgresIdempotency` shares it). ``tokens``
    verifies JWT bearer tokens (none by default: API keys only). ``announce``: say at start
    whether the gateway is open or how many keys it knows (``False`` for all but one worker of
    ``pipeline gateway --workers``: one gateway says it once). ``request_log`` writes a line
    per answer, summing up the refusals of an outage (default: every 10 s by ``clock``).
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
    gateway = _Gateway(
        settings,
        producer,
        clock=clock,
        topic_for=topic_for or (lambda request_type: request_type.topic),
        request_types=request_types,
        metrics=metrics or GatewayMetrics(),
        max_in_flight=max_in_flight,
        kafka_health=kafka_health,
        idempotency=idempotency,
        tokens=tokens,
        request_log=request_log or RequestLog(clock=clock),
    )
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[gateway.middleware])

    async def serve_delivery_reports(_app: web.Application) -> AsyncIterator[None]:
        async with producer.serving_on_loop():
            yield

    app.cleanup_ctx.append(serve_delivery_reports)
    app.cleanup_ctx.append(gateway.request_log.lifetime)
    app.on_shutdown.append(gateway.bodies.stop)
    # A connection closed with a 408 for headers that came too late (serve()), counted.
    app[HEADERS_LATE] = lambda: gateway.metrics.rejections.labels("request_timeout").inc()
    if keys is not None:
        refresher = KeyRefresher(
            gateway.authorizer,
            keys,
            refresh_s=key_refresh_s,
            max_stale_s=settings.keys_max_stale_s,
            announce=announce,
            on_read=gateway.metrics.keys_read.set,
        )
        app.cleanup_ctx.append(refresher.lifetime)
    if kafka_health is not None:
        app.cleanup_ctx.append(partial(watch_kafka, kafka_health))
    app.router.add_post(REQUESTS_ROUTE, gateway.submit, expect_handler=gateway.expect_continue)
    app.router.add_get("/healthz", gateway.healthz)
    app.router.add_get("/metrics", gateway.prometheus)
    return app
