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
A UTF-8 byte order mark at the start of a recording (its first line's first bytes) is
skipped. Both functions are pure; reading and writing files is :func:`read_recording` and
:class:`RecordingWriter`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import msgspec

from pipeline.envelope import json_error_reason
from pipeline.kafka.message_size import MAX_MESSAGE_BYTES
from pipeline.kafka.message_size import wire_size as kafka_wire_size
from pipeline.replay.errors import RecordingError
from pipeline.replay.line_streams import MAX_LINE_BYTES, bounded_lines, within
from pipeline.settings.base import is_utf8

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_MESSAGE_BYTES",
    "LinePlace",
    "ProducibleMessage",
    "RecordedMessage",
    "RecordingError",
    "RecordingWriter",
    "TimestampType",
    "bounded_lines",
    "encode_line",
    "format_line",
    "message_for_replay",
    "open_recording",
    "parse_line",
    "parse_lines",
    "parse_lines_for_replay",
    "parse_numbered_lines_for_replay",
    "read_recording",
    "read_recording_for_replay",
    "tstype_of",
    "wire_size",
    "within",
]

TimestampType = Literal["create", "logappend", "none"]
_TSTYPES: frozenset[str] = frozenset({"create", "logappend", "none"})
# confluent-kafka's TIMESTAMP_* constants, in the order kcat names them.
_TSTYPE_OF_CODE: dict[int, TimestampType] = {0: "none", 1: "create", 2: "logappend"}


class RecordedMessage(msgspec.Struct, frozen=True):
    """One Kafka message as recorded: its place, timestamp, key, value and headers.

    A frozen msgspec struct rather than a dataclass: built once per message while recording
    and replaying, where a frozen dataclass's ``__init__`` was a fifth of the time.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None
    timestamp_type: TimestampType = "create"


def tstype_of(code: int) -> TimestampType:
    """kcat's name of a confluent-kafka timestamp type code."""
    return _TSTYPE_OF_CODE.get(code, "none")


# --- the line as JSON, through msgspec --------------------------------------------------------
#
# msgspec encodes and validates a line in C, several times faster than json plus Python checks
# (bench/replay.py). It is the fast path only: a line it declines (kcat's flat headers, bytes
# that are not UTF-8, a lone surrogate escape, anything invalid) goes through json and the
# checks below, which decide and word the error; so both paths accept exactly the same lines.
# (A surrogate pair is one character on both paths; msgspec refuses a lone surrogate.)


class _Base64(msgspec.Struct, forbid_unknown_fields=True):
    """``{"base64": "..."}``: bytes that are not UTF-8 text."""

    base64: str


#: A key, value or header value in a line: text, null or base64.
_Text = str | None | _Base64


class _Line(msgspec.Struct):
    """One line, its fields in the order they are written, named as :class:`RecordedMessage`
    names them (so that a line read for a replay is a :class:`ProducibleMessage` as it is)."""

    topic: str
    partition: int = 0
    offset: int = -1
    timestamp_type: str | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="tstype")
    timestamp_ms: int | None = msgspec.field(default=None, name="ts")
    key: _Text = None
    value: _Text = msgspec.field(default=None, name="payload")
    headers: list[tuple[str, _Text]] | None = None


class _TextLine(msgspec.Struct):
    """A line whose key, value and header values are all text or null (no base64): the usual
    line, which a replay sends as it is decoded. The same fields as :class:`_Line`."""

    topic: str
    partition: int = 0
    offset: int = -1
    timestamp_type: str | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="tstype")
    timestamp_ms: int | None = msgspec.field(default=None, name="ts")
    key: str | None = None
    value: str | None = msgspec.field(default=None, name="payload")
    headers: list[tuple[str, str | None]] | None = None


class ProducibleMessage(Protocol):
    """What a replay needs of a message: a :class:`RecordedMessage`, or a line read by
    :func:`parse_lines_for_replay`, whose key, value and header values are still text (the
    producer encodes text as UTF-8, so a replay skips making bytes of it first)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> str | bytes | None: ...
    @property
    def value(self) -> str | bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, str | bytes | None]] | None: ...
    @property
    def timestamp_ms(self) -> int | None: ...


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(_Line)
#: Refuses a line with base64 in it (which then goes through :data:`_DECODER`).
_TEXT_DECODER = msgspec.json.Decoder(_TextLine)


def _text(value: bytes | None) -> _Text:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return _Base64(base64.b64encode(value).decode("ascii"))


def encode_line(message: RecordedMessage) -> bytes:
    """The JSON line of ``message``, UTF-8, without a newline."""
    try:  # the common case: all text, no null header value
        headers: list[tuple[str, _Text]] = [
            (name, value.decode("utf-8"))  # type: ignore[union-attr]
            for name, value in message.headers
        ]
    except (AttributeError, UnicodeDecodeError):
        headers = [(name, _text(value)) for name, value in message.headers]
    line = _Line(
        message.topic,
        message.partition,
        message.offset,
        message.timestamp_type,
        message.timestamp_ms,
        _text(message.key),
        _text(message.value),
        headers,
    )
    return _ENCODER.encode(line)


def format_line(message: RecordedMessage) -> str:
    """The JSON line of ``message`` as text (no newline); the same as ``json.dumps`` writes
    with ``ensure_ascii=False`` and no spaces (a unit test compares the two)."""
    return encode_line(message).decode("utf-8")


def _fast_bytes(value: _Text) -> bytes | None:
    if type(value) is str:
        return value.encode("utf-8")
    if value is None:
        return None
    assert isinstance(value, _Base64)
    return base64.b64decode(value.base64, validate=True)


def _decode_fast(raw: bytes) -> RecordedMessage | None:
    """The message of one line of valid UTF-8 in our format, or None for the careful path."""
    try:
        line = _DECODER.decode(raw)
        raw_headers = line.headers or ()
        try:
            headers = tuple([(name, value.encode("utf-8")) for name, value in raw_headers])  # type: ignore[union-attr]
        except AttributeError:
            headers = tuple([(name, _fast_bytes(value)) for name, value in raw_headers])
        tstype = line.timestamp_type
        if tstype is msgspec.UNSET:
            tstype = "create" if line.timestamp_ms is not None else "none"
        if not line.topic or tstype not in _TSTYPES:
            return None
        return RecordedMessage(
            line.topic,
            line.partition,
            line.offset,
            _fast_bytes(line.key),
            _fast_bytes(line.value),
            headers,
            line.timestamp_ms,
            tstype,  # type: ignore[arg-type]
        )
    except (msgspec.DecodeError, ValueError):  # binascii.Error is a ValueError
        return None


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
        if topic is None:
            raise ValueError("no topic")
        if not isinstance(topic, str):
            raise ValueError(f"topic must be text, got {json.dumps(topic)[:60]}")
        if not topic:
            raise ValueError("the topic is empty")
        partition, offset = document.get("partition", 0), document.get("offset", -1)
        # type(), not isinstance: JSON's true and false are Python ints too (msgspec, the fast
        # path, refuses them as well).
        if type(partition) is not int or type(offset) is not int:
            raise ValueError("partition and offset must be whole numbers")
        ts = document.get("ts")
        if ts is not None and type(ts) is not int:
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
    except json.JSONDecodeError as error:
        why = _not_json(line, error)
        raise RecordingError(f"{where}: not a recorded message ({why})") from None
    except ValueError as error:
        raise RecordingError(f"{where}: not a recorded message ({error})") from None


def _not_json(line: str, error: json.JSONDecodeError) -> str:
    """Why ``line`` is not JSON: a line that ends inside a string, said in words (most likely
    cut short: a copy or a recording stopped part way), else json's reason and its column."""
    if _ends_inside_a_string(line, error):
        return "the line ends inside a string: cut short?"
    content = line.rstrip("\r\n")
    if error.pos >= len(content):  # json wanted more where the line ended (a number, a value)
        return "the line ends before its JSON does: cut short?"
    # The column in the line: json's own "line 2 column 1" counted the line's newline.
    return f"invalid JSON: {json_error_reason(error)} at column {error.pos + 1}"


#: What is left of an escape ``\\uXXXX`` cut short (``error.pos`` is at its ``u``).
_CUT_UNICODE_ESCAPE = re.compile(r"u[0-9A-Fa-f]{0,3}")


def _ends_inside_a_string(line: str, error: json.JSONDecodeError) -> bool:
    """Whether json failed because ``line`` ends inside a string. json says it as a string never
    closed ("Unterminated string starting at" its opening quote: the last line, without a
    newline), or as what it found at the end of the line inside the string: the newline (a
    control character), or an escape cut short (a backslash, or a ``\\uXXXX`` missing
    digits, before the newline)."""
    if error.msg == "Unterminated string starting at":
        return True
    rest = line[error.pos :].rstrip("\r\n")  # from json's fault to the end of the line
    if error.msg == "Invalid control character at":
        return not rest
    if error.msg == "Invalid \\escape":
        return rest == "\\"
    if error.msg == "Invalid \\uXXXX escape":
        return _CUT_UNICODE_ESCAPE.fullmatch(rest) is not None
    return False


def parse_lines(lines: Iterable[bytes], *, source: str) -> Iterator[RecordedMessage]:
    """The messages of raw recording lines, in order; blank lines are skipped.

    Bytes that are not UTF-8 (as ``kcat -J`` writes them) are read back as they were. Errors
    name ``source`` and the line number.
    """
    for number, raw in enumerate(lines, start=1):
        message = _message_of(raw, source, number)
        if message is not None:
            yield message


def _message_of(raw: bytes, source: str, number: int) -> RecordedMessage | None:
    """The message of one raw line (the fast path, else :func:`parse_line`); None if blank."""
    if number == 1 and raw.startswith(_BOM):
        # An editor's mark that the file is UTF-8 (Notepad, PowerShell's Out-File), not data.
        # Only here: a line with one fails the fast paths (not JSON), so they cost nothing more.
        raw = raw[len(_BOM) :]
    message = _decode_fast(raw)
    if message is not None:
        return message
    line = raw.decode("utf-8", "surrogateescape")
    return parse_line(line, where=f"{source}:{number}") if line.strip() else None


#: The UTF-8 byte order mark, skipped at the start of a recording (the first line's); one
#: anywhere else is not JSON, and an error.
_BOM = b"\xef\xbb\xbf"


def message_for_replay(raw: bytes, source: str, number: int) -> ProducibleMessage | None:
    """The message of raw line ``number`` of ``source`` as a replay sends it (see
    :func:`parse_lines_for_replay`); None for a blank line; :class:`RecordingError` when the
    line is not a message, or one Kafka's client cannot send."""
    # A usual line is sent as it is decoded (_TextLine): valid, all its values text or null,
    # and no NUL in it (_NUL). Else it is read the way parse_lines reads it. Once per line of a
    # replay: no call more.
    if _NUL not in raw:
        try:
            line = _TEXT_DECODER.decode(raw)
        except msgspec.DecodeError:
            pass
        else:
            tstype = line.timestamp_type
            if line.topic and (tstype is msgspec.UNSET or tstype in _TSTYPES):
                if len(raw) >= _MEASURED_FROM:
                    _check_size(line, source, number)
                return line
    message = _sendable(_message_of(raw, source, number), source, number)
    if message is not None and len(raw) >= _MEASURED_FROM:
        _check_size(message, source, number)
    return message


#: A NUL character as JSON writes it. A line with one is read into bytes, never sent as text:
#: confluent-kafka hands a text header value to librdkafka as a C string, which ends at the
#: first NUL (keys and values keep their length).
_NUL = b"\\u0000"

#: A line shorter than this holds no message larger than :data:`MAX_MESSAGE_BYTES`: every byte
#: of its key, value, header names and values takes at least one byte of the line, and a
#: header at least 7 more (``["",""]``, against at most 10 for its two lengths). Only longer
#: lines are measured (:func:`wire_size`), which spares the usual line any cost but a length.
_MEASURED_FROM = MAX_MESSAGE_BYTES // 2


def wire_size(message: ProducibleMessage) -> int:
    """The bytes of ``message`` that librdkafka holds against ``message.max.bytes`` when it is
    produced (:func:`pipeline.kafka.message_size.wire_size`); a replay's producer keeps its
    default, :data:`MAX_MESSAGE_BYTES` (``pipeline.replay.replayer.PRODUCER_SETTINGS``)."""
    return kafka_wire_size(message.key, message.value, message.headers)


def _check_size(message: ProducibleMessage, source: str, number: int) -> None:
    """A :class:`RecordingError` naming the line when ``message`` is larger than Kafka's client
    sends (refused when produced, after the messages before it were sent)."""
    size = wire_size(message)
    if size > MAX_MESSAGE_BYTES:
        raise RecordingError(
            f"{source}:{number}: the message is {size:,} bytes (key, value and headers), more "
            f"than the {MAX_MESSAGE_BYTES:,} Kafka's client sends in one (librdkafka's "
            "message.max.bytes, which a replay does not change): take the line out of the "
            "recording, or shorten it, to replay the rest"
        )


def _sendable(message: RecordedMessage | None, source: str, number: int) -> RecordedMessage | None:
    """``message``, unless a header name cannot be sent as it is; then a
    :class:`RecordingError` says so (rather than a header sent under another name, or a crash):

    - a name with a NUL: librdkafka takes header names as C strings, which end at a NUL;
    - a name that is not UTF-8 (bytes kcat wrote as they were, or a lone surrogate escape):
      confluent-kafka takes names as text and encodes them as UTF-8, and crashes the process
      (a segmentation fault) on one that cannot be; given bytes, it sends their ``repr``.

    Only the careful path needs this: the fast path (msgspec) refuses both kinds of name.
    """
    if message is not None:
        for name, _ in message.headers:
            if "\x00" in name:
                raise RecordingError(
                    f"{source}:{number}: a header name holds a NUL character, which Kafka's C "
                    "client (librdkafka) cannot send"
                )
            if not name.isascii() and not is_utf8(name):
                raise RecordingError(
                    f"{source}:{number}: the header name {_shown(name)} is not UTF-8 text, "
                    "which Kafka's Python client (confluent-kafka) cannot send"
                )
    return message


def _shown(name: str) -> str:
    """A header name that is not UTF-8, as the bytes it stands for where it does."""
    try:
        return repr(name.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a lone surrogate that is not a byte
        return ascii(name)


class LinePlace:
    """Where a reader of recording lines is: ``number``, the line of the message it gave last
    (0 before any), of ``source``. A replay names it (``str()``: ``source:number``, as a
    :class:`RecordingError` names a line) when that message is refused as it is sent."""

    __slots__ = ("number", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.number = 0

    def __str__(self) -> str:
        return f"{self.source}:{self.number}"


def parse_lines_for_replay(
    lines: Iterable[bytes], *, source: str, place: LinePlace | None = None
) -> Iterator[ProducibleMessage]:
    """The messages of raw recording lines as a replay sends them: what :func:`parse_lines`
    reads, with text left as text where it is (the same lines are refused, the same way),
    and a line whose message Kafka's client cannot send (:data:`MAX_MESSAGE_BYTES`, header
    names: :func:`message_for_replay`). ``place``, when given, follows the line of the message
    given last."""
    return parse_numbered_lines_for_replay(enumerate(lines, start=1), source=source, place=place)


def parse_numbered_lines_for_replay(
    numbered: Iterable[tuple[int, bytes]], *, source: str, place: LinePlace | None = None
) -> Iterator[ProducibleMessage]:
    """:func:`parse_lines_for_replay` of lines given with their numbers (``(number, raw)``)."""
    # message_for_replay, written out: once per message of a replay.
    decode = _TEXT_DECODER.decode
    if place is None:
        place = LinePlace(source)
    for number, raw in numbered:
        place.number = number
        if _NUL not in raw:
            try:
                line = decode(raw)
            except msgspec.DecodeError:
                pass
            else:
                tstype = line.timestamp_type
                if line.topic and (tstype is msgspec.UNSET or tstype in _TSTYPES):
                    if len(raw) >= _MEASURED_FROM:
                        _check_size(line, source, number)
                    yield line
                    continue
        message = _sendable(_message_of(raw, source, number), source, number)
        if message is not None:
            if len(raw) >= _MEASURED_FROM:
                _check_size(message, source, number)
            yield message


def read_recording(path: Path | str) -> Iterator[RecordedMessage]:
    """The messages of a recording file, in file order (see :func:`parse_lines`)."""
    path = Path(path)
    with open_recording(path) as lines:
        yield from parse_lines(lines, source=str(path))


def read_recording_for_replay(path: Path | str) -> Iterator[ProducibleMessage]:
    """The messages of a recording file as a replay sends them (see
    :func:`parse_lines_for_replay`)."""
    path = Path(path)
    with open_recording(path) as lines:
        yield from parse_lines_for_replay(lines, source=str(path))


@contextmanager
def open_recording(path: Path) -> Iterator[IO[bytes]]:
    """The recording file at ``path``, opened to read bytes; :class:`RecordingError` when
    there is none."""
    try:
        raw = path.open("rb", buffering=0)
    except FileNotFoundError:
        raise RecordingError(f"no recording at {path}") from None
    except IsADirectoryError:
        raise RecordingError(f"{path} is a directory, not a recording") from None
    except NotADirectoryError:  # in.ndjson/rec.jsonl: a file where the path needs a folder
        raise RecordingError(f"no recording at {path}: a part of its path is a file") from None
    except PermissionError:
        raise  # said as any file the user may not read (pipeline.cli.main)
    except OSError as error:  # a name too long, say
        raise RecordingError(f"cannot read {path}: {error.strerror or error}") from None
    lines = bounded_lines(raw, str(path))
    with lines:
        try:
            yield lines
        except OSError as error:
            # A read that failed part-way (an I/O error of the disk): the file's, said as one
            # line. Another file's error names that file; a closed pipe or a connection is not
            # this file's.
            if error.filename is not None or isinstance(error, BrokenPipeError | ConnectionError):
                raise
            raise RecordingError(f"cannot read {path}: {error.strerror or error}") from None


class RecordingWriter:
    """Appends recorded messages to a binary stream (a file opened with ``"wb"``, or
    ``sys.stdout.buffer``), one UTF-8 line each."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.count = 0

    def write(self, message: RecordedMessage) -> None:
        self._stream.write(encode_line(message) + b"\n")
        self.count += 1

    def write_all(self, messages: Sequence[RecordedMessage]) -> None:
        for message in messages:
            self.write(message)
