"""The relay's loop on SQLite over a stand-in Kafka client: what it sends, in which order, and
what it marks published (no broker, no network)."""

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from pipeline.database import DatabaseError
from pipeline.envelope import Event
from pipeline.kafka.producer import EventProducer
from pipeline.outbox.table import Outbox, outbox_table
from pipeline.settings import OutboxSettings
from producers.outbox_relay import LeaseClaims, OutboxRelay, claim_strategy
from producers.outbox_relay.holds import Hold
from producers.outbox_relay.sending import Refusal, RefusalLog
from tests.support.produce_calls import ProduceCall
from tests.unit.producers.outbox_relay.fake_kafka import FakeKafka

TOPIC = "orders.events"


def _write(engine, aggregates):
    """One outbox row per entry of ``aggregates`` (an aggregate id), in that order; their ids."""
    ids = []
    outbox = Outbox()
    with engine.begin() as connection:
        for n, aggregate in enumerate(aggregates):
            event = Event(
                source="/orders",
                type="com.example.order.changed",
                partitionkey=aggregate,
                data={"n": n},
            )
            outbox.add(
                connection, event, aggregate_type="order", aggregate_id=aggregate, topic=TOPIC
            )
            ids.append(event.id)
    return ids


def _published_ids(engine):
    table = outbox_table
    with engine.connect() as connection:
        return set(
            connection.execute(
                sa.select(table.c.event_id).where(table.c.published_at.is_not(None))
            ).scalars()
        )


def _relay(engine, client, *, stop=None, delivery_timeout_s=130.0, **outbox):
    settings = OutboxSettings(**{"log_interval_s": 0, **outbox})
    return OutboxRelay(
        engine,
        EventProducer(client),
        settings,
        name="relay-under-test",
        delivery_timeout_s=delivery_timeout_s,
        stop=stop,
    )


def test_on_sqlite_the_relay_claims_with_the_lease(database):
    assert isinstance(claim_strategy(database, OutboxSettings(), "me"), LeaseClaims)


def test_each_aggregates_rows_are_sent_in_position_order_with_its_id_as_key(database):
    aggregates = ["a", "b", "a", "c", "b", "a", "c", "c", "b", "a"]
    ids = _write(database, aggregates)
    client = FakeKafka()

    totals = _relay(database, client, batch_size=4).run(once=True)

    sent = defaultdict(list)
    for produced in client.produced:
        sent[produced.key].append(produced.event_id)
    expected = defaultdict(list)
    for aggregate, event_id in zip(aggregates, ids, strict=True):
        expected[aggregate.encode()].append(event_id)
    assert sent == expected
    assert {produced.topic for produced in client.produced} == {TOPIC}
    assert (totals.published, totals.failed, totals.batches) == (10, 0, 3)
    assert _published_ids(database) == set(ids)


def test_rows_are_marked_published_only_after_the_broker_acknowledged_them(database):
    ids = _write(database, ["a", "b", "a"])
    published_when_flushing = []
    client = FakeKafka(on_flush=lambda: published_when_flushing.append(_published_ids(database)))

    result = _relay(database, client).publish_batch()

    assert published_when_flushing == [set()]  # sent, not yet acknowledged: nothing marked
    assert [p.event_id for p in client.acknowledged] == ids
    assert (result.claimed, result.published) == (3, 3)
    assert _published_ids(database) == set(ids)


def test_a_failed_delivery_leaves_its_row_and_its_aggregates_later_rows_unpublished(database):
    a1, b1, a2, b2 = _write(database, ["a", "b", "a", "b"])
    client = FakeKafka(fail={a1})
    relay = _relay(database, client)

    result = relay.publish_batch()

    assert [p.event_id for p in client.acknowledged] == [b1, a2, b2]  # a2 got through...
    assert _published_ids(database) == {b1, b2}  # ...but is not marked: it must follow a1
    assert (result.claimed, result.published) == (4, 2)
    assert (relay.totals.published, relay.totals.failed) == (2, 1)
    assert relay.metrics.registry.get_sample_value("pipeline_outbox_publish_failures_total") == 1

    client.fail.clear()  # the broker is back: a1 goes again alone, then a2 after it
    assert relay.publish_batch().published == 1
    assert relay.publish_batch().published == 1
    assert [p.event_id for p in client.produced[4:]] == [a1, a2]
    assert _published_ids(database) == {a1, b1, a2, b2}
    assert relay.totals.failed == 0  # nothing left for later


def _left_ids(engine):
    with engine.connect() as connection:
        return set(connection.execute(sa.select(outbox_table.c.event_id)).scalars())


def test_with_retention_zero_published_rows_are_deleted_and_failed_ones_stay(database):
    a1, b1, a2, b2 = _write(database, ["a", "b", "a", "b"])
    client = FakeKafka(fail={a1})
    relay = _relay(database, client, retention_s=0)

    assert relay.publish_batch().published == 2
    assert [p.event_id for p in client.acknowledged] == [b1, a2, b2]
    assert _left_ids(database) == {a1, a2}  # a2 was acknowledged, but must follow a1
    assert _published_ids(database) == set()  # nothing is kept marked

    client.fail.clear()
    assert relay.publish_batch().published == 1  # a1 alone: a2 waits for its acknowledgement
    assert relay.publish_batch().published == 1
    assert [p.event_id for p in client.produced[4:]] == [a1, a2]
    assert _left_ids(database) == set()


def test_a_refused_row_is_not_sent_nor_are_its_aggregates_later_rows(database):
    a1, b1, _a2 = _write(database, ["a", "b", "a"])
    client = FakeKafka(refuse={a1})
    relay = _relay(database, client)

    result = relay.publish_batch()

    assert [p.event_id for p in client.produced] == [b1]
    assert _published_ids(database) == {b1}
    assert (result.claimed, result.published) == (3, 1)
    assert relay.totals.failed == 2  # the refused row and the one held back behind it


def test_refused_rows_are_logged_once_a_minute_per_topic_not_once_per_row_per_batch(
    database, caplog
):
    # A topic that does not exist: every batch claimed its rows again, one ERROR each.
    refused = set(_write(database, ["a", "b", "c"]))
    client = FakeKafka(refuse=refused)
    relay = _relay(database, client)

    with caplog.at_level(logging.ERROR, logger="producers.outbox_relay"):
        for _ in range(3):
            relay.publish_batch()

    lines = [r.getMessage() for r in caplog.records if "held back by" in r.getMessage()]
    assert len(lines) == 1
    assert ": 3 outbox rows of 3 aggregates held back by " in lines[0]


@contextmanager
def _lines_said() -> Iterator[list[str]]:
    """The lines the relay's sending module logs in the block."""
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("producers.outbox_relay.sending")
    logger.addHandler(handler)
    try:
        yield said
    finally:
        logger.removeHandler(handler)


def test_a_refusal_log_says_how_many_were_refused_since_it_last_spoke():
    log = RefusalLog("relay", every_s=60)
    refusal = Refusal(1, "e1", "gone", "Unknown topic")
    other = Refusal(2, "e2", "gone", "Unknown topic")
    first, second = {1: refusal}, {2: other}
    with _lines_said() as said:
        log.note({**first, **second}, now=0.0)
        log.note(first, now=30.0)  # within the minute: quiet, counted
        log.note(first, now=50.0)  # the same row again: counted once
        log.note(first, now=61.0)

    assert [line.split(": ")[1].split(" outbox")[0] for line in said] == ["2", "1"]


def test_rows_held_for_one_reason_with_their_own_sizes_make_one_line():
    # The reason names each row's size: keyed by it, every oversized row had a line of its own,
    # every minute (30 lines for 30 rows).
    log = RefusalLog("relay", every_s=60)
    held = {
        n: Refusal(n, f"e{n}", "big", f"the event is {21_000 + n:,} bytes", kind="too_large")
        for n in range(30)
    }
    with _lines_said() as said:
        log.note(held, now=0.0)

    [line] = said
    assert ": 30 outbox rows of 30 aggregates held back by big" in line
    assert "(the first: row 0, event e0: the event is 21,000 bytes)" in line


def test_after_a_flush_timeout_no_row_of_the_batch_is_marked_and_all_are_sent_again(database):
    ids = _write(database, ["a", "b", "a"])
    client = FakeKafka(unanswered_flushes=1)
    relay = _relay(database, client, delivery_timeout_s=0.0)

    result = relay.publish_batch()

    assert client.flushes == 1
    assert [p.event_id for p in client.produced] == ids
    assert (result.claimed, result.published) == (3, 0)
    assert relay.totals.failed == 3
    assert _published_ids(database) == set()

    assert relay.publish_batch().published == 3  # the broker answers: the same ids again
    assert [p.event_id for p in client.produced] == ids + ids
    assert _published_ids(database) == set(ids)


def test_the_lease_is_renewed_while_the_broker_has_not_answered(database):
    class CountingLease(LeaseClaims):
        renewals = 0

        def renew(self):
            self.renewals += 1
            super().renew()

    ids = _write(database, ["a"])
    settings = OutboxSettings(log_interval_s=0, lease_s=30.0)
    claims = CountingLease(database, settings, "relay-under-test")
    client = FakeKafka(unanswered_flushes=3)
    relay = OutboxRelay(
        database, EventProducer(client), settings, name="relay-under-test", claims=claims
    )

    assert relay.publish_batch().published == 1
    assert client.flushes == 4
    assert claims.renewals == 3  # once after each unanswered slice
    assert _published_ids(database) == set(ids)


def test_while_another_relay_holds_the_lease_nothing_is_claimed_or_sent(database):
    _write(database, ["a"])
    holder = _relay(database, FakeKafka())
    assert holder.publish_batch().published == 1
    _write(database, ["a"])
    client = FakeKafka()
    waiter = OutboxRelay(database, EventProducer(client), OutboxSettings(), name="waiter")

    result = waiter.publish_batch()

    assert result.lease_busy and result.claimed == 0
    assert client.produced == []
    assert waiter.totals.lease_holder == "relay-under-test"


def test_a_relay_waiting_for_the_lease_says_so_once_and_again_when_it_takes_it(database, caplog):
    # Its start line and reports ("published 0") read as if it relayed meanwhile.
    _write(database, ["a"])
    holder = _relay(database, FakeKafka())
    holder.publish_batch()
    waiter = OutboxRelay(database, EventProducer(FakeKafka()), OutboxSettings(), name="waiter")

    with caplog.at_level(logging.INFO, logger="producers.outbox_relay.relay"):
        waiter.publish_batch()
        waiter.publish_batch()
        holder.run(once=True)  # nothing left to publish: it stops, and lets the lease go
        waiter.publish_batch()

    said = [r.getMessage() for r in caplog.records if r.name == "producers.outbox_relay.relay"]
    assert said == [
        "outbox relay waiter: the outbox lease is held by relay-under-test; this relay waits "
        "and takes over when that one stops (one relay at a time publishes from this database)",
        "outbox relay waiter: took the outbox lease; publishing",
    ]


def test_the_stop_signal_passed_in_ends_the_run_after_the_current_batch(database):
    ids = _write(database, ["a", "b"])
    stop = threading.Event()
    client = FakeKafka(on_flush=stop.set)  # stopped while the batch waits for the broker
    # An hour's poll interval: a run that waited it out instead of stopping would hang.
    relay = _relay(database, client, stop=stop, poll_interval_s=3600.0)

    totals = relay.run()

    assert relay.stopping
    assert totals.batches == 1
    assert totals.published == 2  # the batch under way was finished and marked
    assert _published_ids(database) == set(ids)


def test_a_relay_whose_stop_signal_is_set_claims_nothing(database):
    _write(database, ["a"])
    stop = threading.Event()
    stop.set()
    client = FakeKafka()

    totals = _relay(database, client, stop=stop).run()

    assert (totals.batches, totals.published) == (0, 0)
    assert client.produced == []
    assert _published_ids(database) == set()


def test_a_stop_while_idle_ends_the_wait_for_new_rows(database):
    class Stop(threading.Event):
        """Tells when the relay starts waiting on it."""

        waiting = threading.Event()

        def wait(self, timeout=None):
            self.waiting.set()
            return super().wait(timeout)

    stop = Stop()
    relay = _relay(database, FakeKafka(), stop=stop, poll_interval_s=3600.0)
    done = []
    runner = threading.Thread(target=lambda: done.append(relay.run()))
    runner.start()
    stop.waiting.wait()  # idle: nothing to publish, waiting for new rows
    stop.set()
    runner.join()  # an hour otherwise (the test's timeout fails it first)

    assert done and done[0].batches == 0


def test_the_backlog_gauge_is_read_again_as_the_relay_stops(database):
    # It was read every 5 s only: a relay that published everything and stopped left its
    # last figure (rows that were waiting) as the final one.
    stop = threading.Event()
    flushes = []

    def flushed() -> None:  # a batch of one row each: stop after the third
        flushes.append(1)
        if len(flushes) == 3:
            stop.set()

    client = FakeKafka(on_flush=flushed)
    relay = _relay(database, client, stop=stop, poll_interval_s=3600.0, batch_size=1)
    _write(database, ["a", "b", "c"])

    relay.run()

    registry = relay.metrics.registry
    assert registry.get_sample_value("pipeline_outbox_backlog") == 0
    assert registry.get_sample_value("pipeline_outbox_oldest_unpublished_age_seconds") == 0


def _sent(client, event_id):
    return sum(produced.event_id == event_id for produced in client.produced)


def _sample(relay, name, **labels):
    return relay.metrics.registry.get_sample_value(name, labels or None) or 0


def test_a_row_the_broker_refuses_as_too_large_is_held_with_its_aggregate_not_sent_each_poll(
    database, caplog
):
    # It was sent with every batch, and the aggregate's later row with it, ahead of it: 18
    # copies of that one in 20 s.
    a0, a1, b0 = _write(database, ["a", "a", "b"])
    client = FakeKafka(too_large={a0})
    relay = _relay(database, client)

    with caplog.at_level(logging.ERROR, logger="producers.outbox_relay"):
        results = [relay.publish_batch() for _ in range(5)]

    assert [r.published for r in results] == [1, 0, 0, 0, 0]
    assert (_sent(client, a0), _sent(client, a1), _sent(client, b0)) == (1, 1, 1)
    assert _published_ids(database) == {b0}
    gauge = "pipeline_outbox_held_rows"
    assert _sample(relay, gauge, topic=TOPIC, reason="too_large") == 2  # a0, and a1 behind it
    assert _sample(relay, "pipeline_outbox_publish_failures_total") == 1  # the one send
    assert (relay.totals.failed, relay.totals.held, relay.totals.batches) == (2, 2, 1)
    held = [r.getMessage() for r in caplog.records if "held back by" in r.getMessage()]
    assert len(held) == 1 and "2 outbox rows of 1 aggregate held back" in held[0], held
    assert "Kafka refused the event as too large" in held[0]


def test_of_a_batch_the_broker_refused_as_too_large_only_the_largest_row_is_held(database):
    # The broker refuses a partition's whole batch for one record: every row came back too
    # large, and a small row of another aggregate was held 30 s for nothing.
    outbox = Outbox()
    big = Event(source="/o", type="t", partitionkey="x", data={"pad": "p" * 5_000})
    small = Event(source="/o", type="t", partitionkey="y", data={"n": 1})
    with database.begin() as connection:
        for event in (big, small):
            outbox.add(
                connection, event, aggregate_type="order", aggregate_id=event.partitionkey,
                topic=TOPIC,
            )  # fmt: skip
    client = FakeKafka(too_large={big.id, small.id})
    relay = _relay(database, client)

    relay.publish_batch()
    client.too_large.discard(small.id)  # alone, it fits
    second = relay.publish_batch()

    assert second.published == 1 and _published_ids(database) == {small.id}
    assert (_sent(client, big.id), _sent(client, small.id)) == (1, 2)  # the big one held


def test_a_row_the_client_refuses_as_too_large_is_not_offered_again(database):
    a0, _a1 = _write(database, ["a", "a"])

    class Counting(FakeKafka):
        offered: list[str] = []

        def produce(self, *args, **kwargs):
            self.offered.append(dict(ProduceCall(*args, **kwargs).headers or [])["ce_id"])
            super().produce(*args, **kwargs)

    client = Counting(refuse={a0})
    relay = _relay(database, client)

    for _ in range(3):
        relay.publish_batch()

    assert client.offered == [a0]  # a1 never, and a0 not again each batch
    assert relay.totals.held == 2


def test_a_failed_rows_later_rows_are_not_sent_again_with_each_retry(database):
    # The broker failed a1 each time; a2 went out with every batch (acknowledged, never
    # marked): a duplicate per batch, each ahead of a1.
    a1, a2, b1 = _write(database, ["a", "a", "b"])
    client = FakeKafka(fail={a1})
    relay = _relay(database, client)

    for _ in range(4):
        relay.publish_batch()

    assert (_sent(client, a1), _sent(client, a2), _sent(client, b1)) == (4, 1, 1)
    assert _sample(relay, "pipeline_outbox_held_rows", topic=TOPIC, reason="behind_failed") == 1
    assert relay.totals.failed == 2  # a1 and a2, once each

    client.fail.clear()
    assert relay.publish_batch().published == 1  # a1, alone
    assert relay.publish_batch().published == 1  # then a2
    assert _published_ids(database) == {a1, a2, b1}
    assert (relay.totals.failed, relay.totals.held) == (0, 0)
    assert _sample(relay, "pipeline_outbox_held_rows", topic=TOPIC, reason="behind_failed") == 0


class MissingTopic:
    """Stands in for TopicChecks: topic ``gone`` does not exist."""

    def problems(self, records):
        return {
            record.position: Hold("topic gone does not exist", "topic_missing")
            for record in records
            if record.topic == "gone"
        }

    def smallest_limit(self):
        return None


def _write_to(engine, rows):
    """One row per (aggregate, topic); their ids."""
    ids = []
    with engine.begin() as connection:
        for n, (aggregate, topic) in enumerate(rows):
            event = Event(source="/o", type="t", partitionkey=aggregate, data={"n": n})
            Outbox().add(connection, event, aggregate_type="o", aggregate_id=aggregate, topic=topic)
            ids.append(event.id)
    return ids


def test_rows_held_for_a_missing_topic_are_not_failures_and_are_counted_once(database, caplog):
    # 100 rows never sent made pipeline_outbox_publish_failures_total (and the stop summary)
    # grow by 100 every poll, and batches_total counted the empty attempts.
    _write_to(database, [(f"k{n % 2}", "gone") for n in range(4)] + [("k9", TOPIC)])
    client = FakeKafka()
    relay = OutboxRelay(
        database,
        EventProducer(client),
        OutboxSettings(log_interval_s=0),
        name="r",
        topics=MissingTopic(),  # type: ignore[arg-type]
    )

    with caplog.at_level(logging.ERROR, logger="producers.outbox_relay"):
        for _ in range(5):
            relay.publish_batch()

    assert _sample(relay, "pipeline_outbox_publish_failures_total") == 0
    assert _sample(relay, "pipeline_outbox_batches_total") == 1  # the one that published k9
    assert _sample(relay, "pipeline_outbox_held_rows", topic="gone", reason="topic_missing") == 4
    assert (relay.totals.failed, relay.totals.held, relay.totals.unacknowledged) == (4, 4, 0)
    assert relay.totals.batches == 1
    held = [r.getMessage() for r in caplog.records if "held back by" in r.getMessage()]
    assert len(held) == 1 and ": 4 outbox rows of 2 aggregates held back by gone" in held[0]


def test_once_ends_after_a_full_batch_of_which_nothing_could_go(database):
    # The next claim took the same rows: relay --once never ended.
    _write_to(database, [("a", "gone"), ("a", TOPIC)])
    relay = OutboxRelay(
        database,
        EventProducer(FakeKafka()),
        OutboxSettings(log_interval_s=0, batch_size=2, poll_interval_s=0.01),
        name="r",
        topics=MissingTopic(),  # type: ignore[arg-type]
    )
    done = []
    runner = threading.Thread(target=lambda: done.append(relay.run(once=True)), daemon=True)
    runner.start()
    runner.join(10)
    if runner.is_alive():
        relay.stop()
        runner.join()

    assert done and done[0].failed == 2
    assert not relay.stopping  # it ended by itself


def test_once_a_database_that_refuses_the_batch_is_one_line_not_the_drivers_traceback(
    database, monkeypatch
):
    # A read-only SQLite file: "attempt to write a readonly database" came as a traceback.
    _write(database, ["a"])
    relay = _relay(database, FakeKafka())

    def read_only(*_args, **_kwargs):
        raise OperationalError("UPDATE pipeline_outbox_lease", {}, Exception("attempt to write"))

    monkeypatch.setattr(relay._claims, "claim", read_only)

    with pytest.raises(DatabaseError, match="relay-under-test: the batch failed: attempt to write"):
        relay.run(once=True)


class KnownTopics:
    """Stands in for TopicChecks: every topic exists, with ``limit`` of its own once looked up
    again (None: the cluster's own); records the topics looked up again."""

    def __init__(self, limit=None) -> None:
        self.limit = limit
        self.looked_up: list[str] = []

    def problems(self, records):
        return {}

    def smallest_limit(self):
        return None

    def limit_now(self, topic):
        self.looked_up.append(topic)
        return self.limit

    def forget(self, topic):
        raise AssertionError("looked up at once, not forgotten")


def _relay_with(database, client, topics):
    return OutboxRelay(
        database,
        EventProducer(client),
        OutboxSettings(log_interval_s=0),
        name="relay-under-test",
        topics=topics,
    )


def test_a_topic_kafka_refused_an_event_of_as_too_large_is_looked_up_again(database):
    # Its max.message.bytes lowered while the relay ran: the relay kept its large batches,
    # which the broker refused one after another (about a row every 5 s went), until restarted.
    a0, _ = _write(database, ["a", "b"])
    client = FakeKafka(too_large={a0})
    topics = KnownTopics()  # the cluster's own limit: the row itself is too large
    relay = _relay_with(database, client, topics)

    relay.publish_batch()
    client.too_large.clear()

    assert topics.looked_up == [TOPIC]
    assert relay.publish_batch().published == 0  # held, as before: tried again 30 s later


def test_a_row_refused_only_because_the_limit_was_lowered_goes_with_the_next_batch(database):
    # The limit was lowered under the relay's batches: the largest row of the refused batch
    # was held 30 s (its aggregate's later rows with it) though it fits the new limit.
    a0, a1, b0 = _write(database, ["a", "a", "b"])
    client = FakeKafka(too_large={a0})
    relay = _relay_with(database, client, KnownTopics(limit=100_000))

    relay.publish_batch()
    client.too_large.clear()  # the next batches keep under the limit: they fit

    assert relay.publish_batch().published == 1  # a0, alone (sent again after a failure)
    assert relay.publish_batch().published == 1  # then a1
    assert _published_ids(database) == {a0, a1, b0}


def test_a_once_run_deletes_the_rows_past_their_retention(database):
    # Its first cleanup was due an interval after the start, which a --once run never reached:
    # the table grew for good under a cron'd relay --once.
    old = _write(database, ["a", "b", "c"])
    with database.begin() as connection:
        connection.execute(
            outbox_table.update()
            .where(outbox_table.c.event_id.in_(old))
            .values(published_at=sa.func.datetime("now", "-2 hours"))
        )
    fresh = _write(database, ["d"])

    totals = _relay(database, FakeKafka(), retention_s=3600, cleanup_interval_s=3600).run(once=True)

    assert (totals.published, totals.deleted) == (1, 3)
    with database.connect() as connection:
        left = set(connection.execute(sa.select(outbox_table.c.event_id)).scalars())
    assert left == set(fresh)


def test_a_refusal_log_counts_an_aggregate_once_whichever_of_its_rows_is_held_first():
    # A row of it went, the next became its first held row: each counted as one more aggregate
    # ("950 outbox rows of 15 aggregates" for 5).
    log = RefusalLog("relay", every_s=60)
    aggregate = ("order", "o-1")
    first = Refusal(1, "e1", "small", "too large", "too_large", aggregate=aggregate)
    later = Refusal(2, "e2", "small", "too large", "too_large", aggregate=aggregate)
    with _lines_said() as said:
        log.note({1: first, 2: first}, now=0.0)
        log.note({2: later, 3: later}, now=30.0)  # row 1 went: row 2 is its first now
        log.note({3: later}, now=61.0)

    assert [line.split(": ")[1].split(" held back")[0] for line in said] == [
        "2 outbox rows of 1 aggregate",
        "2 outbox rows of 1 aggregate",
    ]
