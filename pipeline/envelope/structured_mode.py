"""Kafka structured mode: the whole event as one JSON object in the message value (read only).

In CloudEvents' Kafka binding, a structured-mode message carries the event in the JSON event
format: its attributes are the object's members, and its data is ``data`` (JSON data as JSON,
text as a string) or ``data_base64`` (any bytes, base64). The official SDK writes it with
``to_structured``, in one of two ways, and both are read here:

- the 2.x core binding (``cloudevents.core.bindings.kafka``): a ``content-type:
  application/cloudevents+json`` header, as the binding specifies;
- the classic API (``cloudevents.kafka``): no ``ce_*`` header at all, and as ``content-type``
  the data's own type or nothing. Like the SDK's own reader, a message with no ``ce_*`` header
  whose value is a JSON object with a ``specversion`` member is read as structured.

Attributes are strings; an extension may also be an integer or a boolean, kept as its canonical
text (``"3"``, ``"true"``). A member whose value is ``null`` is an absent attribute. Without a
``partitionkey`` attribute, a non-empty message key becomes the partitionkey, as in binary mode.
Our own producers write binary mode (see :mod:`pipeline.envelope.binary_mode`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from pipeline.envelope.errors import EnvelopeError
from pipeline.envelope.event import (
    Event,
    check_extension_names,
    check_media_type,
    key_as_partitionkey,
)
from pipeline.envelope.json_data import (
    MAX_JSON_DEPTH,
    is_json_content_type,
    json_error_reason,
    parse_json,
)
from pipeline.envelope.times import parse_time

__all__ = ["FORMAT", "decode_structured", "is_structured", "looks_structured"]

#: The media type of the JSON event format, the one structured format read.
FORMAT = "application/cloudevents+json"
_PREFIX = "application/cloudevents"
_REQUIRED = ("id", "source", "type", "specversion")
# The attributes the model names (all strings); every other member but the data is an extension.
_NAMED = frozenset(Event.model_fields) - {"extensions", "data"}


def is_structured(content_type: str) -> bool:
    """Whether a ``content-type`` header marks a structured-mode message (any event format)."""
    return content_type[: len(_PREFIX)].lower() == _PREFIX


def looks_structured(value: bytes | None) -> bool:
    """Whether ``value`` may be a structured event: a JSON object with a ``specversion`` member.

    For messages without any ``ce_*`` header (the classic SDK's structured mode); a cheap test,
    the parse decides.
    """
    return value is not None and value.lstrip()[:1] == b"{" and b'"specversion"' in value


def decode_structured(
    value: bytes | None,
    key: bytes | None,
    *,
    event_format: str | None,
    data_type: str | None = None,
) -> Event:
    """The event of a structured-mode message; :class:`EnvelopeError` if it is none.

    ``event_format`` is the message's ``content-type`` header when it names an event format;
    ``None`` for a message recognised by :func:`looks_structured`, whose ``content-type``
    header, if any, is ``data_type``: the data's type when the event has no
    ``datacontenttype`` member (the classic SDK moves it there).
    """
    if event_format is not None and event_format.split(";", 1)[0].strip().lower() != FORMAT:
        raise EnvelopeError(
            f"unsupported event format {event_format!r}: structured mode is read in JSON "
            f"({FORMAT!r}) only"
        )
    document = _document(value)
    missing = [name for name in _REQUIRED if document.get(name) is None]
    if missing:
        s = "s" if len(missing) > 1 else ""
        raise EnvelopeError(f"missing {', '.join(missing)} attribute{s} in the structured event")
    if document["specversion"] != "1.0":
        raise EnvelopeError(
            f"unsupported specversion {document['specversion']!r}: only CloudEvents '1.0' is read"
        )
    fields: dict[str, Any] = {}
    extensions: dict[str, str] = {}
    for name, member in document.items():
        if name in ("data", "data_base64") or member is None:
            continue
        if name in _NAMED:
            if not isinstance(member, str):
                raise EnvelopeError(
                    f"invalid {name} attribute: must be a string, got {_json_kind(member)}"
                )
            fields[name] = member
        else:
            extensions[name] = _extension_text(name, member)
    try:
        check_extension_names(extensions)
    except PydanticCustomError as exc:
        raise EnvelopeError(f"invalid attribute: {exc.message()}") from None
    fields["extensions"] = extensions
    time = fields.get("time")
    fields["time"] = None if time is None else parse_time(time, "time attribute")
    # Without a type named, JSON for ``data`` (the event format's default) and bytes for
    # ``data_base64`` (binary data of no type named, as the SDK reads it: it was refused when
    # the bytes were not JSON).
    unnamed = "application/octet-stream" if "data_base64" in document else "application/json"
    data_type = fields.setdefault("datacontenttype", data_type or unnamed)
    try:
        check_media_type(data_type)
    except PydanticCustomError as exc:
        raise EnvelopeError(f"invalid datacontenttype attribute: {exc.message()}") from None
    fields["data"] = _data(document, data_type)
    if "partitionkey" not in fields and key:
        fields["partitionkey"] = key_as_partitionkey(key, "the event has no partitionkey attribute")
    try:
        event: Event = Event.model_validate(fields)
    except ValidationError as exc:
        raise EnvelopeError("; ".join(_describe(error) for error in exc.errors())) from None
    return event


def _document(value: bytes | None) -> dict[str, Any]:
    """The value parsed as the event's JSON object."""
    if not value:
        raise EnvelopeError(
            "structured-mode message has no value: expected the event as a JSON object"
        )
    try:
        document = parse_json(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            f"structured event is not valid UTF-8 (byte {value[exc.start]:#04x} at offset "
            f"{exc.start})"
        ) from None
    except json.JSONDecodeError as exc:
        raise EnvelopeError(
            f"structured event is not valid JSON: {json_error_reason(exc)} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    except ValueError as exc:  # NaN/Infinity, or an int longer than Python converts
        raise EnvelopeError(f"structured event is not valid JSON: {exc}") from None
    except RecursionError:
        raise EnvelopeError(
            f"structured event nests more than {MAX_JSON_DEPTH} JSON lists/objects deep"
        ) from None
    if not isinstance(document, dict):
        raise EnvelopeError(
            f"structured event is a JSON {_json_kind(document)}, not an object of attributes"
        )
    return document


def _extension_text(name: str, member: Any) -> str:
    """An extension's canonical text: strings as they are, integers and booleans as text."""
    if isinstance(member, str):
        return member
    if isinstance(member, bool):
        return "true" if member else "false"
    if isinstance(member, int):
        return str(member)
    raise EnvelopeError(
        f"invalid {name} attribute: must be a string, an integer or a boolean, got "
        f"{_json_kind(member)}"
    )


def _data(document: dict[str, Any], data_type: str) -> Any:
    """The event's data: from ``data`` or ``data_base64``, as the content type wants it."""
    data = document.get("data")
    encoded = document.get("data_base64")
    if data is not None and encoded is not None:
        raise EnvelopeError("the structured event has both data and data_base64: give one")
    is_json = is_json_content_type(data_type)
    if encoded is not None:
        if not isinstance(encoded, str):
            raise EnvelopeError(f"invalid data_base64: must be a string, got {_json_kind(encoded)}")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EnvelopeError(f"invalid data_base64: not base64 ({exc})") from None
        return _json_bytes(raw, data_type) if is_json else raw
    if data is None or is_json:
        return data
    if not isinstance(data, str):
        raise EnvelopeError(
            f"invalid data: must be a string (or data_base64) for the non-JSON datacontenttype "
            f"{data_type!r}, got {_json_kind(data)}"
        )
    try:
        return data.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EnvelopeError(f"invalid data: holds {data[exc.start]!a}, not UTF-8") from None


def _json_bytes(raw: bytes, data_type: str) -> Any:
    """JSON data sent as ``data_base64``, parsed."""
    try:
        return parse_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError(
            f"invalid data_base64: not JSON for datacontenttype {data_type!r} ({exc})"
        ) from None


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer"}
    kinds[float] = "number"
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _describe(error: ErrorDetails) -> str:
    location = error["loc"]
    field = str(location[0]) if location else ""
    if field == "extensions":
        where = f"{location[1]} attribute" if len(location) > 1 else "extension attribute"
    elif field == "data":
        where = "data"
    else:
        where = f"{field} attribute"
    return f"invalid {where}: {error['msg']}"
