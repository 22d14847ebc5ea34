"""The log shipper's lag gauge (``pipeline_log_shipper_lag``) says the lag of now: measured
every second from the consumer's positions and the partitions' end offsets, not once per
assignment and then at each metrics line (every 30 s)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from confluent_kafka import TopicPartition

from consumers import log_shipper, log_shipper_standing
from consumers.log_shipper import LogShipper
from pipeline.settings import LogSettings
from tests.support.shipper_stand_ins import NoDeadLetters

NO_OFFSET = -1001


class Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self):
        return None

    def topic(self):
        return "logs"

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def key(self):
        return b"svc"

    def value(self):
        event_id = f"01900000-0000-7000-8000-{self._offset:012d}"
        document = {"@timestamp": "2024-07-15T23:59:59.999Z", "message": "m"}
        return json.dumps({**document, "event": {"id": event_id}}).encode()

    def headers(self):
        return []

    def timestamp(self):
        return (1, 1000)


class ReadingConsumer:
    """One partition of ``end`` records, none committed (a new group: it reads from 0), read
    in ``batches``. As librdkafka: the position is where the application reads next (none
    before its first record), the cached end offset is the one the last fetch answer brought
    (none before the first), and asking Kafka gives the end of now."""

    def __init__(self, end: int, batches: list[int]) -> None:
        self.assigned = [TopicPartition("logs", 0)]
        self.end = end
        self.batches = list(batches)
        self.read_to = NO_OFFSET
        self.fetched_end = NO_OFFSET
        self.asked_ends = 0
        self.paused: list[list[TopicPartition]] = []

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None):
        pass

    def assignment(self):
        return self.assigned

    def consume(self, num_messages=1, timeout=0):
        if self.paused and self.paused[-1]:
            return []  # paused: nothing fetched, the cached end stays as it was
        self.fetched_end = self.end
        if not self.batches:
            return []
        start = max(self.read_to, 0)
        count = self.batches.pop(0)
        self.read_to = start + count
        return [Message(offset) for offset in range(start, start + count)]

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, self.read_to) for tp in partitions]

    def committed(self, partitions, timeout=0):
        return [TopicPartition(tp.topic, tp.partition, NO_OFFSET) for tp in partitions]

    def get_watermark_offsets(self, partition, timeout=0, cached=False):
        if cached:
            return (NO_OFFSET, self.fetched_end)  # the low one only with statistics on
        self.asked_ends += 1
        return (0, self.end)

    def commit(self, offsets, asynchronous):
        pass

    def pause(self, partitions):
        self.paused.append(list(partitions))

    def resume(self, partitions):
        self.paused.append([])

    def seek(self, partition):
        pass

    def list_topics(self, topic=None, timeout=0):
        partitions = {0: object()}
        return SimpleNamespace(topics={"logs": SimpleNamespace(partitions=partitions, error=None)})


class Elasticsearch:
    def options(self, **kwargs):
        return self

    class cluster:
        @staticmethod
        def health(**kwargs):
            return {"status": "green", "timed_out": False}


def _shipper(consumer: ReadingConsumer, monkeypatch) -> LogShipper:
    settings = LogSettings(outage_initial_backoff_s=0.001)
    shipper = LogShipper(consumer, Elasticsearch(), NoDeadLetters(), settings, consumer_group="g")
    shipper._assigned = {("logs", 0)}
    shipper._assigned_at = 1.0  # assigned as the run starts
    monkeypatch.setattr(log_shipper, "ensure_index_template", lambda *a, **k: None)
    monkeypatch.setattr(shipper, "report_metrics", lambda: None)  # no metrics line at all
    return shipper


def test_the_lag_is_measured_before_the_first_batch_ships_and_is_0_once_caught_up(monkeypatch):
    # The review: 2,903 records waiting, /metrics said NaN while the first 2,000 were shipped,
    # then 904 (after that batch), which stayed 10 s after the shipper had caught up, until
    # the next metrics line.
    consumer = ReadingConsumer(end=2_903, batches=[2_000, 903])
    shipper = _shipper(consumer, monkeypatch)
    lag_while_shipping = []

    def bulk(es, actions, **kwargs):
        lag_while_shipping.append(shipper.counters.lag)
        for _action in actions:
            yield True, {"index": {"status": 201}}

    monkeypatch.setattr(log_shipper, "streaming_bulk", bulk)

    counters = shipper.run(until_idle_s=0.05)

    assert counters.shipped == 2_903
    assert lag_while_shipping == [903, 0]  # as each batch was read, before it was shipped
    assert counters.lag == 0
    # The end offsets the fetches brought: Kafka was not asked (each answer took 0.5 s).
    assert consumer.asked_ends == 0


def test_the_lag_keeps_growing_while_elasticsearch_is_away_and_nothing_is_fetched():
    consumer = ReadingConsumer(end=100, batches=[])
    consumer.read_to = 100
    shipper = LogShipper(
        consumer, Elasticsearch(), NoDeadLetters(), LogSettings(), consumer_group="g"
    )
    shipper.lag_meter.every_s = 0.0
    shipper._assigned_at = 1.0
    shipper.lag_meter.refresh(shipper._assigned_at)
    assert shipper.counters.lag == 0

    consumer.end = 350  # 250 more written while the partitions are paused
    shipper.outages.serve_for(0.01)

    assert shipper.counters.lag == 250


def test_the_metrics_line_while_elasticsearch_is_away_says_the_lag_of_now():
    # The line kept saying lag=164 through an outage while the gauge (and Kafka's tools) said
    # 171, 172: it measured from the last fetch's end offsets, and set the gauge back to them.
    consumer = ReadingConsumer(end=100, batches=[])
    consumer.read_to = 100
    shipper = LogShipper(
        consumer, Elasticsearch(), NoDeadLetters(), LogSettings(), consumer_group="g"
    )
    reported: list[str] = []
    shipper._report = reported.append
    shipper._assigned_at = 1.0
    consumer.consume()  # the last fetch before the outage: its answer brought the end, 100
    shipper.lag_meter.refresh(shipper._assigned_at)
    shipper._metrics_line.when_due = lambda: True  # type: ignore[method-assign]

    consumer.end = 350  # 250 more written while the partitions are paused
    shipper.outages.serve_for(0.01)

    assert reported and all("lag=250 " in line for line in reported), reported
    assert shipper.counters.lag == 250


def test_the_lag_is_measured_again_after_its_interval_or_at_once_for_a_new_assignment():
    consumer = ReadingConsumer(end=10, batches=[])
    consumer.read_to = 0  # reads from its first record next
    counters = log_shipper.ShipperCounters()
    meter = log_shipper_standing.LagMeter(consumer, counters)
    # Every second, as the processors' pipeline_consumer_lag.
    assert meter.every_s == log_shipper_standing.LAG_REFRESH_S == 1.0

    meter.refresh(assigned_at=1.0)
    assert counters.lag == 10
    assert consumer.asked_ends == 1  # no fetch brought the end yet: Kafka was asked

    consumer.end = 20
    consumer.consume()  # a fetch answer: it brings the end offset of now
    meter.refresh(assigned_at=1.0)  # within the second: as it was
    assert counters.lag == 10

    meter.refresh(assigned_at=2.0)  # a new assignment: at once, from the fetched end
    assert counters.lag == 20
    assert consumer.asked_ends == 1
