"""The relay's check that a batch's topics exist, and what send_batch does with a refused row:
never sent, nor its aggregate's later rows in the batch."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.outbox.table import OutboxRecord
from pipeline.topics.plan import ActualTopic
from producers.outbox_relay import topic_checks
from producers.outbox_relay.holds import Hold, TooLarge
from producers.outbox_relay.sending import send_batch
from producers.outbox_relay.topic_checks import TopicChecks, framed_size


def row(position: int, aggregate: str, topic: str) -> OutboxRecord:
    return OutboxRecord(position, f"e{position}", "order", aggregate, topic, b"{}", [])


class Cluster:
    """What describe_cluster_topics answers: the topics in ``existing`` (with a
    ``max.message.bytes`` of their own where ``limits`` says); counts the asks."""

    def __init__(self, *existing: str, limits: dict[str, int] | None = None) -> None:
        self.existing = set(existing)
        self.limits = limits or {}
        self.asked: list[list[str]] = []

    def describe(self, _admin: Any, names: list[str], **_: Any) -> dict[str, ActualTopic]:
        self.asked.append(list(names))
        return {
            name: ActualTopic(
                name,
                3,
                1,
                {"max.message.bytes": str(self.limits.get(name, 1_048_588))},
            )
            for name in names
            if name in self.existing
        }


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    made = Cluster("orders", "small", limits={"small": 2_000, "tiny": 500})
    monkeypatch.setattr(topic_checks, "describe_cluster_topics", made.describe)
    return made


def test_rows_for_a_missing_topic_are_named_and_topics_are_asked_about_every_recheck_s(cluster):
    now = [0.0]
    checks = TopicChecks(object(), recheck_s=30, clock=lambda: now[0])  # type: ignore[arg-type]
    batch = [row(1, "x", "later"), row(2, "x", "orders"), row(3, "y", "orders")]

    missing = {1: Hold("topic later does not exist", "topic_missing")}
    assert checks.problems(batch) == missing
    assert checks.problems([row(4, "z", "orders")]) == {}
    now[0] = 10.0
    assert checks.problems(batch) == missing  # not asked again yet
    assert cluster.asked == [["later", "orders"]]

    cluster.existing.add("later")  # created meanwhile: noticed once recheck_s passed
    now[0] = 31.0
    assert checks.problems(batch) == {}
    assert cluster.asked == [["later", "orders"], ["later", "orders"]]  # one request each time


def test_an_event_over_its_topics_own_limit_is_refused_and_the_smallest_limit_is_known(
    cluster,
):
    checks = TopicChecks(object())  # type: ignore[arg-type]
    big = OutboxRecord(7, "e7", "order", "x", "small", b"x" * 2_500, [("ce_id", "e7")])
    fits = OutboxRecord(8, "e8", "order", "y", "small", b"x" * 1_000, [("ce_id", "e8")])

    assert checks.smallest_limit() is None
    assert checks.problems([big, fits, row(9, "z", "orders")]) == {
        7: Hold(
            "the event is 2,588 bytes in a batch of its own; topic small takes at most 2,000 "
            "(its max.message.bytes)",
            "too_large",
        )
    }
    assert checks.smallest_limit() == ("small", 2_000)  # orders keeps the default: no limit


class Producer:
    def __init__(self) -> None:
        self.sent: list[int] = []

    def send_parts(self, topic: str, key: Any, value: Any, headers: Any, *, event_id: str) -> None:
        self.sent.append(int(event_id[1:]))

    def flush(self, timeout_s: float) -> None:
        return None


def test_a_refused_row_holds_back_its_aggregates_later_rows_only():
    producer = Producer()
    batch = [row(1, "x", "later"), row(2, "x", "orders"), row(3, "y", "orders")]

    outcome = send_batch(
        producer,  # type: ignore[arg-type]
        batch,
        timeout_s=5,
        refuse={1: Hold("topic later does not exist", "topic_missing")},
    )

    assert producer.sent == [3]
    assert outcome.positions == [3]
    assert [(r.position, r.reason) for r in outcome.refused] == [(1, "topic later does not exist")]
    assert sorted(outcome.held) == [1, 2]  # the refused row and its aggregate's later one
    assert outcome.failed == 0  # neither was sent: not a failure


def test_failed_deliveries_are_logged_once_a_minute_per_topic_and_error_with_a_count(caplog):
    from pipeline.kafka.delivery import Delivery
    from producers.outbox_relay.sending import UnacknowledgedLog

    log = UnacknowledgedLog("outbox relay r1", every_s=60)
    too_large = Delivery("e1", "small", b"k", None, None, error="Broker: Message size too large")

    with caplog.at_level("ERROR"):
        for second in range(30):  # a batch a second, the same row failing each time
            log.note([too_large], now=float(second))
        log.note([too_large], now=61.0)

    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("outbox relay r1: 1 events to small not acknowledged: Broker")
    assert lines[1].startswith("outbox relay r1: 30 events to small not acknowledged")


def test_a_raised_limit_lets_the_row_go_once_recheck_s_passed(cluster):
    now = [0.0]
    checks = TopicChecks(object(), recheck_s=30, clock=lambda: now[0])  # type: ignore[arg-type]
    big = OutboxRecord(7, "e7", "order", "x", "small", b"x" * 2_500, [("ce_id", "e7")])
    refused = {
        7: Hold(
            "the event is 2,588 bytes in a batch of its own; topic small takes at most 2,000 "
            "(its max.message.bytes)",
            "too_large",
        )
    }

    assert checks.problems([big]) == refused
    cluster.limits["small"] = 10_000  # the operator raised it
    now[0] = 10.0
    assert checks.problems([big]) == refused  # not asked again yet
    now[0] = 31.0
    assert checks.problems([big]) == {}
    assert cluster.asked == [["small"], ["small"]]


def test_a_limit_set_on_a_topic_while_the_relay_runs_is_noticed_once_recheck_s_passed(cluster):
    # A topic found with the cluster's own limit was never asked about again: a limit set on it
    # later left the relay's batches too large for good (about one row every 5 s went).
    now = [0.0]
    checks = TopicChecks(object(), recheck_s=30, clock=lambda: now[0])  # type: ignore[arg-type]
    big = OutboxRecord(7, "e7", "order", "x", "orders", b"x" * 2_500, [("ce_id", "e7")])

    assert checks.problems([big]) == {}
    cluster.limits["orders"] = 2_000  # kafka-configs --alter ... --add-config max.message.bytes
    now[0] = 10.0
    assert checks.problems([big]) == {}  # not asked again yet
    now[0] = 31.0
    assert checks.problems([big])[7].kind == "too_large"
    assert checks.smallest_limit() == ("orders", 2_000)
    assert cluster.asked == [["orders"], ["orders"]]


def test_a_forgotten_topic_is_asked_about_with_the_next_batch(cluster):
    # After Kafka refused one of its events as too large: its limit may have been lowered.
    now = [0.0]
    checks = TopicChecks(object(), recheck_s=30, clock=lambda: now[0])  # type: ignore[arg-type]
    assert checks.problems([row(1, "x", "orders")]) == {}
    cluster.limits["orders"] = 3_000
    now[0] = 1.0

    checks.forget("orders")

    assert checks.problems([row(2, "x", "orders")]) == {}
    assert cluster.asked == [["orders"], ["orders"]]
    assert checks.smallest_limit() == ("orders", 3_000)


def test_the_size_estimate_counts_the_record_batch_framing_conservatively():
    # Measured against the broker (PostgreSQL outbox row, 7 headers, a topic taking 200,000):
    # it took key + value + headers of 199,914 bytes and refused 199,915. The estimate counted
    # key + value + headers only, and let a row through that the broker then refused.
    headers = [(f"ce_{n}", "x" * 20) for n in range(7)]
    plain = len("agg-1") + sum(len(name) + len(text) for name, text in headers)
    accepted = OutboxRecord(1, "e1", "order", "agg-1", "t", b"v" * (199_914 - plain), headers)
    refused = OutboxRecord(2, "e2", "order", "agg-1", "t", b"v" * (199_915 - plain), headers)

    assert framed_size(refused) > 200_000  # held by the relay's own check
    assert 200_000 <= framed_size(accepted) <= 200_000 + 10  # conservative, by a few bytes


def test_the_size_estimate_counts_text_as_utf8_bytes():
    ascii_row = OutboxRecord(1, "e1", "order", "aa", "t", b"v", [("h", "ee")])
    wide_row = OutboxRecord(1, "e1", "order", "\u00e9\u00e9", "t", b"v", [("h", "\u00e9\u00e9")])

    assert framed_size(wide_row) == framed_size(ascii_row) + 4


def test_an_event_just_under_the_limit_by_key_value_and_headers_is_refused(cluster):
    checks = TopicChecks(object())  # type: ignore[arg-type]
    # 1,990 bytes of key, value and headers: under 2,000, over it with its batch's framing.
    near = OutboxRecord(7, "e7", "order", "x", "small", b"x" * 1_982, [("ce_id", "e7")])

    assert checks.problems([near])[7].kind == "too_large"


def test_a_row_kafka_refused_as_too_large_is_held_until_recheck_s_passed():
    now = [0.0]
    too_large = TooLarge(recheck_s=30, clock=lambda: now[0])
    why = Hold("Kafka refused the event as too large", "too_large")
    batch = [row(1, "x", "small"), row(2, "y", "small")]

    too_large.note(1, why)
    now[0] = 29.0
    assert too_large.holds(batch) == {1: why}
    now[0] = 30.0
    assert too_large.holds(batch) == {}  # tried again (and noted again if refused again)
    assert len(too_large) == 0


def test_a_row_sent_again_after_a_failure_goes_without_its_aggregates_later_rows():
    producer = Producer()
    batch = [row(1, "x", "orders"), row(2, "x", "orders"), row(3, "y", "orders")]

    outcome = send_batch(producer, batch, timeout_s=5, alone={1})  # type: ignore[arg-type]

    assert producer.sent == [1, 3]
    assert outcome.positions == [1, 3]
    assert outcome.held[2].kind == "behind_failed" and outcome.failed == 0


def test_limit_now_asks_the_cluster_at_once(cluster):
    checks = TopicChecks(object(), recheck_s=30, clock=lambda: 0.0)  # type: ignore[arg-type]
    assert checks.problems([row(1, "x", "orders")]) == {}
    cluster.limits["orders"] = 3_000

    assert checks.limit_now("orders") == 3_000
    assert checks.limit_now("small") == 2_000
    assert cluster.asked == [["orders"], ["orders"], ["small"]]
    assert checks.smallest_limit() == ("small", 2_000)
