"""Kibana saved objects for the logs, generated from the log schema (pure: no I/O).

What is generated, all on the data view ``pipeline-logs`` (the read alias of the daily indices):

1. the data view: time field ``@timestamp``, a description for every field of
   :data:`pipeline.logs.schema.FIELDS` (Kibana reads the field list itself from Elasticsearch);
2. saved searches (Discover), each a Lucene query so it can be checked against Elasticsearch
   directly: errors by service, a trace by correlation id, a saga's timeline, dead letters;
3. visualisations, of the legacy aggregation-based ``visualization`` type: their ``visState``
   is a plain list of aggregations (``date_histogram``, ``terms``) that maps one to one to an
   Elasticsearch aggregation, which Lens's nested column state does not;
4. a dashboard with all of them, its panels and references in Kibana 8.x's shape
   (``panelRefName`` ``panel_<i>`` and reference name ``<i>:panel_<i>``).

Ids are stable ``uuid5``s, so importing again with ``overwrite`` replaces the objects instead of
adding copies. :func:`export_ndjson` writes them as Kibana's export does: one object per line
with sorted keys, referenced objects before the objects that reference them, and the export
summary line last (Kibana's import skips it).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.logs.schema import (
    FIELDS,
    INDEX_ALIAS,
    LABELS_DESCRIPTION,
    LABELS_FIELD,
    index_template,
)
from pipeline.settings import ELASTICSEARCH_VERSION

#: The Kibana the objects are made for (docker-compose.yml runs the Elasticsearch version).
KIBANA_VERSION = ELASTICSEARCH_VERSION
#: What a Kibana 8.x export writes: the core migration version of every object, and the
#: migration version of each type's attributes as written here. Kibana migrates objects from
#: these versions up to its own on import; a version above its own would be refused.
CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSIONS = {
    "index-pattern": "8.0.0",
    "search": "8.0.0",
    "visualization": "8.5.0",
    "dashboard": "8.9.0",
}
#: Exports carry each object's Elasticsearch version (base64 of ``[seq_no, primary_term]``);
#: Kibana's import drops it. A constant keeps the file reproducible.
EXPORT_VERSION = "WzEsMV0="

#: The name of every reference from a search or visualisation to its data view.
INDEX_REF_NAME = "kibanaSavedObjectMeta.searchSourceJSON.index"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:event-pipeline:kibana-saved-objects")

SortOrder = Literal["asc", "desc"]


def object_id(kind: str, slug: str) -> str:
    """The stable id of a saved object: the same on every run and machine."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}/{slug}"))


def _json(value: Any) -> str:
    """Compact, key-sorted JSON: the string-valued attributes Kibana stores (visState, ...)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def lucene_phrase(value: str) -> str:
    """``value`` as a quoted Lucene phrase (backslashes and quotes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def trace_query(correlation_id: str) -> str:
    """The query of "Trace by correlation id" narrowed to one request or saga."""
    return f"pipeline.correlation_id:{lucene_phrase(correlation_id)}"


def saga_query(saga_id: str) -> str:
    """The query of "Saga timeline" narrowed to one saga."""
    return f"pipeline.saga_id:{lucene_phrase(saga_id)}"


@dataclass(frozen=True)
class SavedSearch:
    """A Discover search: a Lucene query, its columns and its sort."""

    slug: str
    title: str
    description: str
    query: str
    columns: tuple[str, ...]
    sort: tuple[tuple[str, SortOrder], ...]

    @property
    def id(self) -> str:
        return object_id("search", self.slug)


@dataclass(frozen=True)
class Visualisation:
    """An aggregation-based visualisation: its type, query and aggregations (visState aggs)."""

    slug: str
    title: str
    description: str
    vis_type: Literal["histogram", "table"]
    query: str
    aggs: tuple[dict[str, Any], ...]
    params: dict[str, Any]

    @property
    def id(self) -> str:
        return object_id("visualization", self.slug)


ERRORS_QUERY = "log.level:(error OR critical)"

ERRORS_BY_SERVICE = SavedSearch(
    slug="errors-by-service",
    title="Errors by service",
    description="Log lines at level error or critical, grouped by service, newest first.",
    query=ERRORS_QUERY,
    columns=("service.name", "log.logger", "message", "error.type"),
    sort=(("service.name", "asc"), ("@timestamp", "desc")),
)
TRACE_BY_CORRELATION_ID = SavedSearch(
    slug="trace-by-correlation-id",
    title="Trace by correlation id",
    description=(
        "Every log line of an event that belongs to a request or saga, oldest first. To follow "
        'one, replace the * in the query with its id in quotes: pipeline.correlation_id:"<id>".'
    ),
    query="pipeline.correlation_id:*",
    columns=(
        "pipeline.correlation_id",
        "service.name",
        "event.action",
        "pipeline.event_type",
        "pipeline.topic",
        "message",
    ),
    sort=(("@timestamp", "asc"),),
)
SAGA_TIMELINE = SavedSearch(
    slug="saga-timeline",
    title="Saga timeline",
    description=(
        "What happened in sagas, oldest first. To see one saga, replace the * in the query "
        'with its id in quotes: pipeline.saga_id:"<id>".'
    ),
    query="pipeline.saga_id:*",
    columns=("pipeline.saga_id", "service.name", "event.action", "pipeline.event_type", "message"),
    sort=(("@timestamp", "asc"),),
)
DEAD_LETTERS = SavedSearch(
    slug="dead-letters",
    title="Dead letters",
    description="Events sent to a dead-letter topic, with where they came from and why.",
    query="event.action:dead_lettered",
    columns=(
        "service.name",
        "pipeline.topic",
        "pipeline.partition",
        "pipeline.offset",
        "pipeline.event_type",
        "error.type",
        "error.message",
    ),
    sort=(("@timestamp", "desc"),),
)
SAVED_SEARCHES = (ERRORS_BY_SERVICE, TRACE_BY_CORRELATION_ID, SAGA_TIMELINE, DEAD_LETTERS)


def _count(agg_id: str) -> dict[str, Any]:
    return {"id": agg_id, "enabled": True, "type": "count", "schema": "metric", "params": {}}


def _terms(agg_id: str, field: str, size: int, schema: str) -> dict[str, Any]:
    return {
        "id": agg_id,
        "enabled": True,
        "type": "terms",
        "schema": schema,
        "params": {
            "field": field,
            "orderBy": "1",
            "order": "desc",
            "size": size,
            "otherBucket": False,
            "otherBucketLabel": "Other",
            "missingBucket": False,
            "missingBucketLabel": "Missing",
        },
    }


def _date_histogram(agg_id: str, field: str) -> dict[str, Any]:
    return {
        "id": agg_id,
        "enabled": True,
        "type": "date_histogram",
        "schema": "segment",
        "params": {
            "field": field,
            "useNormalizedEsInterval": True,
            "scaleMetricValues": False,
            "interval": "auto",
            "drop_partials": False,
            "min_doc_count": 1,
            "extended_bounds": {},
        },
    }


_TABLE_PARAMS: dict[str, Any] = {
    "perPage": 10,
    "showPartialRows": False,
    "showMetricsAtAllLevels": False,
    "showTotal": False,
    "totalFunc": "sum",
    "percentageCol": "",
}

_STACKED_BARS_PARAMS: dict[str, Any] = {
    "type": "histogram",
    "addTooltip": True,
    "addLegend": True,
    "legendPosition": "right",
    "times": [],
    "addTimeMarker": False,
    "grid": {"categoryLines": False},
    "categoryAxes": [
        {
            "id": "CategoryAxis-1",
            "type": "category",
            "position": "bottom",
            "show": True,
            "style": {},
            "scale": {"type": "linear"},
            "labels": {"show": True, "filter": True, "truncate": 100},
            "title": {},
        }
    ],
    "valueAxes": [
        {
            "id": "ValueAxis-1",
            "name": "LeftAxis-1",
            "type": "value",
            "position": "left",
            "show": True,
            "style": {},
            "scale": {"type": "linear", "mode": "normal"},
            "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
            "title": {"text": "Log lines"},
        }
    ],
    "seriesParams": [
        {
            "show": True,
            "type": "histogram",
            "mode": "stacked",
            "data": {"label": "Log lines", "id": "1"},
            "valueAxis": "ValueAxis-1",
            "drawLinesBetweenPoints": True,
            "lineWidth": 2,
            "showCircles": True,
        }
    ],
    "palette": {"type": "palette", "name": "default"},
    "labels": {"show": False},
    "thresholdLine": {"show": False, "value": 10, "width": 1, "style": "full", "color": "#E7664C"},
}

VOLUME_BY_LEVEL = Visualisation(
    slug="volume-by-level",
    title="Log volume by level",
    description="Log lines over time, stacked by level.",
    vis_type="histogram",
    query="",
    aggs=(
        _count("1"),
        _date_histogram("2", "@timestamp"),
        _terms("3", "log.level", size=5, schema="group"),
    ),
    params=_STACKED_BARS_PARAMS,
)
ERRORS_BY_SERVICE_CHART = Visualisation(
    slug="errors-by-service",
    title="Error count by service",
    description="Log lines at level error or critical, counted per service.",
    vis_type="table",
    query=ERRORS_QUERY,
    aggs=(_count("1"), _terms("2", "service.name", size=20, schema="bucket")),
    params=_TABLE_PARAMS,
)
TOP_LOGGERS = Visualisation(
    slug="top-loggers",
    title="Top loggers",
    description="The loggers that write the most lines.",
    vis_type="table",
    query="",
    aggs=(_count("1"), _terms("2", "log.logger", size=20, schema="bucket")),
    params=_TABLE_PARAMS,
)
VISUALISATIONS = (VOLUME_BY_LEVEL, ERRORS_BY_SERVICE_CHART, TOP_LOGGERS)


def data_view_id(alias: str = INDEX_ALIAS) -> str:
    """The id of the data view on ``alias`` (stable: the same alias, the same id)."""
    return object_id("index-pattern", alias)


DATA_VIEW_ID = data_view_id()
DASHBOARD_ID = object_id("dashboard", "pipeline-logs")
DASHBOARD_TITLE = "Pipeline logs"

# (object, x, y, w, h) on Kibana's 48-column grid.
_LAYOUT: tuple[tuple[SavedSearch | Visualisation, int, int, int, int], ...] = (
    (VOLUME_BY_LEVEL, 0, 0, 48, 12),
    (ERRORS_BY_SERVICE_CHART, 0, 12, 24, 14),
    (TOP_LOGGERS, 24, 12, 24, 14),
    (ERRORS_BY_SERVICE, 0, 26, 48, 15),
    (DEAD_LETTERS, 0, 41, 48, 15),
    (TRACE_BY_CORRELATION_ID, 0, 56, 24, 15),
    (SAGA_TIMELINE, 24, 56, 24, 15),
)


def _saved_object(
    kind: str, object_id_: str, attributes: dict[str, Any], references: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "attributes": attributes,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "id": object_id_,
        "managed": False,
        "references": references,
        "type": kind,
        "typeMigrationVersion": TYPE_MIGRATION_VERSIONS[kind],
        "version": EXPORT_VERSION,
    }


def _data_view_reference(alias: str) -> dict[str, str]:
    return {"id": data_view_id(alias), "name": INDEX_REF_NAME, "type": "index-pattern"}


def _search_source(query: str) -> str:
    return _json(
        {
            "query": {"query": query, "language": "lucene"},
            "filter": [],
            "indexRefName": INDEX_REF_NAME,
        }
    )


def data_view(alias: str = INDEX_ALIAS) -> dict[str, Any]:
    """The data view on ``alias``, with a description of every schema field.

    ``fields`` is empty: Kibana reads the field list from the mapping. The descriptions are
    ``fieldAttrs.<field>.customDescription`` (shown by Kibana 8.13 and later; ``fieldAttrs`` is
    a free JSON string, so an older Kibana ignores the key).
    """
    field_attrs = {name: {"customDescription": field.description} for name, field in FIELDS.items()}
    field_attrs[LABELS_FIELD] = {"customDescription": LABELS_DESCRIPTION}
    return _saved_object(
        "index-pattern",
        data_view_id(alias),
        {
            "allowHidden": False,
            "fieldAttrs": _json(field_attrs),
            "fieldFormatMap": "{}",
            "fields": "[]",
            "name": alias,
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "timeFieldName": "@timestamp",
            "title": alias,
            "typeMeta": "{}",
        },
        [],
    )


def saved_search(search: SavedSearch, alias: str = INDEX_ALIAS) -> dict[str, Any]:
    return _saved_object(
        "search",
        search.id,
        {
            "title": search.title,
            "description": search.description,
            "columns": list(search.columns),
            "sort": [[field, order] for field, order in search.sort],
            "grid": {},
            "hideChart": False,
            "isTextBasedQuery": False,
            "timeRestore": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source(search.query)},
        },
        [_data_view_reference(alias)],
    )


def visualisation(vis: Visualisation, alias: str = INDEX_ALIAS) -> dict[str, Any]:
    vis_state = {
        "title": vis.title,
        "type": vis.vis_type,
        "aggs": list(vis.aggs),
        "params": vis.params,
    }
    return _saved_object(
        "visualization",
        vis.id,
        {
            "title": vis.title,
            "description": vis.description,
            "visState": _json(vis_state),
            "uiStateJSON": "{}",
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _search_source(vis.query)},
        },
        [_data_view_reference(alias)],
    )


def dashboard() -> dict[str, Any]:
    """The dashboard: every visualisation and saved search, one panel each."""
    panels: list[dict[str, Any]] = []
    references: list[dict[str, str]] = []
    for item, x, y, w, h in _LAYOUT:
        kind = "search" if isinstance(item, SavedSearch) else "visualization"
        panel_index = object_id("panel", f"{DASHBOARD_ID}/{item.slug}/{kind}")
        panels.append(
            {
                "version": KIBANA_VERSION,
                "type": kind,
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": panel_index},
                "panelIndex": panel_index,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{panel_index}",
            }
        )
        references.append(
            {"id": item.id, "name": f"{panel_index}:panel_{panel_index}", "type": kind}
        )
    options = {
        "useMargins": True,
        "syncColors": False,
        "syncCursor": True,
        "syncTooltips": False,
        "hidePanelTitles": False,
    }
    return _saved_object(
        "dashboard",
        DASHBOARD_ID,
        {
            "title": DASHBOARD_TITLE,
            "description": (
                "Pipeline logs: volume by level, errors by service, top loggers, and the "
                "searches for errors, dead letters, traces and saga timelines."
            ),
            "panelsJSON": _json(panels),
            "optionsJSON": _json(options),
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": True, "value": 60_000},
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": _json(
                    {"query": {"query": "", "language": "lucene"}, "filter": []}
                )
            },
        },
        references,
    )


def saved_objects(alias: str = INDEX_ALIAS) -> list[dict[str, Any]]:
    """Every saved object, each after the objects it references (the order of an export), on
    the data view of ``alias`` (the logs' read alias, ``PIPELINE_LOGS__INDEX_ALIAS``)."""
    return [
        data_view(alias),
        *(saved_search(search, alias) for search in SAVED_SEARCHES),
        *(visualisation(vis, alias) for vis in VISUALISATIONS),
        dashboard(),
    ]


def export_ndjson(alias: str = INDEX_ALIAS) -> str:
    """The saved objects in Kibana's import format (NDJSON), as ``pipeline-logs.ndjson``."""
    objects = saved_objects(alias)
    summary = {
        "excludedObjects": [],
        "excludedObjectsCount": 0,
        "exportedCount": len(objects),
        "missingRefCount": 0,
        "missingReferences": [],
    }
    return "".join(_json(line) + "\n" for line in [*objects, summary])


def index_template_json(alias: str = INDEX_ALIAS) -> str:
    """The index template as ``dashboards/index-template.json`` (``PUT _index_template/...``)."""
    template = index_template(alias=alias)
    return json.dumps(template, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
