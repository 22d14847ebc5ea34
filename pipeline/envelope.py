"""The event envelope: CloudEvents 1.0 in Kafka *binary mode*.

An :class:`Event` travels as one Kafka message:

- value: the data, as compact UTF-8 JSON for JSON content types (``application/json`` or any
  ``.../...+json``), the raw bytes otherwise, and no value at all when there is no data;
- headers: ``ce_id``, ``ce_source``, ``ce_type``, ``ce_specversion``, ``ce_time`` (RFC 3339, UTC,
  ``Z``), then when set ``ce_subject``, ``ce_partitionkey``, ``ce_traceparent``,
  ``ce_correlationid``, ``ce_causationid``, any other extension (by name), and last
  ``content-type``;
- key: the ``partitionkey`` extension, UTF-8.

:func:`encode` and :func:`decode` are pure and inverse: with ``m = encode(e)``,
``decode(m.value, m.headers, m.key) == e``. Anything that is not a valid event makes
:func:`decode` raise :class:`EnvelopeError`, whose message says what is wrong, ready for the
dead-letter headers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from pipeline.errors import PipelineError
from pipeline.ids import new_event_id

__all__ = [
    "ConsumedMessage",
    "EnvelopeError",
    "Event",
    "Headers",
    "KafkaMessage",
    "decode",
    "decode_message",
    "encode",
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
_REQUIRED_HEADERS = ("ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time")
_RESERVED_NAMES = frozenset({*_HEADER_OF_FIELD, "data"})
_CONTENT_TYPE = "content-type"
_CE_PREFIX = "ce_"


class EnvelopeError(PipelineError, ValueError):
    """A Kafka message that is not a valid event; the message says exactly why."""


# --- validation of single attributes ----------------------------------------------------------

_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+(?:\s*;.*)?", re.DOTALL)
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")


def _uri_reference(value: str) -> str:
    if _URI_CHARS.fullmatch(value) is None:
        raise PydanticCustomError(
            "uri_reference",
            "must be a URI-reference (RFC 3986: ASCII, no spaces, %-escapes as %XX), got {value}",
            {"value": repr(value)},
        )
    first = re.split(r"[/?#]", value, maxsplit=1)[0]
    if ":" in first and _SCHEME.fullmatch(first.split(":", 1)[0]) is None:
        raise PydanticCustomError(
            "uri_reference",
            "must be a URI-reference (RFC 3986), but {scheme} before ':' is not a valid scheme",
            {"scheme": repr(first.split(":", 1)[0])},
        )
    return value


def _traceparent(value: str) -> str:
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        raise PydanticCustomError(
            "traceparent",
            "must be a W3C traceparent '00-<32 lowercase hex trace-id>-<16 lowercase hex "
            "parent-id>-<2 lowercase hex flags>', got {value}",
            {"value": repr(value)},
        )
    trace_id, parent_id = match.groups()
    for name, part in (("trace-id", trace_id), ("parent-id", parent_id)):
        if part.strip("0") == "":
            raise PydanticCustomError(
                "traceparent",
                "must be a W3C traceparent whose {name} is not all zeros, got {value}",
                {"name": name, "value": repr(value)},
            )
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(
            "naive_time",
            "must be timezone-aware (e.g. datetime.now(UTC)), got naive {value}",
            {"value": value.isoformat()},
        )
    return value.astimezone(UTC)


def _media_type(value: str) -> str:
    if _MEDIA_TYPE.fullmatch(value) is None:
        raise PydanticCustomError(
            "media_type",
            "must be a media type such as 'application/json', got {value}",
            {"value": repr(value)},
        )
    return value


def _extension_names(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if name in _RESERVED_NAMES:
            raise PydanticCustomError(
                "extension_name",
                "{name} is a CloudEvents attribute of its own, not an extension",
                {"name": repr(name)},
            )
        if _EXTENSION_NAME.fullmatch(name) is None:
            raise PydanticCustomError(
                "extension_name",
                "extension name {name} must use only lowercase letters a-z and digits 0-9",
                {"name": repr(name)},
            )
    return value


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# Deeper JSON is refused, so that encoding it can never hit Python's recursion limit.
_MAX_JSON_DEPTH = 256

# One value met while checking data: (value, its key or index, the node of its container, depth).
_Node = tuple[Any, str | int | None, Any, int]


def _check_json(data: Any) -> None:
    """Raise a clear error unless ``data`` is made of dict/list/str/int/float/bool/None only.

    Iterative (no recursion), and the path of a bad value is only spelled out when one is found.
    """
    stack: list[_Node] = [(data, None, None, 0)]
    while stack:
        node = stack.pop()
        value, _, _, depth = node
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            _check_int(value, node)
            continue
        if isinstance(value, str):
            _check_utf8(value, node)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _not_json(node, f"{value!r} is not a JSON number")
        elif isinstance(value, list | dict):
            if depth >= _MAX_JSON_DEPTH:
                raise PydanticCustomError(
                    "not_json",
                    "data nests more than {limit} JSON lists/objects deep",
                    {"limit": _MAX_JSON_DEPTH},
                )
            if isinstance(value, list):
                stack.extend((item, index, node, depth + 1) for index, item in _backwards(value))
                continue
            for key in value:
                if not isinstance(key, str):
                    raise _not_json(node, f"key {key!r} is of type {type(key).__name__}, not str")
                _check_utf8(key, node)
            stack.extend((item, key, node, depth + 1) for key, item in reversed(value.items()))
        else:
            raise _not_json(node, f"type {type(value).__name__} is not a JSON type")


def _backwards(items: list[Any]) -> Iterator[tuple[int, Any]]:
    for index in range(len(items) - 1, -1, -1):
        yield index, items[index]


def _check_int(number: int, node: _Node) -> None:
    if number.bit_length() > 10_000:  # only huge ints can pass Python's int-to-str digit limit
        try:
            str(number)
        except ValueError as exc:
            raise _not_json(node, str(exc)) from None


def _check_utf8(text: str, node: _Node) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _not_json(node, f"a string holds {text[exc.start]!a}, not UTF-8") from None


def _not_json(node: _Node, reason: str) -> PydanticCustomError:
    keys: list[str | int | None] = []
    while node[2] is not None:
        keys.append(node[1])
        node = node[2]
    path = "data" + "".join(f"[{key!r}]" for key in reversed(keys))
    return PydanticCustomError(
        "not_json", "{path} is not JSON-compatible: {reason}", {"path": path, "reason": reason}
    )


_Text = Annotated[str, Field(min_length=1)]


class Event(BaseModel):
    """One CloudEvents 1.0 event. Immutable; every attribute is checked when it is made.

    ``data`` is kept as given (not copied): JSON values for JSON content types, bytes otherwise.
    ``extensions`` holds any other CloudEvents attribute (lowercase a-z0-9 names), as text.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    id: _Text = Field(default_factory=new_event_id)
    source: Annotated[_Text, AfterValidator(_uri_reference)]
    type: _Text
    specversion: Literal["1.0"] = "1.0"
    time: Annotated[datetime, AfterValidator(_utc)] = Field(
        default_factory=lambda: datetime.now(UTC)
    )
    subject: _Text | None = None
    datacontenttype: Annotated[_Text, AfterValidator(_media_type)] = "application/json"
    partitionkey: _Text | None = None
    traceparent: Annotated[str, AfterValidator(_traceparent)] | None = None
    correlationid: _Text | None = None
    causationid: _Text | None = None
    extensions: Annotated[dict[str, str], AfterValidator(_extension_names)] = Field(
        default_factory=dict
    )
    data: Any = None

    @field_validator("data")
    @classmethod
    def _data_fits_content_type(cls, value: Any, info: ValidationInfo) -> Any:
        content_type = info.data.get("datacontenttype")
        if content_type is None or value is None:  # no data, or the content type itself failed
            return value
        if _is_json(content_type):
            if isinstance(value, bytes | bytearray | memoryview):
                raise PydanticCustomError(
                    "data_type",
                    "is bytes but datacontenttype {content_type} is JSON: give the parsed value, "
                    "or a non-JSON content type such as 'application/octet-stream'",
                    {"content_type": repr(content_type)},
                )
            _check_json(value)
            return value
        if not isinstance(value, bytes):
            raise PydanticCustomError(
                "data_type",
                "must be bytes (or None) for the non-JSON datacontenttype {content_type}, "
                "got {kind}",
                {"content_type": repr(content_type), "kind": type(value).__name__},
            )
        return value


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


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def encode(event: Event) -> KafkaMessage:
    """The Kafka message (binary mode) that carries ``event``."""
    attributes: list[tuple[str, str | None]] = [
        ("ce_id", event.id),
        ("ce_source", event.source),
        ("ce_type", event.type),
        ("ce_specversion", event.specversion),
        ("ce_time", _format_time(event.time)),
        ("ce_subject", event.subject),
        ("ce_partitionkey", event.partitionkey),
        ("ce_traceparent", event.traceparent),
        ("ce_correlationid", event.correlationid),
        ("ce_causationid", event.causationid),
        *((_CE_PREFIX + name, event.extensions[name]) for name in sorted(event.extensions)),
        (_CONTENT_TYPE, event.datacontenttype),
    ]
    headers = [(name, text.encode("utf-8")) for name, text in attributes if text is not None]
    value: bytes | None
    if event.data is None:
        value = None
    elif _is_json(event.datacontenttype):
        text = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        value = text.encode("utf-8")
    else:
        value = event.data
    key = event.partitionkey.encode("utf-8") if event.partitionkey is not None else None
    return KafkaMessage(key=key, value=value, headers=headers)


# --- decode -----------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def _parse_time(text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise EnvelopeError(
            f"invalid ce_time header {text!r}: expected an RFC 3339 time such as "
            "'2024-01-31T12:00:00.000000Z'"
        )
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        tz = UTC
        if zulu is None:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        micros = int((fraction or "0")[:6].ljust(6, "0"))
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError as exc:
        raise EnvelopeError(f"invalid ce_time header {text!r}: {exc}") from None
    return parsed.astimezone(UTC)


def _header_texts(headers: Headers | None) -> dict[str, str]:
    """The ``ce_*`` and ``content-type`` headers by lowercase name, as text; others are ignored."""
    texts: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for raw_name, raw_value in pairs:
        name = raw_name.lower()
        if name != _CONTENT_TYPE and not name.startswith(_CE_PREFIX):
            continue
        if name in texts:
            raise EnvelopeError(f"duplicate {name} header")
        if raw_value is None:
            raise EnvelopeError(f"header {raw_name} has no value")
        if isinstance(raw_value, str):
            texts[name] = raw_value
            continue
        try:
            texts[name] = raw_value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(
                f"header {raw_name} is not valid UTF-8 (byte {raw_value[exc.start]:#04x} at "
                f"offset {exc.start})"
            ) from None
    return texts


def _decode_data(value: bytes | None, content_type: str) -> Any:
    if not value:  # no value: no data; an empty value is no JSON data, or empty bytes
        return None if value is None or _is_json(content_type) else b""
    if not _is_json(content_type):
        return value
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            f"value is not valid UTF-8 JSON for content-type {content_type!r} (byte "
            f"{value[exc.start]:#04x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(
            f"value is not valid JSON for content-type {content_type!r}: {exc.msg} at line "
            f"{exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # NaN/Infinity, or an int longer than Python converts
        raise EnvelopeError(
            f"value is not valid JSON for content-type {content_type!r}: {exc}"
        ) from None
    except RecursionError:
        raise EnvelopeError(
            f"value nests more than {_MAX_JSON_DEPTH} JSON lists/objects deep"
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode(value: bytes | None, headers: Headers | None, key: bytes | None = None) -> Event:
    """The event carried by a Kafka message (binary mode); :class:`EnvelopeError` if none is.

    ``content-type`` and ``ce_*`` header names are matched case-insensitively; other headers
    are ignored. Without a ``content-type`` header the data is read as ``application/json``.
    Without a ``ce_partitionkey`` header, a non-empty key becomes the partitionkey. Unknown
    ``ce_<name>`` headers land in ``extensions``.
    """
    texts = _header_texts(headers)
    missing = [name for name in _REQUIRED_HEADERS if name not in texts]
    if missing:
        raise EnvelopeError(f"missing {', '.join(missing)} header{'s' if len(missing) > 1 else ''}")
    if texts["ce_specversion"] != "1.0":
        raise EnvelopeError(
            f"unsupported ce_specversion {texts['ce_specversion']!r}: only CloudEvents '1.0' "
            "is read"
        )
    fields: dict[str, Any] = {"extensions": {}}
    for name, text in texts.items():
        if name in _FIELD_OF_HEADER:
            fields[_FIELD_OF_HEADER[name]] = text
        elif name == "ce_datacontenttype":
            raise EnvelopeError("header ce_datacontenttype is not allowed: use content-type")
        else:
            extension = name.removeprefix(_CE_PREFIX)
            try:
                _extension_names({extension: text})
            except PydanticCustomError as exc:
                raise EnvelopeError(f"invalid header {name}: {exc.message()}") from None
            fields["extensions"][extension] = text
    fields["time"] = _parse_time(texts["ce_time"])  # replaces the text
    fields.setdefault("datacontenttype", "application/json")
    if "partitionkey" not in fields and key:
        try:
            fields["partitionkey"] = key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(
                f"the message key is not valid UTF-8 (byte {key[exc.start]:#04x} at offset "
                f"{exc.start}) and there is no ce_partitionkey header"
            ) from None
    try:
        _media_type(fields["datacontenttype"])
    except PydanticCustomError as exc:
        raise EnvelopeError(f"invalid content-type header: {exc.message()}") from None
    fields["data"] = _decode_data(value, fields["datacontenttype"])
    try:
        return Event(**fields)
    except ValidationError as exc:
        raise EnvelopeError("; ".join(_describe(error) for error in exc.errors())) from None


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
    """:func:`decode` for a consumed ``confluent_kafka.Message`` (or anything shaped like it)."""
    return decode(message.value(), message.headers(), message.key())
