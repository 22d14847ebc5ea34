"""What comes in: the checks of one request, cheapest first, and the event it becomes.

Each check raises :class:`~producers.gateway.answers.ErrorAnswer` (400, 415) saying what is wrong.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from multidict import MultiMapping
from pydantic import BaseModel, ValidationError

from pipeline.envelope import Event, is_json_content_type, json_error_reason
from pipeline.envelope.json_data import parse_json
from pipeline.ids import new_event_id
from pipeline.request_types import RequestType
from producers.gateway.answers import ErrorAnswer
from producers.gateway.idempotency import key_problem

__all__ = [
    "EVENT_SOURCE",
    "build_event",
    "check_content_type",
    "given_once",
    "header_id",
    "idempotency_key",
    "parse_body",
    "single_header",
]

EVENT_SOURCE = "/pipeline/gateway"
_MAX_HEADER_ID_LENGTH = 128
_UTF_8 = "utf-8"
#: The charsets a body may declare, by Python's codec name: UTF-8, and ASCII (a subset of it).
_CHARSETS = frozenset({_UTF_8, "ascii"})


#: JSON's names for what a body held instead of an object.
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", Decimal: "a number",
               bool: "a boolean", type(None): "null"}  # fmt: skip


def check_content_type(content_type: str | None, charset: str | None) -> str:
    """JSON media types only (``application/json``, any ``.../...+json``), in UTF-8 or ASCII
    (a subset of it; any name Python's codecs know for either); not a CloudEvent (the gateway
    makes the event from the request's data). Returns the codec to decode the body with."""
    if content_type and content_type.strip().lower().startswith("application/cloudevents"):
        raise ErrorAnswer(
            415,
            "unsupported_media_type",
            f"the body is the request's data as application/json, not a CloudEvent (got "
            f"{content_type!r}): the gateway makes the event, its id and time",
        )
    if not content_type or not is_json_content_type(content_type):
        got = repr(content_type) if content_type else "none"
        raise ErrorAnswer(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {got}"
        )
    if charset is None:
        return _UTF_8
    codec = _codec(charset)
    if codec not in _CHARSETS:
        raise ErrorAnswer(
            415,
            "unsupported_media_type",
            f"the body must be UTF-8 (or US-ASCII) JSON, got charset {charset!r}",
        )
    return codec


def _codec(charset: str) -> str | None:
    """Python's name for ``charset`` (``us-ascii`` -> ``ascii``), or ``None`` if unknown."""
    try:
        return codecs.lookup(charset.strip()).name
    except (LookupError, ValueError):  # ValueError: a name with a NUL in it
        return None


def parse_body(body: bytes, codec: str = _UTF_8) -> dict[str, Any]:
    """The body, in ``codec`` (what :func:`check_content_type` returned), as a JSON object, or a
    400 :class:`ErrorAnswer` saying what is wrong with it. A number with a fraction or an
    exponent is the exact :class:`~decimal.Decimal` written (a price's decimals are checked as
    sent, never rounded first)."""
    if not body.strip():
        raise ErrorAnswer(400, "invalid_json", "the body is empty: send a JSON object")
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as error:
        charset = "UTF-8" if codec == _UTF_8 else "ASCII, as its charset says"
        raise ErrorAnswer(
            400,
            "invalid_json",
            f"the body is not {charset} (byte {body[error.start]:#04x} at offset {error.start})",
        ) from None
    try:
        data = parse_json(text, exact_decimals=True)  # a name given twice is refused
    except json.JSONDecodeError as error:
        raise ErrorAnswer(
            400,
            "invalid_json",
            f"the body is not valid JSON: {json_error_reason(error)} at line {error.lineno} "
            f"column {error.colno}",
        ) from None
    except (ValueError, RecursionError) as error:  # NaN/Infinity, huge ints, deep nesting
        reason = "it nests too deep" if isinstance(error, RecursionError) else str(error)
        if "int_max_str_digits" in reason:  # Python's own words for a number too long
            reason = "a number has too many digits"
        raise ErrorAnswer(400, "invalid_json", f"the body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), "not an object")
        raise ErrorAnswer(400, "not_an_object", f"the body must be a JSON object, got {kind}")
    return data


def header_id(name: str, value: str | None) -> str | None:
    """A client-given id header (1-128 printable ASCII characters), or ``None`` when absent."""
    if value is None:
        return None
    if not value or len(value) > _MAX_HEADER_ID_LENGTH or not all(" " < c <= "~" for c in value):
        raise ErrorAnswer(
            400,
            "invalid_header",
            f"{name} must be 1 to {_MAX_HEADER_ID_LENGTH} printable ASCII characters "
            "without spaces",
            [{"field": name, "message": "invalid"}],
        )
    return value


def given_once(name: str, values: Sequence[str]) -> str | None:
    """The one value of header ``name`` (``values``: every one the request has), or ``None``
    when absent; more than one is 400 ``invalid_header``: which would be the request's? (A
    proxy and the gateway could each take another, as the first one won here before.)"""
    if not values:
        return None
    if len(values) > 1:
        raise ErrorAnswer(
            400,
            "invalid_header",
            f"{name} given {len(values)} times: send it once",
            [{"field": name, "message": "repeated"}],
        )
    return values[0]


def single_header(headers: MultiMapping[str], name: str) -> str | None:
    """Header ``name`` of ``headers``, given at most once (see :func:`given_once`)."""
    return given_once(name, headers.getall(name, []))


def idempotency_key(values: list[str]) -> str | None:
    """The ``Idempotency-Key`` header (every value the request has), checked, or ``None`` when
    absent; more than one is refused (which would be the request's key?)."""
    value = given_once("Idempotency-Key", values)
    if value is None:
        return None
    problem = key_problem(value)
    if problem is not None:
        raise ErrorAnswer(
            400,
            "invalid_header",
            f"Idempotency-Key {problem}",
            [{"field": "Idempotency-Key", "message": problem}],
        )
    return value


def build_event(
    request_type: RequestType,
    request: BaseModel,
    *,
    correlation_id: str | None,
    traceparent: str | None,
) -> Event:
    """The event for one valid request, keyed (and subject) by the request's entity id.

    The correlation id is the caller's, else the event's own id. A traceparent that is not valid
    W3C is ignored, as the W3C spec says, rather than refusing the request.
    """
    key = request_type.key_of(request)
    event_id = new_event_id()
    fields: dict[str, Any] = {
        "id": event_id,
        "source": EVENT_SOURCE,
        "type": request_type.event_type,
        "subject": key,
        "partitionkey": key,
        "correlationid": correlation_id or event_id,
        "data": request.model_dump(mode="json"),
    }
    if traceparent is not None:
        try:
            return Event(**fields, traceparent=traceparent)
        except ValidationError:
            pass
    return Event(**fields)
