"""Reading a request's body: its size limit, its content coding, and not waiting for it once the
gateway stops.

The body is read whole (at most ``max_body_bytes``: 413 ``body_too_large``), then decoded from
its content coding (see :mod:`producers.gateway.content_coding`). Bodies that aiohttp reports
unreadable (when aiohttp decodes them itself, a body that is not valid gzip) are 400
``invalid_body``, and a client that closes its connection before its body ended is 400
``incomplete_body`` (counted; nobody reads it): a client's mistake, not the gateway's failure.
A body that does not arrive whole within ``timeout_s`` (``PIPELINE_GATEWAY__BODY_TIMEOUT_S``) is
408 ``request_timeout``: a client that stalls holds no request for ever, nor does chunked
framing broken after the headers, on which aiohttp's reader waits without an error.

When the gateway stops (aiohttp's ``on_shutdown``), a request whose body has not all arrived
is answered 503 ``shutting_down`` at once and its connection closed. Waiting would be for
nothing: aiohttp closes every connection before ``on_shutdown`` (``Server.pre_shutdown``), and
from then on drops the bytes that come in, so the body can never complete; the request would
hold the stop for the whole ``shutdown_timeout`` (``produce_timeout_s``) and then go without an
answer. Nothing was produced for it: the client sends it again, to a gateway that runs. A body
already received whole is read and the request answered as usual.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

from producers.gateway.answers import ErrorAnswer
from producers.gateway.content_coding import decode, too_large

__all__ = ["BODIES_LEFT_ENCODED", "BodyReader"]

#: Set (True) on an application served with aiohttp's ``auto_decompress=False``
#: (:func:`producers.gateway.server.serve`): bodies come as sent and the gateway decodes them.
#: Absent, aiohttp has decoded gzip and deflate already, as its default runner does.
BODIES_LEFT_ENCODED = web.AppKey("gateway_bodies_left_encoded", bool)


class _Abandoned(Exception):
    """Set on a body's stream when stopping gives up on it: its read ends at once."""


class BodyReader:
    """Reads bodies within ``max_body_bytes``; gives up on those not all there when stopping."""

    def __init__(self, max_body_bytes: int, timeout_s: float = 30.0) -> None:
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self._reading: set[StreamReader] = set()
        self._stopping = False

    async def read(self, request: web.Request, coding: str) -> bytes:
        """The body of ``request`` decoded from ``coding``, or an :class:`ErrorAnswer`."""
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise too_large(limit)
        stream = request.content
        if self._stopping and not stream.is_eof():
            raise _shutting_down()  # came as the gateway stops: the rest cannot arrive
        self._reading.add(stream)
        try:
            if stream.is_eof():  # all there already (the usual small body): nothing to wait for
                body = await request.read()
            else:
                async with asyncio.timeout(self.timeout_s):
                    body = await request.read()  # stops past client_max_size (= max_body_bytes)
        except TimeoutError:
            raise _timed_out(self.timeout_s) from None
        except web.HTTPRequestEntityTooLarge:
            raise too_large(limit) from None
        except _Abandoned:
            raise _shutting_down() from None
        except RequestPayloadError as error:
            raise _unreadable(error, coding) from None
        except ConnectionResetError:
            # The client went away before its body ended ("Connection lost"): its mistake, or
            # its network's, not the gateway's failure. Nobody reads the answer; it is counted
            # and logged as a refusal (DEBUG), not as an error with its traceback.
            raise _client_gone() from None
        finally:
            self._reading.discard(stream)
        if request.config_dict.get(BODIES_LEFT_ENCODED, False):
            return decode(body, coding, limit)
        return body

    async def stop(self, _app: web.Application) -> None:
        """aiohttp's ``on_shutdown``: every body still awaited is given up (the rest of it
        cannot arrive any more), so its request is answered 503 at once."""
        self._stopping = True
        for stream in list(self._reading):
            stream.set_exception(_Abandoned())


def _shutting_down() -> ErrorAnswer:
    return ErrorAnswer(
        503,
        "shutting_down",
        "the gateway is stopping and the body had not all arrived; nothing was produced: "
        "send the request again",
        headers={"Retry-After": "1"},
        close=True,  # the rest of the body is not read: this connection can serve no more
    )


def _timed_out(timeout_s: float) -> ErrorAnswer:
    return ErrorAnswer(
        408,
        "request_timeout",
        f"the body did not arrive whole within {timeout_s:g} s "
        "(PIPELINE_GATEWAY__BODY_TIMEOUT_S); nothing was produced",
        close=True,  # the rest of it, if it comes, is not read
    )


def _client_gone() -> ErrorAnswer:
    return ErrorAnswer(
        400,
        "incomplete_body",
        "the connection closed before the body ended; nothing was produced",
        close=True,
    )


def _unreadable(error: RequestPayloadError, coding: str) -> ErrorAnswer:
    """400 for a body aiohttp could not read (its cause says why, in aiohttp's words)."""
    cause = error.__cause__
    if isinstance(cause, ContentEncodingError):  # aiohttp decoded it (its default runner)
        message = f"the body is not valid {coding} (Content-Encoding: {coding})"
    elif isinstance(cause, HttpProcessingError):
        message = f"the body cannot be read: {cause.message}"
    else:
        message = f"the body cannot be read: {error}"
    return ErrorAnswer(400, "invalid_body", message, [{"field": "body", "message": "unreadable"}])
