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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
_REQUIRED_FIELDS = tuple((_FIELD_OF_HEADER[header], header) for header in _REQUIRED_HEADERS)
_REQUIRED_FIELD_NAMES = frozenset(field for field, _ in _REQUIRED_FIELDS)
_RESERVED_NAMES = frozenset({*_HEADER_OF_FIELD, "data"})
_CONTENT_TYPE = "content-type"
_CE_PREFIX = "ce_"


class EnvelopeError(PipelineError, ValueError):
    """A Kafka message that is not a valid event; the message says exactly why."""


# --- validation of single attributes ----------------------------------------------------------

# Possessive runs: the same language as one character at a time, several times faster.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]++|%[0-9A-Fa-f]{2})*+")
_URI_DELIMITERS = re.compile(r"[/?#]")
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
    if ":" not in value:  # no ':' at all, so no scheme to check
        return value
    first = _URI_DELIMITERS.split(value, maxsplit=1)[0]
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
    if value.tzinfo is UTC:  # already UTC: astimezone(UTC) would return it unchanged
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(
            "naive_time",
            "must be timezone-aware (e.g. datetime.now(UTC)), got naive {value}",
            {"value": value.isoformat()},
        )
    return value.astimezone(UTC)


def _media_type(value: str) -> str:
    if value != "application/json" and _MEDIA_TYPE.fullmatch(value) is None:  # the usual one
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
    if content_type == "application/json":  # the usual one, without the string work
        return True
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


# The validation context key under which decode hands over data it parsed from JSON text that
# cannot fail _check_json (see _json_may_fail_check); only that very object skips the walk.
_CHECKED_JSON = "pipeline.envelope:checked-json"


def _already_checked(value: Any, context: Any) -> bool:
    return (
        isinstance(context, dict) and _CHECKED_JSON in context and context[_CHECKED_JSON] is value
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
            if not _already_checked(value, info.context):
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

# A strict subset of _RFC3339: what _format_time writes.
_ENCODED_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def _parse_time(text: str) -> datetime:
    # The form encode writes, read by the C parser; 24:00 (read as the next day by newer
    # Pythons) and any error take the general path below.
    if _ENCODED_TIME.fullmatch(text) is not None and text[11:13] != "24":
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# One decoder for every call: json.loads with parse_constant would build a new one each time.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)

# A digit before an exponent, or 309 digits in a row: a number that may overflow to inf.
_MAY_OVERFLOW = re.compile(r"\d(?:[eE]|\d{308})")


def _json_may_fail_check(text: str) -> bool:
    """Whether data parsed from JSON ``text`` could still fail :func:`_check_json`.

    Parsed JSON has only JSON types and str keys, NaN/Infinity are refused while parsing, and
    ``text`` is valid UTF-8. What is left: a lone surrogate (only from a ``\\u`` escape), a float
    that overflows to inf (only with an exponent or 309+ digits), an int too long to print
    (thousands of digits, so the same test), and nesting deeper than 256 (impossible with at most
    256 ``[`` and ``{`` in all). Each test errs on the side of checking.
    """
    return (
        "\\u" in text
        or text.count("[") + text.count("{") > _MAX_JSON_DEPTH
        or _MAY_OVERFLOW.search(text) is not None
    )


def _decode_data(value: bytes | None, content_type: str) -> tuple[Any, bool]:
    """The data of a message, and whether it is JSON that needs no :func:`_check_json`."""
    if not value:  # no value: no data; an empty value is no JSON data, or empty bytes
        return (None if value is None or _is_json(content_type) else b""), False
    if not _is_json(content_type):
        return value, False
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            f"value is not valid UTF-8 JSON for content-type {content_type!r} (byte "
            f"{value[exc.start]:#04x} at offset {exc.start})"
        ) from None
    try:
        if text.startswith("\ufeff"):  # what json.loads checks before it decodes
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        # raw_decode skips decode's two whitespace regexes; the rare text it does not read to
        # the end (surrounding whitespace, extra data, an error) goes through decode as before.
        try:
            data, end = _JSON_DECODER.raw_decode(text)
        except json.JSONDecodeError:
            end = -1
        if end != len(text):
            data = _JSON_DECODER.decode(text)
        return data, not _json_may_fail_check(text)
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


def decode(value: bytes | None, headers: Headers | None, key: bytes | None = None) -> Event:
    """The event carried by a Kafka message (binary mode); :class:`EnvelopeError` if none is.

    ``content-type`` and ``ce_*`` header names are matched case-insensitively; other headers
    are ignored. Without a ``content-type`` header the data is read as ``application/json``.
    Without a ``ce_partitionkey`` header, a non-empty key becomes the partitionkey. Unknown
    ``ce_<name>`` headers land in ``extensions``.
    """
    fields, others = _header_texts(headers)
    if not fields.keys() >= _REQUIRED_FIELD_NAMES:
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
            _extension_names({extension: text})
        except PydanticCustomError as exc:
            raise EnvelopeError(f"invalid header {name}: {exc.message()}") from None
        extensions[extension] = text
    fields["extensions"] = extensions
    fields["time"] = _parse_time(fields["time"])  # replaces the text
    content_type = fields.setdefault("datacontenttype", "application/json")
    if "partitionkey" not in fields and key:
        try:
            fields["partitionkey"] = key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(
                f"the message key is not valid UTF-8 (byte {key[exc.start]:#04x} at offset "
                f"{exc.start}) and there is no ce_partitionkey header"
            ) from None
    try:
        _media_type(content_type)
    except PydanticCustomError as exc:
        raise EnvelopeError(f"invalid content-type header: {exc.message()}") from None
    data, checked = _decode_data(value, content_type)
    fields["data"] = data
    try:
        # What Event.model_validate does, without its Python wrapper.
        event: Event = Event.__pydantic_validator__.validate_python(
            fields, context={_CHECKED_JSON: data} if checked else None
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
    """:func:`decode` for a consumed ``confluent_kafka.Message`` (or anything shaped like it)."""
    return decode(message.value(), message.headers(), message.key())
