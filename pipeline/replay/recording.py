"""The recording format: one Kafka message per line, as JSON, in kcat's field names.

::

    {"topic": "requests.orders", "partition": 2, "offset": 41, "tstype": "create",
     "ts": 1764690000123, "key": "o-1", "payload": "{\\"order_id\\": \\"o-1\\"}",
     "headers": [["ce_id", "01H..."], ["ce_type", "com.example..."], ["trace", null]]}

- ``key`` and ``payload`` are the bytes as UTF-8 text, ``null`` for a null key or value, or
  ``{"base64": "..."}`` for bytes that are not valid UTF-8 (kept exactly).
- ``headers`` is an ordered list of ``[name, value]`` pairs, so duplicate names and their order
  survive; a value is text, ``null``, or ``{"base64": "..."}`` like the payload.
- ``tstype`` is ``create``, ``logappend`` or ``none``; ``ts`` is milliseconds since the epoch.

:func:`parse_line` also reads what ``kcat -C -J`` writes: its headers are a flat list
``["name", "value", "name", "value", ...]`` and it has a ``broker`` field, which is ignored.
kcat writes bytes that are not UTF-8 into its JSON strings as they are (so its file is not
UTF-8 text): :func:`read_recording` reads such bytes back exactly (Python's
``surrogateescape``), and so does :func:`parse_line` given a line decoded that way.
Both functions are pure; reading and writing files is :func:`read_recording` and
:class:`RecordingWriter`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Any, Literal

from pipeline.errors import PipelineError

__all__ = [
    "RecordedMessage",
    "RecordingError",
    "RecordingWriter",
    "TimestampType",
    "format_line",
    "parse_line",
    "parse_lines",
    "read_recording",
    "tstype_of",
]

TimestampType = Literal["create", "logappend", "none"]
_TSTYPES: frozenset[str] = frozenset({"create", "logappend", "none"})
# confluent-kafka's TIMESTAMP_* constants, in the order kcat names them.
_TSTYPE_OF_CODE: dict[int, TimestampType] = {0: "none", 1: "create", 2: "logappend"}


class RecordingError(PipelineError):
    """A line that is not a recorded message; the message says which line and why."""


@dataclass(frozen=True)
class RecordedMessage:
    """One Kafka message as recorded: its place, timestamp, key, value and headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = field(default_factory=tuple)
    timestamp_ms: int | None = None
    timestamp_type: TimestampType = "create"


def tstype_of(code: int) -> TimestampType:
    """kcat's name of a confluent-kafka timestamp type code."""
    return _TSTYPE_OF_CODE.get(code, "none")


def _json_bytes(value: bytes | None) -> str:
    """A key, value or header value in JSON: text, ``null`` or ``{"base64": "..."}``."""
    if value is None:
        return "null"
    try:
        return _json_string(value.decode("utf-8"))
    except UnicodeDecodeError:
        return '{"base64":"' + base64.b64encode(value).decode("ascii") + '"}'


#: The JSON string of a ``str`` (C-accelerated), as ``json.dumps(..., ensure_ascii=False)``.
_json_string: Callable[[str], str] = encode_basestring


def _bytes(value: Any, what: str) -> bytes | None:
    if type(value) is str:
        try:
            # surrogateescape: the bytes kcat wrote as they were (see the module docstring).
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ValueError(f"{what} holds a lone surrogate that is not a byte") from None
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} is not valid base64") from None
    raise ValueError(f'{what} must be text, null or {{"base64": ...}}, got {value!r:.60}')


def format_line(message: RecordedMessage) -> str:
    """The JSON line of ``message`` (no newline).

    Written field by field rather than through ``json.dumps`` of a dict, which costs twice as
    much per message; the text is the same (a unit test compares the two).
    """
    ts = "null" if message.timestamp_ms is None else str(message.timestamp_ms)
    headers = ",".join(
        [f"[{_json_string(name)},{_json_bytes(value)}]" for name, value in message.headers]
    )
    return (
        f'{{"topic":{_json_string(message.topic)},"partition":{message.partition},'
        f'"offset":{message.offset},"tstype":{_json_string(message.timestamp_type)},'
        f'"ts":{ts},"key":{_json_bytes(message.key)},"payload":{_json_bytes(message.value)},'
        f'"headers":[{headers}]}}'
    )


def _headers(raw: Any) -> tuple[tuple[str, bytes | None], ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        raise ValueError("headers must be a list")
    if raw and type(raw[0]) is not list:  # kcat -J: [name, value, name, value, ...]
        if len(raw) % 2:
            raise ValueError("kcat headers must alternate names and values")
        raw = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    headers: list[tuple[str, bytes | None]] = []
    append = headers.append
    for pair in raw:  # ours: [[name, value], ...]
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
            raise ValueError(f"header {len(headers)} must be [name, value] with a text name")
        name, value = pair
        if type(value) is str:  # the common case, without a call
            try:
                append((name, value.encode("utf-8", "surrogateescape")))
                continue
            except UnicodeEncodeError:
                pass  # _bytes says why
        append((name, _bytes(value, f"header {name!r}")))
    return tuple(headers)


def parse_line(line: str, *, where: str = "line") -> RecordedMessage:
    """One recorded message from one line (ours or ``kcat -J``'s); :class:`RecordingError`
    naming ``where`` when it is not one."""
    try:
        document = json.loads(line)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        topic = document.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ValueError("no topic")
        partition, offset = document.get("partition", 0), document.get("offset", -1)
        if not isinstance(partition, int) or not isinstance(offset, int):
            raise ValueError("partition and offset must be whole numbers")
        ts = document.get("ts")
        if ts is not None and not isinstance(ts, int):
            raise ValueError("ts must be milliseconds since the epoch")
        tstype = document.get("tstype", "create" if ts is not None else "none")
        if tstype not in _TSTYPES:
            raise ValueError(f"tstype must be one of {', '.join(sorted(_TSTYPES))}")
        return RecordedMessage(
            topic=topic,
            partition=partition,
            offset=offset,
            key=_bytes(document.get("key"), "key"),
            value=_bytes(document.get("payload"), "payload"),
            headers=_headers(document.get("headers")),
            timestamp_ms=ts,
            timestamp_type=tstype,
        )
    except ValueError as error:  # json.JSONDecodeError is a ValueError too
        raise RecordingError(f"{where}: not a recorded message ({error})") from None


def parse_lines(lines: Iterable[bytes], *, source: str) -> Iterator[RecordedMessage]:
    """The messages of raw recording lines, in order; blank lines are skipped.

    Bytes that are not UTF-8 (as ``kcat -J`` writes them) are read back as they were. Errors
    name ``source`` and the line number.
    """
    for number, raw in enumerate(lines, start=1):
        line = raw.decode("utf-8", "surrogateescape")
        if line.strip():
            yield parse_line(line, where=f"{source}:{number}")


def read_recording(path: Path) -> Iterator[RecordedMessage]:
    """The messages of a recording file, in file order (see :func:`parse_lines`)."""
    try:
        with path.open("rb") as lines:
            yield from parse_lines(lines, source=str(path))
    except FileNotFoundError:
        raise RecordingError(f"no recording at {path}") from None
    except IsADirectoryError:
        raise RecordingError(f"{path} is a directory, not a recording") from None


class RecordingWriter:
    """Appends recorded messages to a text stream, one line each."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.count = 0

    def write(self, message: RecordedMessage) -> None:
        self._stream.write(format_line(message) + "\n")
        self.count += 1

    def write_all(self, messages: Sequence[RecordedMessage]) -> None:
        for message in messages:
            self.write(message)
