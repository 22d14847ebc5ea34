"""The Kibana saved objects: Kibana 8.x's export format, references that resolve, and only
fields the index template maps. The committed files must equal the generator's output.

Field names and references are read back from the generated JSON here (not taken from the
generator's own tables), the way Kibana would read them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.dashboards import (
    NDJSON_FILE,
    SAVED_SEARCHES,
    TEMPLATE_FILE,
    VISUALISATIONS,
    export_files,
    export_ndjson,
    index_template_json,
    saga_query,
    saved_objects,
    trace_query,
)
from pipeline.dashboards.kibana import (
    KibanaImportError,
    ObjectError,
    import_to_kibana,
    parse_import_response,
)
from pipeline.dashboards.saved_objects import (
    DASHBOARD_ID,
    DATA_VIEW_ID,
    KIBANA_VERSION,
    data_view_id,
)
from pipeline.logs.schema import FIELDS, INDEX_ALIAS, LABELS_DESCRIPTION, index_template
from pipeline.settings import ELASTICSEARCH_VERSION

ROOT = Path(__file__).resolve().parents[4]
COMMITTED = ROOT / "dashboards"

OBJECT_KEYS = {
    "attributes",
    "coreMigrationVersion",
    "id",
    "managed",
    "references",
    "type",
    "typeMigrationVersion",
    "version",
}
SUMMARY_KEYS = {
    "excludedObjects",
    "excludedObjectsCount",
    "exportedCount",
    "missingRefCount",
    "missingReferences",
}
# Attributes Kibana 8.x accepts (its saved-object schemas forbid unknown dashboard attributes).
DASHBOARD_ATTRIBUTES = {
    "title",
    "description",
    "kibanaSavedObjectMeta",
    "timeRestore",
    "timeFrom",
    "timeTo",
    "refreshInterval",
    "controlGroupInput",
    "panelsJSON",
    "optionsJSON",
    "hits",
    "version",
}
SEARCH_ATTRIBUTES = {
    "title",
    "description",
    "columns",
    "sort",
    "grid",
    "rowHeight",
    "rowsPerPage",
    "hideChart",
    "breakdownField",
    "kibanaSavedObjectMeta",
    "isTextBasedQuery",
    "usesAdHocDataView",
    "timeRestore",
    "timeRange",
    "refreshInterval",
    "viewMode",
    "hideAggregatedPreview",
    "hits",
    "version",
}
# Lucene `field:` (not inside a quoted phrase, not an escaped colon).
LUCENE_FIELD = re.compile(r'(?<![\\\w.@"])([@A-Za-z_][\w.@]*)\s*:')


def mapped_fields():
    """Dotted names of every leaf field in the index template's mapping."""

    def walk(properties, prefix=""):
        for name, mapping in properties.items():
            if "properties" in mapping:
                yield from walk(mapping["properties"], f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    return set(walk(index_template()["template"]["mappings"]["properties"]))


def lines():
    return export_ndjson().splitlines()


def objects():
    return [json.loads(line) for line in lines()[:-1]]


def by_type(kind):
    return [obj for obj in objects() if obj["type"] == kind]


def search_source(obj):
    return json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def query_fields(source):
    query = source.get("query", {})
    assert query.get("language") == "lucene", "queries are Lucene, so ES can run them as they are"
    named = set(LUCENE_FIELD.findall(query.get("query", "")))
    for item in source.get("filter", []):
        named |= set(LUCENE_FIELD.findall(json.dumps(item.get("query", {}))))
    return named


def version_tuple(version):
    return tuple(int(part) for part in version.split("."))


# --- the NDJSON format -------------------------------------------------------------------------


def test_every_line_is_one_json_object_and_the_file_ends_with_a_newline():
    text = export_ndjson()

    assert text.endswith("\n") and not text.endswith("\n\n")
    for line in text.splitlines():
        assert line.strip() == line and line
        assert isinstance(json.loads(line), dict)


def test_objects_have_exactly_the_fields_of_a_kibana_8_export_with_sorted_keys():
    for line in lines()[:-1]:
        keys = list(json.loads(line, object_pairs_hook=lambda pairs: [k for k, _ in pairs]))
        assert set(keys) == OBJECT_KEYS
        assert keys == sorted(keys)


def test_last_line_is_the_export_summary_counting_the_objects():
    summary = json.loads(lines()[-1])

    assert set(summary) == SUMMARY_KEYS
    assert summary["exportedCount"] == len(lines()) - 1 == len(saved_objects())
    assert summary["missingRefCount"] == 0 and summary["missingReferences"] == []


def test_migration_versions_are_8x_and_not_newer_than_the_compose_kibana():
    kibana = version_tuple(KIBANA_VERSION)
    assert KIBANA_VERSION == ELASTICSEARCH_VERSION
    for obj in objects():
        for key in ("coreMigrationVersion", "typeMigrationVersion"):
            version = version_tuple(obj[key])
            assert version[0] == 8 and version <= kibana, (obj["type"], key, obj[key])
        assert obj["managed"] is False


def test_there_is_a_data_view_four_searches_three_visualisations_and_a_dashboard():
    types = [obj["type"] for obj in objects()]

    assert types == ["index-pattern"] + ["search"] * 4 + ["visualization"] * 3 + ["dashboard"]
    assert {obj["attributes"]["title"] for obj in by_type("search")} == {
        "Errors by service",
        "Trace by correlation id",
        "Saga timeline",
        "Dead letters",
    }


def test_ids_are_unique_and_stable_across_runs():
    ids = [(obj["type"], obj["id"]) for obj in objects()]

    assert len(set(ids)) == len(ids)
    assert export_ndjson() == export_ndjson()
    # Changing these would make a re-import add copies next to the old objects.
    assert DATA_VIEW_ID == "ca0bd0b3-6ddf-5a22-97ea-b17283d04af0"
    assert DASHBOARD_ID == "c84878a7-e989-5b61-9c7c-666c598514c5"


def test_json_valued_attributes_are_valid_json():
    checked = set()
    for obj in objects():
        attributes = obj["attributes"]
        for key, value in attributes.items():
            if key.endswith("JSON") or key in {"visState", "fieldAttrs", "fields", "typeMeta"}:
                assert isinstance(value, str), (obj["id"], key)  # Kibana keeps them as JSON text
                assert isinstance(json.loads(value), dict | list), (obj["id"], key)
                checked.add((obj["type"], key))
        if "kibanaSavedObjectMeta" in attributes:
            assert isinstance(search_source(obj), dict), obj["id"]
            checked.add((obj["type"], "searchSourceJSON"))

    # Every kind of JSON-valued attribute the export has was read back.
    assert checked == {
        ("dashboard", "optionsJSON"),
        ("dashboard", "panelsJSON"),
        ("dashboard", "searchSourceJSON"),
        ("index-pattern", "fieldAttrs"),
        ("index-pattern", "fields"),
        ("index-pattern", "typeMeta"),
        ("search", "searchSourceJSON"),
        ("visualization", "searchSourceJSON"),
        ("visualization", "uiStateJSON"),
        ("visualization", "visState"),
    }


def test_dashboard_and_search_attributes_are_ones_kibana_accepts():
    [dashboard] = by_type("dashboard")
    assert set(dashboard["attributes"]) <= DASHBOARD_ATTRIBUTES
    for search in by_type("search"):
        assert set(search["attributes"]) <= SEARCH_ATTRIBUTES
        assert all(len(pair) == 2 for pair in search["attributes"]["sort"])


# --- references --------------------------------------------------------------------------------


def test_every_reference_resolves_to_an_object_in_the_export():
    exported = {(obj["type"], obj["id"]) for obj in objects()}

    for obj in objects():
        for reference in obj["references"]:
            assert (reference["type"], reference["id"]) in exported, (obj["id"], reference)


def test_searches_and_visualisations_name_their_data_view_reference():
    for obj in by_type("search") + by_type("visualization"):
        source = search_source(obj)
        names = {ref["name"]: ref for ref in obj["references"]}
        reference = names[source["indexRefName"]]
        assert reference == {
            "id": DATA_VIEW_ID,
            "name": source["indexRefName"],
            "type": "index-pattern",
        }


def test_every_dashboard_panel_has_its_reference_and_every_reference_a_panel():
    [dashboard] = by_type("dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    references = {ref["name"]: ref for ref in dashboard["references"]}

    used = set()
    for panel in panels:
        name = f"{panel['panelIndex']}:{panel['panelRefName']}"
        assert references[name]["type"] == panel["type"]
        assert panel["gridData"]["i"] == panel["panelIndex"]
        used.add(name)
    assert used == set(references)


def test_dashboard_shows_every_visualisation_and_every_saved_search():
    [dashboard] = by_type("dashboard")

    shown = {(ref["type"], ref["id"]) for ref in dashboard["references"]}

    assert shown == {
        (obj["type"], obj["id"]) for obj in by_type("search") + by_type("visualization")
    }


def test_dashboard_panels_do_not_overlap_on_the_48_column_grid():
    [dashboard] = by_type("dashboard")
    cells = set()
    for panel in json.loads(dashboard["attributes"]["panelsJSON"]):
        grid = panel["gridData"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 48
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area
        cells |= area


# --- fields ------------------------------------------------------------------------------------


def test_every_field_the_objects_name_exists_in_the_index_template():
    mapped = mapped_fields()
    named = {}

    [data_view] = by_type("index-pattern")
    named["data view"] = {data_view["attributes"]["timeFieldName"]} | set(
        json.loads(data_view["attributes"]["fieldAttrs"])
    )
    for search in by_type("search"):
        attributes = search["attributes"]
        named[search["attributes"]["title"]] = (
            set(attributes["columns"])
            | {field for field, _ in attributes["sort"]}
            | query_fields(search_source(search))
        )
    for vis in by_type("visualization"):
        state = json.loads(vis["attributes"]["visState"])
        named[vis["attributes"]["title"]] = {
            agg["params"]["field"] for agg in state["aggs"] if "field" in agg["params"]
        } | query_fields(search_source(vis))
    [dashboard] = by_type("dashboard")
    named["dashboard"] = query_fields(
        json.loads(dashboard["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    )

    missing = {title: fields - mapped for title, fields in named.items() if fields - mapped}
    assert missing == {}
    assert all(named[title] for title in named if title != "dashboard")


def test_data_view_is_on_the_alias_with_a_description_for_every_field():
    [data_view] = by_type("index-pattern")
    attributes = data_view["attributes"]

    assert attributes["title"] == INDEX_ALIAS
    assert attributes["timeFieldName"] == "@timestamp"
    field_attrs = json.loads(attributes["fieldAttrs"])
    # Every mapped field: the schema's, and labels (flattened), which had none.
    assert field_attrs == {
        **{name: {"customDescription": field.description} for name, field in FIELDS.items()},
        "labels": {"customDescription": LABELS_DESCRIPTION},
    }
    assert "labels.<key>:<value>" in LABELS_DESCRIPTION


def test_searches_have_the_documented_queries_and_sorts():
    searches = {obj["attributes"]["title"]: obj["attributes"] for obj in by_type("search")}

    def query(title):
        return search_source({"attributes": searches[title]})["query"]["query"]

    assert query("Errors by service") == "log.level:(error OR critical)"
    assert searches["Errors by service"]["columns"][:4] == [
        "service.name",
        "log.logger",
        "message",
        "error.type",
    ]
    assert query("Trace by correlation id") == "pipeline.correlation_id:*"
    assert query("Saga timeline") == "pipeline.saga_id:*"
    assert searches["Saga timeline"]["sort"] == [["@timestamp", "asc"]]
    assert {"event.action", "pipeline.event_type", "message"} <= set(
        searches["Saga timeline"]["columns"]
    )
    assert query("Dead letters") == "event.action:dead_lettered"


def test_visualisations_aggregate_the_documented_fields():
    states = {
        obj["attributes"]["title"]: json.loads(obj["attributes"]["visState"])
        for obj in by_type("visualization")
    }

    def buckets(title):
        return [(a["type"], a["params"].get("field")) for a in states[title]["aggs"][1:]]

    assert buckets("Log volume by level") == [
        ("date_histogram", "@timestamp"),
        ("terms", "log.level"),
    ]
    assert buckets("Error count by service") == [("terms", "service.name")]
    assert buckets("Top loggers") == [("terms", "log.logger")]
    for state in states.values():
        assert state["aggs"][0]["type"] == "count"


def test_generator_tables_match_the_export():
    assert {s.id for s in SAVED_SEARCHES} == {o["id"] for o in by_type("search")}
    assert {v.id for v in VISUALISATIONS} == {o["id"] for o in by_type("visualization")}


# --- query templates ---------------------------------------------------------------------------


def test_trace_and_saga_queries_quote_the_id_as_a_lucene_phrase():
    assert trace_query("req-7") == 'pipeline.correlation_id:"req-7"'
    assert saga_query("saga/1") == 'pipeline.saga_id:"saga/1"'
    assert trace_query('a"b\\c') == 'pipeline.correlation_id:"a\\"b\\\\c"'


# --- committed files ---------------------------------------------------------------------------


def test_committed_ndjson_equals_the_generator_output():
    committed = (COMMITTED / NDJSON_FILE).read_text(encoding="utf-8")

    assert committed == export_ndjson(), "run `pipeline dashboards export` and commit the result"


def test_committed_index_template_equals_the_generator_output():
    committed = (COMMITTED / TEMPLATE_FILE).read_text(encoding="utf-8")

    assert committed == index_template_json(), "run `pipeline dashboards export`"
    assert json.loads(committed) == index_template()


def test_export_files_writes_both_files(tmp_path):
    written = export_files(tmp_path / "out")

    assert sorted(p.name for p in written) == sorted([NDJSON_FILE, TEMPLATE_FILE])
    assert (tmp_path / "out" / NDJSON_FILE).read_text(encoding="utf-8") == export_ndjson()


# --- Kibana's import answer ----------------------------------------------------------------------


def test_an_import_answer_with_refused_objects_lists_each_with_its_reason():
    answer = {
        "success": False,
        "successCount": 7,
        "errors": [
            {
                "id": "d1",
                "type": "dashboard",
                "meta": {"title": "Pipeline logs", "icon": "dashboardApp"},
                "error": {
                    "type": "missing_references",
                    "references": [{"type": "index-pattern", "id": "p1"}],
                },
            },
            {
                "id": "v1",
                "type": "visualization",
                "title": "Top loggers",
                "error": {"type": "unknown", "message": "bad visState", "statusCode": 400},
            },
        ],
    }

    result = parse_import_response(answer)

    assert not result.success and result.success_count == 7
    assert result.errors == [
        ObjectError(
            "dashboard", "d1", "Pipeline logs", "missing_references", "missing index-pattern p1"
        ),
        ObjectError("visualization", "v1", "Top loggers", "unknown", "bad visState"),
    ]


def test_an_answer_that_is_not_an_import_result_is_an_error():
    with pytest.raises(KibanaImportError, match="unexpected answer"):
        parse_import_response({"statusCode": 200})


def test_a_kibana_url_without_a_scheme_is_refused_before_any_request():
    with pytest.raises(KibanaImportError, match="http:// or https://"):
        import_to_kibana("kibana:5601", export_ndjson())


def test_the_objects_of_another_alias_are_on_its_own_data_view():
    objects = saved_objects("shop-logs")
    [view] = [obj for obj in objects if obj["type"] == "index-pattern"]

    assert view["attributes"]["title"] == view["attributes"]["name"] == "shop-logs"
    assert view["id"] == data_view_id("shop-logs") != DATA_VIEW_ID
    for obj in objects:
        if obj["type"] in ("search", "visualization"):
            assert [ref["id"] for ref in obj["references"]] == [view["id"]]
    assert json.loads(index_template_json("shop-logs"))["index_patterns"] == ["shop-logs-*"]
