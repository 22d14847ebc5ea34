"""NDJSON lines into events, or into rejections that say why: pure, no I/O.

Each line of the input is the data of one event. :func:`parse_line` turns one line into a
:class:`ReadyEvent` (the event and the exact Kafka message to send) or a :class:`RejectedLine`
(line number, reason, the raw line), in this order:

1. a blank line is skipped (its number still counts);
2. the line must be UTF-8 JSON (no NaN/Infinity) holding one object: that object is the data;
3. with a registered request type (``--type place_order`` or its CloudEvents type
   ``com.example.requests.place_order``) the data must fit the type's model, and what is sent
   is the model's JSON form (defaults filled in, text stripped, decimals as strings);
4. the key: the request type's key field, else ``--key-field FIELD`` (a top-level field) or
   ``--key-from PATH`` (``$.order.id``, ``order.id``, ``lines[0].sku``, ``$['a.b']``); a missing,
   null, empty or non-scalar key rejects the line; without any of these the event has no key;
5. the event is built (``ce_correlationid`` is the run id, the same for every line of a run) and
   encoded, with the ``--header k=v`` pairs appended after the envelope's headers.

Nothing here sends anything, so a line is either wholly ready or rejected: never half-sent.
A ready event can still be refused by the Kafka client when it is sent (above all one larger
than ``message.max.bytes``, :data:`MAX_MESSAGE_BYTES`): :func:`refused` makes that a rejection
of its line too, and :func:`rejections_in` (the first pass of ``--strict``) checks the size in
advance with librdkafka's own formula (:func:`message_size`), so that ``--strict`` sends nothing
rather than everything up to a line that is too large.
Options are checked eagerly by :func:`line_rules`, which raises :class:`ProduceOptionError`
(a :class:`PipelineError`) for anything wrong with them rather than rejecting every line.

Decisions:

- ``--type`` that is not a registered request type is used as the CloudEvents type as is; a bare
  lowercase name (``place_ordr``) or a ``com.example.requests.*`` type that is not registered
  is refused as a likely typo of a request type. Without ``--type`` the type is
  :data:`DEFAULT_EVENT_TYPE`.
- A request type travels on its own topic: sending it to another topic is refused unless
  ``allow_other_topic`` (``--any-topic``), so that a typo cannot pour orders into the customers
  topic. Its key is always the type's key field; ``--key-field``/``--key-from`` may only name it.
- Keys are JSON strings, or integers (their decimal text); anything else rejects the line.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.envelope import Event, KafkaMessage, json_error_reason, parse_json
from pipeline.envelope.template import EventTemplate
from pipeline.errors import PipelineError
from pipeline.kafka.message_size import MAX_MESSAGE_BYTES, wire_size
from pipeline.request_types import (
    REQUEST_TYPES,
    RequestType,
    RequestValidationError,
    UnknownRequestType,
    request_type,
)
from producers.ndjson_defaults import DEFAULT_EVENT_TYPE, DEFAULT_SOURCE
from producers.ndjson_fast import EncodedLine, line_encoder

__all__ = [
    "DEFAULT_EVENT_TYPE",
    "DEFAULT_SOURCE",
    "MAX_MESSAGE_BYTES",
    "EncodedLine",
    "KeyPath",
    "LineRules",
    "ParsedLine",
    "ProduceOptionError",
    "ReadyEvent",
    "RejectedLine",
    "line_encoder",
    "line_rules",
    "message_size",
    "parse_headers",
    "parse_key_path",
    "parse_line",
    "parse_lines",
    "refused",
    "rejections_in",
    "too_large",
]


_REQUEST_TYPE_PREFIX = "com.example.requests."
_BARE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_HEADER_PREFIX = "ce_"
_CONTENT_TYPE = "content-type"


class ProduceOptionError(PipelineError):
    """An option of ``pipeline produce`` that cannot work (a usage error, not a bad line)."""


@dataclass(frozen=True)
class RejectedLine:
    """A line that was not sent, and why; ``raw`` is the line without its line break, and
    ``raw_bytes`` its bytes when they are not UTF-8 (``raw`` then shows them as U+FFFD)."""

    line: int
    reason: str
    raw: str
    raw_bytes: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        """The line of the rejects file: ``{"line": n, "reason": ..., "raw": ...}``, and
        ``raw_base64`` for a line that is not UTF-8 (its exact bytes: nothing is lost)."""
        document: dict[str, Any] = {"line": self.line, "reason": self.reason, "raw": self.raw}
        if self.raw_bytes is not None:
            document["raw_base64"] = base64.b64encode(self.raw_bytes).decode("ascii")
        return document


@dataclass(frozen=True)
class ReadyEvent:
    """A line made into an event, and the Kafka message (with extra headers) that carries it.

    ``raw`` is the line's text, kept so that a refusal at send time can be recorded like any
    other rejection (:func:`refused`).
    """

    line: int
    event: Event
    message: KafkaMessage
    raw: str = field(default="", repr=False)


ParsedLine = ReadyEvent | RejectedLine


# --- key paths --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPath:
    """Where the key is in the data: field names and list indices from the top object."""

    steps: tuple[str | int, ...]

    def __str__(self) -> str:
        return _display(self.steps)

    def find(self, data: Any) -> Any:
        """The value at this path; a :class:`LookupError` saying where the path ends otherwise."""
        value = data
        for depth, step in enumerate(self.steps):
            if isinstance(step, int):
                if not isinstance(value, list):
                    raise _MissingKey(f"{self._at(depth)} is {_kind(value)}, not a list")
                if step >= len(value):
                    raise _MissingKey(
                        f"{self._at(depth)} has no index {step} (length {len(value)})"
                    )
                value = value[step]
            else:
                if not isinstance(value, dict):
                    raise _MissingKey(f"{self._at(depth)} is {_kind(value)}, not an object")
                if step not in value:
                    raise _MissingKey(f"no field {step!r} in {self._at(depth)}")
                value = value[step]
        return value

    def _at(self, depth: int) -> str:
        """The path to the value the step at ``depth`` looks into (written only for an error)."""
        return _display(self.steps[:depth])


class _MissingKey(LookupError):
    pass


def _display(steps: Sequence[str | int]) -> str:
    parts = ["$"]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.fullmatch(step):
            parts.append(f".{step}")
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(parts)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number"


def parse_key_path(text: str) -> KeyPath:
    """``$.order.id``, ``order.id``, ``lines[0].sku`` or ``$['a.b']`` as a :class:`KeyPath`.

    Raises :class:`ProduceOptionError` saying where the path stops making sense.
    """
    source = text.strip()
    steps: list[str | int] = []
    position = 0
    if source.startswith("$"):
        position = 1
    elif source and source[0] not in ".[":
        end = _name_end(source, 0)
        steps.append(source[:end])
        position = end
    while position < len(source):
        char = source[position]
        if char == ".":
            end = _name_end(source, position + 1)
            if end == position + 1:
                raise _bad_path(text, position, "a field name must follow '.'")
            steps.append(source[position + 1 : end])
            position = end
        elif char == "[":
            step, position = _bracket(text, source, position)
            steps.append(step)
        else:
            raise _bad_path(text, position, f"unexpected {char!r}")
    if not steps:
        raise ProduceOptionError(f"key path {text!r} names no field (e.g. $.order.id)")
    return KeyPath(tuple(steps))


def _name_end(source: str, start: int) -> int:
    end = start
    while end < len(source) and source[end] not in ".[":
        end += 1
    return end


def _bracket(text: str, source: str, start: int) -> tuple[str | int, int]:
    quote = source[start + 1 : start + 2]
    if quote in ("'", '"'):
        # A quoted name may hold '.' or ']': it ends at the quote that is followed by ']'.
        closing = source.find(quote + "]", start + 2)
        if closing < 0:
            raise _bad_path(text, start, f"the field name is never closed with {quote}]")
        name = source[start + 2 : closing]
        if not name:
            raise _bad_path(text, start, "an empty field name")
        return name, closing + 2
    close = source.find("]", start)
    if close < 0:
        raise _bad_path(text, start, "'[' is never closed")
    inside = source[start + 1 : close].strip()
    if inside.isdigit() and inside.isascii():
        return int(inside), close + 1
    if inside.startswith("-") and inside[1:].isdigit():
        what = "negative indices are not read: expected [<index>] or ['<field>']"
    elif inside == "*":
        what = "a key is one value: no wildcard, expected [<index>] or ['<field>']"
    else:
        what = "expected [<index>] or ['<field>']"
    raise _bad_path(text, start, what)


def _bad_path(text: str, position: int, what: str) -> ProduceOptionError:
    return ProduceOptionError(f"invalid key path {text!r} at character {position + 1}: {what}")


# --- headers ----------------------------------------------------------------------------------


def parse_headers(pairs: Sequence[str]) -> tuple[tuple[str, bytes], ...]:
    """``["tenant=acme", ...]`` as Kafka headers; envelope header names are refused.

    The value is everything after the first ``=`` and may be empty; a name may repeat (Kafka
    headers are multi-valued). ``ce_*`` and ``content-type`` belong to the CloudEvents envelope
    and would make the event ambiguous, so they raise :class:`ProduceOptionError`.
    """
    headers: list[tuple[str, bytes]] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ProduceOptionError(f"--header {pair!r} is not name=value")
        lowered = name.lower()
        if lowered.startswith(_RESERVED_HEADER_PREFIX) or lowered == _CONTENT_TYPE:
            raise ProduceOptionError(
                f"--header {name!r} is a CloudEvents envelope header (ce_* and content-type are "
                "set from the event itself); choose another name"
            )
        headers.append((name, value.encode("utf-8")))
    return tuple(headers)


# --- the rules of one run -----------------------------------------------------------------------


@dataclass(frozen=True)
class LineRules:
    """How every line of one run becomes an event (built, checked, by :func:`line_rules`)."""

    topic: str
    event_type: str
    source: str
    correlation_id: str
    request: RequestType | None = None
    key_path: KeyPath | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    #: The checked source, type and correlation id that every event shares (made from them
    #: when not given).
    template: EventTemplate | None = field(default=None, compare=False, repr=False)

    def event_template(self) -> EventTemplate:
        """The template of this run's events (its fixed attributes checked once)."""
        if self.template is not None:
            return self.template
        return EventTemplate(
            source=self.source, type=self.event_type, correlationid=self.correlation_id
        )


def line_rules(
    *,
    topic: str,
    correlation_id: str,
    event_type: str | None = None,
    source: str = DEFAULT_SOURCE,
    key_field: str | None = None,
    key_from: str | None = None,
    headers: Sequence[str] = (),
    allow_other_topic: bool = False,
) -> LineRules:
    """The :class:`LineRules` for these options; :class:`ProduceOptionError` if they cannot work."""
    if key_field is not None and key_from is not None:
        raise ProduceOptionError("give --key-field or --key-from, not both")
    if key_field is not None and not key_field:
        raise ProduceOptionError("--key-field needs a field name")
    if event_type is not None and not event_type.strip():
        raise ProduceOptionError("--type needs a type (it was empty)")
    if not source.strip():
        raise ProduceOptionError("--source needs a source (it was empty)")
    key_path: KeyPath | None = None
    if key_field is not None:
        key_path = KeyPath((key_field,))
    elif key_from is not None:
        key_path = parse_key_path(key_from)
    request = _request_type(event_type)
    if request is not None:
        if topic != request.topic and not allow_other_topic:
            raise ProduceOptionError(
                f"{request.name} requests travel on {request.topic}, not {topic}; "
                "pass --any-topic to send them there anyway"
            )
        if key_path is not None and key_path.steps != (request.key_field,):
            raise ProduceOptionError(
                f"{request.name} requests are keyed by their {request.key_field} field, so "
                f"that they stay in order; drop the key option ({key_path} was given)"
            )
        key_path = None  # the validated request's key field is the key
    resolved_type = request.event_type if request is not None else event_type or DEFAULT_EVENT_TYPE
    try:
        template = EventTemplate(source=source, type=resolved_type, correlationid=correlation_id)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        option = {"source": "--source", "type": "--type"}.get(where, where)
        raise ProduceOptionError(f"invalid {option}: {first['msg']}") from None
    return LineRules(
        topic=topic,
        event_type=resolved_type,
        source=source,
        correlation_id=correlation_id,
        request=request,
        key_path=key_path,
        headers=parse_headers(headers),
        template=template,
    )


def _request_type(name: str | None) -> RequestType | None:
    if name is None:
        return None
    try:
        return request_type(name)
    except UnknownRequestType:
        pass
    if _BARE_NAME.fullmatch(name) or name.startswith(_REQUEST_TYPE_PREFIX):
        raise ProduceOptionError(
            f"--type {name!r} is not a request type (known: {', '.join(REQUEST_TYPES)}); any "
            "other CloudEvents type should be reverse-DNS, such as com.example.order.shipped"
        )
    return None


# --- lines ------------------------------------------------------------------------------------


def parse_line(rules: LineRules, number: int, raw: bytes | str) -> ParsedLine | None:
    """Line ``number`` (from 1) as a :class:`ReadyEvent` or :class:`RejectedLine`; None if blank."""
    if isinstance(raw, bytes):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return RejectedLine(
                number,
                f"not valid UTF-8: byte {raw[error.start]:#04x} at offset {error.start}",
                raw.decode("utf-8", errors="replace"),
                raw,
            )
    else:
        text = raw.removesuffix("\n").removesuffix("\r")
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte order mark some editors write
    if not text.strip():
        return None
    try:
        # Text decoded from UTF-8 bytes holds no lone surrogate, which the check of the data
        # (see EventTemplate) may then take for granted; a str line may hold one.
        return _ready(rules, number, text, decoded=isinstance(raw, bytes))
    except _Rejected as rejected:
        return RejectedLine(number, str(rejected), text)


class _Rejected(Exception):
    pass


def _ready(rules: LineRules, number: int, text: str, *, decoded: bool) -> ReadyEvent:
    # A request is read as the gateway reads its body: a name given twice is refused (parsers
    # disagree on which one wins, so two readers of the line could see different requests).
    # Its numbers with a fraction too: a price's decimals are checked as written, never rounded.
    data = _json_object(text, request=rules.request is not None)
    # What the data was parsed from, while it still is, when that text was valid UTF-8.
    json_text = text if decoded else None
    key: str | None = None
    if rules.request is not None:
        try:
            request = rules.request.validate(data)
        except RequestValidationError as error:
            raise _Rejected(str(error)) from None
        data = request.model_dump(mode="json")
        json_text = None
        key = _key_of(rules.request, request)
    elif rules.key_path is not None:
        key = _key_at(rules.key_path, data)
    try:
        # The run's fixed attributes were checked once (line_rules); the key and the data are
        # checked here as Event(...) checks them, with the same errors.
        event, message = rules.event_template().event_and_message(data, key, json_text=json_text)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(step) for step in first["loc"])
        if where == "partitionkey" and rules.key_path is not None:
            where = f"the key at {rules.key_path}"
        raise _Rejected(
            f"not a valid event: {where + ': ' if where else ''}{first['msg']}"
        ) from None
    if rules.headers:
        message = KafkaMessage(message.key, message.value, [*message.headers, *rules.headers])
    return ReadyEvent(number, event, message, text)


def _json_object(text: str, *, request: bool = False) -> dict[str, Any]:
    try:
        # json.loads(text) refusing NaN and Infinity, with json.loads's errors (parse_json builds
        # no decoder per call, and reads the usual line with one C call).
        data = parse_json(text, unique_keys=request, exact_decimals=request)
    except json.JSONDecodeError as error:
        reason = json_error_reason(error)
        if reason.startswith("Unexpected UTF-8 BOM"):  # json's advice is for Python programmers
            reason = "a byte order mark (BOM) before the JSON; only the first line may have one"
        raise _Rejected(f"invalid JSON: {reason} at column {error.colno}") from None
    except ValueError as error:  # NaN/Infinity, or an integer longer than Python converts
        raise _Rejected(f"invalid JSON: {error}") from None
    except RecursionError:
        raise _Rejected("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise _Rejected(f"expected a JSON object (the event's data), got {_kind(data)}")
    return data


def _key_of(request: RequestType, model: BaseModel) -> str:
    key = request.key_of(model)
    if not key:
        raise _Rejected(f"missing key: {request.key_field} is empty")
    return key


def _key_at(path: KeyPath, data: Any) -> str:
    try:
        value = path.find(data)
    except _MissingKey as missing:
        raise _Rejected(f"missing key {path}: {missing}") from None
    if value is None:
        raise _Rejected(f"missing key {path}: it is null")
    if isinstance(value, str):
        if not value:
            raise _Rejected(f"missing key {path}: it is an empty string")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Rejected(f"key {path} is {_kind(value)}; a key must be a string or an integer")


def parse_lines(rules: LineRules, lines: Iterable[bytes | str]) -> Iterator[ParsedLine]:
    """Every non-blank line, numbered from 1, as a :class:`ReadyEvent` or :class:`RejectedLine`."""
    for number, raw in enumerate(lines, start=1):
        parsed = parse_line(rules, number, raw)
        if parsed is not None:
            yield parsed


def rejections_in(
    rules: LineRules, lines: Iterable[bytes | str], *, max_bytes: int = MAX_MESSAGE_BYTES
) -> Iterator[RejectedLine]:
    """Every rejection in the input, as it is found: the first pass of ``--strict``, which
    sends nothing (yielded, not listed: an input of many bad lines is not held in memory).

    Besides the lines :func:`parse_line` rejects, an event larger than ``max_bytes`` is one: the
    producer would refuse it. Parsing is deterministic apart from event ids and times (whose
    lengths are fixed), so a second pass over the same lines rejects exactly these lines again.
    """
    encode = line_encoder(rules)
    for number, raw in enumerate(lines, start=1):
        if encode is not None and isinstance(raw, bytes):
            parts = encode(raw)
            if parts is not None and wire_size(*parts) <= max_bytes:
                continue  # ready, and fits
        parsed = parse_line(rules, number, raw)
        if parsed is None:
            continue
        rejection = parsed if isinstance(parsed, RejectedLine) else too_large(parsed, max_bytes)
        if rejection is not None:
            yield rejection


# --- size -------------------------------------------------------------------------------------


def message_size(message: KafkaMessage) -> int:
    """The size librdkafka checks against ``message.max.bytes`` when the message is produced
    (:func:`pipeline.kafka.message_size.wire_size`)."""
    return wire_size(message.key, message.value, message.headers)


def _size_text(ready: ReadyEvent, max_bytes: int) -> str:
    return (
        f"{message_size(ready.message):,} bytes with its key, headers and record overhead; "
        f"the producer's limit (message.max.bytes) is {max_bytes:,}"
    )


def too_large(ready: ReadyEvent, max_bytes: int = MAX_MESSAGE_BYTES) -> RejectedLine | None:
    """The rejection of an event the producer would refuse as too large; None if it fits."""
    if message_size(ready.message) <= max_bytes:
        return None
    return RejectedLine(ready.line, f"event too large: {_size_text(ready, max_bytes)}", ready.raw)


def refused(ready: ReadyEvent, reason: str, max_bytes: int = MAX_MESSAGE_BYTES) -> RejectedLine:
    """The rejection of an event the Kafka client refused at once (nothing of it was sent)."""
    why = f"refused by the Kafka client: {reason}"
    if message_size(ready.message) > max_bytes:
        why += f" ({_size_text(ready, max_bytes)})"
    return RejectedLine(ready.line, why, ready.raw)
