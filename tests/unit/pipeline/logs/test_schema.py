"""The log schema: daily index names, and an index template made only of core field types."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from pipeline.logs import schema
from pipeline.logs.schema import (
    ECS_VERSION,
    FIELDS,
    INDEX_ALIAS,
    INDEX_PREFIX,
    TEMPLATE_NAME,
    ensure_index_template,
    field_names,
    index_for,
    index_template,
)

# Field types of Elasticsearch's core server (no module or x-pack plugin needed). Types such as
# wildcard, constant_keyword, match_only_text or unsigned_long are not in it; flattened is,
# since 8.0 (the integration tests use it on the stack's core-only server).
CORE_FIELD_TYPES = {
    "flattened",
    "text",
    "keyword",
    "long",
    "integer",
    "short",
    "byte",
    "double",
    "float",
    "half_float",
    "boolean",
    "date",
    "date_nanos",
    "ip",
    "binary",
    "object",
    "nested",
}

# The schema other parts of the project code against (the shipper, `pipeline logs search`).
SHARED_FIELDS = {
    "@timestamp": "date",
    "message": "text",
    "log.level": "keyword",
    "log.logger": "keyword",
    "log.origin.file.name": "keyword",
    "log.origin.file.line": "long",
    "log.origin.function": "keyword",
    "service.name": "keyword",
    "host.hostname": "keyword",
    "process.pid": "long",
    "process.name": "keyword",
    "process.thread.name": "keyword",
    "error.type": "keyword",
    "error.message": "text",
    "error.stack_trace": "text",
    "event.id": "keyword",
    "event.action": "keyword",
    "event.outcome": "keyword",
    "ecs.version": "keyword",
    "pipeline.event_id": "keyword",
    "pipeline.correlation_id": "keyword",
    "pipeline.causation_id": "keyword",
    "pipeline.saga_id": "keyword",
    "pipeline.topic": "keyword",
    "pipeline.event_type": "keyword",
    "pipeline.consumer_group": "keyword",
    "pipeline.partition": "long",
    "pipeline.offset": "long",
}


def leaves(properties, prefix=""):
    """``{dotted name: leaf mapping}`` of a mapping's ``properties``; objects are walked."""
    found = {}
    for name, mapping in properties.items():
        path = f"{prefix}{name}"
        if "properties" in mapping:
            found.update(leaves(mapping["properties"], f"{path}."))
        else:
            found[path] = mapping
    return found


def all_types(properties):
    types = set()
    for mapping in properties.values():
        types.add(mapping.get("type", "object"))
        if "properties" in mapping:
            types |= all_types(mapping["properties"])
    return types


def test_the_names_are_the_agreed_ones():
    assert INDEX_ALIAS == "pipeline-logs"
    assert INDEX_PREFIX == "pipeline-logs-"
    assert TEMPLATE_NAME == "pipeline-logs"
    assert ECS_VERSION.startswith("8.11")


def test_fields_are_exactly_the_shared_schema_with_a_description_each():
    assert {name: field.type for name, field in FIELDS.items()} == SHARED_FIELDS
    assert field_names() == set(SHARED_FIELDS)
    assert all(field.description.strip() for field in FIELDS.values())


def test_fields_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        FIELDS["extra"] = FIELDS["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("timestamp", "index"),
    [
        (datetime(2024, 7, 15, 0, 0, tzinfo=UTC), "pipeline-logs-2024.07.15"),
        (datetime(2024, 7, 15, 23, 59, 59, 999999, tzinfo=UTC), "pipeline-logs-2024.07.15"),
        (datetime(2024, 1, 2, 3, 4, tzinfo=UTC), "pipeline-logs-2024.01.02"),
        # The UTC day, not the local one: 23:30 at UTC-2 is 01:30 the next day in UTC.
        (
            datetime(2024, 7, 15, 23, 30, tzinfo=timezone(timedelta(hours=-2))),
            "pipeline-logs-2024.07.16",
        ),
        (
            datetime(2024, 12, 31, 0, 30, tzinfo=timezone(timedelta(hours=2))),
            "pipeline-logs-2024.12.30",
        ),
        # Four digits whatever the year (strftime wrote year 1 as "1").
        (datetime(1, 1, 1, tzinfo=UTC), "pipeline-logs-0001.01.01"),
    ],
)
def test_index_for_is_the_utc_day_of_the_record(timestamp, index):
    assert index_for(timestamp) == index


def test_index_for_uses_the_given_alias_as_prefix():
    assert index_for(datetime(2024, 7, 15, tzinfo=UTC), alias="test.logs-x") == (
        "test.logs-x-2024.07.15"
    )


def test_index_for_refuses_a_naive_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        index_for(datetime(2024, 7, 15, 12, 0))


def test_index_for_refuses_what_is_not_a_datetime():
    with pytest.raises(TypeError, match="expected a datetime, got date"):
        index_for(date(2024, 7, 15))  # type: ignore[arg-type]


def test_template_matches_the_daily_indices_and_adds_the_alias():
    body = index_template()

    assert body["index_patterns"] == ["pipeline-logs-*"]
    assert body["template"]["aliases"] == {"pipeline-logs": {}}
    # Above the built-in templates (priority 100) of a full Elasticsearch.
    assert body["priority"] > 100
    assert body["template"]["settings"] == {
        "index": {"number_of_shards": 1, "number_of_replicas": 0}
    }
    assert index_for(datetime(2024, 7, 15, tzinfo=UTC)).startswith(
        body["index_patterns"][0].removesuffix("*")
    )


def test_template_for_another_alias_changes_pattern_and_alias_only():
    default = index_template()
    other = index_template(alias="test.logs-abc", shards=2, replicas=1)

    assert other["index_patterns"] == ["test.logs-abc-*"]
    assert other["template"]["aliases"] == {"test.logs-abc": {}}
    assert other["template"]["settings"]["index"] == {
        "number_of_shards": 2,
        "number_of_replicas": 1,
    }
    assert other["template"]["mappings"] == default["template"]["mappings"]


def test_a_lifecycle_policy_is_named_in_the_indices_settings():
    index = index_template(lifecycle_policy="logs-30d")["template"]["settings"]["index"]

    assert index["lifecycle"] == {"name": "logs-30d"}
    assert "lifecycle" not in index_template()["template"]["settings"]["index"]


@pytest.mark.parametrize(("shards", "replicas"), [(0, 0), (1, -1)])
def test_template_refuses_impossible_shard_counts(shards, replicas):
    with pytest.raises(ValueError, match="shards"):
        index_template(shards=shards, replicas=replicas)


def test_mapping_has_every_field_with_its_type_and_nothing_else():
    mappings = index_template()["template"]["mappings"]
    mapped = leaves(mappings["properties"])

    assert {name: m["type"] for name, m in mapped.items()} == {
        **SHARED_FIELDS,
        "labels": "flattened",
    }


def test_mapping_uses_only_core_field_types():
    mappings = index_template()["template"]["mappings"]

    used = all_types(mappings["properties"])

    assert used <= CORE_FIELD_TYPES, used - CORE_FIELD_TYPES


def test_unknown_fields_are_kept_unindexed_and_labels_are_one_flattened_field():
    # labels.* were dynamic keyword fields: one service's many extra= keys used up the index's
    # 1,000 fields, refusing everyone's new keys; an object then a string for one key clashed.
    mappings = index_template()["template"]["mappings"]

    assert mappings["dynamic"] is False
    assert mappings["date_detection"] is False
    assert mappings["properties"]["labels"] == {"type": "flattened", "ignore_above": 1024}
    assert "dynamic_templates" not in mappings  # no line can add a field


def test_keyword_fields_ignore_overlong_values_instead_of_rejecting_the_line():
    mapped = leaves(index_template()["template"]["mappings"]["properties"])

    keywords = [m for m in mapped.values() if m["type"] == "keyword"]
    assert keywords
    assert all(m["ignore_above"] == schema.KEYWORD_IGNORE_ABOVE for m in keywords)


class RecordingIndices:
    def __init__(self):
        self.calls = []

    def put_index_template(self, **kwargs):
        self.calls.append(kwargs)


class RecordingElasticsearch:
    def __init__(self):
        self.indices = RecordingIndices()


def test_ensure_index_template_puts_the_template_under_its_name():
    es = RecordingElasticsearch()

    ensure_index_template(es)  # type: ignore[arg-type]

    body = index_template()
    assert es.indices.calls == [
        {
            "name": "pipeline-logs",
            "index_patterns": body["index_patterns"],
            "priority": body["priority"],
            "version": body["version"],
            "meta": body["_meta"],
            "template": body["template"],
        }
    ]


def test_ensure_index_template_for_another_alias_names_the_template_after_it():
    es = RecordingElasticsearch()

    ensure_index_template(es, alias="test.logs-abc")  # type: ignore[arg-type]

    [call] = es.indices.calls
    assert call["name"] == "test.logs-abc"
    assert call["index_patterns"] == ["test.logs-abc-*"]
