"""EventProducer against a scripted stand-in for confluent-kafka's Producer (no broker)."""

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.envelope import Event, encode
from pipeline.errors import PipelineError
from pipeline.kafka.producer import (
    Delivery,
    DeliveryError,
    EventProducer,
    ProducerCounters,
    ProducerStats,
)
from tests.support.produce_calls import ProduceCall


@dataclass
class FakeMessage:
    _topic: str
    _key: bytes | None
    _headers: list
    _partition: int
    _offset: int

    def topic(self):
        return self._topic

    def key(self):
        return self._key

    def headers(self):
        return self._headers

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset


@dataclass
class ScriptedProducer:
    """Queues produce calls; poll/flush deliver them, failing those whose key is in ``fail``."""

    capacity: int = 1_000_000
    fail: dict = field(default_factory=dict)
    queued: list = field(default_factory=list)
    produced: list = field(default_factory=list)
    polls: int = 0
    transactions: list = field(default_factory=list)
    purges: list = field(default_factory=list)

    def __len__(self):
        return len(self.queued)

    def produce(self, *args, **kwargs):
        call = ProduceCall(*args, **kwargs)  # as EventProducer passes them: by position
        if len(self.queued) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.queued.append((call.topic, call.value, call.key, call.headers, call.report))

    def poll(self, timeout=0):
        self.polls += 1
        served = 0
        while self.queued:
            topic, value, key, headers, callback = self.queued.pop(0)
            offset = len(self.produced)
            self.produced.append((topic, value, key, headers))
            error = self.fail.get(key)
            callback(error, FakeMessage(topic, key, headers, 0, offset))
            served += 1
        return served

    def flush(self, timeout=0):
        self.poll()
        return 0

    def purge(self, in_queue=True, in_flight=True, blocking=True):
        # As librdkafka does: what is queued fails, purged, at the next poll (never produced).
        self.purges.append((in_queue, in_flight, blocking))
        for _topic, _value, key, _headers, _callback in self.queued:
            self.fail[key] = KafkaError(KafkaError._PURGE_QUEUE)

    def init_transactions(self, timeout=0):
        self.transactions.append("init")

    def begin_transaction(self):
        self.transactions.append("begin")

    def commit_transaction(self, timeout=0):
        self.poll()
        self.transactions.append("commit")

    def abort_transaction(self, timeout=0):
        # As librdkafka does: what is still queued fails, purged.
        while self.queued:
            topic, _, key, headers, callback = self.queued.pop(0)
            callback(KafkaError(KafkaError._PURGE_QUEUE), FakeMessage(topic, key, headers, 0, -1))
        self.transactions.append("abort")

    def send_offsets_to_transaction(self, positions, metadata, timeout=0):
        self.transactions.append(("offsets", positions, metadata))


def _event(key="order-1", **data):
    return Event(source="/test", type="com.example.test", partitionkey=key, data=data or {"a": 1})


def test_send_produces_the_encoded_envelope_with_its_key_and_headers():
    client = ScriptedProducer()
    event = _event()
    with EventProducer(client) as producer:
        producer.send("orders", event)
    [(topic, value, key, headers)] = client.produced
    expected = encode(event)
    assert (topic, value, key, headers) == ("orders", expected.value, b"order-1", expected.headers)
    assert producer.counters.sent == 1


def test_the_callback_gets_the_delivery_of_its_event():
    client = ScriptedProducer()
    producer = EventProducer(client)
    deliveries: list[Delivery] = []
    event = _event()
    producer.send("orders", event, deliveries.append)
    producer.flush()
    [delivery] = deliveries
    assert delivery.ok
    assert (delivery.event_id, delivery.topic, delivery.key, delivery.offset) == (
        event.id,
        "orders",
        b"order-1",
        0,
    )


def test_a_failure_nobody_listened_for_is_raised_by_flush():
    client = ScriptedProducer(fail={b"bad": KafkaError(KafkaError._MSG_TIMED_OUT)})
    producer = EventProducer(client)
    good, bad = _event("good"), _event("bad")
    producer.send("orders", good)
    producer.send("orders", bad)
    with pytest.raises(DeliveryError) as raised:
        producer.flush()
    [failure] = raised.value.failures
    assert failure.event_id == bad.id
    assert failure.error is not None and "timed out" in failure.error.lower()
    assert producer.counters.sent == 1 and producer.counters.failed == 1
    producer.flush()  # reported once, then gone


def test_a_failed_encoded_message_nobody_listened_for_is_named_by_its_event_id():
    client = ScriptedProducer(fail={b"bad": KafkaError(KafkaError._MSG_TIMED_OUT)})
    producer = EventProducer(client)
    bad = _event("bad")
    producer.send("orders", encode(bad))
    with pytest.raises(DeliveryError) as raised:
        producer.flush()
    [failure] = raised.value.failures
    assert failure.event_id == bad.id


def test_send_parts_produces_them_as_given_and_names_a_failure_by_the_event_id_given():
    client = ScriptedProducer(fail={"bad": KafkaError(KafkaError._MSG_TIMED_OUT)})
    producer = EventProducer(client)
    headers = [("ce_id", "id-1"), ("ce_type", "com.example.test")]
    producer.send_parts("orders", "good", b"{}", headers, event_id="id-1")
    producer.send_parts("orders", "bad", None, [("ce_id", "id-2")], event_id="not-the-header")
    with pytest.raises(DeliveryError) as raised:
        producer.flush()
    [failure] = raised.value.failures
    assert failure.event_id == "not-the-header"
    assert client.produced[0] == ("orders", b"{}", "good", headers)
    assert producer.counters.sent == 1 and producer.counters.failed == 1


def test_the_context_manager_raises_unobserved_failures_on_exit():
    client = ScriptedProducer(fail={b"bad": KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)})
    with pytest.raises(DeliveryError, match="failed"), EventProducer(client) as producer:
        producer.send("orders", _event("bad"))


def test_a_failure_given_to_a_callback_is_not_raised_again():
    client = ScriptedProducer(fail={b"bad": KafkaError(KafkaError._MSG_TIMED_OUT)})
    producer = EventProducer(client)
    seen: list[Delivery] = []
    producer.send("orders", _event("bad"), seen.append)
    producer.flush()
    assert [d.ok for d in seen] == [False]
    assert producer.counters.failed == 1


def test_send_and_wait_returns_the_acknowledged_position_or_raises():
    client = ScriptedProducer(fail={b"bad": KafkaError(KafkaError._MSG_TIMED_OUT)})
    producer = EventProducer(client)
    delivery = producer.send_and_wait("orders", _event("good"))
    assert delivery.ok and delivery.offset == 0
    with pytest.raises(DeliveryError):
        producer.send_and_wait("orders", _event("bad"))


def test_a_failures_only_producer_refuses_every_send_that_waits_for_a_success():
    client = ScriptedProducer()
    producer = EventProducer(client, failures_only=True)
    for send in (
        lambda: producer.send("orders", _event(), lambda delivery: None),
        lambda: producer.send_future("orders", _event()),
        lambda: producer.send_and_wait("orders", _event()),
    ):
        with pytest.raises(PipelineError, match="failed deliveries only"):
            send()
    assert client.queued == []
    producer.send("orders", _event())  # the bulk path
    producer.flush()
    assert len(client.produced) == 1


def test_send_future_is_awaitable_from_asyncio():
    client = ScriptedProducer()
    producer = EventProducer(client)

    async def main():
        with producer.polling(interval_s=0.01):
            return await asyncio.wrap_future(producer.send_future("orders", _event()))

    delivery = asyncio.run(main())
    assert delivery.ok and delivery.topic == "orders"


def test_send_awaitable_is_served_on_the_event_loop_thread_without_a_poller_thread():
    client = ScriptedProducer()
    producer = EventProducer(client)
    served_on: list[int] = []

    async def main():
        async with producer.serving_on_loop():
            future = producer.send_awaitable("orders", _event())
            future.add_done_callback(lambda _: served_on.append(threading.get_ident()))
            delivery = await asyncio.wait_for(future, 5)
            return delivery, threading.get_ident(), threading.active_count()

    delivery, loop_thread, threads = asyncio.run(main())
    assert delivery.ok and delivery.topic == "orders"
    assert served_on == [loop_thread]
    assert threads == threading.active_count()  # no thread was started for it


def test_give_up_purges_what_waits_and_refuses_later_awaitable_sends():
    client = ScriptedProducer()
    producer = EventProducer(client)

    async def main():
        async with producer.serving_on_loop():
            waiting = producer.send_awaitable("orders", _event("a"))
            producer.give_up()  # before the report of "a" was served
            with pytest.raises(PipelineError, match="gave its events up"):
                producer.send_awaitable("orders", _event("b"))
            return await asyncio.wait_for(waiting, 5)

    delivery = asyncio.run(main())
    assert client.purges == [(True, True, False)]
    assert not delivery.ok and "Purged" in str(delivery.error)
    assert [key for _topic, _value, key, _headers in client.produced] == [b"a"]  # not "b"


def test_serving_on_loop_sleeps_while_nothing_is_due_and_wakes_for_the_next_send():
    client = ScriptedProducer()
    producer = EventProducer(client)

    async def main():
        async with producer.serving_on_loop(interval_s=0.001):
            first = await asyncio.wait_for(producer.send_awaitable("orders", _event("a")), 5)
            await asyncio.sleep(0.05)
            polls_while_idle = client.polls
            await asyncio.sleep(0.05)
            idle_polls = client.polls - polls_while_idle
            second = await asyncio.wait_for(producer.send_awaitable("orders", _event("b")), 5)
            return first, second, idle_polls

    first, second, idle_polls = asyncio.run(main())
    assert first.ok and second.ok and second.offset == 1
    assert idle_polls == 0  # nothing queued: asleep, not polling every millisecond


def test_a_report_served_on_another_thread_is_handed_to_the_loop_and_wakes_it():
    client = ScriptedProducer()
    producer = EventProducer(client)
    served_on: list[int] = []

    async def main():
        loop = asyncio.get_running_loop()
        future = producer.send_awaitable("orders", _event())  # no serving_on_loop
        future.add_done_callback(lambda _: served_on.append(threading.get_ident()))
        flusher = threading.Timer(0.05, producer.flush)  # as the gateway's stopping does
        flusher.start()
        began = loop.time()
        # Nothing else wakes this loop: a report not handed over (call_soon_threadsafe)
        # would sit unseen until the 5 s timeout.
        await asyncio.wait({future}, timeout=5)
        waited = loop.time() - began
        flusher.join()
        return future.result(), waited, threading.get_ident()

    delivery, waited, loop_thread = asyncio.run(main())
    assert delivery.ok and served_on == [loop_thread]
    assert waited < 2.5, f"the loop learnt of the report only after {waited:.1f} s"


def test_a_report_for_a_caller_that_gave_up_is_dropped_and_the_serving_goes_on():
    client = ScriptedProducer()
    producer = EventProducer(client)

    async def main():
        async with producer.serving_on_loop():
            producer.send_awaitable("orders", _event("a")).cancel()
            return await asyncio.wait_for(producer.send_awaitable("orders", _event("b")), 5)

    assert asyncio.run(main()).ok
    assert len(client.produced) == 2


def test_a_failing_callback_is_logged_and_the_later_reports_are_still_served(caplog):
    client = ScriptedProducer()
    producer = EventProducer(client)

    async def main():
        async with producer.serving_on_loop():
            producer.send_awaitable("orders", _event("a"))
            client.queued[-1] = (*client.queued[-1][:4], _raising_callback)  # its report raises
            return await asyncio.wait_for(producer.send_awaitable("orders", _event("b")), 5)

    with caplog.at_level(logging.ERROR, logger="pipeline.kafka.producer"):
        assert asyncio.run(main()).ok
    assert "a delivery callback failed" in caplog.text


def _raising_callback(_error, _message):
    raise RuntimeError("a bug in a delivery callback")


def test_a_report_served_after_its_loop_closed_is_dropped_quietly():
    client = ScriptedProducer()
    producer = EventProducer(client)
    seen: list[object] = []

    async def main():
        future = producer.send_awaitable("orders", _event())  # no serving_on_loop: still due
        future.add_done_callback(seen.append)  # would be scheduled on the closed loop

    asyncio.run(main())
    producer.flush()  # serves the report now: no "Event loop is closed"
    assert len(client.produced) == 1 and seen == []


def test_a_full_local_queue_is_served_and_retried_not_raised():
    client = ScriptedProducer(capacity=2)
    with EventProducer(client) as producer:
        for n in range(10):
            producer.send("orders", _event(f"k{n}"))
    assert len(client.produced) == 10
    assert producer.counters.sent == 10


def test_a_queue_that_stays_full_fails_with_a_clear_error():
    class Stuck(ScriptedProducer):
        def poll(self, timeout=0):
            return 0

    producer = EventProducer(Stuck(capacity=0), queue_full_timeout_s=0.05)
    with pytest.raises(PipelineError, match="local queue stayed full"):
        producer.send("orders", _event())


def test_a_transaction_commits_what_the_block_sent():
    client = ScriptedProducer()
    producer = EventProducer(client)
    producer.init_transactions()
    with producer.transaction():
        producer.send("orders", _event())
        producer.send_offsets(["tp"], "group-metadata")
    assert client.transactions == ["init", "begin", ("offsets", ["tp"], "group-metadata"), "commit"]
    assert len(client.produced) == 1


def test_a_transaction_aborts_when_the_block_raises():
    client = ScriptedProducer()
    producer = EventProducer(client)
    with pytest.raises(RuntimeError), producer.transaction():
        producer.send("orders", _event())
        raise RuntimeError("handler failed")
    assert client.transactions == ["begin", "abort"]  # never "commit"


def test_an_aborted_transaction_is_flushed_first_then_forgotten():
    # An abort right after the sends raced librdkafka adding their partitions to the
    # transaction (a fatal INVALID_TXN_STATE); and its purged events were counted as failed
    # and raised again by a later, unrelated flush.
    client = ScriptedProducer(fail={b"order-bad": KafkaError(KafkaError._MSG_TIMED_OUT)})
    producer = EventProducer(client)
    with producer.transaction():
        producer.send("orders", _event("order-1"))
    with pytest.raises(RuntimeError), producer.transaction():
        producer.send("orders", _event("order-2"))
        producer.send("orders", _event("order-bad"))
        raise RuntimeError("handler failed")

    assert [key for _, _, key, _ in client.produced] == [b"order-1", b"order-2", b"order-bad"]
    assert client.transactions == ["begin", "commit", "begin", "abort"]
    assert producer.counters == ProducerCounters(sent=1, failed=0, queue_full_waits=0)
    producer.flush()  # nothing of the aborted transaction is raised


# What confluent-kafka 2.16.2 reports when SIGINT lands in a delivery callback that the
# commit's flush runs (measured against a broker: the commit is left half done, resumable).
_LOST_INTERRUPT = SystemError(
    "<method 'commit_transaction' of 'cimpl.Producer' objects> returned NULL without setting "
    "an exception"
)


class CommitCutByASignal(ScriptedProducer):
    """commit_transaction is cut by a signal (``first``), then answers ``then`` when called
    again: nothing (it resumes and commits), or an exception."""

    def __init__(self, first, then=None):
        super().__init__()
        self.first, self.then, self.commits = first, then, 0

    def commit_transaction(self, timeout=0):
        self.commits += 1
        if self.commits == 1:
            raise self.first
        if self.then is not None:
            raise self.then
        super().commit_transaction(timeout)


_READY = KafkaException(KafkaError(KafkaError._STATE, "Operation not valid in state Ready"))
_ABORTABLE = KafkaException(
    KafkaError(KafkaError._TIMED_OUT, "the coordinator went away", txn_requires_abort=True)
)


@pytest.mark.parametrize(
    ("first", "then", "committed", "transactions"),
    [
        # The commit half done: resumed, it commits.
        (_LOST_INTERRUPT, None, True, ["begin", "commit"]),
        # The commit had ended before the interrupt came out: librdkafka is Ready again.
        (KeyboardInterrupt(), _READY, True, ["begin"]),
        # The resumed commit must be aborted: nothing of it is visible.
        (_LOST_INTERRUPT, _ABORTABLE, False, ["begin", "abort"]),
        # A second Ctrl-C while the commit is finished: nobody knows.
        (_LOST_INTERRUPT, KeyboardInterrupt(), None, ["begin"]),
    ],
    ids=["resumed", "had-ended", "aborted", "second-interrupt"],
)
def test_an_interrupt_in_the_commit_is_raised_once_the_commit_is_finished_and_its_outcome_told(
    first, then, committed, transactions
):
    # Ctrl-C during a redrive's commit was a SystemError traceback, and nobody could say
    # whether the batch being committed had been (an outside reviewer, 3 of 7 tries).
    client = CommitCutByASignal(first, then)
    producer = EventProducer(client)
    told = []

    with pytest.raises(type(first)), producer.transaction(on_interrupted_commit=told.append):
        producer.send("orders", _event())

    assert told == [committed]
    assert client.transactions == transactions


def test_without_asking_an_interrupt_in_the_commit_is_raised_at_once():
    client = CommitCutByASignal(_LOST_INTERRUPT)
    producer = EventProducer(client)

    with pytest.raises(SystemError), producer.transaction():
        producer.send("orders", _event())

    assert client.commits == 1 and client.transactions == ["begin"]


def test_retries_and_resends_are_read_from_librdkafka_statistics():
    report = {
        "brokers": {"b1": {"txretries": 3, "disconnects": 1}, "b2": {"txretries": 4}, "b3": {}},
        "topics": {
            "orders": {"partitions": {"0": {"txmsgs": 6}, "1": {"txmsgs": 5}, "-1": {"txmsgs": 9}}}
        },
    }
    stats = ProducerStats()
    stats.record(json.dumps(report))
    assert (stats.retries, stats.disconnects, stats.transmitted, stats.reports) == (7, 1, 11, 1)
    producer = EventProducer(ScriptedProducer(), stats=stats)
    for n in range(10):
        producer.send("orders", _event(f"k{n}"))
    producer.flush()
    assert producer.resent == 1  # 11 transmissions for 10 acknowledged events


def test_refresh_stats_after_a_clean_run_does_not_wait_for_a_statistics_report():
    client = ScriptedProducer()
    producer = EventProducer(client, stats=ProducerStats())
    producer.send("orders", _event())
    producer.flush()
    polls = client.polls

    producer.refresh_stats(timeout_s=60)

    assert not producer.troubled
    assert client.polls - polls == 1  # the reports already made are served; nothing waited for


def test_refresh_stats_after_trouble_waits_for_fresh_reports():
    stats = ProducerStats()
    stats.record(json.dumps({"brokers": {"b1": {"txretries": 2}}, "topics": {}}))
    client = ScriptedProducer()
    producer = EventProducer(client, stats=stats)
    producer.send("orders", _event())
    producer.flush()
    polls = client.polls

    producer.refresh_stats(timeout_s=0.3)  # no report comes from the scripted client

    assert producer.troubled
    assert client.polls - polls > 1


def test_send_encoded_produces_the_parts_and_hands_librdkafkas_report_to_the_callback():
    client = ScriptedProducer(capacity=2, fail={b"bad": KafkaError(KafkaError._MSG_TIMED_OUT)})
    producer = EventProducer(client)
    reports: list = []
    messages = [encode(_event(key)) for key in ("k1", "bad", "k3")]

    for message in messages:
        producer.send_encoded(
            "orders",
            message.key,
            message.value,
            message.headers,
            lambda error, produced: reports.append((error, produced.key())),
        )
    producer.flush()  # a failure given to a callback is not raised here

    assert client.produced == [("orders", m.value, m.key, m.headers) for m in messages]
    assert [(error is None, key) for error, key in reports] == [
        (True, b"k1"),
        (False, b"bad"),
        (True, b"k3"),
    ]


def test_refresh_stats_waits_for_fresh_reports_after_failures_the_caller_counted():
    client = ScriptedProducer()
    producer = EventProducer(client, stats=ProducerStats())
    producer.flush()
    polls = client.polls

    producer.refresh_stats(timeout_s=0.3, failures=1)

    assert client.polls - polls > 1


def test_send_awaitable_outside_serving_on_loop_warns_once_that_nothing_serves_it(caplog):
    # A forgotten serving_on_loop() made the await wait for ever without a word.
    client = ScriptedProducer()
    producer = EventProducer(client)

    async def main():
        with caplog.at_level(logging.WARNING, logger="pipeline.kafka.producer"):
            futures = [producer.send_awaitable("orders", _event(key)) for key in "ab"]
            async with producer.serving_on_loop():
                return await asyncio.wait_for(asyncio.gather(*futures), 5)

    deliveries = asyncio.run(main())
    assert all(delivery.ok for delivery in deliveries)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "send_awaitable outside `async with producer.serving_on_loop():` (or "
        "producer.polling()): its delivery report waits for a poll() or flush()"
    ]


def test_send_awaitable_served_by_a_polling_thread_says_nothing(caplog):
    client = ScriptedProducer()
    producer = EventProducer(client)

    async def main():
        with producer.polling(), caplog.at_level(logging.WARNING):
            return await asyncio.wait_for(producer.send_awaitable("orders", _event()), 5)

    assert asyncio.run(main()).ok
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
