"""Quiet by default: the libraries' own narration stays out of a program's output."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from pipeline.logs import configure_logging
from pipeline.settings import PipelineSettings

INTERNALS = (
    "faust.worker",
    "mode.services",
    "aiokafka.consumer.group_coordinator",
    "alembic.runtime.migration",
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logging.getLogger(name).level
        for name in ("faust", "mode", "aiokafka", "alembic", "aiokafka.conn")
    }
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.parametrize("name", INTERNALS)
def test_library_info_lines_are_not_printed_but_their_warnings_are(name, restore_logging):
    out = io.StringIO()
    configure_logging(PipelineSettings(), "svc", to_kafka=False, console="text", stream=out)

    logging.getLogger(name).info("[^Worker]: Starting...")
    logging.getLogger(name).warning("something to act on")
    logging.getLogger("svc.handler").info("our own line")

    lines = out.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["something to act on", "our own line"]


def test_at_debug_the_libraries_say_everything(restore_logging):
    out = io.StringIO()
    configure_logging(
        PipelineSettings(), "svc", level="DEBUG", to_kafka=False, console="text", stream=out
    )

    logging.getLogger("faust.worker").info("[^Worker]: Starting...")

    assert "[^Worker]: Starting..." in out.getvalue()


def test_at_debug_aiokafkas_requests_with_their_sasl_bytes_are_still_not_logged(restore_logging):
    out = io.StringIO()
    configure_logging(
        PipelineSettings(), "svc", level="DEBUG", to_kafka=False, console="text", stream=out
    )
    conn = logging.getLogger("aiokafka.conn")

    conn.debug(
        "%s Request 3: SaslAuthenticateRequest_v1(sasl_auth_bytes=%r)",
        "<AIOKafkaConnection host=127.0.0.1:9092>",
        b"user\x00user\x00the-password",
    )
    conn.info("connection to 127.0.0.1:9092 closed")
    logging.getLogger("aiokafka.consumer.fetcher").debug("fetching partitions")

    said = out.getvalue()
    assert "the-password" not in said and "SaslAuthenticate" not in said
    assert "connection to 127.0.0.1:9092 closed" in said  # its INFO lines still are
    assert "fetching partitions" in said  # aiokafka's other DEBUG lines too


def test_aiokafkas_retry_errors_while_kafka_is_away_are_summarised(restore_logging):
    out = io.StringIO()
    configure_logging(PipelineSettings(), "svc", to_kafka=False, console="text", stream=out)

    for _ in range(50):
        logging.getLogger("aiokafka").error(
            "Unable connect to node with id 1: [Errno 111] Connection refused (test %d)", 7
        )
        logging.getLogger("aiokafka.consumer.fetcher").error(
            "Failed fetch messages from 1: NodeNotReadyError (test)"
        )
    logging.getLogger("aiokafka").error("a different error (test)")

    lines = [line.split(": ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "Unable connect to node with id 1: [Errno 111] Connection refused (test 7)",
        "Failed fetch messages from 1: NodeNotReadyError (test)",
        "a different error (test)",
    ]


def test_the_elasticsearch_clients_warning_per_failed_request_is_not_printed(restore_logging):
    # "Node <...> has failed for 1 times in a row" and "Retrying request": 11 lines before the
    # shipper's own one line while Elasticsearch was away.
    out = io.StringIO()
    configure_logging(PipelineSettings(), "svc", to_kafka=False, console="text", stream=out)
    logging.getLogger("elastic_transport.node_pool").warning("Node has failed")
    logging.getLogger("elastic_transport.transport").warning("Retrying request")
    logging.getLogger("elastic_transport.transport").error("gave up")

    assert "Node has failed" not in out.getvalue()
    assert "Retrying request" not in out.getvalue()
    assert "gave up" in out.getvalue()
