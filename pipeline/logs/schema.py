"""The log schema: which fields a log document has in Elasticsearch, and where it is stored.

One source of truth, :data:`FIELDS`, from which both the index template (here) and the Kibana
saved objects (:mod:`pipeline.dashboards`) are generated, so a field Kibana names always exists
in the mapping.

Documents are ECS-shaped (nested objects, ECS 8.11 names): ``{"@timestamp": ..., "log":
{"level": "error", ...}, "service": {"name": ...}, "pipeline": {"correlation_id": ...}}``.
They are stored in daily indices ``pipeline-logs-YYYY.MM.DD`` (UTC, from the record's own
``@timestamp``), created on first write from the index template ``pipeline-logs``, which adds
every one of them to the read alias ``pipeline-logs``. Searches and Kibana use the alias.

Only field types of Elasticsearch's core server are used (``date``, ``text``, ``keyword``,
``long``, ``object``, and ``flattened``, in the server since 8.0): no ``match_only_text``,
``wildcard`` or ``constant_keyword``, which need modules the core distribution does not have.

Unknown fields: the root mapping is ``dynamic: false``. A field that is not in :data:`FIELDS`
(say an ``extra=`` attribute a service added to one log call) is kept in ``_source``, so it is
shown with the document in Kibana and by ``pipeline logs search``, but it is not indexed, so it
cannot be searched and it cannot grow the mapping. We chose this over ``dynamic: "strict"``
because strict would reject the whole log line for one unexpected attribute: the line would
only be findable in the dead-letter topic, which is a poor trade for a log store. A known field
with a value of the wrong type (``"process.pid": "abc"``) is still rejected by Elasticsearch
with a 400, which the shipper dead-letters. ``labels`` is the place for ad-hoc searchable
values: one ``flattened`` field, whose leaves (strings, numbers, booleans, at any depth) are
indexed as keywords and found as ``labels.<key>:<value>`` (``labels.order_id:o-1``).

``labels`` was an object with a dynamic template (each key its own ``keyword`` field): one
service logging many distinct ``extra=`` keys used up the index's 1,000 fields, and every
other service's line with a new key was then refused (dead-lettered) for the rest of the day;
and a key once sent as an object (``labels.x.y``) refused every later line with ``labels.x``
as a string. A flattened field is one field in the mapping whatever the keys, and takes a
key's value as an object in one line and a string in the next. What it costs: every leaf is a
keyword (a range on a number compares text, as it did), and Kibana lists ``labels`` as one
field rather than each key (``labels.order_id:o-1`` is still a query and a filter there). We
chose it over ``index.mapping.total_fields.ignore_dynamic_beyond_limit``, which keeps the line
but leaves keys past the limit unsearchable (which ones depends on the order lines came) and
does not help with the object-then-string conflict.

The template applies to indices created after it is put: a changed template takes effect with
the next day's index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from elasticsearch import Elasticsearch

#: The ECS version the documents follow (written to ``ecs.version`` by the log formatter).
ECS_VERSION = "8.11.0"

#: The read alias every daily index belongs to: search this, never a daily index.
INDEX_ALIAS = "pipeline-logs"
#: Daily indices are ``<INDEX_PREFIX>YYYY.MM.DD``. Deliberately not ``logs-*``: a full
#: Elasticsearch ships a built-in ``logs-*-*`` template that makes such names data streams.
INDEX_PREFIX = f"{INDEX_ALIAS}-"
#: The name of the composable index template (``PUT _index_template/<TEMPLATE_NAME>``).
TEMPLATE_NAME = INDEX_ALIAS
#: Above the built-in templates of a full Elasticsearch (priority 100), so that if a pattern
#: of theirs ever overlaps ours, ours wins.
TEMPLATE_PRIORITY = 200
#: Bumped whenever :data:`FIELDS` or the settings change; stored as the template's ``version``.
#: 2: ``labels`` is one ``flattened`` field (it was an object with a dynamic template).
TEMPLATE_VERSION = 2

#: The ``flattened`` field holding a record's ``extra=`` values (each leaf a keyword).
LABELS_FIELD = "labels"
#: What the data view says of ``labels`` (the schema's fields describe themselves).
LABELS_DESCRIPTION = (
    "The line's own fields (extra=... and log_context), as text; search one as "
    "labels.<key>:<value>, e.g. labels.order_id:o-1"
)

#: Longer keyword values are kept in ``_source`` but not indexed (ECS uses the same limit).
KEYWORD_IGNORE_ABOVE = 1024

FieldType = Literal["date", "text", "keyword", "long"]


@dataclass(frozen=True)
class LogField:
    """One field of a log document: its Elasticsearch type and what it means."""

    type: FieldType
    description: str


def _f(type_: FieldType, description: str) -> LogField:
    return LogField(type=type_, description=description)


#: Every indexed field of a log document (dotted ECS names; nested objects in the document).
FIELDS: Mapping[str, LogField] = MappingProxyType(
    {
        "@timestamp": _f("date", "When the log record was created (UTC)."),
        "message": _f("text", "The formatted log message."),
        "log.level": _f("keyword", "debug, info, warning, error or critical (lower case)."),
        "log.logger": _f("keyword", "The name of the Python logger."),
        "log.origin.file.name": _f("keyword", "The source file of the logging call."),
        "log.origin.file.line": _f("long", "The line of the logging call."),
        "log.origin.function": _f("keyword", "The function of the logging call."),
        "service.name": _f("keyword", "The service that logged (PIPELINE_SERVICE_NAME)."),
        "host.hostname": _f("keyword", "The host the process runs on."),
        "process.pid": _f("long", "The process id."),
        "process.name": _f("keyword", "The process name."),
        "process.thread.name": _f("keyword", "The thread that logged."),
        "error.type": _f("keyword", "The exception class, for records with an exception."),
        "error.message": _f("text", "The exception message."),
        "error.stack_trace": _f("text", "The formatted traceback."),
        "event.id": _f("keyword", "The log record's own id (the document _id)."),
        "event.action": _f(
            "keyword", "What happened to the event: processed, retried, dead_lettered, redriven."
        ),
        "event.outcome": _f("keyword", "success or failure."),
        "ecs.version": _f("keyword", "The ECS version of the document."),
        "pipeline.event_id": _f("keyword", "The id of the event being handled (ce_id)."),
        "pipeline.correlation_id": _f(
            "keyword", "The request or saga the event belongs to (ce_correlationid)."
        ),
        "pipeline.causation_id": _f("keyword", "The event that caused it (ce_causationid)."),
        "pipeline.saga_id": _f("keyword", "The saga the event belongs to."),
        "pipeline.topic": _f("keyword", "The Kafka topic of the event."),
        "pipeline.event_type": _f("keyword", "The CloudEvents type of the event (ce_type)."),
        "pipeline.consumer_group": _f("keyword", "The consumer group handling the event."),
        "pipeline.partition": _f("long", "The Kafka partition of the event."),
        "pipeline.offset": _f("long", "The Kafka offset of the event."),
    }
)


def field_names() -> set[str]:
    """The dotted names of every indexed field (not counting ``labels``, flattened)."""
    return set(FIELDS)


def index_for(timestamp: datetime, *, alias: str = INDEX_ALIAS) -> str:
    """The daily index of a record created at ``timestamp``: ``pipeline-logs-2024.07.15``.

    The day is the UTC day. A naive datetime is refused: its day would depend on the host.
    The year has four digits whatever it is (``strftime("%Y")`` writes year 1 as ``1``).
    """
    if not isinstance(timestamp, datetime):
        raise TypeError(f"expected a datetime, got {type(timestamp).__name__}")
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {timestamp.isoformat()}")
    day = timestamp.astimezone(UTC)
    return f"{alias}-{day.year:04d}.{day.month:02d}.{day.day:02d}"


def _leaf_mapping(field: LogField) -> dict[str, Any]:
    if field.type == "keyword":
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    return {"type": field.type}


def mapping_properties() -> dict[str, Any]:
    """:data:`FIELDS` as nested ``properties`` (``log.origin.file.line`` -> log > origin > ...)."""
    root: dict[str, Any] = {}
    for name, field in FIELDS.items():
        *parents, leaf = name.split(".")
        properties = root
        for part in parents:
            node = properties.setdefault(part, {"properties": {}})
            properties = node["properties"]
        properties[leaf] = _leaf_mapping(field)
    root[LABELS_FIELD] = {"type": "flattened", "ignore_above": KEYWORD_IGNORE_ABOVE}
    return root


def mappings() -> dict[str, Any]:
    """The ``mappings`` of a log index: :data:`FIELDS` and ``labels`` (flattened), nothing
    else: no field is ever added by a line (see the module docstring)."""
    return {
        "dynamic": False,
        "date_detection": False,
        "numeric_detection": False,
        "properties": mapping_properties(),
    }


def index_template(
    *,
    shards: int = 1,
    replicas: int = 0,
    alias: str = INDEX_ALIAS,
    lifecycle_policy: str | None = None,
) -> dict[str, Any]:
    """The body of ``PUT _index_template/<alias>`` for the daily indices ``<alias>-*``.

    ``alias`` is the read alias, and the prefix of the daily indices and the template's name;
    tests pass their own so they never touch the real ``pipeline-logs``. ``lifecycle_policy``:
    the ILM policy the indices follow (``index.lifecycle.name``), if any.
    """
    if shards < 1 or replicas < 0:
        raise ValueError(f"expected shards >= 1 and replicas >= 0, got {shards} and {replicas}")
    index: dict[str, Any] = {"number_of_shards": shards, "number_of_replicas": replicas}
    if lifecycle_policy is not None:
        index["lifecycle"] = {"name": lifecycle_policy}
    return {
        "index_patterns": [f"{alias}-*"],
        "priority": TEMPLATE_PRIORITY,
        "version": TEMPLATE_VERSION,
        "_meta": {
            "description": "Log records shipped from Kafka (ECS-shaped), one index per UTC day",
            "ecs_version": ECS_VERSION,
            "managed_by": "event-pipeline (pipeline/logs/schema.py)",
        },
        "template": {
            "settings": {"index": index},
            "mappings": mappings(),
            "aliases": {alias: {}},
        },
    }


def ensure_index_template(
    es: Elasticsearch,
    *,
    alias: str = INDEX_ALIAS,
    shards: int = 1,
    replicas: int = 0,
    lifecycle_policy: str | None = None,
) -> None:
    """Put the index template (idempotent: putting the same body again changes nothing).

    Call it before writing logs: an index created without it would get dynamic mappings.
    Errors are Elasticsearch's own (``elasticsearch.ApiError``, ``ConnectionError``).
    """
    body = index_template(
        shards=shards, replicas=replicas, alias=alias, lifecycle_policy=lifecycle_policy
    )
    es.indices.put_index_template(
        name=alias,
        index_patterns=body["index_patterns"],
        priority=body["priority"],
        version=body["version"],
        meta=body["_meta"],
        template=body["template"],
    )
