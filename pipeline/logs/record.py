"""One :class:`logging.LogRecord` as an ECS 8.11 document (nested JSON objects), and its bytes.

Pure: the caller passes the service, host, the record's own event id and the context of the
event being handled (read in the thread that logged). The shape is the shared log schema
(``pipeline/logs/schema.py`` maps it): ``@timestamp`` (UTC, ms, ``Z``), ``log.level``
(lower-case), ``message``, ``ecs.version``, ``event.id`` (the document id in Elasticsearch),
optional ``event.action``/``event.outcome``, ``service.name``, ``host.hostname``,
``process.{pid,name,thread.name}``, ``log.logger``, ``log.origin.{file.name,file.line,function}``,
``error.{type,message,stack_trace}`` for an exception, ``pipeline.*`` from the context, and
whatever the caller passed with ``extra=`` under ``labels``: strings, and objects and lists of
them for mappings and lists (:func:`labels_of`).

Secrets and card numbers are redacted in the message, the exception text and the labels.
Keys appear in that order; absent parts are left out (no nulls). The JSON is valid UTF-8 whatever
the strings hold: lone surrogates are backslash-escaped (see :func:`encodable`). A record whose
document cannot be made at all (its arguments do not fit its format, an ``extra=`` value whose
``str()`` raises) still has one: :func:`unencodable_document`.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.logs.context import CONTEXT_FIELDS
from pipeline.logs.redact import LabelValue, redact, redact_labels, unique_key
from pipeline.logs.schema import ECS_VERSION as SCHEMA_ECS_VERSION

__all__ = [
    "ECS_VERSION",
    "LABEL_DEPTH",
    "LABEL_KEY_MOST",
    "ecs_document",
    "ecs_json",
    "encodable",
    "error_type",
    "labels_of",
    "unencodable_document",
]

ECS_VERSION = SCHEMA_ECS_VERSION

#: ``extra=`` keys that become ECS fields rather than labels.
_EVENT_EXTRAS = {"event_action": "action", "event_outcome": "outcome"}
#: ``extra=`` fields that name an error the line is about without raising it (a dead letter's
#: failure): ``error.type`` and ``error.message``, as an exception's would be. An exception
#: logged with the line (``exc_info``) wins.
_ERROR_EXTRAS = {"error_type": "type", "error_message": "message"}

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    {
        *vars(logging.LogRecord("", 0, "", 0, "", None, None)),
        "message",
        "asctime",
        "taskName",
    }
)


# UTF-8 encodes every code point but the surrogates, and a str can hold one alone: os.fsdecode
# and the surrogateescape error handler turn an undecodable byte (a file name in Latin-1) into
# U+DC80..U+DCFF, and a JSON "\ud800" escape decodes to one. Such a line once failed to encode
# and was lost (only logging's own traceback said so). They are backslash-escaped rather than
# replaced by U+FFFD, so the line keeps what it said: a byte smuggled in by surrogateescape is
# written as that byte, ``report-\xff.csv``, any other surrogate as its code, ``\ud800``.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def encodable(text: str) -> str:
    """``text`` as it can be encoded in UTF-8: any lone surrogate backslash-escaped
    (``\\xff`` for a byte kept by ``surrogateescape``, ``\\ud800`` otherwise)."""
    if text.isascii():  # nearly every line: no encoding attempt at all
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escaped_surrogate, text)
    return text


def _clean(text: str) -> str:
    """Text fit to leave the process: redacted and encodable (the message and the exception
    are also what the console's text format shows, so they are made encodable here already)."""
    return encodable(redact(text))


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


#: How many levels of nested objects and lists an ``extra=`` value keeps under ``labels``;
#: an object or list nested deeper is its ``str()`` (``labels.a.b.c.d.e.f.g.h.i`` is the
#: longest path). Bounded, as an object that contains itself would otherwise never end.
LABEL_DEPTH = 8


def labels_of(record: logging.LogRecord) -> dict[str, LabelValue]:
    """The ``extra=`` fields of a record (private ``_names`` are skipped) as label values: a
    string stays one, a mapping becomes an object and a list or tuple a list, their items made
    alike down to :data:`LABEL_DEPTH` levels, and anything else is its ``str()`` (``3`` is
    ``"3"``). A key that is no string is its ``str()``; a dot in a key becomes ``_`` at any
    depth (ECS label keys have none: Elasticsearch reads ``customer.tier`` as a field inside
    ``customer``, and a line with both was refused as a mapping conflict). A mapping inside
    itself is its ``str()`` where it recurs (Python's ``{...}`` there)."""
    labels: dict[str, LabelValue] = {}
    for name, value in vars(record).items():
        if (
            name in _STANDARD_ATTRIBUTES
            or name.startswith("_")
            or name in _EVENT_EXTRAS
            or name in _ERROR_EXTRAS
        ):
            continue
        labels[unique_key(_label_key(name), labels)] = _label_value(value, 1, ())
    return labels


#: The longest label key kept (longer ones are cut): Elasticsearch indexes a ``flattened``
#: field's key with each value, in one term that may not pass 32,766 bytes.
LABEL_KEY_MOST = 256


def _label_key(key: object) -> str:
    # A NUL in a key is refused by a flattened field (the whole line dead-lettered).
    text = (key if isinstance(key, str) else str(key)).replace(".", "_").replace("\x00", "\ufffd")
    return text[:LABEL_KEY_MOST]


def _label_value(value: object, level: int, within: tuple[int, ...]) -> LabelValue:
    """``value`` as a label value; ``level``: its own level of nesting if it is an object or a
    list (1 for an ``extra=`` value itself); ``within``: the ids of the objects and lists it is
    inside, which it must not be one of."""
    if isinstance(value, str):
        return value
    # Only the built-in containers: another mapping's or sequence's own str() may hide what
    # it holds (a settings object showing no password), and stays what is logged.
    if isinstance(value, dict | list | tuple) and type(value) in (dict, list, tuple):
        if level > LABEL_DEPTH or id(value) in within:
            return str(value)
        inside = (*within, id(value))
        if isinstance(value, dict):
            made: dict[str, LabelValue] = {}
            for key, item in value.items():
                made[unique_key(_label_key(key), made)] = _label_value(item, level + 1, inside)
            return made
        return [_label_value(item, level + 1, inside) for item in value]
    return str(value)


#: What an exception whose ``str()`` raises says instead: the words Python's own traceback
#: module prints for it, so the message and the last line of the stack trace agree.
EXCEPTION_STR_FAILED = "<exception str() failed>"


def _exception_message(value: BaseException | None) -> str:
    """``str(value)``, or :data:`EXCEPTION_STR_FAILED` when that raises: an exception class
    with a broken ``__str__`` once cost the whole record, traceback and all."""
    try:
        return str(value)
    except Exception:
        return EXCEPTION_STR_FAILED


def error_type(kind: type[BaseException]) -> str:
    """An exception class as ``error.type`` names it: ``ValueError`` for a built-in one (or one
    of ``__main__``), else with its module, ``pipeline.database.DatabaseError``."""
    name = kind.__qualname__
    module = kind.__module__
    return name if module in ("builtins", "__main__") else f"{module}.{name}"


def _error(record: logging.LogRecord) -> dict[str, str] | None:
    if record.exc_info and record.exc_info[0] is not None:
        kind, value, tb = record.exc_info
        error = {
            "type": error_type(kind),
            "message": _clean(_exception_message(value)),
            "stack_trace": _clean("".join(traceback.format_exception(kind, value, tb)).rstrip()),
        }
        if record.stack_info:
            error["stack_trace"] += "\n" + _clean(record.stack_info)
        return error
    named = {
        field: _clean(str(given))
        for extra, field in _ERROR_EXTRAS.items()
        if (given := getattr(record, extra, None)) is not None
    }
    if record.exc_text:  # formatted already, without the exception object
        return {**named, "stack_trace": _clean(record.exc_text)}
    if record.stack_info:
        return {**named, "stack_trace": _clean(record.stack_info)}
    return named or None


def ecs_document(
    record: logging.LogRecord,
    *,
    service: str,
    hostname: str,
    event_id: str,
    context: Mapping[str, str | int] | None = None,
) -> dict[str, Any]:
    """The ECS document of ``record`` (see the module docstring for the shape)."""
    event: dict[str, str] = {"id": event_id}
    for extra, field in _EVENT_EXTRAS.items():
        value = getattr(record, extra, None)
        if value is not None:
            event[field] = str(value)
    document: dict[str, Any] = {
        "@timestamp": _timestamp(record.created),
        "log": {
            "level": record.levelname.lower(),
            "logger": record.name,
            "origin": {
                "file": {"name": record.filename, "line": record.lineno},
                "function": record.funcName,
            },
        },
        "message": _clean(record.getMessage()),
        "ecs": {"version": ECS_VERSION},
        "event": event,
        "service": {"name": service},
        "host": {"hostname": hostname},
        "process": {
            "pid": record.process,
            "name": record.processName,
            "thread": {"name": record.threadName},
        },
    }
    error = _error(record)
    if error is not None:
        document["error"] = error
    if context:
        document["pipeline"] = {name: context[name] for name in CONTEXT_FIELDS if name in context}
    labels = labels_of(record)
    if labels:
        document["labels"] = redact_labels(labels)  # a surrogate there: ecs_json escapes it
    return document


def ecs_json(document: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a document (anything not JSON-native becomes its ``str``); valid
    UTF-8 whatever its strings hold (lone surrogates escaped as by :func:`encodable`)."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A surrogate in a field ecs_document did not clean (the logger's or thread's name, a
        # context value, an extra's str()): json.dumps leaves it raw, and only ever inside a
        # string, so its escape is written there with the backslash itself escaped for JSON.
        return _SURROGATE.sub(
            lambda match: _escaped_surrogate(match).replace("\\", "\\\\"), text
        ).encode()


def _best_effort(make: Any) -> str:
    """``make()``, or what can be said of it when that raises too."""
    try:
        return encodable(str(make()))
    except Exception as error:
        return f"<{type(error).__name__} while making it>"


def unencodable_document(
    record: logging.LogRecord,
    error: BaseException,
    *,
    service: str,
    hostname: str,
    event_id: str,
) -> dict[str, Any]:
    """What can be said of a record whose :func:`ecs_document` or :func:`ecs_json` raised
    ``error``: its time, level, logger, the message as far as it can be made (its format and
    arguments when they do not fit) and ``labels.encoding_error``. Made of plain strings only,
    so :func:`ecs_json` always encodes it."""

    def message() -> str:
        try:
            return str(record.getMessage())
        except Exception:
            return f"{record.msg!r} % {record.args!r}"

    reason = _best_effort(lambda: f"{type(error).__name__}: {error}")
    return {
        "@timestamp": _timestamp(record.created),
        "log": {
            "level": _best_effort(lambda: record.levelname.lower()),
            "logger": _best_effort(lambda: record.name),
        },
        "message": _clean(_best_effort(message)),
        "ecs": {"version": ECS_VERSION},
        "event": {"id": event_id},
        "service": {"name": encodable(service)},
        "host": {"hostname": encodable(hostname)},
        "labels": {"encoding_error": _clean(reason)},
    }
