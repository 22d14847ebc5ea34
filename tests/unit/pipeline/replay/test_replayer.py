"""replay_into_kafka over a fake producer: what is produced, in what order, and the accounting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.cli.interrupts import Terminated
from pipeline.kafka.clients import producer_config
from pipeline.replay import replayer
from pipeline.replay.pacing import Pacing
from pipeline.replay.recording import (
    LinePlace,
    RecordedMessage,
    RecordingError,
    parse_lines_for_replay,
)
from pipeline.replay.replayer import (
    ReplayError,
    ReplayFailed,
    ReplayInterrupted,
    ReplayStopped,
    replay_into_kafka,
)
from pipeline.settings import KafkaSettings
from tests.support.produce_calls import ProduceCall


class FakeError:
    def str(self):
        return "Broker: Message size too large"


class FakeProducer:
    """Keeps what is produced; fails the offsets listed in ``failing`` at flush."""

    def __init__(self, config):
        self.config = config
        self.produced = []
        self.queue_full_once = False
        self.interrupt_at = None
        self.interrupt = KeyboardInterrupt
        self.failing = set()
        self.refuse_at = None
        self.polls = 0
        self.flushed = 0

    def produce(self, *args, **kwargs):
        call = ProduceCall(*args, **kwargs)  # as the replay passes them: by position
        assert call.report is None and call.timestamp == 0  # the producer's own, and "now"
        if self.interrupt_at == len(self.produced):
            raise self.interrupt
        if self.refuse_at == len(self.produced):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Unable to produce"))
        if self.queue_full_once:
            self.queue_full_once = False
            raise BufferError("queue full")
        self.produced.append(
            SimpleNamespace(
                topic=call.topic,
                value=call.value,
                key=call.key,
                partition=call.partition,
                headers=call.headers,
            )
        )

    def poll(self, timeout=0):
        self.polls += 1
        return 0

    def flush(self, timeout=None):
        self.flushed += 1
        for n, sent in enumerate(self.produced):
            if n in self.failing:
                report = SimpleNamespace(
                    topic=lambda topic=sent.topic: topic,
                    partition=lambda partition=sent.partition: max(partition, 0),
                    key=lambda key=sent.key: key,
                )
                self.config["on_delivery"](FakeError(), report)
        self.failing = set()
        return 0

    def purge(self):
        raise AssertionError("nothing is left to purge when flush returns 0")


@pytest.fixture
def fake(monkeypatch):
    made = []

    def build_producer(kafka, **overrides):
        made.append(FakeProducer(producer_config(kafka, **overrides)))
        return made[-1]

    monkeypatch.setattr(replayer, "build_producer", build_producer)
    monkeypatch.setattr(replayer, "build_admin", lambda kafka: None)
    counts = {"orders": 3, "payments": 1, "copy": 2}
    monkeypatch.setattr(
        replayer,
        "describe_cluster_topics",
        lambda admin, names, bootstrap=None: {
            name: SimpleNamespace(partitions=counts[name]) for name in names if name in counts
        },
    )
    return made


KAFKA = KafkaSettings()


def recorded(topic="orders", partition=0, offset=0, key=b"k", value=b"v", headers=(), ts=None):
    return RecordedMessage(topic, partition, offset, key, value, headers, ts)


def test_keys_values_and_headers_are_produced_as_recorded_in_order(fake):
    messages = [
        recorded(partition=4, offset=0, key=None, value=None),
        recorded(partition=1, offset=5, key=b"\xff", value=b"\x00", headers=(("a", None),)),
        recorded(
            topic="payments", offset=9, headers=(("dup", b"1"), ("dup", b"2"), ("ce_id", b"e"))
        ),
    ]
    summary = replay_into_kafka(KAFKA, messages)
    producer = fake[0]
    assert [(p.topic, p.key, p.value, p.headers) for p in producer.produced] == [
        ("orders", None, None, []),
        ("orders", b"\xff", b"\x00", [("a", None)]),
        ("payments", b"k", b"v", [("dup", b"1"), ("dup", b"2"), ("ce_id", b"e")]),
    ]
    # By key (murmur2); the keyless one to its recorded partition 4 modulo orders' 3 partitions.
    assert [p.partition for p in producer.produced] == [1, -1, -1]
    assert summary.sent == 3 and summary.per_topic == {"orders": 2, "payments": 1}
    # The replay's own settings keep the safe producer: idempotent, acks=all, murmur2.
    assert producer.config["enable.idempotence"] is True
    assert producer.config["acks"] == "all"
    assert producer.config["partitioner"] == "murmur2_random"


def test_preserve_partitions_sends_each_to_its_recorded_partition(fake):
    messages = [recorded(partition=2), recorded(partition=0), recorded(partition=1)]
    replay_into_kafka(KAFKA, messages, preserve_partitions=True)
    assert [p.partition for p in fake[0].produced] == [2, 0, 1]


def test_one_topic_given_takes_every_message(fake):
    messages = [recorded(topic="orders", partition=1), recorded(topic="payments")]
    summary = replay_into_kafka(KAFKA, messages, topic="copy", preserve_partitions=True)
    assert [(p.topic, p.partition) for p in fake[0].produced] == [("copy", 1), ("copy", 0)]
    assert summary.per_topic == {"copy": 2}


def test_a_missing_topic_stops_before_its_first_message_after_flushing_the_rest(fake):
    messages = [recorded(topic="orders"), recorded(topic="absent"), recorded(topic="orders")]
    with pytest.raises(ReplayError, match="topic absent does not exist") as stopped:
        replay_into_kafka(KAFKA, messages)
    assert [p.topic for p in fake[0].produced] == ["orders"]
    assert fake[0].flushed == 1
    assert isinstance(stopped.value, ReplayStopped)
    assert stopped.value.summary.per_topic == {"orders": 1}  # what went before the error


def test_a_bad_line_met_while_sending_stops_the_replay_saying_what_went_before(fake):
    def lines():
        yield recorded(offset=0)
        yield recorded(offset=1)
        raise RecordingError("stdin:3: not a recorded message (no topic)")

    with pytest.raises(ReplayStopped, match="stdin:3: not a recorded message") as stopped:
        replay_into_kafka(KAFKA, lines())
    assert isinstance(stopped.value.error, RecordingError)
    assert stopped.value.summary.sent == 2


def test_an_error_before_anything_was_sent_is_raised_as_it_is(fake):
    def lines():
        raise RecordingError("stdin:1: not a recorded message (no topic)")
        yield  # a generator

    with pytest.raises(RecordingError):
        replay_into_kafka(KAFKA, lines())


def test_a_recorded_partition_the_target_lacks_is_an_error(fake):
    with pytest.raises(ReplayError, match="partition 1 of payments"):
        replay_into_kafka(
            KAFKA, [recorded(topic="payments", partition=1)], preserve_partitions=True
        )


def test_rewrite_ids_gives_fresh_ce_ids_and_keeps_the_rest(fake):
    headers = (("ce_id", b"old"), ("ce_type", b"t"))
    replay_into_kafka(
        KAFKA, [recorded(headers=headers), recorded(headers=headers)], rewrite_ids=True
    )
    first, second = (p.headers for p in fake[0].produced)
    assert first[1] == second[1] == ("ce_type", b"t")
    assert len({first[0][1], second[0][1], b"old"}) == 3


def _producers_with(monkeypatch, **attributes):
    """Every FakeProducer made from now on has ``attributes`` set."""
    original = FakeProducer.__init__

    def made(self, config):
        original(self, config)
        for name, value in attributes.items():
            setattr(self, name, value)

    monkeypatch.setattr(FakeProducer, "__init__", made)


def test_a_full_local_queue_is_waited_out_and_nothing_is_lost(fake, monkeypatch):
    _producers_with(monkeypatch, queue_full_once=True)
    summary = replay_into_kafka(KAFKA, [recorded(offset=n) for n in range(3)])
    assert len(fake[0].produced) == 3 and summary.sent == 3
    assert fake[0].polls >= 1


def test_failed_deliveries_raise_with_the_summary_of_what_was_sent(fake, monkeypatch):
    original = FakeProducer.flush

    def failing_flush(self, timeout=None):
        self.failing = {1}
        return original(self, timeout)

    monkeypatch.setattr(FakeProducer, "flush", failing_flush)
    messages = [recorded(), recorded(topic="payments", key=b"k1"), recorded()]
    with pytest.raises(
        ReplayFailed,
        match=r"^messages not delivered: 1 \(the first: Broker: .* too large, to payments\[0\], "
        r"key 'k1'\); delivered: 2$",
    ) as failed:
        replay_into_kafka(KAFKA, messages)
    assert failed.value.failed == 1
    assert failed.value.summary.sent == 2
    assert failed.value.summary.per_topic == {"orders": 2, "payments": 0}


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Terminated])
def test_ctrl_c_or_sigterm_flushes_what_was_sent_and_says_how_much_and_which(
    fake, monkeypatch, interrupt
):
    original = FakeProducer.__init__

    def interrupted_at_two(self, config):
        original(self, config)
        self.interrupt_at = 2
        self.interrupt = interrupt

    monkeypatch.setattr(FakeProducer, "__init__", interrupted_at_two)
    with pytest.raises(ReplayInterrupted) as interrupted:
        replay_into_kafka(KAFKA, [recorded(offset=n) for n in range(5)])
    assert isinstance(interrupted.value, KeyboardInterrupt)
    assert type(interrupted.value.interrupt) is interrupt  # 130 or 143, for the command
    assert interrupted.value.summary.sent == 2
    assert str(interrupted.value) == "interrupted; messages delivered: 2"
    assert fake[0].flushed == 1


def test_progress_counts_every_message_handed_to_the_producer(fake):
    seen = []
    replay_into_kafka(KAFKA, [recorded(offset=n) for n in range(1_234)], on_progress=seen.append)
    assert sum(seen) == 1_234


def test_paced_messages_wait_for_their_due_time(fake, monkeypatch):
    now = [100.0]
    waits = []

    def poll(self, timeout=0):
        waits.append(timeout)
        now[0] += timeout
        return 0

    monkeypatch.setattr(FakeProducer, "poll", poll)
    monkeypatch.setattr(replayer.time, "monotonic", lambda: now[0])
    messages = [recorded(ts=1_000), recorded(ts=1_100), recorded(ts=1_300)]
    replay_into_kafka(KAFKA, messages, pacing=Pacing(speed=0.5))
    # Due at 0, 0.2 and 0.6 s: the waits add up to the last message's due time.
    assert sum(waits) == pytest.approx(0.6)


def test_a_missing_first_target_fails_before_any_producer_is_made(fake):
    # With Kafka away, the producer made first logged its own connection failures (raw
    # librdkafka lines) before the replay's one-line error.
    with pytest.raises(ReplayError, match="topic nowhere does not exist"):
        replay_into_kafka(KAFKA, iter([recorded("nowhere")]))

    assert fake == []


def test_an_empty_stream_makes_no_lookup_and_sends_nothing(fake):
    summary = replay_into_kafka(KAFKA, iter([]))
    assert summary.sent == 0


def _refusing_at(monkeypatch, index):
    _producers_with(monkeypatch, refuse_at=index)


def test_a_message_the_client_refuses_is_named_by_its_line_after_what_went_before(
    fake, monkeypatch
):
    # Written by hand: no partition or offset to name it by (0 and -1 for every line).
    _refusing_at(monkeypatch, 2)
    lines = [b'{"topic":"orders","key":"a"}\n', b"\n", b'{"topic":"orders","key":"b"}\n'] + [
        b'{"topic":"orders","key":"c"}\n'
    ] * 2
    place = LinePlace("r.ndjson")

    with pytest.raises(ReplayStopped) as stopped:
        replay_into_kafka(
            KAFKA, parse_lines_for_replay(lines, source="r.ndjson", place=place), place=place
        )

    assert str(stopped.value) == "r.ndjson:4: the message was refused: Unable to produce"
    assert stopped.value.summary.sent == 2  # the command says it before the error


def test_without_its_line_a_refused_message_is_named_by_where_it_was_recorded(fake, monkeypatch):
    _refusing_at(monkeypatch, 0)
    with pytest.raises(
        ReplayError, match=r"^the message at orders partition 2 offset 7 was refused: Unable"
    ):
        replay_into_kafka(KAFKA, [recorded(partition=2, offset=7)])
