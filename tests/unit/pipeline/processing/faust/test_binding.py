"""The Faust binding's state and named methods, without a broker: events in, acknowledgements
out, partitions assigned and revoked, the stop."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from faust.types import TP, Message
from sqlalchemy.engine import Engine

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.kafka.producer import EventProducer
from pipeline.logs import configure_logging
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.faust import binding as binding_module
from pipeline.processing.faust.binding import LAG_REFRESH_S, FaustBinding, record_of
from pipeline.processing.faust.internals import FaustInternals
from pipeline.processing.offsets import CommitPosition
from pipeline.settings import PipelineSettings

TOPIC = "orders.requests"
TP0 = (TOPIC, 0)


class NoKafka:
    """A producer client for tests that send nothing (no dead letters here)."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is produced in these tests")

    def __len__(self) -> int:
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class HeldEvent:
    """A Faust event as the binding uses it: its message, and ``ack()``."""

    def __init__(self, offset: int, key: str = "k", partition: int = 0) -> None:
        encoded = encode(Event(source="/tests", type="Step", partitionkey=key, data={"n": offset}))
        self.message = Message(
            TOPIC, partition, offset, 1.5, 0, encoded.headers, encoded.key, encoded.value, None
        )
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


class RecordingInternals(FaustInternals):
    """The checked internals, recording the commits of revoked partitions."""

    def __init__(self) -> None:
        super().__init__("0.15.3")
        self.revoked_commits: list[dict[TP, int]] = []

    async def commit_revoked(self, consumer: Any, positions: Any) -> None:
        self.revoked_commits.append(dict(positions))


class Bound:
    """A binding of a processor recording what it handles, with Faust's commits recorded."""

    def __init__(self, database: Engine) -> None:
        self.handled: list[int] = []
        processor = Processor("binding-test")

        @processor.handler(TOPIC)
        def handle(event: Event, unit: UnitOfWork) -> None:
            self.handled.append(event.data["n"])

        self.internals = RecordingInternals()
        self.binding = FaustBinding(
            processor,
            PipelineSettings(),
            database=database,
            producer=EventProducer(NoKafka()),  # type: ignore[arg-type]
            internals=self.internals,
        )
        self.commits = 0

        async def commit(*_: Any, **__: Any) -> bool:
            self.commits += 1
            return True

        self.binding.app.consumer.commit = commit  # type: ignore[method-assign]


@pytest.fixture
def bound(database: Engine) -> Bound:
    return Bound(database)


def test_a_faust_message_becomes_a_record_with_its_headers_and_timestamp() -> None:
    event = HeldEvent(7)

    record = record_of(event.message)

    assert (record.topic, record.partition, record.offset) == (TOPIC, 0, 7)
    assert record.key == event.message.key
    assert record.headers == list(event.message.headers)
    assert record.timestamp_ms == 1500


def test_acknowledge_acks_the_held_events_below_the_commit_position_only(bound: Bound) -> None:
    events = [HeldEvent(offset) for offset in range(3)]
    for event in events:
        bound.binding.accept(event)  # type: ignore[arg-type]

    bound.binding.acknowledge([CommitPosition(TOPIC, 0, 2)])

    assert [event.acked for event in events] == [True, True, False]


def test_events_delivered_are_handled_acknowledged_and_committed_on_revocation(
    bound: Bound,
) -> None:
    events = [HeldEvent(offset, key=f"k{offset % 2}") for offset in range(4)]

    async def main() -> None:
        bound.binding.assigned([TP0])
        bound.binding.deliver_nowait(events[0])  # type: ignore[arg-type]
        for event in events[1:]:
            await bound.binding.deliver(event)  # type: ignore[arg-type]
        await bound.binding.engine.wait_idle()
        await bound.binding.revoked([TP0])

    asyncio.run(main())

    assert sorted(bound.handled) == [0, 1, 2, 3]
    assert all(event.acked for event in events)
    assert bound.internals.revoked_commits == [{TP(TOPIC, 0): 4}]
    assert bound.commits == 1


def test_a_revoked_partition_is_forgotten(bound: Bound) -> None:
    async def main() -> None:
        bound.binding.assigned([TP0])
        await bound.binding.deliver(HeldEvent(0))  # type: ignore[arg-type]
        await bound.binding.engine.wait_idle()
        await bound.binding.revoked([TP0])
        await bound.binding.revoked([TP0])  # again: nothing acknowledged is left to commit

    asyncio.run(main())

    assert bound.internals.revoked_commits == [{TP(TOPIC, 0): 1}, {}]


def test_stopping_closes_the_engine_and_commits_what_was_acknowledged(bound: Bound) -> None:
    events = [HeldEvent(offset) for offset in range(3)]

    async def main() -> bool:
        bound.binding.assigned([TP0])
        for event in events:
            await bound.binding.deliver(event)  # type: ignore[arg-type]
        await bound.binding.engine.wait_idle()
        await bound.binding.stopping()
        return bound.binding.engine.closed

    closed = asyncio.run(main())

    assert closed
    assert bound.handled == [0, 1, 2]
    assert all(event.acked for event in events)
    assert bound.commits == 1


def test_the_line_at_stop_says_the_lag_as_last_measured_not_zero(
    bound: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        bound.binding.assigned([TP0])
        await bound.binding.deliver(HeldEvent(0))  # type: ignore[arg-type]
        await bound.binding.engine.wait_idle()
        bound.binding.metrics.set_lag(TOPIC, 0, 4_400)  # the last report: 4,400 unread
        with caplog.at_level(logging.INFO):
            await bound.binding.stopping()
            await bound.binding.stopped()  # Faust stopped its consumer

    asyncio.run(main())

    [line] = [r.getMessage() for r in caplog.records if r.getMessage().endswith("(at stop)")]
    assert "1 processed" in line and "lag 4,400 (at stop)" in line, line


def test_a_stop_before_any_partition_came_still_has_its_line_at_stop(
    bound: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    # SIGTERM a second after the start, before the group assigned anything: no closing line
    # at all, though metrics.md promises one "when it stops" (an outside review).
    async def main() -> None:
        with caplog.at_level(logging.INFO):
            await bound.binding.stopping()
            await bound.binding.stopped()

    asyncio.run(main())

    [line] = [r.getMessage() for r in caplog.records if r.getMessage().endswith("(at stop)")]
    assert "stopped before any partition was assigned, nothing processed" in line, line


def test_the_line_at_stop_says_the_lag_left_after_the_final_commit(
    bound: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    # Stopped mid-backlog: the last measure (500 behind, from offset 0) came before the drain
    # finished offsets 0-2 and the final commit committed 3. Kafka's tools then count 497; the
    # line said 500 (the SIGINT of an outside review: "lag 236 (at stop)" against 162).
    binding = bound.binding
    binding.app.consumer.highwater = lambda tp: 500  # type: ignore[method-assign]

    async def main() -> None:
        binding.assigned([TP0])
        for offset in range(3):
            await binding.deliver(HeldEvent(offset, key=f"k{offset}"))  # type: ignore[arg-type]
        binding.metrics.set_lag(TOPIC, 0, 500)  # the last measure, before the drain
        with caplog.at_level(logging.INFO):
            await binding.stopping()
            await binding.stopped()

    asyncio.run(main())

    [line] = [r.getMessage() for r in caplog.records if r.getMessage().endswith("(at stop)")]
    assert "3 processed" in line and "lag 497 (at stop)" in line, line
    assert bound.commits == 1


def test_the_line_at_stop_keeps_the_lag_as_last_measured_when_the_final_commit_fails(
    bound: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    binding = bound.binding
    binding.app.consumer.highwater = lambda tp: 500  # type: ignore[method-assign]

    async def refused(*_: Any, **__: Any) -> bool:
        raise RuntimeError("the group is gone")

    binding.app.consumer.commit = refused  # type: ignore[method-assign]

    async def main() -> None:
        binding.assigned([TP0])
        await binding.deliver(HeldEvent(0))  # type: ignore[arg-type]
        binding.metrics.set_lag(TOPIC, 0, 500)
        with caplog.at_level(logging.INFO):
            await binding.stopping()
            await binding.stopped()

    asyncio.run(main())

    [line] = [r.getMessage() for r in caplog.records if r.getMessage().endswith("(at stop)")]
    assert "lag 500 (at stop)" in line, line


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("faust", "mode", "aiokafka")}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_fausts_lines_about_the_app_show_only_at_debug_and_its_warnings_always(
    bound: Bound, restore_logging: None
) -> None:
    # "[^-_ProcessorApp]: Starting...", "Stopping...", "Flush producer buffer..." came at the
    # default level, under this module's logger (mode names a service's logger after the
    # module of its class).
    out = io.StringIO()
    configure_logging(PipelineSettings(), "svc", to_kafka=False, console="text", stream=out)
    app = bound.binding.app

    app.log.info("Starting...")
    app.log.info("Flush producer buffer...")
    app.log.warning("something to act on")

    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("]: something to act on"), lines

    configure_logging(
        PipelineSettings(), "svc", level="DEBUG", to_kafka=False, console="text", stream=out
    )
    app.log.info("Stopping...")

    assert out.getvalue().splitlines()[-1].endswith("]: Stopping..."), out.getvalue()


def test_events_arriving_after_the_stop_are_not_handed_to_the_engine(bound: Bound) -> None:
    late = [HeldEvent(0), HeldEvent(1)]

    async def main() -> None:
        bound.binding.assigned([TP0])
        await bound.binding.stopping()
        bound.binding.deliver_nowait(late[0])  # type: ignore[arg-type]
        await bound.binding.deliver(late[1])  # type: ignore[arg-type]

    asyncio.run(main())

    assert bound.handled == []
    assert not any(event.acked for event in late)


def test_stopping_before_any_event_commits_nothing(bound: Bound) -> None:
    asyncio.run(bound.binding.stopping())

    assert bound.commits == 0


def test_a_metrics_report_during_a_rebalance_skips_a_partition_no_longer_assigned(
    bound: Bound,
) -> None:
    # aiokafka asserts a partition is assigned when asked its high watermark; one revoked
    # while the report waited for its position must not crash the app (the timer's error
    # stopped the processor once).
    binding = bound.binding
    binding._consumed[TP0] = 5
    binding._consumed[(TOPIC, 1)] = 7
    consumer = binding.app.consumer

    async def position(tp: TP) -> int:
        return 8  # past the records of both partitions

    def highwater(tp: TP) -> int:
        if tp.partition == 0:
            raise AssertionError("Partition is not assigned")
        return 10

    consumer.position = position  # type: ignore[method-assign]
    consumer.highwater = highwater  # type: ignore[method-assign]

    asyncio.run(binding.report())

    lags = {
        sample.labels["partition"]: sample.value
        for family in binding.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "pipeline_consumer_lag"
    }
    assert lags == {"1": 2.0}


def test_the_lag_counts_from_the_oldest_record_not_done_not_from_the_fetch_position(
    bound: Bound,
) -> None:
    # The consumer fetched to the end (position 100) while records 40.. are still being handled:
    # 60 are behind, as Kafka's tools count from the committed offset (the gauge said 0).
    binding = bound.binding
    binding.accept(HeldEvent(40))  # type: ignore[arg-type]
    binding.accept(HeldEvent(41))  # type: ignore[arg-type]
    consumer = binding.app.consumer

    async def position(tp: TP) -> int:
        return 100

    consumer.position = position  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 100  # type: ignore[method-assign]

    asyncio.run(binding.report())
    behind = _lags(binding)
    binding.acknowledge([(TOPIC, 0, 42)])  # both done: from the fetch position again
    asyncio.run(binding.report())

    assert behind == {"0": 60.0}
    assert _lags(binding) == {"0": 0.0}


def _lags(binding: Any) -> dict[str, float]:
    return {
        sample.labels["partition"]: sample.value
        for family in binding.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "pipeline_consumer_lag"
    }


def test_the_lag_gauge_is_refreshed_every_second_apart_from_the_summary_line(
    database: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The gauge changed only with the summary line (every 30 s): a scrape saw 0 while a
    # backlog waited, then a stale figure for half a minute after it was caught up.
    timers: dict[str, float] = {}
    timer = faust.App.timer

    def recording_timer(app: faust.App, interval: float, **options: Any) -> Any:
        def register(fun: Any) -> Any:
            timers[fun.__name__] = interval
            return timer(app, interval, **options)(fun)

        return register

    monkeypatch.setattr(faust.App, "timer", recording_timer)
    binding = Bound(database).binding
    binding.accept(HeldEvent(40))  # type: ignore[arg-type]
    consumer = binding.app.consumer

    async def position(tp: TP) -> int:
        return 100

    consumer.position = position  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 100  # type: ignore[method-assign]

    with caplog.at_level(logging.INFO):
        asyncio.run(binding.refresh_lag())

    assert _lags(binding) == {"0": 60.0}
    assert "processed" not in caplog.text  # no summary line
    assert timers["refresh_lag"] == LAG_REFRESH_S == 1.0
    assert timers["report"] == PipelineSettings().processing.metrics_log_interval_s


def test_an_accepted_event_is_what_fausts_stall_check_sees_as_the_streams_inbound_time(
    bound: Bound,
) -> None:
    # A processor has no Faust stream to tell the monitor; Faust then said "Stream has not
    # started processing" for partitions it was processing all along.
    # Told every second, with the lag (the check waits minutes), not per event.
    binding = bound.binding
    binding.starting()
    consumer = binding.app.consumer

    async def position(tp: TP) -> int:
        return 4

    consumer.position = position  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 4  # type: ignore[method-assign]
    before = time.monotonic()
    binding.accept(HeldEvent(3, partition=1))  # type: ignore[arg-type]
    asyncio.run(binding.refresh_lag())

    inbound = binding.app.monitor.stream_inbound_time.get(TP(TOPIC, 1))
    assert inbound is not None and inbound >= before


def test_every_assigned_partition_has_a_lag_before_its_first_record(bound: Bound) -> None:
    # After a restart the gauge had no series for a partition until a record came from it: an
    # alert could not see an idle partition, nor one stuck before its first record.
    binding = bound.binding
    binding.accept(HeldEvent(3, partition=1))  # type: ignore[arg-type]
    consumer = binding.app.consumer

    async def position(tp: TP) -> int:
        return {0: 5, 1: 4, 2: 9}[tp.partition]

    consumer.position = position  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 9  # type: ignore[method-assign]
    consumer.assignment = lambda: {TP(TOPIC, 0), TP(TOPIC, 1), TP(TOPIC, 2)}  # type: ignore[method-assign]

    asyncio.run(binding.refresh_lag())

    assert _lags(binding) == {"0": 4.0, "1": 6.0, "2": 0.0}


def _binding_with(database: Engine, **processing: Any) -> FaustBinding:
    """A binding of a one-handler processor whose processing settings are ``processing``."""
    processor = Processor("settings-test")
    processor.handler(TOPIC)(lambda event, unit: None)
    section = PipelineSettings().processing.model_copy(update=processing)
    return FaustBinding(
        processor,
        PipelineSettings().model_copy(update={"processing": section}),
        database=database,
        producer=EventProducer(NoKafka()),  # type: ignore[arg-type]
        internals=RecordingInternals(),
    )


@pytest.mark.parametrize("start", ["earliest", "latest"])
def test_where_a_new_group_starts_reading_is_the_settings(database: Engine, start: str) -> None:
    # A second saga orchestrator on the shared saga topics started at the oldest reply kept,
    # and dead-lettered 355,000 replies of other sagas first.
    binding = _binding_with(database, start=start)

    assert binding.app.conf.consumer_auto_offset_reset == start


@pytest.mark.parametrize("instance", [None, "orders-2"])
def test_the_group_instance_id_reaches_the_consumer(database: Engine, instance) -> None:
    # Static membership (KIP-345): a restart within the session timeout keeps the partitions.
    binding = _binding_with(database, group_instance_id=instance)

    assert binding.app.conf.consumer_group_instance_id == instance


def test_a_long_session_timeout_gets_a_longer_request_timeout(database: Engine) -> None:
    # Faust refuses a session timeout over its request timeout (90 s): every processor with
    # session_timeout_s 120 crashed at start with a traceback.
    conf = _binding_with(database, session_timeout_s=300.0).app.conf

    assert conf.broker_request_timeout > conf.broker_session_timeout == 300.0


def test_the_first_summary_line_gives_the_rate_since_the_start(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # The first line had no rate (there was no line before it to count from).
    binding = Bound(database).binding
    consumer = binding.app.consumer

    async def position(tp: TP) -> int:
        return 0

    consumer.position = position  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 0  # type: ignore[method-assign]

    with caplog.at_level(logging.INFO):
        asyncio.run(binding.report())

    [line] = [r.getMessage() for r in caplog.records if "processed" in r.getMessage()]
    assert "0 processed (0.0/s), " in line


def test_the_lag_says_how_old_its_end_offsets_are_from_the_last_fetch_answer(
    bound: Bound, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kafka refusing the login after a credential rotation: no fetch answered, the end offsets
    # stayed as they were, and the summary line said "lag 0" with events waiting.
    binding = bound.binding
    consumer = binding.app.consumer

    async def position(tp: TP) -> int:
        return 9

    consumer.position = position  # type: ignore[method-assign]
    consumer.highwater = lambda tp: 9  # type: ignore[method-assign]
    consumer.assignment = lambda: {TP(TOPIC, 0), TP(TOPIC, 1)}  # type: ignore[method-assign]
    asked: list[list[tuple[str, int]]] = []

    def answered(_consumer: Any, partitions: Any) -> int:
        asked.append(sorted(partitions))
        return int((time.time() - 95) * 1000)

    monkeypatch.setattr(binding_module, "last_fetch_answer_ms", answered)

    asyncio.run(binding.refresh_lag())

    assert asked == [[(TOPIC, 0), (TOPIC, 1)]]
    age = binding.metrics.snapshot().lag_age_s
    assert age is not None and 94 < age < 100


class _BatchRefusingProducer:
    """Refuses a message as too large when it is over ``limit``, or shared a batch with one
    that is (was in flight at the same time), as the broker refuses a whole batch. Each send is
    answered a few milliseconds later."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[KafkaMessage] = []
        self._in_flight: dict[int, list[Any]] = {}  # id -> [message, shared with a huge one]

    def send_future(self, topic: str, message: KafkaMessage) -> Any:
        from concurrent.futures import Future

        from pipeline.kafka.delivery import Delivery

        huge = len(message.value or b"") > self.limit
        entry = [
            message,
            any(len(m.value or b"") > self.limit for m, _ in self._in_flight.values()),
        ]
        if huge:
            for other in self._in_flight.values():
                other[1] = True
        key = id(entry)
        self._in_flight[key] = entry
        future: Future[Delivery] = Future()

        def answer() -> None:
            del self._in_flight[key]
            too_large = huge or entry[1]
            error = "Broker: Message size too large" if too_large else None
            future.set_result(Delivery("e", topic, message.key, 0, 0, error, too_large=too_large))
            if not too_large:
                self.sent.append(message)

        asyncio.get_running_loop().call_later(0.005, answer)
        return future


def test_small_dead_letters_beside_huge_ones_of_other_keys_go_whole() -> None:
    # Keys are handled side by side: a 22-byte letter shared a batch with a huge one of another
    # key (also on its resend), and went without its value.
    from pipeline.dead_letters.letter import DeadLetterTooLarge
    from pipeline.processing.faust.binding import ProducerDeadLetterSink

    producer = _BatchRefusingProducer(limit=1_000)
    small = [KafkaMessage(b"s", b"s%02d" % n + b"x" * 19, []) for n in range(20)]
    huge = [KafkaMessage(b"h", b"h%02d" % n + b"x" * 10_000, []) for n in range(20)]
    refused: list[bytes | None] = []

    async def send_each(sink: ProducerDeadLetterSink, messages: list[KafkaMessage]) -> None:
        for message in messages:
            try:
                await sink.send("t.dlq", message)
            except DeadLetterTooLarge:
                refused.append(message.value)

    async def side_by_side() -> None:
        sink = ProducerDeadLetterSink(producer)  # type: ignore[arg-type]
        await asyncio.gather(send_each(sink, huge), send_each(sink, small))

    asyncio.run(side_by_side())

    assert producer.sent == small
    assert refused == [message.value for message in huge]
