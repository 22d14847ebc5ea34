"""Kafka binary mode: an :class:`~pipeline.envelope.event.Event` as one Kafka message, and back.

:func:`encode` and :func:`decode` are pure and inverse; see :mod:`pipeline.envelope` for the
format. :func:`decode` also reads structured mode (:mod:`pipeline.envelope.structured_mode`),
so every reader takes whichever mode a producer chose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from pipeline.envelope.consumed_headers import header_name_bytes
from pipeline.envelope.errors import EnvelopeError
from pipeline.envelope.event import (
    Event,
    check_extension_names,
    check_media_type,
    key_as_partitionkey,
)
from pipeline.envelope.json_data import (
    CHECKED_JSON,
    MAX_JSON_DEPTH,
    dump_json,
    is_json_content_type,
    json_error_reason,
    json_may_fail_check,
    parse_json,
)
from pipeline.envelope.structured_mode import decode_structured, is_structured, looks_structured
from pipeline.envelope.times import format_time, parse_time

__all__ = [
    "ConsumedMessage",
    "EnvelopeError",
    "Headers",
    "KafkaMessage",
    "decode",
    "decode_message",
    "encode",
    "encoded_parts",
    "is_structured_message",
]

# The attributes the model names; any other ``ce_<name>`` header is kept in ``extensions``.
_HEADER_OF_FIELD = {
    "id": "ce_id",
    "source": "ce_source",
    "type": "ce_type",
    "specversion": "ce_specversion",
    "time": "ce_time",
    "subject": "ce_subject",
    "partitionkey": "ce_partitionkey",
    "traceparent": "ce_traceparent",
    "correlationid": "ce_correlationid",
    "causationid": "ce_causationid",
    "datacontenttype": "content-type",
}
_FIELD_OF_HEADER = {header: field for field, header in _HEADER_OF_FIELD.items()}
_REQUIRED_HEADERS = ("ce_id", "ce_source", "ce_type", "ce_specversion")
_REQUIRED_FIELDS = tuple((_FIELD_OF_HEADER[header], header) for header in _REQUIRED_HEADERS)
_REQUIRED_FIELD_NAMES = frozenset(field for field, _ in _REQUIRED_FIELDS)
_CONTENT_TYPE = "content-type"
_CE_PREFIX = "ce_"


@dataclass(frozen=True)
class KafkaMessage:
    """What to hand to the producer: key, value and headers of one Kafka message."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


# Headers as confluent-kafka types them; a consumed message always has a list of (str, bytes).
Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None]


class ConsumedMessage(Protocol):
    """The part of a consumed ``confluent_kafka.Message`` that :func:`decode_message` reads."""

    def value(self) -> bytes | None: ...

    def headers(self) -> Headers | None: ...

    def key(self) -> bytes | None: ...


# --- encode -----------------------------------------------------------------------------------

#: The header of each source, type and content type met lately (cleared when full: a miss only
#: makes the header again, so threads sharing them need no lock).
_SOURCE_HEADERS: dict[str, tuple[str, bytes]] = {}
_TYPE_HEADERS: dict[str, tuple[str, bytes]] = {}
_CONTENT_TYPE_HEADERS: dict[str, tuple[str, bytes]] = {}
_HEADERS_KEPT = 256
#: The header of the one specversion the model takes.
_SPECVERSION_HEADER = ("ce_specversion", b"1.0")


def _remembered(headers: dict[str, tuple[str, bytes]], name: str, value: str) -> tuple[str, bytes]:
    if len(headers) >= _HEADERS_KEPT:
        headers.clear()
    header = headers[value] = (name, value.encode())
    return header


def encode(event: Event) -> KafkaMessage:
    """The Kafka message (binary mode) that carries ``event``."""
    return KafkaMessage(*encoded_parts(event))


def encoded_parts(event: Event) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The key, value and headers of :func:`encode`, without the object around them (which
    costs a sixth of the rest, for a producer that hands the parts on at once)."""
    # Built header by header rather than from a list of every attribute filtered afterwards:
    # the same headers in the same order, at half the cost (this runs once per event sent).
    # str.encode() without its argument is UTF-8, and skips parsing one. The headers whose
    # values a program repeats (source, type, specversion, content type) are made once each.
    source = _SOURCE_HEADERS.get(event.source)
    if source is None:
        source = _remembered(_SOURCE_HEADERS, "ce_source", event.source)
    type_ = _TYPE_HEADERS.get(event.type)
    if type_ is None:
        type_ = _remembered(_TYPE_HEADERS, "ce_type", event.type)
    specversion = event.specversion
    headers = [
        ("ce_id", event.id.encode()),
        source,
        type_,
        _SPECVERSION_HEADER if specversion == "1.0" else ("ce_specversion", specversion.encode()),
    ]
    if event.time is not None:
        headers.append(("ce_time", format_time(event.time).encode()))
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    key = None
    if event.partitionkey is not None:
        key = event.partitionkey.encode()
        headers.append(("ce_partitionkey", key))
    if event.traceparent is not None:
        headers.append(("ce_traceparent", event.traceparent.encode()))
    if event.correlationid is not None:
        headers.append(("ce_correlationid", event.correlationid.encode()))
    if event.causationid is not None:
        headers.append(("ce_causationid", event.causationid.encode()))
    if event.extensions:
        extensions = event.extensions
        headers.extend(
            (_CE_PREFIX + name, extensions[name].encode()) for name in sorted(extensions)
        )
    content_type = event.datacontenttype
    content_type_header = _CONTENT_TYPE_HEADERS.get(content_type)
    if content_type_header is None:
        content_type_header = _remembered(_CONTENT_TYPE_HEADERS, _CONTENT_TYPE, content_type)
    headers.append(content_type_header)
    value: bytes | None
    if event.data is None:
        value = None
    elif content_type == "application/json" or is_json_content_type(content_type):
        value = dump_json(event.data)
    else:
        value = event.data
    return key, value, headers


# --- decode -----------------------------------------------------------------------------------


def _header_texts(headers: Headers | None) -> tuple[dict[str, Any], list[str]]:
    """The ``ce_*`` and ``content-type`` headers as text, and the names of the other ``ce_*`` ones.

    The model's attributes are keyed by field name, the other ``ce_*`` headers by lowercase header
    name (which no field has), in header order. Other headers are ignored.
    """
    pairs: Iterable[tuple[str, str | bytes | None]]
    if type(headers) is list:  # what a consumed message has: skips the slower Mapping check
        # The usual message, only attribute headers by their own names with bytes: one C pass.
        # Anything else (other or duplicate headers, str or None values, bad UTF-8) fails here
        # and is read, and refused, by the loop below.
        try:
            texts = {_FIELD_OF_HEADER[name]: value.decode("utf-8") for name, value in headers}
        except (KeyError, AttributeError, TypeError, ValueError):
            pass
        else:
            if len(texts) == len(headers):
                return texts, []
        pairs = headers
    elif isinstance(headers, Mapping):
        pairs = headers.items()
    else:
        pairs = headers or ()
    texts = {}
    others: list[str] = []
    for raw_name, raw_value in pairs:
        slot = _FIELD_OF_HEADER.get(raw_name)  # saves lower() for names already lowercase
        if slot is None and not raw_name.isascii():
            raw = header_name_bytes(raw_name)
            if raw is not None:  # Kafka's header names are text: not a valid message
                raise EnvelopeError(f"header name is not UTF-8: {raw!r}")
        if slot is None:
            name = raw_name.lower()
            slot = _FIELD_OF_HEADER.get(name)
            if slot is None:
                if not name.startswith(_CE_PREFIX):
                    continue
                slot = name
                others.append(name)
        if slot in texts:
            raise EnvelopeError(f"duplicate {raw_name.lower()} header")
        if raw_value is None:
            raise EnvelopeError(f"header {raw_name} has no value")
        if isinstance(raw_value, str):
            texts[slot] = raw_value
            continue
        try:
            texts[slot] = raw_value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(
                f"header {raw_name} is not valid UTF-8 (byte {raw_value[exc.start]:#04x} at "
                f"offset {exc.start})"
            ) from None
    return texts, others


def _decode_data(value: bytes | None, content_type: str) -> tuple[Any, bool]:
    """The data of a message, and whether it is JSON that needs no data check."""
    if not value:  # no value: no data; an empty value is no JSON data, or empty bytes
        return (None if value is None or is_json_content_type(content_type) else b""), False
    if not is_json_content_type(content_type):
        return value, False
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            f"value is not valid UTF-8 JSON for content-type {content_type!r} (byte "
            f"{value[exc.start]:#04x} at offset {exc.start})"
        ) from None
    try:
        return parse_json(text), not json_may_fail_check(text)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(
            f"value is not valid JSON for content-type {content_type!r}: "
            f"{json_error_reason(exc)} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # NaN/Infinity, or an int longer than Python converts
        raise EnvelopeError(
            f"value is not valid JSON for content-type {content_type!r}: {exc}"
        ) from None
    except RecursionError:
        raise EnvelopeError(
            f"value nests more than {MAX_JSON_DEPTH} JSON lists/objects deep"
        ) from None


def _structured_mode(
    fields: dict[str, Any], others: list[str], value: bytes | None
) -> Literal["by content type", "by value"] | None:
    """Why a message whose headers (:func:`_header_texts`) lack a binary-mode attribute is in
    structured mode, if it is: without ce_specversion, by its content type, or as the classic
    SDK writes it (no ce_* header at all). A binary-mode message always has ce_specversion."""
    content_type = fields.get("datacontenttype")
    if "specversion" not in fields and content_type is not None and is_structured(content_type):
        return "by content type"
    if not others and fields.keys() <= {"datacontenttype"} and looks_structured(value):
        return "by value"
    return None


def is_structured_message(headers: Headers | None, value: bytes | None) -> bool:
    """Whether :func:`decode` reads this message in structured mode (the event in its value);
    ``False`` for binary mode and for headers it refuses."""
    try:
        fields, others = _header_texts(headers)
    except EnvelopeError:
        return False
    if fields.keys() >= _REQUIRED_FIELD_NAMES:
        return False
    return _structured_mode(fields, others, value) is not None


def decode(value: bytes | None, headers: Headers | None, key: bytes | None = None) -> Event:
    """The event carried by a Kafka message; :class:`EnvelopeError` if none is.

    Binary mode: ``content-type`` and ``ce_*`` header names are matched case-insensitively;
    other headers are ignored. ``ce_id``, ``ce_source``, ``ce_type`` and ``ce_specversion`` are
    required; without ``ce_time`` the event's ``time`` is ``None``. Without a ``content-type``
    header the data is read as ``application/json``; data of any other content type is kept as
    bytes. Without a ``ce_partitionkey`` header, a non-empty key becomes the partitionkey (so
    it must be UTF-8 text without control characters, as a partitionkey is).
    Unknown ``ce_<name>`` headers land in ``extensions``.

    Structured mode (no ``ce_specversion`` header, and a ``content-type:
    application/cloudevents...`` header, or no ``ce_*`` header at all and a JSON object value
    with ``specversion``) is read by
    :func:`~pipeline.envelope.structured_mode.decode_structured`.
    """
    fields, others = _header_texts(headers)
    if not fields.keys() >= _REQUIRED_FIELD_NAMES:
        structured = _structured_mode(fields, others, value)
        content_type = fields.get("datacontenttype")
        if structured == "by content type":
            return decode_structured(value, key, event_format=content_type)
        if structured == "by value":
            return decode_structured(value, key, event_format=None, data_type=content_type)
        missing = [header for field, header in _REQUIRED_FIELDS if field not in fields]
        raise EnvelopeError(f"missing {', '.join(missing)} header{'s' if len(missing) > 1 else ''}")
    if fields["specversion"] != "1.0":
        raise EnvelopeError(
            f"unsupported ce_specversion {fields['specversion']!r}: only CloudEvents '1.0' is read"
        )
    extensions: dict[str, str] = {}
    for name in others:
        text = fields.pop(name)
        if name == "ce_datacontenttype":
            raise EnvelopeError("header ce_datacontenttype is not allowed: use content-type")
        extension = name.removeprefix(_CE_PREFIX)
        try:
            check_extension_names({extension: text})
        except PydanticCustomError as exc:
            raise EnvelopeError(f"invalid header {name}: {exc.message()}") from None
        extensions[extension] = text
    fields["extensions"] = extensions
    time = fields.get("time")
    fields["time"] = None if time is None else parse_time(time)  # None: no ce_time, no default
    content_type = fields.setdefault("datacontenttype", "application/json")
    if "partitionkey" not in fields and key:
        fields["partitionkey"] = key_as_partitionkey(key, "there is no ce_partitionkey header")
    try:
        check_media_type(content_type)
    except PydanticCustomError as exc:
        raise EnvelopeError(f"invalid content-type header: {exc.message()}") from None
    data, checked = _decode_data(value, content_type)
    fields["data"] = data
    try:
        # What Event.model_validate does, without its Python wrapper.
        event: Event = Event.__pydantic_validator__.validate_python(
            fields, context={CHECKED_JSON: data} if checked else None
        )
    except ValidationError as exc:
        raise EnvelopeError("; ".join(_describe(error) for error in exc.errors())) from None
    return event


def _describe(error: ErrorDetails) -> str:
    location = error["loc"]
    field = str(location[0]) if location else ""
    if field == "extensions":
        where = f"header ce_{location[1]}" if len(location) > 1 else "extension header"
    elif field == "data":
        where = "value"
    else:
        where = f"{_HEADER_OF_FIELD.get(field, field)} header"
    return f"invalid {where}: {error['msg']}"


def decode_message(message: ConsumedMessage) -> Event:
    """:func:`decode` for a consumed ``confluent_kafka.Message`` (or anything shaped like it);
    a header name that is not UTF-8 is an :class:`EnvelopeError` too
    (:class:`~pipeline.envelope.consumed_headers.HeaderNameError`), never a crash."""
    from pipeline.envelope.consumed_headers import read_headers

    value, key = message.value(), message.key()
    return decode(value, read_headers(message), key)
