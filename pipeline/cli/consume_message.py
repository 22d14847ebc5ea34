"""One consumed Kafka message as the JSON line ``pipeline consume`` prints (pure).

One JSON object per message, keys in this order: ``topic``, ``partition``, ``offset``,
``timestamp`` (Kafka's, in ms since 1970, or null), ``key`` (text; null plus ``key_base64`` when
it is not UTF-8), then the CloudEvents attributes ``id``, ``source``, ``type``, ``time``,
``subject``, ``partitionkey``, ``correlationid``, ``causationid``, ``traceparent``,
``extensions``, ``headers`` (any other Kafka headers, as ``[name, value]`` pairs; a value
that is not UTF-8 as ``{"base64": ...}``),
``datacontenttype`` and ``data``: JSON data as JSON, text data (``text/*``) as a
string, any other data as ``data_base64`` (CloudEvents' own name for it) with ``data`` null.
A message that is not a valid event is printed too, with ``error`` (why), its ``headers`` and
its ``value_base64``: nothing is skipped and nothing crashes. That includes a message with a
header name that is not UTF-8 text (kcat, for one, sends such names), which confluent-kafka
cannot read: none of its headers can be had, so it is printed with ``error`` naming the header
(escaped, e.g. ``x-bad\\xff``), ``headers`` null and its ``value_base64``, with one warning on
stderr naming the first such message, and the read goes on.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipeline.envelope import ConsumedMessage, Event, Headers

__all__ = ["KafkaRecord", "header_value_json", "message_json", "ndjson_line"]


if TYPE_CHECKING:

    class KafkaRecord(ConsumedMessage, Protocol):
        """The part of a consumed ``confluent_kafka.Message`` that is printed."""

        def topic(self) -> str | None: ...

        def partition(self) -> int | None: ...

        def offset(self) -> int | None: ...

        def timestamp(self) -> tuple[int, int]: ...


# --- one message as JSON (pure) ---------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _text_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _position(message: KafkaRecord, key: bytes | None) -> dict[str, Any]:
    from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

    kind, stamp = message.timestamp()
    fields: dict[str, Any] = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": None if kind == TIMESTAMP_NOT_AVAILABLE else stamp,
    }
    text = None if key is None else _text_or_none(key)
    fields["key"] = text
    if key is not None and text is None:
        fields["key_base64"] = _b64(key)
    return fields


def _data(event: Event) -> dict[str, Any]:
    from pipeline.envelope import is_json_content_type

    if event.data is None or is_json_content_type(event.datacontenttype):
        return {"data": event.data}
    raw: bytes = event.data
    if event.datacontenttype.lower().startswith("text/"):
        text = _text_or_none(raw)
        if text is not None:
            return {"data": text}
    return {"data": None, "data_base64": _b64(raw)}


def _headers(headers: Headers | None, *, envelope: bool) -> list[list[Any]]:
    """The headers as ``[name, value]`` pairs (:func:`header_value_json`), without the
    envelope's unless ``envelope``."""
    pairs: list[list[Any]] = []
    items = headers.items() if isinstance(headers, Mapping) else headers or []
    for name, value in items:
        if not envelope and (name.lower().startswith("ce_") or name.lower() == "content-type"):
            continue
        pairs.append([name, header_value_json(value)])
    return pairs


def header_value_json(value: str | bytes | None) -> str | dict[str, str] | None:
    """A header value as JSON: text, ``{"base64": ...}`` when it is not UTF-8 (as a recording
    keeps it: escaped text could not be told from a value that is that text), or ``None``."""
    if value is None or isinstance(value, str):
        return value
    text = _text_or_none(value)
    return {"base64": _b64(value)} if text is None else text


def message_json(message: KafkaRecord) -> dict[str, Any]:
    """One consumed message as the JSON object ``pipeline consume`` prints; one whose headers
    cannot be read (:class:`HeaderNameError`) with ``error`` and ``headers`` null."""
    from pipeline.envelope import EnvelopeError, decode
    from pipeline.envelope.consumed_headers import HeaderNameError, read_headers

    # Everything but the headers first: after a HeaderNameError the message is left alone.
    key, value = message.key(), message.value()
    fields = _position(message, key)
    try:
        headers = read_headers(message)
    except HeaderNameError as error:
        return {
            **fields,
            "error": str(error),
            "headers": None,
            "value_base64": None if value is None else _b64(value),
        }
    try:
        event = decode(value, headers, key)
    except EnvelopeError as error:
        return {
            **fields,
            "error": str(error),
            "headers": _headers(headers, envelope=True),
            "value_base64": None if value is None else _b64(value),
        }
    time = None
    if event.time is not None:
        time = event.time.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {
        **fields,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": time,
        "subject": event.subject,
        "partitionkey": event.partitionkey,
        "correlationid": event.correlationid,
        "causationid": event.causationid,
        "traceparent": event.traceparent,
        "extensions": event.extensions,
        "headers": _headers(headers, envelope=False),
        "datacontenttype": event.datacontenttype,
        **_data(event),
    }


def ndjson_line(fields: dict[str, Any]) -> bytes:
    """One object as a compact UTF-8 NDJSON line."""
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


# --- reading ----------------------------------------------------------------------------------
