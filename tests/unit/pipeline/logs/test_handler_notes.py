"""The Kafka log handler's own lines (no producer; the count of records lost, at exit) are ECS
JSON documents beside a JSON console's records, and plain text otherwise."""

from __future__ import annotations

import io
import json
import logging

from pipeline.logs import KafkaLogHandler


def _no_producer():
    raise RuntimeError("no brokers configured")


def _lines(notes_as_json: bool) -> list[str]:
    fallback = io.StringIO()
    handler = KafkaLogHandler(
        _no_producer, service="svc", fallback=fallback, notes_as_json=notes_as_json
    )
    logger = logging.getLogger(f"test.notes.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning("still here")
    handler.close()
    return fallback.getvalue().splitlines()


def test_beside_a_json_console_its_own_lines_are_ecs_documents_too():
    documents = [json.loads(line) for line in _lines(notes_as_json=True)]

    said = [(d["log"]["level"], d["log"]["logger"], d["message"]) for d in documents]
    no_producer = "kafka log handler: no producer (no brokers configured)"
    assert said[0] == ("error", "pipeline.logs.handler", no_producer)
    assert said[1][::2] == ("warning", "still here")  # the record itself, as it was
    assert said[2] == (
        "warning",
        "pipeline.logs.handler",
        "kafka log handler: 1 record not delivered (no producer: no brokers configured); "
        "they are only in this stream",
    )
    assert len(said) == 3
    assert all(d["service"]["name"] == "svc" for d in documents)
    # Where in the handler each was said (line 0 before).
    assert all(d["log"]["origin"]["file"]["line"] > 0 for d in documents), documents


def test_otherwise_its_own_lines_are_plain_text():
    lines = _lines(notes_as_json=False)

    assert lines[0] == "kafka log handler: no producer (no brokers configured)"
    assert lines[-1].startswith("kafka log handler: 1 record not delivered")
