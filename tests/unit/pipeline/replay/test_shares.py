"""How several replay processes share a recording: whole partitions each, by line heads."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pipeline.kafka.partitioner import partition_for
from pipeline.replay.recording import RecordedMessage, RecordingError, format_line, parse_lines
from pipeline.replay.routing import survey
from pipeline.replay.shares import LineRouter, ProcessShares, default_processes


def test_every_partition_belongs_to_one_process_and_they_spread_evenly():
    for processes, partitions, expected in ((2, 6, [3, 3]), (4, 6, [2, 2, 1, 1]), (3, 1, [1])):
        shares = ProcessShares(processes, preserve_partitions=True)
        owners = [shares.of_partition("orders", p) for p in range(partitions)]
        assert sorted(Counter(owners).values(), reverse=True) == expected
        # The same answer from another instance (another process).
        again = ProcessShares(processes, preserve_partitions=True)
        assert owners == [again.of_partition("orders", p) for p in range(partitions)]


def test_by_key_a_message_goes_to_the_owner_of_the_partition_murmur2_gives_its_key():
    shares = ProcessShares(3, preserve_partitions=False)
    for n in range(200):
        key = f"order-{n}"
        expected = shares.of_partition("copy", partition_for(key.encode(), 6))
        # Text keys (as a replay reads them) and bytes keys go to the same process.
        assert shares.of_message("copy", 0, key, n, 6) == expected
        assert shares.of_message("copy", 5, key.encode(), n, 6) == expected


def test_preserving_partitions_the_recorded_partition_decides_whatever_the_key():
    shares = ProcessShares(2, preserve_partitions=True)
    for partition in range(4):
        owner = shares.of_partition("orders", partition)
        assert shares.of_message("orders", partition, b"any", 7, None) == owner
        assert shares.of_message("orders", partition, None, 8, None) == owner


def test_a_message_without_a_key_goes_to_the_owner_of_its_recorded_partition_whatever_its_line():
    shares = ProcessShares(2, preserve_partitions=False)
    for partition in range(8):
        # Modulo the target's 6 partitions: where routing.target_partition sends it.
        owner = shares.of_partition("copy", partition % 6)
        assert {shares.of_message("copy", partition, None, line, 6) for line in range(5)} == {owner}
    # Both processes get some (a 6-partition topic's keyless messages are not all one's).
    assert {shares.of_message("copy", p, None, 0, 6) for p in range(6)} == {0, 1}


def test_lines_whose_target_topic_is_missing_are_spread_by_line():
    shares = ProcessShares(2, preserve_partitions=False)
    assert [shares.of_message("gone", 0, None, line, None) for line in range(4)] == [0, 1, 0, 1]


def test_processes_default_to_the_cores_and_no_more_than_the_partitions():
    assert default_processes(6, cores=2) == 2
    assert default_processes(1, cores=8) == 1
    assert default_processes(0, cores=2) == 1
    with pytest.raises(ValueError, match="at least one process"):
        ProcessShares(0, preserve_partitions=False)


LINES = [
    format_line(RecordedMessage("orders", 2, 0, b"order-1", b"v", (("a", None),), 1_000)),
    format_line(RecordedMessage("orders", 0, 1, None, b"v", (), 900)),
    "",
    # kcat's flat headers; then a key that is not UTF-8 (base64), which is read whole.
    json.dumps(
        {"topic": "payments", "partition": 4, "offset": 2, "key": "p-1", "headers": []}
    ).replace('"headers": []', '"headers": ["h", "v"]'),
    format_line(RecordedMessage("orders", 1, 3, b"\xff-key", b"\x00", (), 1_500)),
]


def raw_lines(lines=LINES):
    return [line.encode("utf-8") + b"\n" for line in lines]


def test_the_router_places_each_line_like_its_message_and_surveys_the_recording():
    shares = ProcessShares(3, preserve_partitions=False)
    router = LineRouter(
        shares,
        topic=None,
        preserve_partitions=False,
        partitions_of={"orders": 6, "payments": 2}.get,
        source="r",
    )
    owners = [router.owner(raw, n) for n, raw in enumerate(raw_lines(), start=1)]
    expected = [
        shares.of_partition("orders", partition_for(b"order-1", 6)),
        2 % 3,  # no key: by its line number
        None,  # blank
        shares.of_partition("payments", partition_for(b"p-1", 2)),
        shares.of_partition("orders", partition_for(b"\xff-key", 6)),
    ]
    assert owners == expected
    whole = survey(parse_lines(raw_lines(), source="r"))
    assert router.survey == whole
    assert whole.partitions_needed == {"orders": 3, "payments": 5}


def test_the_router_sends_every_line_to_one_topic_when_given_and_asks_its_partitions_once():
    asked = []

    def partitions_of(topic):
        asked.append(topic)
        return 4

    shares = ProcessShares(2, preserve_partitions=False)
    router = LineRouter(
        shares, topic="copy", preserve_partitions=False, partitions_of=partitions_of, source="r"
    )
    for n, raw in enumerate(raw_lines(), start=1):
        router.owner(raw, n)
    assert asked == ["copy"]
    assert router.survey.partitions_needed == {"copy": 5}


def test_a_line_that_is_not_a_message_is_refused_naming_it():
    router = LineRouter(
        ProcessShares(2, preserve_partitions=True),
        topic=None,
        preserve_partitions=True,
        partitions_of=lambda topic: None,
        source="bad.ndjson",
    )
    with pytest.raises(RecordingError, match=r"^bad\.ndjson:7: not a recorded message"):
        router.owner(b'{"topic": "t", "partition": "two"}\n', 7)


def test_the_router_surveys_a_partition_below_zero_as_survey_does():
    lines = [
        b'{"topic":"t","partition":1,"key":"a"}\n',
        b'{"topic":"t","partition":-1,"key":"b"}\n',
    ]
    router = LineRouter(
        ProcessShares(2, preserve_partitions=True),
        topic=None,
        preserve_partitions=True,
        partitions_of=lambda topic: None,
        source="r",
    )
    for n, raw in enumerate(lines, start=1):
        router.owner(raw, n)
    assert router.survey == survey(parse_lines(lines, source="r"))
    assert router.survey.below_zero == ("t", -1)


def test_a_header_name_that_is_not_utf8_is_refused_when_the_line_is_routed():
    # The check of a replay with several processes: before anything is sent (a process that
    # sent it would crash in confluent-kafka).
    router = LineRouter(
        ProcessShares(2, preserve_partitions=False),
        topic=None,
        preserve_partitions=False,
        partitions_of=lambda topic: 2,
        source="kcat.json",
    )
    with pytest.raises(RecordingError, match=r"^kcat\.json:4: the header name b'\\xff' is not"):
        router.owner(b'{"topic":"t","headers":["\xff","v"],"key":"k"}\n', 4)
