"""Serving the gateway: listen, and on SIGINT or SIGTERM stop in order, saying what it waits for."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from pipeline.errors import PipelineError
from pipeline.gc_tuning import few_collections
from pipeline.kafka.producer import FlushTimeout
from producers.gateway.answers import JSON_CONTENT_TYPE, ErrorAnswer
from producers.gateway.body import BODIES_LEFT_ENCODED
from producers.gateway.workers import cannot_listen

#: How long a connection is read on after an answer to a request whose body was not read whole.
_LINGERING_S = 1.0
#: How long a request's headers may take to arrive (see :class:`_HeadersInTime`).
DEFAULT_HEADER_TIMEOUT_S = 30.0
#: Called (by the app that sets it) when a connection is closed for headers that came too late.
HEADERS_LATE = web.AppKey[Callable[[], None]]("gateway_headers_late")

__all__ = [
    "DEFAULT_HEADER_TIMEOUT_S",
    "HEADERS_LATE",
    "DeliveriesLeft",
    "Flushable",
    "StoppedAtOnce",
    "gateway_runner",
    "quiet_malformed_requests",
    "run_event_loop",
    "serve",
]

log = logging.getLogger("producers.gateway")

#: The longest single wait for deliveries while stopping, so a second signal is served at once.
_FLUSH_STEP_S = 0.2
#: After a second signal, how long stopping may still take (the requests in flight answered
#: once their messages are given up, the app's cleanup run) before what is left is abandoned.
_AT_ONCE_S = 2.0

T = TypeVar("T")


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a header line over its limit, bad framing) as an
    ERROR with a traceback and the start of the offending line, where a header's value (a token)
    may be: the client's mistake, answered 400 by aiohttp. Such a record becomes one DEBUG line
    naming the kind of error only, as the gateway's own rejections are."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args = (
                "rejected a malformed HTTP request (%s)",
                (type(error).__name__,),
            )
            record.exc_info = record.exc_text = None
            # Its level was checked as ERROR already: now as DEBUG.
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_malformed_requests() -> None:
    """Install :class:`_MalformedRequests` on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedRequests) for f in server_log.filters):
        server_log.addFilter(_MalformedRequests())


class _HeadersInTime(web.RequestHandler):
    """aiohttp's connection protocol with a deadline for a request's headers.

    aiohttp bounds only an idle connection (``keepalive_timeout``, an hour): a client that
    sends part of its headers and stalls held the connection that long (80 s and on, with a
    3 s body timeout). Here a request's headers must be whole ``header_timeout_s`` after the
    connection opened, or after the first bytes of a later request on it; past that the
    connection closes, after a 408 ``request_timeout`` if some of the headers came (a
    connection that sent nothing is closed without a word, as an idle one is). Counted
    through ``headers_late``.

    Whether bytes belong to the headers of the request awaited is aiohttp's own state: its
    loop waits for a request (``_waiter``) and the bytes made none (``_request_count``); a
    body's bytes come while its request is handled, when nothing is awaited.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        headers_late: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._headers_late = headers_late
        self._header_deadline: asyncio.TimerHandle | None = None
        #: Some bytes of the awaited request's headers have come.
        self._headers_begun = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        requests = self._request_count
        super().data_received(data)
        if self._request_count != requests:  # a request's headers came whole
            self._stop_header_deadline()
            self._headers_begun = False
        elif data and (
            # a request's start: the connection's first (its handler may not wait for it yet,
            # when the bytes come with the connection), or one after a request answered
            not self._request_count or (self._waiter is not None and not self._waiter.done())
        ):
            self._headers_begun = True
            if self._header_deadline is None:
                self._start_header_deadline()

    def _start_header_deadline(self) -> None:
        self._header_deadline = self._loop.call_later(
            self._header_timeout_s, self._headers_too_late
        )

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        transport = self.transport
        awaiting = self._waiter is not None and not self._waiter.done()
        if transport is None or not awaiting or self._force_close or self._close:
            return  # a request is being handled, or the connection is closing anyway
        if self._headers_begun:
            answer = ErrorAnswer(
                408,
                "request_timeout",
                f"the request's headers did not arrive whole within {self._header_timeout_s:g} "
                "s; nothing was produced",
            )
            body = answer.body()
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\n"
                + f"Content-Type: {JSON_CONTENT_TYPE}\r\n".encode()
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        log.debug(
            "closed a connection from %s whose request headers did not arrive whole within %g s",
            _host_port(transport.get_extra_info("peername")),
            self._header_timeout_s,
        )
        self.force_close()  # the transport sends what it holds, then closes
        if self._headers_begun and self._headers_late is not None:
            self._headers_late()


class _GatewayServer(web.Server):
    """aiohttp's server, making :class:`_HeadersInTime` connections."""

    def __call__(self) -> web.RequestHandler:
        return _HeadersInTime(self, loop=self._loop, **self._kwargs)


class _GatewayRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application's server as aiohttp made it (its handler, request factory and
        # options), making connections of the gateway's own kind.
        server.__class__ = _GatewayServer
        return server


def gateway_runner(
    app: web.Application,
    *,
    shutdown_timeout_s: float = 30.0,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
) -> web.AppRunner:
    """The runner :func:`serve` serves ``app`` with (set up by the caller): no access log,
    bodies left as sent, a short lingering close, and a deadline for each request's headers
    (:class:`_HeadersInTime`; ``app[HEADERS_LATE]``, if set, counts the connections closed for
    it)."""
    late = app.get(HEADERS_LATE)
    return _GatewayRunner(
        app,
        access_log=None,
        shutdown_timeout=shutdown_timeout_s,
        auto_decompress=False,
        # After an answer to a request whose body was not read whole (408, 413...), aiohttp
        # reads on for this long before it closes (10 s by default): a client that stalls on
        # purpose held each connection 13 s for a 3 s body timeout. A second is enough for a
        # client to read the answer.
        lingering_time=_LINGERING_S,
        header_timeout_s=header_timeout_s,
        headers_late=late,
    )


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` (:func:`serve`) on uvloop, or on asyncio's own loop where uvloop is not
    installed (Windows). uvloop's libuv loop spends about an eighth less CPU per request
    (bench/gateway_load.py, one worker at saturation). Requests allocate fast over a large
    heap, so the cyclic garbage collector runs less often meanwhile
    (:func:`pipeline.gc_tuning.few_collections`)."""
    with few_collections():
        try:
            import uvloop
        except ImportError:  # pragma: no cover - a platform without uvloop
            return asyncio.run(main)
        return uvloop.run(main)


class Flushable(Protocol):
    """What stopping uses of :class:`pipeline.kafka.producer.EventProducer`."""

    def flush(self, timeout_s: float | None = ...) -> None: ...
    def give_up(self) -> None: ...


class StoppedAtOnce(Exception):
    """A second SIGINT or SIGTERM while stopping: ``undelivered`` messages were given up (some
    may have reached the broker all the same: they were sent, not acknowledged)."""

    def __init__(self, undelivered: int) -> None:
        self.undelivered = undelivered
        super().__init__(
            f"stopped at once: {messages(undelivered)} given up (not known to be delivered "
            "to Kafka)"
        )


class DeliveriesLeft(PipelineError):
    """Stopping waited its whole time and some messages were still not delivered."""

    def __init__(self, undelivered: int, waited_s: float) -> None:
        self.undelivered = undelivered
        super().__init__(
            f"stopped after waiting {waited_s:g} s: {messages(undelivered)} not delivered to Kafka"
        )


def messages(count: int) -> str:
    """``1 message was`` / ``3 messages were``."""
    return f"{count:,} message was" if count == 1 else f"{count:,} messages were"


def undelivered(producer: Flushable, timeout_s: float = 0.0) -> int:
    """Messages the producer still holds after waiting up to ``timeout_s`` for them."""
    try:
        producer.flush(timeout_s)
    except FlushTimeout as still:
        return still.remaining
    return 0


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout_s: float = 30.0,
    on_ready: Callable[[list[str]], None] | None = None,
    producer: Flushable | None = None,
    say: Callable[[str], None] | None = None,
    reuse_port: bool = False,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop cleanly.

    1. say what stopping waits for (through ``say``, default: the log): the messages
       ``producer`` has not had acknowledged yet, and for how long at most;
    2. stop accepting connections and let requests in flight finish, so each still gets its
       acknowledgement (a request whose body has not all arrived gets 503 at once:
       the rest cannot arrive any more, see :mod:`producers.gateway.body`);
    3. run the app's cleanup (delivery reports stop being served);
    4. wait for ``producer``'s remaining deliveries. Steps 2 to 4 share ``shutdown_timeout_s``;
       messages still undelivered then are :class:`DeliveriesLeft`.

    A second SIGINT or SIGTERM while stopping stops at once: :class:`StoppedAtOnce`, with the
    count of messages given up. The producer gives them up and takes no more, so the requests
    in flight get their 503 now and the stop ends in order (within :data:`_AT_ONCE_S`, else
    what still waits is abandoned; a third signal abandons it at once). Once stopped, further
    signals are ignored until the loop closes.

    ``reuse_port``: listen with ``SO_REUSEPORT``, beside other gateway processes on the same
    port (``pipeline gateway --workers``). A request's headers must arrive within
    ``header_timeout_s``, else its connection closes (with a 408 if some of them came; see
    :func:`gateway_runner`).
    """
    say = say or log.info
    quiet_malformed_requests()
    # aiohttp leaves bodies as sent, and the gateway decodes them (content_coding): aiohttp's
    # decoding fails outside the app (a plain-text 400 for br without Brotli, an ERROR traceback
    # for a body that is not valid gzip, even one drained after a 401).
    app[BODIES_LEFT_ENCODED] = True
    runner = gateway_runner(
        app, shutdown_timeout_s=shutdown_timeout_s, header_timeout_s=header_timeout_s
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopping: asyncio.Task[None] | None = None
    given_up: int | None = None  # messages given up by a second signal
    abandon: asyncio.TimerHandle | None = None
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal() -> None:
        nonlocal given_up, abandon
        stop.set()
        if stopping is None or stopping.done():  # not stopping yet, or stopped already
            return
        if given_up is not None:  # a third: abandon what still waits
            stopping.cancel()
            return
        # The deliveries waited for are given up, so the requests in flight get their 503 now
        # and stopping ends in order. Cancelling it part way (as a second signal did) left the
        # app's cleanup undone, and asyncio closed its async generators in no set order at
        # exit ("generator didn't stop after athrow()", with a traceback).
        given_up = 0 if producer is None else undelivered(producer)
        if producer is not None:
            producer.give_up()
        abandon = loop.call_later(_AT_ONCE_S, stopping.cancel)

    cleaned_up = False
    handling = False
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as error:
            raise cannot_listen(host, port, error) from None
        addresses = [f"http://{_host_port(address)}" for address in runner.addresses]
        log.info("gateway listening on %s", ", ".join(addresses))
        if on_ready is not None:
            on_ready(addresses)
        for signum in signals:
            loop.add_signal_handler(signum, on_signal)
        handling = True
        await stop.wait()
        left = 0 if producer is None else undelivered(producer)
        say(
            f"stopping: waiting up to {shutdown_timeout_s:g} s for requests in flight and "
            f"{left:,} message{'' if left == 1 else 's'} to be delivered to Kafka "
            "(Ctrl-C again to stop at once)"
        )
        stopping = asyncio.create_task(
            _wind_down(runner, producer, shutdown_timeout_s, lambda: given_up is not None)
        )
        try:
            await stopping
        except asyncio.CancelledError:
            if not stopping.cancelled():
                raise  # serve itself was cancelled
            cleaned_up = True  # abandoned: nothing more is waited for
            if given_up is None:  # cancelled with no second signal before: not expected
                given_up = 0 if producer is None else undelivered(producer)
            raise StoppedAtOnce(given_up) from None
        cleaned_up = True
        if given_up is not None:
            raise StoppedAtOnce(given_up)
    finally:
        if abandon is not None:
            abandon.cancel()
        if handling:
            # Stopped: a signal now changes nothing. With the default action back, a second
            # SIGTERM while the program wound down ended it with 143 after a clean stop.
            for signum in signals:
                loop.add_signal_handler(signum, _stopped_already)
        if not cleaned_up:
            await runner.cleanup()


def _stopped_already() -> None:
    """A signal once the gateway has stopped (or stopped at once): nothing left to stop."""


async def _wind_down(
    runner: web.AppRunner,
    producer: Flushable | None,
    timeout_s: float,
    at_once: Callable[[], bool],
) -> None:
    """Steps 2 to 4 of :func:`serve`, within ``timeout_s``; step 4 ends once ``at_once()``
    (a second signal gave the deliveries up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    await runner.cleanup()
    if producer is None:
        return
    while not at_once():
        # Short waits in a thread: the loop stays free to serve a second signal.
        wait_s = min(_FLUSH_STEP_S, max(0.0, deadline - loop.time()))
        left = await asyncio.to_thread(undelivered, producer, wait_s)
        if at_once():
            return
        if not left:
            log.info("gateway stopped: every message was delivered to Kafka")
            return
        if loop.time() >= deadline:
            raise DeliveriesLeft(left, timeout_s)


def _host_port(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
