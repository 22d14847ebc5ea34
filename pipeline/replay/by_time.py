"""``--speed`` replays of a recording file in :class:`~pipeline.replay.pacing.RecordedOrder`
(its recorded partitions merged by timestamp) without holding its messages: the check notes
where each message is (byte offset, length, line number) and its partition and timestamp, and
the sending reads each line where it is (``os.pread``). A pipe's messages, kept anyway, are
taken in that order (:func:`let_go_in`)."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from pipeline.replay.pacing import RecordedOrder
from pipeline.replay.recording import (
    LinePlace,
    ProducibleMessage,
    message_for_replay,
    open_recording,
)
from pipeline.replay.routing import RecordingSurvey

__all__ = ["Places", "let_go_in", "read_in_order", "survey_places"]


class Places:
    """Where each message of a recording file is, in file order (its byte offset, length and
    line number), and the order ``--speed`` sends them in: 40 bytes a message, in arrays."""

    def __init__(self) -> None:
        self.order = RecordedOrder()
        self.offsets: array[int] = array("q")
        self.lengths: array[int] = array("q")
        self.numbers: array[int] = array("q")


def survey_places(
    lines: IO[bytes], source: str, topic: str | None
) -> tuple[RecordingSurvey, Places]:
    """:func:`survey` of a recording file's lines, and where each message is (``--speed``)."""
    found = RecordingSurvey()
    places = Places()
    add, place = found.add, places.order.add
    offsets, lengths, numbers = places.offsets, places.lengths, places.numbers
    offset = 0
    for number, raw in enumerate(lines, start=1):
        message = message_for_replay(raw, source, number)
        if message is not None:
            add(message, message.topic if topic is None else topic)
            place(message.topic, message.partition, message.timestamp_ms)
            offsets.append(offset)
            lengths.append(len(raw))
            numbers.append(number)
        offset += len(raw)
    return found, places


def read_in_order(
    path: Path, places: Places, place: LinePlace | None = None
) -> Iterator[ProducibleMessage]:
    """The messages the check found, each read where it is in the file, in ``places.order``;
    ``place``, when given, follows the line of the message given last."""
    source = str(path)
    if place is None:
        place = LinePlace(source)
    offsets, lengths, numbers = places.offsets, places.lengths, places.numbers
    with open_recording(path) as lines:
        descriptor = lines.fileno()
        for index in places.order:
            raw = os.pread(descriptor, lengths[index], offsets[index])
            place.number = numbers[index]
            message = message_for_replay(raw, source, place.number)
            if message is not None:
                yield message


def let_go_in(kept: list[ProducibleMessage], order: RecordedOrder) -> Iterator[ProducibleMessage]:
    """The messages of ``kept`` in ``order`` (indexes into it), each let go once taken."""
    slots = cast("list[ProducibleMessage | None]", kept)
    for index in order:
        message = slots[index]
        slots[index] = None
        assert message is not None
        yield message
