"""A consumed message's headers, read safely: confluent-kafka cannot read a header name that is
not UTF-8 text, and the way it fails can crash the process.

confluent-kafka (2.16) decodes every header name as UTF-8 and has no way to give one as bytes.
On a name that is not (kcat, for one, sends such names), ``headers()`` returns a list holding a
NULL where the name should be, with the ``UnicodeDecodeError`` still set, and keeps that list
for the next call. Checked by CPython, as every call made from C is, that becomes a
``SystemError`` whose cause is the ``UnicodeDecodeError`` (which holds the name's bytes). A call
written in Python code is checked only until the interpreter specializes its call site (Python
3.11+, after a few calls): from then on the broken list comes back as if all were well, reading
the NULL kills the process (SIGSEGV, seen after ~128,000 messages), and the pending error
surfaces at some later, unrelated call. Hence :func:`read_headers` calls it through
``operator.methodcaller``, which CPython always checks. After a :class:`HeaderNameError`, do not
touch the message again: read what else is needed (key, value, position) before.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from pipeline.envelope.errors import EnvelopeError

if TYPE_CHECKING:
    from pipeline.envelope.binary_mode import ConsumedMessage, Headers

__all__ = ["UNKNOWN_HEADER_NAME", "HeaderNameError", "header_name_bytes", "read_headers"]

#: ``headers()`` called from C, never from a call site of ours: see the module docstring.
_HEADERS_OF = operator.methodcaller("headers")

#: Shown in place of a header name that is not UTF-8 when its bytes cannot be had.
UNKNOWN_HEADER_NAME = "(a header name that is not UTF-8)"


class HeaderNameError(EnvelopeError):
    """A consumed message's headers cannot be read: a header name is not UTF-8 text.

    ``name`` is that name's bytes, or None when they could not be had.
    """

    def __init__(self, name: bytes | None) -> None:
        self.name = name
        shown = UNKNOWN_HEADER_NAME
        if name is not None:
            shown = f'header name "{name.decode("utf-8", errors="backslashreplace")}"'
        super().__init__(
            f"{shown}: not UTF-8 text, which Kafka's Python client (confluent-kafka) cannot "
            "read, so none of this message's headers can be had"
        )


def read_headers(message: ConsumedMessage) -> Headers | None:
    """``message.headers()``, or a :class:`HeaderNameError` when a header name is not UTF-8
    (see the module docstring)."""
    try:
        headers: Headers | None = _HEADERS_OF(message)
    except (SystemError, UnicodeDecodeError) as error:
        cause = error if isinstance(error, UnicodeDecodeError) else error.__cause__
        raw = cause.object if isinstance(cause, UnicodeDecodeError) else None
        raise HeaderNameError(raw if isinstance(raw, bytes) else None) from None
    return headers


def header_name_bytes(name: str) -> bytes | None:
    """The bytes of a header name that is not UTF-8, as the processors' Kafka client reads one
    (each such byte a lone surrogate, Python's ``surrogateescape``: see
    pipeline/processing/faust/tolerant_batches.py); ``None`` for a name that is text."""
    if name.isascii():  # the usual name, and a flag check in CPython
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate no decoder escaped: its own bytes
            return name.encode("utf-8", "surrogatepass")
    return None
