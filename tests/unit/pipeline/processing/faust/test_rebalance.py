"""Rebalances as a processor tells them: one INFO line per assignment and per revocation, a
drain that ends before Faust's flight recorder calls the revocation hung, aiokafka's routine
heartbeat WARNING folded, and the tally at the stop counting what a drain gave up on and that
finished afterwards."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from pipeline.envelope import Event
from pipeline.kafka.producer import EventProducer
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.faust import rebalance
from pipeline.processing.faust.binding import FaustBinding
from pipeline.processing.faust.internals import REVOCATION_RECORDER_SHARE
from pipeline.processing.faust.rebalance import (
    FAUST_CONSUMER_LOGGER,
    RoutineRebalanceLines,
    install_routine_rebalance_lines,
    partitions_text,
    revocation_drain_timeout,
)
from pipeline.processing.faust.session_expiry import GROUP_COORDINATOR_LOGGER
from pipeline.settings import PipelineSettings, ProcessingSettings
from tests.unit.pipeline.processing.faust.test_binding import (
    TOPIC,
    HeldEvent,
    NoKafka,
    RecordingInternals,
)


def slow_binding(
    database: Engine, release: threading.Event, **processing: Any
) -> tuple[FaustBinding, list[int]]:
    """A binding whose handler waits for ``release``; the offsets it finished."""
    finished: list[int] = []
    processor = Processor("rebalance-test")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        assert release.wait(30), "the test never released the handler"
        finished.append(unit.record.offset)

    settings = PipelineSettings(processing=ProcessingSettings(**processing))
    binding = FaustBinding(
        processor,
        settings,
        database=database,
        producer=EventProducer(NoKafka()),  # type: ignore[arg-type]
        internals=RecordingInternals(),
    )

    async def commit(*_: Any, **__: Any) -> bool:
        return True

    binding.app.consumer.commit = commit  # type: ignore[method-assign]
    return binding, finished


def test_partitions_are_named_compactly_per_topic() -> None:
    assert partitions_text([("rv.events", 5), ("rv.events", 1), ("rv.events", 2)]) == (
        "rv.events[1,2,5] (3 partitions)"
    )
    assert partitions_text([("b", 3), ("a", 0), ("a", 1), ("a", 2), ("a", 4)]) == (
        "a[0-2,4] b[3] (5 partitions)"
    )
    assert partitions_text([("a", 7)]) == "a[7] (1 partition)"
    assert partitions_text([]) == "no partitions"


@pytest.mark.parametrize(("drain_s", "session_s"), [(10, 10), (10, 6), (30, 45), (2, 10)])
def test_a_drain_in_a_revocation_ends_before_fausts_flight_recorder(
    drain_s: float, session_s: float
) -> None:
    timeout = revocation_drain_timeout(drain_s, session_s)

    assert timeout <= drain_s
    # A tenth of the session timeout is left for the commit after the drain.
    assert timeout <= (REVOCATION_RECORDER_SHARE - 0.1) * session_s + 1e-9
    if drain_s < 0.8 * session_s:
        assert timeout == drain_s  # a drain that fits anyway keeps its setting


def test_the_binding_drains_a_revocation_for_less_than_the_recorders_timeout(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The defaults: drain_timeout_s 10 and session_timeout_s 10, the recorder at 9.5 s.
    binding, _ = slow_binding(database, threading.Event())
    drains: list[float] = []

    async def drain(partitions: Any, timeout_s: float | None = None) -> None:
        drains.append(binding.settings.drain_timeout_s if timeout_s is None else timeout_s)

    async def main() -> None:
        binding.assigned([(TOPIC, 0)])
        monkeypatch.setattr(binding.engine, "drain", drain)
        await binding.revoked([(TOPIC, 0)])

    asyncio.run(main())

    recorder_s = REVOCATION_RECORDER_SHARE * binding.settings.session_timeout_s
    assert drains and drains[0] < recorder_s - 0.5, (drains, recorder_s)


def test_each_assignment_and_revocation_is_one_info_line_naming_its_partitions(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    release.set()
    binding, _ = slow_binding(database, release)

    async def main() -> None:
        binding.assigned([(TOPIC, 0), (TOPIC, 1), (TOPIC, 3)])
        await binding.deliver(HeldEvent(0, partition=1))  # type: ignore[arg-type]
        await binding.engine.wait_idle()
        await binding.revoked([(TOPIC, 0), (TOPIC, 1), (TOPIC, 3)])
        await binding.revoked([])  # the first join of an eager rebalance: nothing to say
        binding.assigned([])

    with caplog.at_level(logging.INFO, logger="pipeline.processing"):
        asyncio.run(main())

    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.processing"]
    said = [line for line in lines if ": assigned " in line or ": revoked " in line]
    assert said[0] == f"rebalance-test: assigned {TOPIC}[0,1,3] (3 partitions)"
    assert said[1].startswith(f"rebalance-test: revoked {TOPIC}[0,1,3] (3 partitions) after ")
    assert said[2:] == ["rebalance-test: assigned no partitions"]


@pytest.fixture
def coordinator() -> Iterator[logging.Logger]:
    """aiokafka's group coordinator logger with only our filter, its level restored after."""
    logger = logging.getLogger(GROUP_COORDINATOR_LOGGER)
    level, filters = logger.level, list(logger.filters)
    logger.filters = [RoutineRebalanceLines()]
    yield logger
    logger.setLevel(level)
    logger.filters = filters


def test_the_heartbeat_rebalancing_warning_is_an_info_line_kept_out_by_default(
    coordinator: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator.setLevel(logging.WARNING)  # pipeline.logs keeps aiokafka at WARNING
    with caplog.at_level(logging.DEBUG):
        coordinator.setLevel(logging.WARNING)
        coordinator.warning("Heartbeat failed for group %s because it is rebalancing", "g")
        coordinator.warning("Heartbeat failed for group %s: generation id is not  current.", "g")

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Heartbeat failed for group g: generation id is not  current.")
    ]


def test_the_heartbeat_rebalancing_line_shows_at_info_where_aiokafka_logs_info(
    coordinator: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        coordinator.setLevel(logging.DEBUG)  # the program logs at DEBUG
        coordinator.warning("Heartbeat failed for group %s because it is rebalancing", "g")

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "Heartbeat failed for group g because it is rebalancing")
    ]


def test_fausts_seek_of_a_partition_a_rebalance_took_away_is_an_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = logging.getLogger(FAUST_CONSUMER_LOGGER)
    level, filters = consumer.level, list(consumer.filters)
    consumer.filters = []
    try:
        install_routine_rebalance_lines()
        install_routine_rebalance_lines()  # once only
        assert sum(isinstance(f, RoutineRebalanceLines) for f in consumer.filters) == 1
        consumer.setLevel(logging.WARNING)  # pipeline.logs keeps Faust at WARNING
        with caplog.at_level(logging.DEBUG):
            consumer.setLevel(logging.WARNING)
            consumer.warning(
                "[^--Consumer]: exception performing seek when flow not active "
                "IllegalStateError: No current assignment for partition TopicPartition("
                "topic='t', partition=3)"
            )
            consumer.warning(
                "[^--Consumer]: exception performing seek when flow not active KafkaError"
            )
    finally:
        consumer.setLevel(level)
        consumer.filters = filters

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "[^--Consumer]: exception performing seek when flow not active KafkaError")
    ]


def test_the_tally_at_the_stop_counts_an_event_the_drain_gave_up_on_that_finished_after(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    binding, finished = slow_binding(database, release, drain_timeout_s=0.2)

    async def main() -> None:
        binding.assigned([(TOPIC, 0)])
        await binding.deliver(HeldEvent(0))  # type: ignore[arg-type]
        await binding.stopping()  # the drain gives up on it after 0.2 s
        assert finished == []
        asyncio.get_running_loop().call_later(0.05, release.set)  # it finishes later
        await binding.stopped()  # Faust stopped its consumer: the tally

    with caplog.at_level(logging.INFO, logger="pipeline.processing"):
        asyncio.run(main())

    lines = [r.getMessage() for r in caplog.records]
    [drained] = [line for line in lines if "still running after" in line]
    assert "their offsets are not committed" in drained
    assert "may still finish here and commit their effects" in drained
    assert finished == [0]
    [tally] = [line for line in lines if line.endswith("(at stop)")]
    assert ": 1 processed" in tally, tally
    assert not [line for line in lines if "still running at the stop" in line]


def test_the_stop_says_what_is_still_running_after_another_drain_timeout(
    database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    binding, _ = slow_binding(database, release, drain_timeout_s=0.1)

    async def main() -> None:
        binding.assigned([(TOPIC, 0)])
        await binding.deliver(HeldEvent(0))  # type: ignore[arg-type]
        await binding.stopping()
        await binding.stopped()
        release.set()

    with caplog.at_level(logging.INFO, logger="pipeline.processing"):
        asyncio.run(main())

    lines = [r.getMessage() for r in caplog.records]
    [tally] = [line for line in lines if line.endswith("(at stop)")]
    assert ": 0 processed" in tally, tally
    assert [line for line in lines if "1 event still running at the stop" in line]


def test_a_late_run_of_the_bindings_own_timer_is_an_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Said at WARNING at rebalances (the drain held the loop): the lag's age tells it already.
    timers = logging.getLogger("mode.timers")
    level, filters = timers.level, list(timers.filters)
    timers.filters = []
    try:
        install_routine_rebalance_lines()
        with caplog.at_level(logging.DEBUG):
            timers.setLevel(logging.WARNING)
            timers.warning(
                "Timer %s is overlapping (interval=%r runtime=%r)",
                "pipeline.processing.faust.binding.FaustBinding.refresh_lag",
                1.0,
                1.0003,
            )
            timers.warning(
                "Timer %s is overlapping (interval=%r runtime=%r)", "app.user_timer", 1.0, 1.5
            )
    finally:
        timers.setLevel(level)
        timers.filters = filters

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Timer app.user_timer is overlapping (interval=1.0 runtime=1.5)")
    ]


def test_a_new_brokers_coordinator_lines_are_info_in_the_first_minute_only(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newcomer's first run showed aiokafka's ERROR while the broker made its offsets topic.
    logger = logging.getLogger(GROUP_COORDINATOR_LOGGER)
    level, filters = logger.level, list(logger.filters)
    logger.filters = []
    now = [1000.0]
    monkeypatch.setattr(rebalance.time, "monotonic", lambda: now[0])
    try:
        install_routine_rebalance_lines()
        install_routine_rebalance_lines()  # once each
        assert len(logger.filters) == 3
        logger.setLevel(logging.WARNING)
        with caplog.at_level(logging.DEBUG):
            logger.setLevel(logging.WARNING)
            logger.error("Group Coordinator Request failed: %s", NOT_AVAILABLE)
            logger.warning("Marking the coordinator dead (node %s)for group %s.", 1, "g")
            logger.error("Group Coordinator Request failed: %s", "[Error 7] RequestTimedOutError")
            now[0] += 61  # later they say something is wrong
            logger.error("Group Coordinator Request failed: %s", NOT_AVAILABLE)
            logger.warning("Marking the coordinator dead (node %s)for group %s.", 1, "g")
    finally:
        logger.setLevel(level)
        logger.filters = filters

    assert [(r.levelname, r.getMessage()[:36]) for r in caplog.records] == [
        ("ERROR", "Group Coordinator Request failed: [E"),
        ("ERROR", "Group Coordinator Request failed: [E"),
        ("WARNING", "Marking the coordinator dead (node 1"),
    ]
    assert "RequestTimedOutError" in caplog.records[0].getMessage()


NOT_AVAILABLE = "[Error 15] GroupCoordinatorNotAvailableError"
