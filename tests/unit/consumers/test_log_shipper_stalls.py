"""The log shipper while Elasticsearch stalls (accepts the connection, never answers): its lag
gauge and metrics line go on, it joins its group before the template is put, and the outage
counts from when the unanswered request was sent.

Elasticsearch is the real client against a real socket on 127.0.0.1 that accepts and never says
a word (a stall is what a stand-in cannot show honestly: the client's own timeout and error);
Kafka is a stand-in whose partition keeps growing while the shipper waits."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from confluent_kafka import TopicPartition
from elasticsearch import Elasticsearch
from pytest_socket import socket_allow_hosts

from consumers import log_shipper_outages
from consumers.log_batch import SourceRecord
from consumers.log_shipper import LogShipper
from pipeline.errors import PipelineError
from pipeline.settings import LogSettings
from tests.support.shipper_stand_ins import NoDeadLetters
from tests.support.silent_server import silent_server
from tests.support.tls_server import tls_server as serving_tls

pytestmark = pytest.mark.enable_socket

NO_OFFSET = -1001
#: The client's request timeout here (the default is 30 s).
TIMEOUT_S = 1.0


@pytest.fixture(autouse=True)
def _loopback_only() -> None:
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # The group is served once an answer takes longer than this (1 s by default): well within
    # the request timeout here, so that the order of things does not depend on the machine.
    monkeypatch.setattr(log_shipper_outages, "ANSWER_GRACE_S", 0.05)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """The URL of a server that accepts every connection and never answers."""
    with silent_server() as port:
        yield f"http://127.0.0.1:{port}"


class GrowingConsumer:
    """One partition, read up to offset 100; each time Kafka is asked for its end (the shipper
    does while its partitions are paused), 50 more records were written."""

    def __init__(self, *, joined: bool) -> None:
        self.assigned = [TopicPartition("logs", 0)] if joined else []
        self.end = 100
        self.on_assign = None
        self.paused = False

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None):
        self.on_assign = on_assign

    def consume(self, num_messages=1, timeout=0):
        if not self.assigned:  # the first poll joins the group
            self.assigned = [TopicPartition("logs", 0)]
            self.on_assign(self, list(self.assigned))
        return []

    def assignment(self):
        return self.assigned

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, 100) for tp in partitions]

    def committed(self, partitions, timeout=0):
        return [TopicPartition(tp.topic, tp.partition, NO_OFFSET) for tp in partitions]

    def get_watermark_offsets(self, partition, timeout=0, cached=False):
        if cached:
            return (NO_OFFSET, 100)  # the last fetch's answer
        self.end += 50
        return (0, self.end)

    def pause(self, partitions):
        self.paused = True

    def resume(self, partitions):
        self.paused = False

    def seek(self, partition):
        pass

    def commit(self, offsets, asynchronous):
        raise AssertionError("nothing is acknowledged here")

    def list_topics(self, topic=None, timeout=0):
        partitions = {0: object()}
        return SimpleNamespace(topics={"logs": SimpleNamespace(partitions=partitions, error=None)})


def _shipper(consumer, url, report) -> LogShipper:
    settings = LogSettings(
        metrics_interval_s=0.05, outage_initial_backoff_s=0.05, outage_max_backoff_s=0.05
    )
    es = Elasticsearch(url, request_timeout=TIMEOUT_S, max_retries=0)
    return LogShipper(
        consumer, es, NoDeadLetters(), settings, consumer_group="g", report=report, es_url=url
    )


def _record(offset: int) -> SourceRecord:
    document = {"@timestamp": "2024-07-15T23:59:59.999Z", "message": "m"}
    return SourceRecord("logs", 0, offset, b"svc", json.dumps(document).encode())


def _lag(line: str) -> int:
    found = re.search(r"\blag=([\d,]+) ", line)
    assert found is not None, line
    return int(found.group(1).replace(",", ""))


def _away_for(line: str) -> int:
    found = re.search(r"; elasticsearch unreachable for (\d+) s, consumption paused$", line)
    assert found is not None, line
    return int(found.group(1))


def test_the_lag_and_the_metrics_line_go_on_while_a_bulk_request_hangs(silent_url, caplog):
    # The review: /metrics said lag 0 and outages 0 for 20 s while 1,250 lines waited, the
    # line every 5 s had a 32 s gap, then it said "unreachable for 0 s" after 30 s unanswered.
    consumer = GrowingConsumer(joined=True)
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        if "; elasticsearch unreachable for " in line:
            shipper.stop.set()  # seen the outage: enough

    shipper = _shipper(consumer, silent_url, report)
    shipper._assigned, shipper._assigned_at = {("logs", 0)}, 1.0
    shipper._metrics_line.start()

    assert shipper.ship_batch([_record(100)]) == {}  # stopped in the outage: nothing committed

    waiting = [line for line in lines if "; no answer from elasticsearch for " in line]
    assert waiting, lines  # the line kept coming while the request hung
    assert all(_lag(line) > 0 for line in waiting)  # with the lag of then, growing
    assert _lag(waiting[-1]) > _lag(waiting[0]) or len(waiting) == 1
    away = [line for line in lines if "; elasticsearch unreachable for " in line]
    # Counted from when the request was sent, not from when the client gave up on it.
    assert away and _away_for(away[0]) >= TIMEOUT_S
    said = [r.getMessage() for r in caplog.records if "consumption paused" in r.getMessage()]
    assert len(said) == 1 and re.fullmatch(
        rf"Elasticsearch at {re.escape(silent_url)} did not answer within [\d.]+ s "
        r"\(PIPELINE_ELASTICSEARCH__REQUEST_TIMEOUT_S\); consumption paused",
        said[0],
    ), said
    assert shipper.counters.outages == 1


def test_a_shipper_started_against_a_stalled_elasticsearch_joins_its_group_first(silent_url):
    # The review: silent for 60 s, its group not there and its metrics port not answering,
    # until the HTTPS-port check and then the template's request timed out.
    consumer = GrowingConsumer(joined=False)
    lines: list[str] = []
    outages_when_assigned: list[int] = []

    def report(line: str) -> None:
        lines.append(line)
        if line.startswith("assigned "):
            outages_when_assigned.append(shipper.counters.outages)

    shipper = _shipper(consumer, silent_url, report)

    # --until-idle 0.3: the template's request unanswered for the request timeout is an
    # outage of that long already (from when it was sent): the run ends then.
    with pytest.raises(PipelineError, match=r"unreachable for 0\.3 s \(the --until-idle time\)"):
        shipper.run(until_idle_s=0.3)

    assert outages_when_assigned == [0]  # in its group while the template waited
    waiting = [line for line in lines if "; no answer from elasticsearch for " in line]
    # The backlog, measured once the group was joined (before: ``lag=?``), and served.
    assert [line for line in waiting if "lag=?" not in line and _lag(line) > 0], lines
    assert shipper.counters.outages == 1


def test_a_refused_connection_is_one_line_naming_the_url_without_its_password(caplog):
    # The review: "elasticsearch unreachable (Connection error caused by: ConnectionError(...
    # port=19200): ... Connection refused)))".
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    url = f"http://elastic:hunter2@127.0.0.1:{port}"

    def report(line: str) -> None:
        if "; elasticsearch unreachable for " in line:
            shipper.stop.set()

    shipper = _shipper(GrowingConsumer(joined=True), url, report)
    shipper._assigned, shipper._assigned_at = {("logs", 0)}, 1.0
    shipper._metrics_line.start()

    assert shipper.ship_batch([_record(100)]) == {}

    said = [r.getMessage() for r in caplog.records if "consumption paused" in r.getMessage()]
    assert said == [
        f"cannot reach Elasticsearch at http://[REDACTED]@127.0.0.1:{port} (connection "
        "refused); consumption paused"
    ]
    assert "hunter2" not in caplog.text


def test_an_https_port_behind_an_http_url_stops_the_shipper_at_once_with_one_line(
    tmp_path, monkeypatch
):
    # Asked only when the server hung up at once (the shipper no longer asks before the
    # template, which kept it out of its group for a stalled Elasticsearch's timeout), and
    # the port's TLS handshake tried once, while the group is served (a code review: it was
    # tried on the shipper's own thread first, then again).
    from pipeline.logs import elasticsearch

    handshakes = []
    speaks_tls = elasticsearch._speaks_tls
    monkeypatch.setattr(
        elasticsearch, "_speaks_tls", lambda *a: handshakes.append(a) or speaks_tls(*a)
    )
    with serving_tls(tmp_path) as (address, _ca):
        url = f"http://{address}"
        shipper = _shipper(GrowingConsumer(joined=False), url, lambda line: None)

        with pytest.raises(
            PipelineError, match=r"an HTTPS port\? then PIPELINE_ELASTICSEARCH__URL"
        ):
            shipper.run(until_idle_s=5)  # (waited out as an outage, it would end after 5 s)

    assert shipper.counters.outages == 0  # no outage to wait out
    assert len(handshakes) == 1
