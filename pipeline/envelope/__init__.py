"""The event envelope: CloudEvents 1.0 on Kafka, written in *binary mode*, read in either mode.

An :class:`Event` travels as one Kafka message:

- value: the data, as compact UTF-8 JSON for JSON content types (``application/json`` or any
  ``.../...+json``, see :func:`is_json_content_type`), the raw bytes otherwise, and no value at
  all when there is no data;
- headers: ``ce_id``, ``ce_source``, ``ce_type``, ``ce_specversion``, ``ce_time`` (RFC 3339, UTC,
  ``Z``; our events always have one), then when set ``ce_subject``, ``ce_partitionkey``,
  ``ce_traceparent``, ``ce_correlationid``, ``ce_causationid``, any other extension (by name),
  and last ``content-type``;
- key: the ``partitionkey`` extension, UTF-8.

:func:`encode` and :func:`decode` are pure and inverse: with ``m = encode(e)``,
``decode(m.value, m.headers, m.key) == e``. :func:`decode` reads every valid CloudEvents 1.0
message, whoever wrote it: binary mode with or without the optional attributes (``time``
included: an event without one has ``time=None``), JSON or any other data (kept as bytes with
its content type), and structured mode (the whole event as JSON in the value, as the official
SDK's ``to_structured`` writes it). Anything that is not a valid event makes :func:`decode`
raise :class:`EnvelopeError`, whose message says what is wrong, ready for the dead-letter
headers.

The parts: :mod:`~pipeline.envelope.event` (the model and its checks),
:mod:`~pipeline.envelope.binary_mode` (the Kafka message, both ways),
:mod:`~pipeline.envelope.structured_mode` (structured mode, read only),
:mod:`~pipeline.envelope.times` (the time as text), :mod:`~pipeline.envelope.json_data` (JSON
content types, data and strict parsing) and :mod:`~pipeline.envelope.errors`.
"""

from pipeline.envelope.binary_mode import (
    ConsumedMessage,
    Headers,
    KafkaMessage,
    decode,
    decode_message,
    encode,
)
from pipeline.envelope.errors import EnvelopeError
from pipeline.envelope.event import Event
from pipeline.envelope.json_data import is_json_content_type, json_error_reason, parse_json

__all__ = [
    "ConsumedMessage",
    "EnvelopeError",
    "Event",
    "Headers",
    "KafkaMessage",
    "decode",
    "decode_message",
    "encode",
    "is_json_content_type",
    "json_error_reason",
    "parse_json",
]
