"""The log index template and the Kibana saved objects, checked against the real Elasticsearch.

Kibana does not run here, so what Kibana would ask Elasticsearch is asked directly: every saved
search's Lucene query (as ``query_string``, the way Kibana sends Lucene, with its filters and
sort), and every visualisation's aggregations built from its ``visState``. A known set of 20
log lines over two UTC days is indexed through a uniquely named template and alias, so these
tests never touch the real ``pipeline-logs``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from elasticsearch import BadRequestError

from pipeline.dashboards import saga_query, saved_objects, trace_query
from pipeline.logs.schema import (
    ECS_VERSION,
    ensure_index_template,
    index_for,
    index_template,
)

DAY_1 = datetime(2024, 7, 15, tzinfo=UTC)
DAY_2 = datetime(2024, 7, 16, tzinfo=UTC)


def at(day, clock):
    hour, minute, second = (int(part) for part in clock.split(":")[:3])
    return day.replace(hour=hour, minute=minute, second=second)


def log(
    event_id,
    timestamp,
    level,
    service,
    logger,
    message,
    *,
    action=None,
    outcome=None,
    correlation=None,
    saga=None,
    event_type=None,
    topic=None,
    partition=None,
    offset=None,
    error_type=None,
    error_message=None,
    **extra,
):
    """One log document in the shared ECS shape (nested objects, as the shipper writes)."""
    doc = {
        "@timestamp": timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "message": message,
        "log": {
            "level": level,
            "logger": logger,
            "origin": {"file": {"name": f"{logger}.py", "line": 42}, "function": "handle"},
        },
        "service": {"name": service},
        "host": {"hostname": "host-1"},
        "process": {"pid": 4242, "name": service, "thread": {"name": "MainThread"}},
        "event": {"id": event_id},
        "ecs": {"version": ECS_VERSION},
    }
    if action:
        doc["event"]["action"] = action
    if outcome:
        doc["event"]["outcome"] = outcome
    context = {
        "correlation_id": correlation,
        "saga_id": saga,
        "event_type": event_type,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
    context = {key: value for key, value in context.items() if value is not None}
    if context:
        doc["pipeline"] = {"event_id": f"evt-{event_id}", **context}
    if error_type:
        doc["error"] = {
            "type": error_type,
            "message": error_message or message,
            "stack_trace": f"Traceback (most recent call last):\n{error_type}: {message}",
        }
    doc.update(extra)
    return doc


# fmt: off
LOGS = [
    log("l01", at(DAY_1, "10:00:00"), "info", "orders", "orders.api", "order placed",
        action="processed", outcome="success", correlation="req-1",
        event_type="order.placed", topic="requests.orders", partition=0, offset=1),
    log("l02", at(DAY_1, "10:00:01"), "info", "billing", "billing.worker", "invoice created",
        action="processed", correlation="req-1"),
    log("l03", at(DAY_1, "10:00:02"), "warning", "billing", "billing.worker",
        "payment slow, retrying", action="retried", correlation="req-1"),
    log("l04", at(DAY_1, "10:00:03"), "error", "billing", "billing.worker", "payment failed",
        action="retried", outcome="failure", correlation="req-1", error_type="TimeoutError"),
    log("l05", at(DAY_1, "10:00:04"), "error", "billing", "billing.worker", "giving up",
        action="dead_lettered", outcome="failure", correlation="req-1",
        topic="requests.payments", partition=2, offset=17, error_type="TimeoutError"),
    log("l06", at(DAY_1, "10:05:00"), "info", "saga", "saga.orchestrator", "saga started",
        action="processed", correlation="saga-1", saga="saga-1", event_type="saga.started"),
    log("l07", at(DAY_1, "10:05:01"), "info", "inventory", "inventory.worker", "stock reserved",
        correlation="saga-1", saga="saga-1", event_type="inventory.reserved"),
    log("l08", at(DAY_1, "10:05:02"), "error", "payments", "payments.worker", "card declined",
        outcome="failure", correlation="saga-1", saga="saga-1", event_type="payment.failed",
        error_type="CardDeclined"),
    log("l09", at(DAY_1, "10:05:03"), "info", "saga", "saga.orchestrator", "compensating",
        correlation="saga-1", saga="saga-1", event_type="saga.compensating"),
    log("l10", at(DAY_1, "10:05:04"), "info", "inventory", "inventory.worker", "stock released",
        correlation="saga-1", saga="saga-1", event_type="inventory.released"),
    log("l11", at(DAY_1, "11:00:00"), "critical", "orders", "orders.db", "database unreachable",
        error_type="OperationalError"),
    log("l12", at(DAY_1, "11:30:00"), "debug", "gateway", "gateway.http", "request received",
        correlation="req-2"),
    # Labels are searchable keywords; a field outside the schema is kept but not indexed.
    log("l13", at(DAY_1, "12:00:00"), "info", "gateway", "gateway.http", "request accepted",
        correlation="req-2", labels={"tenant": "acme", "attempt": 2},
        http={"response": {"status_code": 202}}),
    log("l14", DAY_1.replace(hour=23, minute=59, second=59, microsecond=999_000), "info",
        "orders", "orders.api", "late order", correlation="req-3"),
    log("l15", at(DAY_2, "00:00:00"), "info", "orders", "orders.api", "early order",
        correlation="req-3"),
    log("l16", at(DAY_2, "00:10:00"), "error", "orders", "orders.api", "validation failed",
        outcome="failure", correlation="req-3", error_type="ValidationError"),
    log("l17", at(DAY_2, "00:20:00"), "info", "billing", "billing.worker",
        "redriven event processed", action="redriven", correlation="req-1"),
    log("l18", at(DAY_2, "00:30:00"), "warning", "payments", "payments.worker",
        "dead-lettered after retries", action="dead_lettered", outcome="failure",
        correlation="saga-2", saga="saga-2", event_type="payment.charge",
        topic="saga.payments.commands", partition=1, offset=5, error_type="GatewayTimeout"),
    log("l19", at(DAY_2, "01:00:00"), "info", "saga", "saga.orchestrator", "saga started",
        correlation="saga-2", saga="saga-2", event_type="saga.started"),
    # Words of the queries in the text only: field queries must not match it.
    log("l20", at(DAY_2, "01:05:00"), "info", "gateway", "gateway.http",
        "text mentions error, critical, dead_lettered and pipeline.correlation_id req-1"),
]
# fmt: on


@pytest.fixture
def log_index(elasticsearch_client, unique_name):
    """A template and alias of its own, with LOGS indexed into their daily indices."""
    es = elasticsearch_client
    alias = unique_name("logs").lower()
    ensure_index_template(es, alias=alias)
    indices = sorted(
        {index_for(datetime.fromisoformat(doc["@timestamp"]), alias=alias) for doc in LOGS}
    )
    try:
        for doc in LOGS:
            index = index_for(datetime.fromisoformat(doc["@timestamp"]), alias=alias)
            es.index(index=index, id=doc["event"]["id"], document=doc)
        es.indices.refresh(index=alias)
        yield es, alias, indices
    finally:
        for index in indices:
            es.options(ignore_status=404).indices.delete(index=index)
        es.options(ignore_status=404).indices.delete_index_template(name=alias)


def objects_of(kind):
    return {obj["attributes"]["title"]: obj for obj in saved_objects() if obj["type"] == kind}


def search_source(obj):
    return json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def es_query(source, query=None):
    """What Kibana sends for a Lucene query and its filters (without the time range)."""
    lucene = source["query"]
    assert lucene["language"] == "lucene"
    text = lucene["query"] if query is None else query
    must = [{"query_string": {"query": text, "analyze_wildcard": True}}] if text else []
    filters, must_not = [], []
    for item in source.get("filter", []):
        meta = item.get("meta", {})
        if meta.get("disabled"):
            continue
        (must_not if meta.get("negate") else filters).append(item["query"])
    return {"bool": {"must": must or [{"match_all": {}}], "filter": filters, "must_not": must_not}}


def run_search(es, alias, search, query=None):
    attributes = search["attributes"]
    response = es.search(
        index=alias,
        query=es_query(search_source(search), query),
        sort=[{field: {"order": order}} for field, order in attributes["sort"]],
        size=100,
    )
    return [hit["_id"] for hit in response["hits"]["hits"]]


def es_aggregations(vis_state, interval):
    """The Elasticsearch aggregation for a visState's bucket aggs, nested in their order."""
    buckets = [a for a in vis_state["aggs"] if a["enabled"] and a["schema"] != "metric"]
    assert [a["type"] for a in vis_state["aggs"] if a["schema"] == "metric"] == ["count"]
    nested = None
    for agg in reversed(buckets):
        params = agg["params"]
        if agg["type"] == "date_histogram":
            body = {
                "date_histogram": {
                    "field": params["field"],
                    "fixed_interval": interval,
                    "min_doc_count": params["min_doc_count"],
                    "time_zone": "UTC",
                }
            }
        elif agg["type"] == "terms":
            assert params["orderBy"] == "1"  # the count metric
            body = {
                "terms": {
                    "field": params["field"],
                    "size": params["size"],
                    "order": {"_count": params["order"]},
                }
            }
        else:
            pytest.fail(f"no Elasticsearch equivalent written for {agg['type']}")
        if nested is not None:
            body["aggs"] = {nested[0]: nested[1]}
        nested = (agg["id"], body)
    assert nested is not None
    return {nested[0]: nested[1]}


def rows(aggregations, prefix=()):
    """Flatten nested bucket aggregations to (key, ..., doc_count) rows."""
    [(_name, result)] = [(k, v) for k, v in aggregations.items() if isinstance(v, dict)]
    out = []
    for bucket in result["buckets"]:
        key = bucket.get("key_as_string", bucket["key"])
        inner = {k: v for k, v in bucket.items() if isinstance(v, dict) and "buckets" in v}
        if inner:
            out.extend(rows(inner, (*prefix, key)))
        else:
            out.append((*prefix, key, bucket["doc_count"]))
    return out


def run_visualisation(es, alias, vis, interval="1d"):
    state = json.loads(vis["attributes"]["visState"])
    response = es.search(
        index=alias,
        query=es_query(search_source(vis)),
        aggs=es_aggregations(state, interval),
        size=0,
    )
    return rows(response["aggregations"])


# --- the template ------------------------------------------------------------------------------


def test_daily_indices_get_the_template_mapping_and_the_alias(log_index):
    es, alias, indices = log_index

    assert indices == [f"{alias}-2024.07.15", f"{alias}-2024.07.16"]
    assert {i: es.count(index=i)["count"] for i in indices} == {indices[0]: 14, indices[1]: 6}
    assert sorted(es.indices.get_alias(name=alias)) == indices
    expected = index_template(alias=alias)["template"]["mappings"]
    for index in indices:
        mapping = es.indices.get_mapping(index=index)[index]["mappings"]
        assert mapping["dynamic"] in (False, "false")
        assert mapping["properties"]["process"]["properties"]["pid"] == {"type": "long"}
        assert (
            mapping["properties"]["log"]["properties"]["level"]
            == (expected["properties"]["log"]["properties"]["level"])
        )


def test_putting_the_template_again_changes_nothing(log_index):
    es, alias, _ = log_index
    before = es.indices.get_index_template(name=alias)["index_templates"][0]["index_template"]

    ensure_index_template(es, alias=alias)

    after = es.indices.get_index_template(name=alias)["index_templates"][0]["index_template"]
    assert after == before
    assert after["priority"] == index_template()["priority"]


def test_a_field_of_the_wrong_type_is_rejected_with_400(log_index):
    es, _, indices = log_index
    doc = log("bad", at(DAY_1, "13:00:00"), "info", "orders", "orders.api", "bad pid")
    doc["process"]["pid"] = "not-a-pid"

    with pytest.raises(BadRequestError) as raised:
        es.index(index=indices[0], id="bad", document=doc)

    assert raised.value.meta.status == 400
    assert "process.pid" in str(raised.value)


def test_a_timestamp_that_is_not_a_date_is_rejected_with_400(log_index):
    es, _, indices = log_index
    doc = log("bad-ts", at(DAY_1, "13:00:00"), "info", "orders", "orders.api", "bad time")
    doc["@timestamp"] = "yesterday"

    with pytest.raises(BadRequestError) as raised:
        es.index(index=indices[0], id="bad-ts", document=doc)

    assert raised.value.meta.status == 400


def test_fields_outside_the_schema_are_kept_but_not_searchable_and_labels_are(log_index):
    es, alias, _ = log_index

    def hits(query):
        response = es.search(index=alias, query={"query_string": {"query": query}})
        return [hit["_id"] for hit in response["hits"]["hits"]]

    assert hits("http.response.status_code:202") == []
    assert es.get(index=f"{alias}-2024.07.15", id="l13")["_source"]["http"] == {
        "response": {"status_code": 202}
    }
    assert hits("labels.tenant:acme") == ["l13"]
    assert hits("labels.attempt:2") == ["l13"]


# --- every saved search ------------------------------------------------------------------------


EXPECTED_SEARCH_HITS = {
    # log.level:(error OR critical), by service, newest first within one.
    "Errors by service": ["l05", "l04", "l16", "l11", "l08"],
    # Everything with a correlation id (all but l11 and l20), oldest first.
    "Trace by correlation id": [f"l{n:02d}" for n in (*range(1, 11), *range(12, 20))],
    "Saga timeline": ["l06", "l07", "l08", "l09", "l10", "l18", "l19"],
    "Dead letters": ["l18", "l05"],
}


def test_there_is_an_expectation_for_every_saved_search():
    assert set(objects_of("search")) == set(EXPECTED_SEARCH_HITS)


@pytest.mark.parametrize("title", sorted(EXPECTED_SEARCH_HITS))
def test_saved_search_returns_exactly_the_expected_hits(log_index, title):
    es, alias, _ = log_index

    assert run_search(es, alias, objects_of("search")[title]) == EXPECTED_SEARCH_HITS[title]


def test_trace_query_narrows_the_trace_search_to_one_request(log_index):
    es, alias, _ = log_index
    search = objects_of("search")["Trace by correlation id"]

    assert run_search(es, alias, search, trace_query("req-1")) == [
        "l01",
        "l02",
        "l03",
        "l04",
        "l05",
        "l17",
    ]
    assert run_search(es, alias, search, trace_query("req-3")) == ["l14", "l15", "l16"]
    assert run_search(es, alias, search, trace_query('no "such" id')) == []


def test_saga_query_narrows_the_timeline_to_one_saga(log_index):
    es, alias, _ = log_index
    search = objects_of("search")["Saga timeline"]

    assert run_search(es, alias, search, saga_query("saga-1")) == [
        "l06",
        "l07",
        "l08",
        "l09",
        "l10",
    ]


# --- every visualisation -----------------------------------------------------------------------


EXPECTED_BUCKETS = {
    "Log volume by level": [
        ("2024-07-15T00:00:00.000Z", "info", 8),
        ("2024-07-15T00:00:00.000Z", "error", 3),
        ("2024-07-15T00:00:00.000Z", "critical", 1),
        ("2024-07-15T00:00:00.000Z", "debug", 1),
        ("2024-07-15T00:00:00.000Z", "warning", 1),
        ("2024-07-16T00:00:00.000Z", "info", 4),
        ("2024-07-16T00:00:00.000Z", "error", 1),
        ("2024-07-16T00:00:00.000Z", "warning", 1),
    ],
    "Error count by service": [("billing", 2), ("orders", 2), ("payments", 1)],
    "Top loggers": [
        ("billing.worker", 5),
        ("orders.api", 4),
        ("gateway.http", 3),
        ("saga.orchestrator", 3),
        ("inventory.worker", 2),
        ("payments.worker", 2),
        ("orders.db", 1),
    ],
}


def test_there_is_an_expectation_for_every_visualisation():
    assert set(objects_of("visualization")) == set(EXPECTED_BUCKETS)


@pytest.mark.parametrize("title", sorted(EXPECTED_BUCKETS))
def test_visualisation_aggregations_return_the_expected_buckets(log_index, title):
    es, alias, _ = log_index

    assert (
        run_visualisation(es, alias, objects_of("visualization")[title])
        == (EXPECTED_BUCKETS[title])
    )


def test_data_view_title_finds_every_log_line_through_the_alias(log_index):
    es, alias, _ = log_index
    [data_view] = [obj for obj in saved_objects() if obj["type"] == "index-pattern"]

    # The data view's title is the real alias; this test's alias stands in for it.
    assert data_view["attributes"]["title"] == "pipeline-logs"
    assert es.count(index=alias)["count"] == len(LOGS)


# --- labels: one flattened field ---------------------------------------------------------------


@pytest.fixture
def empty_log_index(elasticsearch_client, unique_name):
    """The template on an alias of its own, and the name of one daily index, created empty."""
    es = elasticsearch_client
    alias = unique_name("labels").lower()
    ensure_index_template(es, alias=alias)
    index = index_for(DAY_1, alias=alias)
    es.indices.create(index=index)
    try:
        yield es, alias, index
    finally:
        es.options(ignore_status=404).indices.delete(index=index)
        es.options(ignore_status=404).indices.delete_index_template(name=alias)


def _labelled(event_id, service, labels):
    doc = log(event_id, at(DAY_1, "12:00:00"), "info", service, service, f"{service} line")
    doc["labels"] = labels
    return doc


def _bulk(es, index, documents):
    operations = []
    for doc in documents:
        operations += [{"index": {"_index": index, "_id": doc["event"]["id"]}}, doc]
    answer = es.bulk(operations=operations, refresh=True)
    return [item["index"].get("error") for item in answer["items"]]


def test_many_label_keys_of_one_service_leave_every_other_services_new_keys_searchable(
    empty_log_index,
):
    # labels.* were dynamic keyword fields: 1,000 distinct keys of one service filled the index's
    # field limit, and every other line with a new key was refused for the rest of the day.
    es, alias, index = empty_log_index
    noisy = [_labelled(f"noisy-{n}", "noisy", {f"request_{n}": "x"}) for n in range(1_200)]

    assert _bulk(es, index, noisy) == [None] * 1_200
    assert _bulk(es, index, [_labelled("quiet-1", "quiet", {"tenant": "acme"})]) == [None]

    def ids(query):
        answer = es.search(index=alias, query={"query_string": {"query": query}}, size=10)
        return [hit["_id"] for hit in answer["hits"]["hits"]]

    assert ids("labels.tenant:acme") == ["quiet-1"]
    assert ids("labels.request_1199:x") == ["noisy-1199"]
    assert ids("service.name:quiet AND acme") == ["quiet-1"]  # a bare word finds a label too


def test_a_label_sent_as_an_object_then_as_a_string_is_indexed_both_times(empty_log_index):
    # labels.x once an object made every later labels.x string a mapping conflict (400).
    es, alias, index = empty_log_index

    errors = _bulk(es, index, [_labelled("as-object", "svc", {"x": {"y": "1", "n": 7}})])
    errors += _bulk(es, index, [_labelled("as-string", "svc", {"x": "plain", "flag": True})])

    assert errors == [None, None]

    def ids(query):
        answer = es.search(index=alias, query={"query_string": {"query": query}}, size=10)
        return sorted(hit["_id"] for hit in answer["hits"]["hits"])

    assert ids("labels.x.y:1 AND labels.x.n:7") == ["as-object"]
    assert ids("labels.x:plain") == ["as-string"]
    assert ids("labels.flag:true") == ["as-string"]
