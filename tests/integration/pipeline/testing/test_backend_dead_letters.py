"""One test body reads dead letters on either backend: ``backend.dead_letters(topic)`` gives the
same :class:`~pipeline.dead_letters.letter.DeadLetter` on the driver and, read back from
``<topic>.dlq``, on the real Kafka; both refuse a topic their processors do not read, and a
failed ``wait_until`` says what the condition last returned.

One test, so that one Kafka backend at a time uses the counting processor's consumer group
(two at once, under ``pytest -n``, would share its partitions: docs/testing.md section 6)."""

from __future__ import annotations

import pytest

from pipeline.envelope import Event
from tests.unit.pipeline.testing import counting

SPEC = "tests.unit.pipeline.testing.counting:processor"


def counting_event(key: str, n: int) -> Event:
    return Event(source="/tests", type="Count", partitionkey=key, data={"n": n})


@pytest.mark.pipeline_backends("driver", "kafka")
def test_either_backend_gives_the_same_dead_letters_and_refuses_a_topic_nobody_reads(
    pipeline_backend,
):
    backend = pipeline_backend([SPEC], topics=[counting.OUTPUT])
    with pytest.raises(ValueError, match=r"reads test\.counting\.inputs, .*did you mean"):
        backend.send("test.counting.inputs", [counting_event("k", 0)])
    with pytest.raises(ValueError, match=r"reads test\.counting\.inputs, "):
        backend.dead_letters("test.counting.inputs")

    backend.send(counting.TOPIC, [counting_event("k1", -1), counting_event("k2", -2)])
    letters = backend.wait_until(
        lambda: (
            len(backend.dead_letters(counting.TOPIC)) == 2 and backend.dead_letters(counting.TOPIC)
        ),
        timeout_s=60,
        what="two dead letters",
    )

    # Only this test's: on Kafka the topic's earlier letters (other runs') are left out.
    assert sorted((letter.key, letter.reason, letter.error_message) for letter in letters) == [
        (b"k1", "rejected", "k1: n must not be negative, got -1"),
        (b"k2", "rejected", "k2: n must not be negative, got -2"),
    ]
    assert {(letter.original_topic, letter.consumer_group) for letter in letters} == {
        (counting.TOPIC, counting.processor.name)
    }
    assert {letter.event_type for letter in letters} == {"Count"}
    with pytest.raises(
        AssertionError,
        match=r"^nothing: not (after 1 virtual seconds .* on the driver|within 1 s); the "
        r"condition last returned \[\]",
    ):
        backend.wait_until(lambda: [], timeout_s=1, what="nothing")
