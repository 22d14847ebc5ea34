"""The plugin's fixtures in this project: recordings into the driver, and the driver backend."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from pipeline.envelope import Event, encode
from pipeline.processing import ProcessorTestDriver
from pipeline.processing.harness import PipelineHarness
from pipeline.replay.recording import RecordedMessage, RecordingWriter, read_recording
from pipeline.settings import ProcessingSettings
from pipeline.testing.backends import (
    DriverBackend,
    catalogue_partitions,
    driver_processing,
    last_returned,
    pending_letters,
)
from pipeline.topics.catalogue import DEFAULT_PARTITIONS
from tests.unit.pipeline.testing import counting

SPEC = "tests.unit.pipeline.testing.counting:processor"


def counting_event(key: str, n: int) -> Event:
    return Event(source="/tests", type="Count", partitionkey=key, data={"n": n})


def write_recording(path: Path, events: list[Event]) -> Path:
    with path.open("wb") as stream:
        writer = RecordingWriter(stream)
        for offset, event in enumerate(events):
            message = encode(event)
            writer.write(
                RecordedMessage(
                    topic=counting.TOPIC,
                    partition=0,
                    offset=offset,
                    key=message.key,
                    value=message.value,
                    headers=tuple(message.headers),
                    timestamp_ms=1_767_225_600_000 + offset,
                )
            )
    return path


def counts_of(database) -> dict[str, int]:
    with database.connect() as connection:
        rows = connection.execute(sa.select(counting.counts.c.key, counting.counts.c.count))
        return dict(rows.all())


def test_replay_into_driver_feeds_a_recording_file(replay_into_driver, tmp_path):
    events = [counting_event(f"k{n % 3}", n) for n in range(12)]
    recording = write_recording(tmp_path / "counting.ndjson", events)
    driver = ProcessorTestDriver(counting.processor, partitions=3)
    try:
        assert replay_into_driver(driver, recording) == 12
        assert driver.run().processed == 12
        assert counts_of(driver.database) == {"k0": 4, "k1": 4, "k2": 4}
        assert {r.partition for log in driver.topics.values() for r in log} <= {0, 1, 2}
    finally:
        driver.close()


def test_replay_into_driver_takes_messages_and_another_topic(replay_into_driver, tmp_path):
    recording = write_recording(tmp_path / "r.ndjson", [counting_event("k", 0)])
    driver = ProcessorTestDriver(counting.processor)
    try:
        # Kept where asked, and the test is told nothing reads it there: nothing to count.
        with pytest.warns(UserWarning, match="no processor reads elsewhere"):
            sent = replay_into_driver(driver, list(read_recording(recording)), topic="elsewhere")
        assert sent == 0 and list(driver.topics) == [("elsewhere", 0)]
        assert replay_into_driver(driver, recording, topic=counting.TOPIC) == 1
    finally:
        driver.close()


def test_replay_into_driver_counts_only_what_a_processor_reads(replay_into_driver, tmp_path):
    # A recording of the wrong topic must not pass `assert replay_into_driver(...) == n`.
    read = [counting_event("k", n) for n in range(3)]
    messages = list(read_recording(write_recording(tmp_path / "r.ndjson", read)))
    unread = [msgspec.structs.replace(m, topic="staging.other") for m in messages[:2]]
    harness = PipelineHarness([counting.processor])
    driver = ProcessorTestDriver(counting.processor)
    try:
        for target in (harness, driver):
            with pytest.warns(UserWarning, match=r"no processor reads staging\.other.*nor counted"):
                assert replay_into_driver(target, [*unread, *messages]) == 3
            with pytest.warns(UserWarning, match="no processor reads staging.other"):
                assert replay_into_driver(target, unread) == 0
        harness.run_until_idle()
        assert counts_of(harness.database) == {"k": 3}
    finally:
        harness.close()
        driver.close()


# A unit test uses no network: the driver only, even with --pipeline-backend kafka.
@pytest.mark.pipeline_backends("driver")
def test_the_driver_backend_runs_the_named_processors_and_relays_their_outbox(pipeline_backend):
    backend = pipeline_backend([SPEC])

    assert backend.kind == "driver" and isinstance(backend, DriverBackend)
    assert backend.send(counting.TOPIC, [counting_event("k", n) for n in range(25)]) == 25
    backend.settle()
    assert counts_of(backend.database) == {"k": 25}
    tenths = backend.harness.published(counting.OUTPUT)
    assert [event.data["count"] for event in tenths] == [10, 20]


@pytest.mark.pipeline_backends("driver")
def test_the_driver_backend_routes_emits_by_the_outbox_routes_given_in_env(pipeline_backend):
    backend = pipeline_backend(
        ["tests.unit.pipeline.testing.counting:routing"],
        env={"PIPELINE_OUTBOX__ROUTES": '{"announcement": "test.routing.announced"}'},
    )

    backend.send(counting.ROUTED, [counting_event("k", 1)])
    backend.settle()
    assert [event.data for event in backend.harness.published("test.routing.announced")] == [
        {"n": 1}
    ]


@pytest.mark.parametrize(
    ("env", "counts", "reasons"),
    [
        ({}, {}, ["rejected", "key_parked"]),  # the default: a dead letter parks its key
        ({"PIPELINE_PROCESSING__ON_DEAD_LETTER": "continue"}, {"k": 1}, ["rejected"]),
    ],
)
@pytest.mark.pipeline_backends("driver")
def test_the_driver_backend_takes_the_processing_settings_given_in_env(
    pipeline_backend, env, counts, reasons
):
    # As `pipeline process` reads them on the real stack, so both backends park (or not) alike.
    backend = pipeline_backend([SPEC], env=env)

    backend.send(counting.TOPIC, [counting_event("k", -1), counting_event("k", 1)])
    backend.settle()

    assert counts_of(backend.database) == counts
    assert [letter.reason for letter in backend.dead_letters(counting.TOPIC)] == reasons


def test_the_driver_runs_one_event_at_a_time_unless_max_in_flight_is_set():
    read = ProcessingSettings.model_validate

    assert driver_processing(read({"on_dead_letter": "continue"})).max_in_flight == 1
    assert driver_processing(read({"on_dead_letter": "continue"})).on_dead_letter == "continue"
    assert driver_processing(read({"max_in_flight": 4})).max_in_flight == 4


@pytest.mark.pipeline_backends("driver")
def test_wait_until_on_the_driver_moves_virtual_time_and_fails_naming_what(pipeline_backend):
    backend = pipeline_backend([SPEC])
    clock = backend.harness.clock
    start = clock.now

    found = backend.wait_until(
        lambda: (clock.now - start).total_seconds() >= 5, timeout_s=60, what="5 s"
    )
    assert found is True
    with pytest.raises(AssertionError, match="never: not after 3 virtual seconds"):
        backend.wait_until(lambda: False, timeout_s=3, what="never")


def test_the_plugin_offers_the_backends_there_are():
    from pipeline.testing import backends, fixtures

    assert fixtures.BACKENDS == backends.BACKENDS


def test_replay_into_driver_names_an_argument_of_the_wrong_kind(replay_into_driver, tmp_path):
    recording = write_recording(tmp_path / "r.ndjson", [counting_event("k", 0)])
    driver = ProcessorTestDriver(counting.processor)
    try:
        with pytest.raises(TypeError, match=r"topic= takes a topic name \(text\).*got 5 \(int\)"):
            replay_into_driver(driver, recording, topic=5)
        with pytest.raises(TypeError, match=r"looks like a recording's text, not a path"):
            replay_into_driver(driver, recording.read_text())
        with pytest.raises(TypeError, match=r"item 0 is a str, not a RecordedMessage"):
            replay_into_driver(driver, [recording.read_text()])
        with pytest.raises(TypeError, match=r"preserve_partitions= takes True or False"):
            replay_into_driver(driver, recording, preserve_partitions="yes")
        with pytest.raises(TypeError, match=r"the target is a ProcessorTestDriver.*got str"):
            replay_into_driver("driver", recording)
        assert driver.topics == {}  # nothing went in
    finally:
        driver.close()


@pytest.mark.pipeline_backends("driver")
def test_pipeline_backend_wants_a_list_of_processors_and_says_so(pipeline_backend):
    with pytest.raises(TypeError, match=r"processors takes a list.*got '[^']+' alone"):
        pipeline_backend(SPEC)
    with pytest.raises(TypeError, match=r"topics= takes a list.*got 'shop.points' alone"):
        pipeline_backend([SPEC], topics="shop.points")
    with pytest.raises(TypeError, match=r"processors takes a list of text.*holds 7 \(int\)"):
        DriverBackend([7])


def test_the_driver_backend_gives_a_topic_the_partitions_the_kafka_backend_creates_it_with():
    # A topic outside the catalogue: 3 partitions on the stack (DEFAULT_PARTITIONS), and so on
    # the driver, so that a key lands on the same partition on either backend.
    backend = DriverBackend([SPEC])
    try:
        [driver] = backend.harness.drivers
        assert driver.partitions_of(counting.TOPIC) == DEFAULT_PARTITIONS == 3
        assert driver.partitions_of("requests.orders") == catalogue_partitions()["requests.orders"]
        backend.send(counting.TOPIC, [counting_event(f"k{n}", n) for n in range(12)])
        used = {record.partition for log in driver.topics.values() for record in log}
        assert used == {0, 1, 2}
    finally:
        backend.close()


def test_replay_into_driver_refuses_partitions_a_topic_lacks_before_sending_any(
    replay_into_driver, tmp_path
):
    recording = write_recording(tmp_path / "r.ndjson", [counting_event("k", n) for n in range(3)])
    messages = list(read_recording(recording))
    messages[2] = msgspec.structs.replace(messages[2], partition=4)  # the driver's topic has 3
    driver = ProcessorTestDriver(counting.processor, partitions=3)
    try:
        with pytest.raises(ValueError, match=r"has 3 partitions here and the recording has "):
            replay_into_driver(driver, messages, preserve_partitions=True)
        assert driver.topics == {}  # as pipeline replay: the whole recording checked first
    finally:
        driver.close()


@pytest.mark.pipeline_backends("driver")
def test_the_driver_backend_refuses_a_topic_its_processors_do_not_read(pipeline_backend):
    backend = pipeline_backend([SPEC])

    with pytest.raises(ValueError, match=r"reads test\.counting\.inputs, .*did you mean"):
        backend.send("test.counting.inputs", [counting_event("k", 0)])
    with pytest.raises(ValueError, match=r"reads test\.counting\.inputs, "):
        backend.dead_letters("test.counting.inputs")


@pytest.mark.pipeline_backends("driver")
def test_the_driver_backend_gives_the_dead_letters_of_a_topic(pipeline_backend):
    backend = pipeline_backend([SPEC])
    backend.send(counting.TOPIC, [counting_event("k1", 1), counting_event("k2", -1)])

    [letter] = backend.wait_until(
        lambda: backend.dead_letters(counting.TOPIC), timeout_s=10, what="the dead letter"
    )

    assert (letter.key, letter.reason) == (b"k2", "rejected")
    assert letter.error_message == "k2: n must not be negative, got -1"


@pytest.mark.pipeline_backends("driver")
def test_a_failed_wait_until_on_the_driver_says_what_it_saw_and_the_dead_letters(
    pipeline_backend,
):
    backend = pipeline_backend([SPEC])
    backend.send(counting.TOPIC, [counting_event("k1", 1), counting_event("k2", -1)])

    with pytest.raises(AssertionError) as failed:
        backend.wait_until(
            lambda: counts_of(backend.database) == {"k1": 1, "k2": 1},
            timeout_s=2,
            what="the counts",
        )

    assert re.fullmatch(
        r"the counts: not after 2 virtual seconds \([0-9.]+ s real\) on the driver; the "
        r"condition last returned False; 1 dead letter pending: test\.counting\.input key k2: "
        r"rejected \(pipeline\.processing\.processor\.Reject: k2: n must not be negative, got -1\)",
        str(failed.value),
    )


def test_a_failed_wait_until_shows_a_long_last_value_shortened():
    shown = last_returned({"rows": ["x" * 40] * 100})

    assert shown.startswith("the condition last returned {'rows': ['xxxx")
    assert shown.endswith("... (4,410 characters)") and len(shown) < 340
    assert pending_letters([]) == "no dead letter pending"
