"""The relay's check that a batch's topics exist, and what send_batch does with a refused row:
never sent, nor its aggregate's later rows in the batch."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.outbox.table import OutboxRecord
from pipeline.topics.plan import ActualTopic
from producers.outbox_relay import topic_checks
from producers.outbox_relay.sending import send_batch
from producers.outbox_relay.topic_checks import TopicChecks


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


def test_rows_for_a_missing_topic_are_named_and_a_known_topic_is_not_asked_again(cluster):
    now = [0.0]
    checks = TopicChecks(object(), recheck_s=30, clock=lambda: now[0])  # type: ignore[arg-type]
    batch = [row(1, "x", "later"), row(2, "x", "orders"), row(3, "y", "orders")]

    assert checks.problems(batch) == {1: "topic later does not exist"}
    assert checks.problems([row(4, "z", "orders")]) == {}
    now[0] = 10.0
    assert checks.problems(batch) == {1: "topic later does not exist"}  # not asked again yet
    assert cluster.asked == [["later", "orders"]]

    cluster.existing.add("later")  # created meanwhile: noticed once recheck_s passed
    now[0] = 31.0
    assert checks.problems(batch) == {}
    assert cluster.asked == [["later", "orders"], ["later"]]


def test_an_event_over_its_topics_own_limit_is_refused_and_the_smallest_limit_is_known(
    cluster,
):
    checks = TopicChecks(object())  # type: ignore[arg-type]
    big = OutboxRecord(7, "e7", "order", "x", "small", b"x" * 2_500, [("ce_id", "e7")])
    fits = OutboxRecord(8, "e8", "order", "y", "small", b"x" * 1_000, [("ce_id", "e8")])

    assert checks.smallest_limit() is None
    assert checks.problems([big, fits, row(9, "z", "orders")]) == {
        7: "the event is 2,508 bytes; topic small takes at most 2,000 (its max.message.bytes)"
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
        refuse={1: "topic later does not exist"},
    )

    assert producer.sent == [3]
    assert outcome.positions == [3]
    assert [(r.position, r.reason) for r in outcome.refused] == [(1, "topic later does not exist")]
    assert outcome.failed == 2


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
        7: "the event is 2,508 bytes; topic small takes at most 2,000 (its max.message.bytes)"
    }

    assert checks.problems([big]) == refused
    cluster.limits["small"] = 10_000  # the operator raised it
    now[0] = 10.0
    assert checks.problems([big]) == refused  # not asked again yet
    now[0] = 31.0
    assert checks.problems([big]) == {}
    assert cluster.asked == [["small"], ["small"]]


def test_a_topic_with_the_clusters_own_limit_is_not_asked_about_again(cluster):
    now = [0.0]
    checks = TopicChecks(object(), recheck_s=30, clock=lambda: now[0])  # type: ignore[arg-type]

    for second in (0.0, 31.0, 62.0):
        now[0] = second
        assert checks.problems([row(1, "x", "orders")]) == {}

    assert cluster.asked == [["orders"]]
