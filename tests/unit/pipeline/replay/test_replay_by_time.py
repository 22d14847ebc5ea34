"""replay_recording with --speed over a fake producer and clock: a recording of several
partitions written one partition after another (as `pipeline record` writes a topic with
history) is sent at its recorded moments, from a file and from a pipe."""

from __future__ import annotations

import json
import os
import threading
from types import SimpleNamespace

import pytest

from pipeline.replay import processes, replayer
from pipeline.replay.pacing import Pacing
from pipeline.replay.processes import replay_recording
from pipeline.settings import KafkaSettings

START_MS = 1_764_690_000_000


def _line(n: int) -> bytes:
    """Message ``m{n}``: stamped ``n`` times 500 ms after the first, in partition ``n % 3``."""
    return json.dumps(
        {"topic": "T", "partition": n % 3, "offset": n // 3, "ts": START_MS + 500 * n,
         "key": f"k{n}", "payload": f"m{n}", "headers": [["n", str(n)]]}
    ).encode() + b"\n"  # fmt: skip


def _recording() -> bytes:
    """Partition 2, then 0, then 1 (the first line is not the earliest), with a byte order mark
    and a blank line, which the replay skips."""
    lines = [_line(n) for p in (2, 0, 1) for n in range(p, 12, 3)]
    lines.insert(5, b"\n")
    return b"\xef\xbb\xbf" + b"".join(lines)


@pytest.fixture
def sent(monkeypatch):
    """What the replay produces, ``(value, partition, seconds after the start)``, on a fake
    clock that a wait for a due time moves on."""
    now = [100.0]
    produced = []

    class Producer:
        def produce(self, topic, value, key, partition, *_rest):
            text = value.decode() if isinstance(value, bytes) else value  # bytes: line 1's BOM
            produced.append((text, partition, round(now[0] - 100.0, 3)))

        def poll(self, timeout=0):
            now[0] += timeout
            return 0

        def flush(self, timeout=None):
            return 0

    monkeypatch.setattr(replayer, "build_producer", lambda kafka, **options: Producer())
    monkeypatch.setattr(replayer.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(processes, "build_admin", lambda kafka: None)
    three = SimpleNamespace(partitions=3)
    monkeypatch.setattr(
        processes,
        "describe_cluster_topics",
        lambda admin, names, bootstrap=None: {name: three for name in names},
    )
    return produced


def _pipe_of(data: bytes, tmp_path):
    """A named pipe that gives ``data`` once (from a thread), as a shell's ``<(...)``."""
    pipe = tmp_path / "recording.pipe"
    os.mkfifo(pipe)

    def write():
        with pipe.open("wb") as out:
            out.write(data)

    threading.Thread(target=write, daemon=True).start()
    return pipe


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_speed_sends_each_message_at_its_recorded_moment_across_partitions(sent, tmp_path, source):
    path = tmp_path / "live.ndjson"
    path.write_bytes(_recording())
    if source == "pipe":
        path = _pipe_of(path.read_bytes(), tmp_path)
    checked = []

    summary = replay_recording(
        KafkaSettings(),
        path,
        topic="T_copy",
        preserve_partitions=True,
        pacing=Pacing(speed=1),
        on_checked=lambda found, count: checked.append((found.messages, found.paced_s, count)),
    )

    assert summary.sent == 12
    assert sent == [(f"m{n}", n % 3, 0.5 * n) for n in range(12)]
    # The plan's estimate: from the earliest stamp to the latest (not from the file's first).
    assert checked == [(12, 5.5, 1)]


def test_speed_reads_the_lines_checked_where_they_are_twice_as_fast(sent, tmp_path):
    path = tmp_path / "live.ndjson"
    path.write_bytes(_recording())

    def grow(found, _count):  # after the check: a line added is not sent
        with path.open("ab") as more:
            more.write(_line(12))

    replay_recording(KafkaSettings(), path, pacing=Pacing(speed=2), on_checked=grow)

    assert [(value, at) for value, _, at in sent] == [(f"m{n}", 0.25 * n) for n in range(12)]
