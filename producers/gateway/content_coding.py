"""Content codings of request bodies: which are accepted, and decoding one within the size limit.

A body may be sent as is (no ``Content-Encoding``, or ``identity``), or compressed with
``gzip`` or ``deflate`` (zlib, as RFC 9110 §8.4.1.2 says; a raw deflate stream, which some
clients send instead, is taken too). Anything else (``br``, ``zstd``, an unknown name, two
codings stacked) is 415 ``unsupported_encoding`` with ``Accept-Encoding: gzip, deflate`` (RFC
9110 §15.5.16), checked before the body is read; a body that does not decode with its coding is
400 ``invalid_body``. The limit ``max_body_bytes`` holds for the body as sent and as decoded, so
a small compressed body cannot unfold into a large one (413 ``body_too_large``).

Only the standard library's zlib decodes: aiohttp's own decoding would need optional packages
for ``br`` (and answer without them in plain text, before the gateway sees the request), so
:func:`producers.gateway.server.serve` has aiohttp leave bodies as sent and the gateway decodes
them here (see :mod:`producers.gateway.body`).
"""

from __future__ import annotations

import zlib

from producers.gateway.answers import ErrorAnswer

__all__ = [
    "ACCEPTED_CODINGS",
    "IDENTITY",
    "check_transfer_coding",
    "content_coding",
    "decode",
    "too_large",
]

IDENTITY = "identity"
#: The codings a body may come in besides ``identity``, as ``Accept-Encoding`` lists them.
ACCEPTED_CODINGS = ("gzip", "deflate")
_ACCEPT_ENCODING = ", ".join(ACCEPTED_CODINGS)
# zlib's window bits: a gzip member, a zlib stream, a raw deflate stream.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS


def too_large(max_body_bytes: int) -> ErrorAnswer:
    """413: the body (as sent, or once decoded) is over ``max_body_bytes``."""
    return ErrorAnswer(413, "body_too_large", f"the body is larger than {max_body_bytes} bytes")


def content_coding(values: list[str]) -> str:
    """The body's one content coding (``identity`` when none) from every ``Content-Encoding``
    value of the request, or 415 naming what was sent and what is accepted."""
    codings = [
        coding.strip().lower() for value in values for coding in value.split(",") if coding.strip()
    ]
    codings = [coding for coding in codings if coding != IDENTITY]
    if not codings:
        return IDENTITY
    if len(codings) == 1 and codings[0] in ACCEPTED_CODINGS:
        return codings[0]
    sent = ", ".join(codings)
    why = "is not supported" if len(codings) == 1 else "(more than one coding) is not supported"
    raise ErrorAnswer(
        415,
        "unsupported_encoding",
        f"Content-Encoding {sent!r} {why}: send the body as is, or in one of {_ACCEPT_ENCODING}",
        [{"field": "Content-Encoding", "message": "unsupported", "accepted": [*ACCEPTED_CODINGS]}],
        headers={"Accept-Encoding": _ACCEPT_ENCODING},
    )


def check_transfer_coding(values: list[str]) -> None:
    """Refuse a ``Transfer-Encoding`` with a coding besides ``chunked`` (every value of the
    request), 501 as RFC 9112 says of one the server does not implement: the body is only ever
    read as chunked, so ``gzip, chunked`` was taken with its gzip left on, where a proxy in
    front may have framed it otherwise."""
    codings = [
        coding.strip().lower() for value in values for coding in value.split(",") if coding.strip()
    ]
    other = [coding for coding in codings if coding != "chunked"]
    if other:
        raise ErrorAnswer(
            501,
            "unsupported_transfer_coding",
            f"Transfer-Encoding {', '.join(other)!r} is not implemented: send the body as is "
            "or chunked (a compressed body: Content-Encoding gzip or deflate)",
        )


def decode(body: bytes, coding: str, max_body_bytes: int) -> bytes:
    """``body`` decoded from ``coding`` (one :func:`content_coding` returned), at most
    ``max_body_bytes`` long (else 413), or 400 ``invalid_body`` saying it is not that coding."""
    if coding == IDENTITY:
        return body
    if coding == "gzip":
        return _inflate(body, _GZIP_WBITS, coding, max_body_bytes, members=True)
    try:
        return _inflate(body, _ZLIB_WBITS, coding, max_body_bytes, members=False)
    except ErrorAnswer as error:
        if error.status == 413:
            raise
        as_zlib = error
    # Not a zlib stream: perhaps raw deflate, which clients have long sent as "deflate".
    try:
        return _inflate(body, _RAW_WBITS, coding, max_body_bytes, members=False)
    except ErrorAnswer as error:
        if error.status == 413:
            raise
        raise as_zlib from None  # neither: say what is wrong with it as the standard form


def _inflate(body: bytes, wbits: int, coding: str, limit: int, *, members: bool) -> bytes:
    """Decompress ``body``; gzip may hold several members one after the other (RFC 1952)."""
    decoded = bytearray()
    rest = body
    while True:
        stream = zlib.decompressobj(wbits)
        try:
            # One byte past the limit says "too large" without unfolding any more of it.
            decoded += stream.decompress(rest, limit + 1 - len(decoded))
        except zlib.error as error:
            raise _invalid(coding, str(error)) from None
        if len(decoded) > limit:
            raise too_large(limit)
        if not stream.eof:
            raise _invalid(coding, "it ends before its end")
        rest = stream.unused_data
        if not rest or not members:
            break
    if rest:
        raise _invalid(coding, f"{len(rest)} bytes follow its end")
    return bytes(decoded)


def _invalid(coding: str, reason: str) -> ErrorAnswer:
    # zlib's words ("Error -3 while decompressing data: incorrect header check") keep only
    # their reason: the rest is the library's, not the client's concern.
    reason = reason.split(": ", 1)[-1]
    return ErrorAnswer(
        400,
        "invalid_body",
        f"the body is not valid {coding} (Content-Encoding: {coding}): {reason}",
        [{"field": "Content-Encoding", "message": f"the body is not valid {coding}"}],
    )
