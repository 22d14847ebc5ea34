"""One process of a replay with several: what it checks, keeps, sends and answers."""

from __future__ import annotations

import gc
import signal

import pytest

from pipeline.replay import worker
from pipeline.replay.recording import RecordedMessage, format_line
from pipeline.replay.replayer import ReplayFailed, ReplaySummary
from pipeline.replay.worker import (
    END,
    LINES_KEPT,
    MORE,
    SEND,
    STOP,
    ReplayJob,
    decode_batch,
    encode_batch,
    run_replay_process,
)
from pipeline.settings import KafkaSettings


class FakeConn:
    """Hands out the parent's words in order; keeps the answers."""

    def __init__(self, words):
        self.words = list(words)
        self.answers = []
        self.closed = False

    def recv_bytes(self):
        return self.words.pop(0)

    def send(self, answer):
        self.answers.append(answer)

    def close(self):
        self.closed = True


def line(n, key=b"k"):
    return format_line(RecordedMessage("orders", 0, n, key, f"v{n}".encode(), (("n", None),)))


def lines_word(numbers, word=LINES_KEPT):
    return encode_batch(word, numbers, [line(n).encode() + b"\n" for n in numbers])


def test_a_batch_comes_back_as_it_was_sent_the_last_line_of_a_file_without_its_newline():
    data = encode_batch(MORE, [3, 7, 8], [b"a\n", b"\n", b"c"])
    word, numbers, lines = decode_batch(data)
    assert (word, list(numbers), lines) == (MORE, [3, 7, 8], [b"a", b"", b"c"])


@pytest.fixture(autouse=True)
def as_before(monkeypatch):
    """run_replay_process sets up its process (signal handlers, no cyclic collector): this
    test process gets its own back after each test. Its producer is made by the
    replay_into_kafka the tests put in: none is made ahead (no network in a unit test)."""
    monkeypatch.setattr(worker, "ReplayProducer", lambda kafka: None)
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGINT, sigint)
    signal.signal(signal.SIGTERM, sigterm)
    gc.enable()


@pytest.fixture
def sent(monkeypatch):
    """What the process hands to the producer, message by message."""
    seen = []

    def replay_into_kafka(kafka, messages, **options):
        seen.extend((m.offset, m.value, options["topic"]) for m in messages)
        return ReplaySummary(sent=len(seen), per_topic={"copy": len(seen)}, elapsed_s=0.1)

    monkeypatch.setattr(worker, "replay_into_kafka", replay_into_kafka)
    return seen


JOB = ReplayJob(
    KafkaSettings(), "r.ndjson", topic="copy", preserve_partitions=False, rewrite_ids=False
)


def test_it_sends_what_it_kept_then_the_lines_routed_to_it_again_in_file_order(sent):
    conn = FakeConn(
        [
            lines_word([1, 4]),
            SEND,
            lines_word([6, 9], MORE),  # past its room: routed to it again
            END,
        ]
    )
    progress = [0]
    run_replay_process(JOB, 0, conn, progress)
    assert sent == [(1, "v1", "copy"), (4, "v4", "copy"), (6, "v6", "copy"), (9, "v9", "copy")]
    assert len(conn.answers) == 1
    assert conn.answers[0][0] == "sent" and conn.answers[0][1].sent == 4
    assert conn.closed


def test_a_line_that_is_no_longer_a_message_when_sent_is_answered_as_an_error(sent):
    # The parent checked the file; it changed before this process read the line again.
    bad = encode_batch(MORE, [5], [b'{"topic": "x", "ts": "noon"}\n'])
    conn = FakeConn([lines_word([3]), SEND, bad, END])
    run_replay_process(JOB, 1, conn, [0, 0])
    kind, why = conn.answers[-1]
    assert kind == "error" and why.startswith("r.ndjson:5: not a recorded message")


def test_stop_before_the_word_to_send_ends_it_without_sending(sent):
    conn = FakeConn([lines_word([1]), STOP])
    run_replay_process(JOB, 0, conn, [0])
    assert sent == [] and conn.answers == []


def test_failed_deliveries_are_answered_with_the_summary_and_the_first_error(monkeypatch):
    summary = ReplaySummary(sent=1, per_topic={"copy": 1}, elapsed_s=0.1)

    def failing(kafka, messages, **options):
        list(messages)
        raise ReplayFailed(summary, 2, "Broker: Message size too large")

    monkeypatch.setattr(worker, "replay_into_kafka", failing)
    conn = FakeConn([lines_word([1, 2, 3]), SEND, END])
    run_replay_process(JOB, 0, conn, [0])
    assert conn.answers[-1] == ("failed", summary, 2, "Broker: Message size too large")


def test_an_unexpected_failure_is_one_line_naming_its_kind(monkeypatch):
    def broken(kafka, messages, **options):
        raise RuntimeError("no more memory")

    monkeypatch.setattr(worker, "replay_into_kafka", broken)
    conn = FakeConn([lines_word([1]), SEND, END])
    run_replay_process(JOB, 0, conn, [0])
    assert conn.answers[-1] == ("error", "RuntimeError: no more memory")


def test_a_message_refused_part_way_is_answered_with_its_line_and_what_went_before(monkeypatch):
    # The real replay_into_kafka over a producer that refuses the third message it is given.
    from confluent_kafka import KafkaError, KafkaException

    from pipeline.replay import replayer

    class Refusing:
        def __init__(self):
            self.produced = 0

        def produce(self, *args):
            if self.produced == 2:
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
            self.produced += 1

        def poll(self, timeout=0):
            return 0

        def flush(self, timeout=None):
            return 0

    monkeypatch.setattr(replayer, "build_producer", lambda kafka, **settings: Refusing())
    conn = FakeConn([lines_word([2, 5]), SEND + b'{"copy": 3}', lines_word([8, 9], MORE), END])

    run_replay_process(JOB, 0, conn, [0])

    kind, summary, why = conn.answers[-1]
    assert kind == "stopped"
    assert why == "r.ndjson:8: the message was refused: too large"
    assert summary.sent == 2 and summary.per_topic == {"copy": 2}
