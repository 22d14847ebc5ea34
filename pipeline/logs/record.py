"""One :class:`logging.LogRecord` as an ECS 8.11 document (nested JSON objects), and its bytes.

Pure: the caller passes the service, host, the record's own event id and the context of the
event being handled (read in the thread that logged). The shape is the shared log schema
(``pipeline/logs/schema.py`` maps it): ``@timestamp`` (UTC, ms, ``Z``), ``log.level``
(lower-case), ``message``, ``ecs.version``, ``event.id`` (the document id in Elasticsearch),
optional ``event.action``/``event.outcome``, ``service.name``, ``host.hostname``,
``process.{pid,name,thread.name}``, ``log.logger``, ``log.origin.{file.name,file.line,function}``,
``error.{type,message,stack_trace}`` for an exception, ``pipeline.*`` from the context, and
whatever the caller passed with ``extra=`` under ``labels`` as strings.

Secrets and card numbers are redacted in the message, the exception text and the labels.
Keys appear in that order; absent parts are left out (no nulls).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.logs.context import CONTEXT_FIELDS
from pipeline.logs.redact import redact, redact_labels
from pipeline.logs.schema import ECS_VERSION as SCHEMA_ECS_VERSION

__all__ = ["ECS_VERSION", "ecs_document", "ecs_json", "labels_of"]

ECS_VERSION = SCHEMA_ECS_VERSION

#: ``extra=`` keys that become ECS fields rather than labels.
_EVENT_EXTRAS = {"event_action": "action", "event_outcome": "outcome"}

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    {
        *vars(logging.LogRecord("", 0, "", 0, "", None, None)),
        "message",
        "asctime",
        "taskName",
    }
)


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def labels_of(record: logging.LogRecord) -> dict[str, str]:
    """The ``extra=`` fields of a record, as strings (private ``_names`` are skipped); a dot in a
    name becomes ``_`` (ECS label keys have none: Elasticsearch reads ``customer.tier`` as a
    field inside ``customer``, and a line with both was refused as a mapping conflict)."""
    labels = {}
    for name, value in vars(record).items():
        if name in _STANDARD_ATTRIBUTES or name.startswith("_") or name in _EVENT_EXTRAS:
            continue
        labels[name.replace(".", "_")] = value if isinstance(value, str) else str(value)
    return labels


def _error(record: logging.LogRecord) -> dict[str, str] | None:
    if record.exc_info and record.exc_info[0] is not None:
        kind, value, tb = record.exc_info
        name = kind.__qualname__
        module = kind.__module__
        error = {
            "type": name if module in ("builtins", "__main__") else f"{module}.{name}",
            "message": redact(str(value)),
            "stack_trace": redact("".join(traceback.format_exception(kind, value, tb)).rstrip()),
        }
        if record.stack_info:
            error["stack_trace"] += "\n" + redact(record.stack_info)
        return error
    if record.exc_text:  # formatted already, without the exception object
        return {"stack_trace": redact(record.exc_text)}
    if record.stack_info:
        return {"stack_trace": redact(record.stack_info)}
    return None


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
        "message": redact(record.getMessage()),
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
        document["labels"] = redact_labels(labels)
    return document


def ecs_json(document: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a document (anything not JSON-native becomes its ``str``)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str).encode()
