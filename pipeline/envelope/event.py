"""The :class:`Event` model: one CloudEvents 1.0 event, every attribute checked when it is made."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.envelope.errors import EnvelopeError
from pipeline.envelope.json_data import already_checked, check_json, is_json_content_type
from pipeline.ids import new_event_id

__all__ = [
    "Event",
    "check_extension_names",
    "check_media_type",
    "control_character_at",
    "key_as_partitionkey",
]

# Possessive runs: the same language as one character at a time, several times faster.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]++|%[0-9A-Fa-f]{2})*+")
_URI_DELIMITERS = re.compile(r"[/?#]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+(?:\s*;.*)?", re.DOTALL)
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
# The characters CloudEvents' String type refuses (spec, "Type System"): a line break would split
# a log line, and a Kafka or HTTP header, in two.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --- validation of single attributes ----------------------------------------------------------


def control_character_at(value: str) -> int | None:
    """The offset in ``value`` of its first character that CloudEvents' String type refuses, a
    control character (U+0000-U+001F, U+007F-U+009F: a line break, a tab, an escape, DEL...);
    None when there is none."""
    # str.isprintable() is False for every one of them, and for more (U+00A0, U+200B, which are
    # allowed): a quick answer for the usual value, the exact test only for the others.
    if value.isprintable():
        return None
    found = _CONTROL_CHARACTER.search(value)
    return None if found is None else found.start()


def key_as_partitionkey(key: bytes, missing: str) -> str:
    """A consumed message's key as the partitionkey of an event that names none (``missing``
    says so in an error: "there is no ce_partitionkey header"); an :class:`EnvelopeError` for
    a key that is not UTF-8 text, or that holds a control character (a Java LongSerializer's
    eight bytes are valid UTF-8 and mostly that)."""
    try:
        partitionkey = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            f"the message key is not valid UTF-8 (byte {key[exc.start]:#04x} at offset "
            f"{exc.start}) and {missing}"
        ) from None
    at = control_character_at(partitionkey)
    if at is not None:
        raise EnvelopeError(
            f"the message key holds a control character (U+{ord(partitionkey[at]):04X} at "
            f"offset {at}), which a partitionkey must not, and {missing}"
        )
    return partitionkey


def _no_control_characters(value: str) -> str:
    if value.isprintable():  # the usual value, without a call more (see control_character_at)
        return value
    at = control_character_at(value)
    if at is not None:
        raise PydanticCustomError(
            "control_characters",
            "must not contain control characters (U+0000-U+001F, U+007F-U+009F), found "
            "U+{code} at offset {offset}",
            {"code": f"{ord(value[at]):04X}", "offset": at},
        )
    return value


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


def check_media_type(value: str) -> str:
    """``value`` if it is a media type (``type/subtype``, parameters allowed); else an error."""
    if value == "application/json":  # the usual one
        return value
    if _MEDIA_TYPE.fullmatch(value) is None:
        raise PydanticCustomError(
            "media_type",
            "must be a media type such as 'application/json', got {value}",
            {"value": repr(value)},
        )
    return _no_control_characters(value)  # parameters may hold anything else


def check_extension_names(value: dict[str, str]) -> dict[str, str]:
    """``value`` if every name is a valid extension name (a-z0-9, not an attribute's own)."""
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


# --- the model --------------------------------------------------------------------------------

_Text = Annotated[str, Field(min_length=1)]
#: CloudEvents' String: no control characters. ``source`` is a ``_Text`` whose URI-reference
#: check already allows none (nor any other character outside ASCII).
_String = Annotated[str, AfterValidator(_no_control_characters)]
_NonEmptyString = Annotated[_Text, AfterValidator(_no_control_characters)]


class Event(BaseModel):
    """One CloudEvents 1.0 event. Immutable; every attribute is checked when it is made.

    ``data`` is kept as given (not copied): JSON values for JSON content types, bytes otherwise.
    ``extensions`` holds any other CloudEvents attribute (lowercase a-z0-9 names), as text.
    No attribute's text may hold a control character (U+0000-U+001F, U+007F-U+009F), which
    CloudEvents' String type refuses.
    ``time`` is the current time unless given; it is ``None`` only for an event read from a
    producer that did not set it (the attribute is optional in CloudEvents).
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    id: _NonEmptyString = Field(default_factory=new_event_id)
    source: Annotated[_Text, AfterValidator(_uri_reference)]
    type: _NonEmptyString
    specversion: Literal["1.0"] = "1.0"
    time: Annotated[datetime, AfterValidator(_utc)] | None = Field(
        default_factory=lambda: datetime.now(UTC)
    )
    subject: _NonEmptyString | None = None
    datacontenttype: Annotated[_Text, AfterValidator(check_media_type)] = "application/json"
    partitionkey: _NonEmptyString | None = None
    traceparent: Annotated[str, AfterValidator(_traceparent)] | None = None
    correlationid: _NonEmptyString | None = None
    causationid: _NonEmptyString | None = None
    extensions: Annotated[dict[str, _String], AfterValidator(check_extension_names)] = Field(
        default_factory=dict
    )
    data: Any = None

    @field_serializer("data", when_used="json")
    def _data_as_json(self, value: Any) -> Any:
        # Bytes data (a non-JSON content type) is standard base64 in model_dump(mode="json")
        # and model_dump_json, as CloudEvents' JSON format carries it (data_base64): UTF-8 text
        # failed for bytes that are not, and pydantic's own base64 is the URL-safe alphabet.
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        return value

    @field_validator("data")
    @classmethod
    def _data_fits_content_type(cls, value: Any, info: ValidationInfo) -> Any:
        content_type = info.data.get("datacontenttype")
        if content_type is None or value is None:  # no data, or the content type itself failed
            return value
        if is_json_content_type(content_type):
            if isinstance(value, bytes | bytearray | memoryview):
                raise PydanticCustomError(
                    "data_type",
                    "is bytes but datacontenttype {content_type} is JSON: give the parsed value, "
                    "or a non-JSON content type such as 'application/octet-stream'",
                    {"content_type": repr(content_type)},
                )
            if not already_checked(value, info.context):
                check_json(value)
            return value
        if not isinstance(value, bytes):
            raise PydanticCustomError(
                "data_type",
                "must be bytes (or None) for the non-JSON datacontenttype {content_type}, "
                "got {kind}",
                {"content_type": repr(content_type), "kind": type(value).__name__},
            )
        return value


# The names of the attributes the model has (every field but ``extensions``): no extension may
# take one of them.
_RESERVED_NAMES = frozenset(Event.model_fields) - {"extensions"}
