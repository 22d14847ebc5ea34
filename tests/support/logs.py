"""Helpers for log-shipping tests: ECS documents, a test alias, counting documents."""

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pipeline.ids import new_event_id

# A search on an index whose primary shards are still being allocated (just created, or its
# Elasticsearch just restarted) answers 503 search_phase_execution_exception: not yet searchable.
NOT_YET = (404, 503)


def log_document(n: int, service: str = "test-svc", **fields) -> dict:
    moment = datetime.now(UTC)
    return {
        "@timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        "log": {"level": "info", "logger": "test"},
        "message": f"line {n}",
        "ecs": {"version": "8.11.0"},
        "event": {"id": new_event_id()},
        "service": {"name": service},
        "labels": {"n": str(n)},
        **fields,
    }


def produce_documents(producer, topic: str, documents: list[dict]) -> None:
    for document in documents:
        while True:
            try:
                producer.produce(topic, key=b"test-svc", value=json.dumps(document).encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


def unique_alias() -> str:
    return f"test-logs-{uuid.uuid4().hex[:10]}"


@contextmanager
def log_alias(es) -> Iterator[str]:
    """A fresh alias (and template) of its own; its indices and template are deleted after."""
    alias = unique_alias()
    try:
        yield alias
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{alias}-*")
        es.options(ignore_status=404).indices.delete_index_template(name=alias)


def count_documents(es, alias: str, service: str | None = None) -> int:
    """How many documents ``alias`` holds (of one service.name, if given)."""
    es.options(ignore_status=NOT_YET, max_retries=0).indices.refresh(index=alias)
    query = {"term": {"service.name": service}} if service else {"match_all": {}}
    response = es.options(ignore_status=NOT_YET, max_retries=0).count(index=alias, query=query)
    return int(response.get("count", 0))


def document_ids(es, alias: str, service: str | None = None) -> list[str]:
    """The ids of the documents in ``alias`` (of one service.name, if given)."""
    es.options(ignore_status=NOT_YET, max_retries=0).indices.refresh(index=alias)
    ids = []
    query = {"term": {"service.name": service}} if service else {"match_all": {}}
    response = es.search(index=alias, size=1000, scroll="1m", source=False, query=query)
    while response["hits"]["hits"]:
        ids += [hit["_id"] for hit in response["hits"]["hits"]]
        response = es.scroll(scroll_id=response["_scroll_id"], scroll="1m")
    return ids
