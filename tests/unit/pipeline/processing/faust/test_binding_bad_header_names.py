"""The engine and a record with a header name that is not UTF-8 (as aiokafka reads one through
tolerant_batches.py: surrogate-escaped): the envelope refuses it, so it is dead-lettered as
``undecodable``, once, and the records around it handled as usual, on both attempt paths."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import Engine

from pipeline.dead_letters.letter import DeadLetter, read_dead_letter
from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.envelope.consumed_headers import header_name_bytes
from pipeline.processing import Processor, UnitOfWork
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.offsets import CommitPosition
from pipeline.processing.records import Record
from pipeline.settings import ProcessingSettings

TOPIC = "fxh.deposits"
BAD_NAME = "x-bad\udcff\udcfe"  # b"x-bad\xff\xfe", surrogate-escaped


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, KafkaMessage]] = []

    async def send(self, topic: str, message: KafkaMessage) -> None:
        self.sent.append((topic, message))


def record(offset: int, key: str, *extra: tuple[str, bytes]) -> Record:
    message = encode(Event(source="/tests", type="Deposit", partitionkey=key, data={"n": offset}))
    return Record(TOPIC, 0, offset, message.key, message.value, [*message.headers, *extra])


def processor_handling(handled: list[int], kind: str) -> Processor:
    processor = Processor("fxh-bad-header-names")
    if kind == "async":

        @processor.handler(TOPIC)
        async def handle_async(event: Event, unit: UnitOfWork) -> None:
            handled.append(event.data["n"])

    else:

        @processor.handler(TOPIC)
        def handle(event: Event, unit: UnitOfWork) -> None:
            handled.append(event.data["n"])

    return processor


def test_a_header_name_that_is_not_utf8_is_found_as_its_bytes() -> None:
    assert header_name_bytes("café") is None
    assert header_name_bytes(BAD_NAME) == b"x-bad\xff\xfe"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_record_is_dead_lettered_as_undecodable_once_and_the_others_handled(
    kind: str, database: Engine
) -> None:
    handled: list[int] = []
    sink = Sink()
    commits: list[list[CommitPosition]] = []
    engine = ProcessingEngine(
        processor_handling(handled, kind),
        database=database,
        dead_letters=sink,
        on_commit=commits.append,
        settings=ProcessingSettings(),
    )
    bad = record(1, "poison", (BAD_NAME, b"1"))

    async def main() -> None:
        engine.assigned([(TOPIC, 0)])
        for each in (record(0, "g"), bad, record(2, "g")):
            await engine.submit(each)
        await engine.wait_idle()
        # Delivered again, as to the next owner after a crash before the commit.
        await engine.drain([(TOPIC, 0)])
        engine.assigned([(TOPIC, 0)])
        await engine.submit(bad)
        await engine.wait_idle()
        await engine.close()

    asyncio.run(main())

    assert handled == [0, 2]
    assert [topic for topic, _ in sink.sent] == [f"{TOPIC}.dlq"]
    message = sink.sent[0][1]
    letter = read_dead_letter(
        f"{TOPIC}.dlq", 0, 0, message.key, message.value, list(message.headers or [])
    )
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.error_type, letter.original_offset) == (
        "undecodable",
        "pipeline.envelope.EnvelopeError",
        1,
    )
    assert letter.error_message == "header name is not UTF-8: b'x-bad\\xff\\xfe'"
    assert ("x-bad\\xff\\xfe", b"1") in letter.headers
    assert CommitPosition(TOPIC, 0, 3) in [position for plan in commits for position in plan]
