"""A cluster that takes no writes (a write-blocked index, the flood-stage disk watermark, its
write queues full) is an outage for the log shipper: it waits and sends the documents again,
and dead-letters none of them; a document Elasticsearch refuses (a mapping conflict) still is."""

from __future__ import annotations

import dataclasses
import json

import pytest

from consumers import log_shipper
from pipeline.errors import PipelineError
from tests.unit.consumers.test_log_shipper import (
    FakeConsumer,
    FakeMessage,
    FakeProducer,
    _doc,
    _item,
    _record,
    _script,
    _shipper,
)

WRITE_BLOCK = "index [pipeline-logs-2024.07.15] blocked by: [FORBIDDEN/8/index write (api)];"
FLOOD_STAGE = (
    "index [pipeline-logs-2024.07.15] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded "
    "flood-stage watermark, index has read-only-allow-delete block];"
)
CLUSTER_READ_ONLY = "blocked by: [FORBIDDEN/6/cluster read-only (api)];"
QUEUE_FULL = "rejected execution of coordinating operation [shard_detail=[pipeline-logs][0]]"


def _no_writes(status: int, kind: str, reason: str):
    item = {"_id": "x", "status": status, "error": {"type": kind, "reason": reason}}
    return (False, {"index": item})


@pytest.mark.parametrize(
    ("status", "kind", "reason"),
    [(403, "cluster_block_exception", CLUSTER_READ_ONLY),
     (429, "cluster_block_exception", FLOOD_STAGE),
     (429, "es_rejected_execution_exception", QUEUE_FULL)],
)  # fmt: skip
def test_a_cluster_taking_no_writes_is_waited_out_and_nothing_is_dead_lettered(
    monkeypatch, caplog, status, kind, reason
):
    # The review: a write-blocked index dead-lettered every record, the shipper's own lines
    # too (122 letters), instead of pausing as for an outage.
    refused = _no_writes(status, kind, reason)
    calls = _script(monkeypatch, *[[refused] * 3] * 3, [_item(201)] * 3)
    consumer, producer = FakeConsumer(), FakeProducer()
    # More rounds refused than retry attempts: a 429 was dead-lettered after them.
    shipper = _shipper(consumer, producer, own_key=b"svc", retry_attempts=2)
    lines: list[str] = []
    shipper._report = lines.append
    shipper._metrics_line.when_due = lambda: True
    theirs = dataclasses.replace(_record(0, _doc(event_id="e0")), key=b"orders")
    records = [theirs, _record(1, _doc(event_id="e1")), _record(2, _doc(event_id="e2"))]

    assert shipper.ship_batch(records) == {("logs", 0): 3}

    assert calls == [["e0", "e1", "e2"]] * 4  # the same documents, until taken
    assert producer.sent == [] and consumer.commits == [{("logs", 0): 3}]
    counters = shipper.counters
    assert (counters.shipped, counters.dead_lettered, counters.outages) == (3, 0, 1)
    assert counters.retried == 9
    said = [r.getMessage() for r in caplog.records if "writes" in r.getMessage()]
    assert said == [
        f"Elasticsearch at PIPELINE_ELASTICSEARCH__URL takes no writes ({kind}: {reason}); "
        "the documents are kept and sent again; consumption paused",
        "Elasticsearch at PIPELINE_ELASTICSEARCH__URL takes writes again; consumption resumed",
    ]  # once each, for the whole outage
    assert any(line.endswith("; elasticsearch not taking writes for 0 s, consumption paused")
               for line in lines), lines  # fmt: skip


def test_a_mapping_conflict_beside_a_blocked_document_is_still_dead_lettered(monkeypatch):
    blocked = _no_writes(403, "cluster_block_exception", WRITE_BLOCK)
    calls = _script(
        monkeypatch,
        [blocked, _item(400, "document_parsing_exception")],
        [_item(201)],
    )
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)

    records = [_record(0, _doc(event_id="a")), _record(1, _doc(event_id="b"))]
    assert shipper.ship_batch(records) == {("logs", 0): 2}

    assert calls == [["a", "b"], ["a"]]
    [(_topic, _key, value, headers)] = producer.sent
    assert value == records[1].value and headers["dlq.reason"] == b"rejected"


def test_a_write_block_of_one_index_is_retried_then_its_documents_are_dead_lettered(
    monkeypatch,
):
    # A lifecycle's read-only step on an older day's index is for good: waiting on it, as on
    # a cluster taking no writes, held every later record of every partition for ever.
    blocked = _no_writes(403, "cluster_block_exception", WRITE_BLOCK)
    calls = _script(monkeypatch, *[[blocked]] * 3)
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer, retry_attempts=2)

    records = [_record(0, _doc(event_id="old"))]
    assert shipper.ship_batch(records) == {("logs", 0): 1}

    assert calls == [["old"]] * 2  # retried as a 5xx is, then given up
    [(_topic, _key, value, headers)] = producer.sent
    assert value == records[0].value
    assert headers["dlq.reason"] == b"retries_exhausted"
    assert shipper.counters.outages == 0


def test_a_run_until_idle_gives_up_on_a_cluster_that_stays_write_blocked(monkeypatch):
    blocked = _no_writes(403, "cluster_block_exception", CLUSTER_READ_ONLY)
    _script(monkeypatch, *[[blocked]] * 10_000)
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)
    monkeypatch.setattr(log_shipper, "ensure_index_template", lambda *a, **k: None)
    line = json.dumps(_doc()).encode()
    monkeypatch.setattr(consumer, "consume", lambda **kwargs: [FakeMessage(0, line, b"orders")])

    with pytest.raises(
        PipelineError, match=r"^elasticsearch not taking writes for 0\.05 s \(the --until-idle"
    ):
        shipper.run(until_idle_s=0.05)

    assert consumer.commits == [] and producer.sent == []  # the next run ships them
