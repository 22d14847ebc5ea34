"""replay_recording with several processes, against the real broker: every partition as
recorded, a bad line or a failing process stopping it in one line.

What a topic holds is read back with a plain consumer (partitions_of), not the code under test.
"""

from __future__ import annotations

import os
import re
import signal
import threading

import pytest

from pipeline.replay import processes, worker
from pipeline.replay.processes import replay_recording
from pipeline.replay.recording import RecordingError, RecordingWriter, parse_lines
from pipeline.replay.replayer import ReplayInterrupted
from pipeline.replay.routing import ReplayError
from tests.integration.pipeline.replay.test_record_replay_cli import (
    awkward_traffic,
    partitions_of,
    produce,
)
from tests.support.stack_cli import run_pipeline


def record(settings, topic, path):
    from pipeline.replay.bounds import Stop
    from pipeline.replay.recorder import record_topics

    with path.open("wb") as out:
        writer = RecordingWriter(out)
        for message in record_topics(settings.kafka, [topic], start="beginning", stop=Stop(True)):
            writer.write(message)
    return path


def test_by_key_three_processes_give_back_every_partition_keyless_messages_in_order_too(
    pipeline_settings, new_topic, tmp_path
):
    # Keyed messages where murmur2 puts them, and runs of keyless ones in each partition, the
    # order a replay by key must keep (two processes once sent a partition's keyless messages,
    # each sending some of them, out of order).
    source, target = new_topic(partitions=4), new_topic(partitions=4)
    traffic = []
    for n in range(400):
        if n % 3:
            traffic.append((n % 4, None, f"keyless-{n}".encode(), [("n", str(n).encode())]))
        else:
            traffic.append((None, f"key-{n % 17}".encode(), f"keyed-{n}".encode(), []))
    produce(pipeline_settings, source, traffic)
    recording = record(pipeline_settings, source, tmp_path / "r.ndjson")

    summary = replay_recording(pipeline_settings.kafka, recording, processes=3, topic=target)

    assert summary.sent == 400
    assert partitions_of(pipeline_settings, target) == partitions_of(pipeline_settings, source)


def test_three_processes_keep_every_partition_exactly_binary_headers_and_nulls_included(
    pipeline_settings, new_topic, tmp_path
):
    source, target = new_topic(partitions=4), new_topic(partitions=4)
    produce(pipeline_settings, source, awkward_traffic(4) * 5)  # 100 messages
    recording = record(pipeline_settings, source, tmp_path / "r.ndjson")
    checked = []

    summary = replay_recording(
        pipeline_settings.kafka,
        recording,
        processes=3,
        topic=target,
        preserve_partitions=True,
        on_checked=lambda found, processes: checked.append((found.messages, processes)),
    )

    assert summary.sent == 100 and summary.per_topic == {target: 100}
    assert checked == [(100, 3)]
    assert partitions_of(pipeline_settings, target) == partitions_of(pipeline_settings, source)


@pytest.mark.parametrize("keep_bytes", [processes.KEEP_BYTES, 3_000], ids=["kept", "read-again"])
def test_by_key_two_processes_put_every_message_where_murmur2_put_it_in_the_same_order(
    pipeline_settings, new_topic, tmp_path, monkeypatch, keep_bytes
):
    # With little room, the processes keep a few batches and the parent sends them the rest
    # again (small batches: some kept, some not).
    monkeypatch.setattr(processes, "KEEP_BYTES", keep_bytes)
    monkeypatch.setattr(processes, "_BATCH_BYTES", 1_000)
    source, target = new_topic(partitions=5), new_topic(partitions=5)
    produce(
        pipeline_settings,
        source,
        [
            (None, f"k{n % 17}".encode(), f"{n}".encode(), [("n", str(n).encode())])
            for n in range(400)
        ],
    )
    recording = record(pipeline_settings, source, tmp_path / "by-key.ndjson")

    summary = replay_recording(pipeline_settings.kafka, recording, processes=2, topic=target)

    assert summary.sent == 400
    original = partitions_of(pipeline_settings, source)
    assert sum(1 for held in original.values() if held) > 2
    assert partitions_of(pipeline_settings, target) == original


def _pipe_of(path, tmp_path):
    """A named pipe that gives ``path``'s bytes once (from a thread), as a shell's ``<(...)``."""
    pipe = tmp_path / "recording.pipe"
    os.mkfifo(pipe)

    def write():
        with pipe.open("wb") as out:
            out.write(path.read_bytes())

    threading.Thread(target=write, daemon=True).start()
    return pipe


def test_a_pipe_is_read_once_and_replayed_whole_by_one_process(
    pipeline_settings, new_topic, tmp_path
):
    source, target = new_topic(partitions=3), new_topic(partitions=3)
    messages = awkward_traffic(3) * 4
    produce(pipeline_settings, source, messages)
    recording = record(pipeline_settings, source, tmp_path / "r.ndjson")
    checked = []

    summary = replay_recording(
        pipeline_settings.kafka,
        _pipe_of(recording, tmp_path),
        topic=target,
        preserve_partitions=True,
        on_checked=lambda found, processes: checked.append((found.messages, processes)),
    )

    assert summary.sent == len(messages)
    assert checked == [(len(messages), 1)]
    assert partitions_of(pipeline_settings, target) == partitions_of(pipeline_settings, source)


def test_several_processes_for_a_pipe_are_refused_in_one_line(pipeline_settings, tmp_path):
    pipe = tmp_path / "recording.pipe"
    os.mkfifo(pipe)

    with pytest.raises(ReplayError, match=re.escape("not a regular file (a pipe?): it is")):
        replay_recording(pipeline_settings.kafka, pipe, processes=2, topic="anything")


def test_a_bad_line_any_process_owns_stops_the_replay_before_anything_is_sent(
    pipeline_settings, new_topic, tmp_path
):
    source, target = new_topic(partitions=3), new_topic(partitions=3)
    produce(pipeline_settings, source, awkward_traffic(3))
    recording = record(pipeline_settings, source, tmp_path / "r.ndjson")
    lines = recording.read_bytes().splitlines(keepends=True)
    # Line 12's head reads (topic, no key) but its payload is not base64: only its owner sees.
    lines.insert(11, b'{"topic": "x", "payload": {"base64": "%"}}\n')
    lines.append(b"not json\n")
    broken = tmp_path / "broken.ndjson"
    broken.write_bytes(b"".join(lines))

    with pytest.raises(RecordingError, match=r"broken\.ndjson:12: not a recorded message"):
        replay_recording(pipeline_settings.kafka, broken, processes=2, topic=target)

    assert partitions_of(pipeline_settings, target) == {0: [], 1: [], 2: []}
    assert len(list(parse_lines(lines[:11], source="ok"))) == 11  # the rest was fine


def test_a_process_that_fails_stops_the_replay_with_one_line_saying_which_and_why(
    pipeline_settings, new_topic, tmp_path, monkeypatch
):
    source, target = new_topic(partitions=2), new_topic(partitions=2)
    produce(pipeline_settings, source, awkward_traffic(2))
    recording = record(pipeline_settings, source, tmp_path / "r.ndjson")

    def broken(kafka, messages, **options):
        raise RuntimeError("no more memory")

    monkeypatch.setattr(worker, "replay_into_kafka", broken)  # the forked processes inherit it

    with pytest.raises(ReplayError, match=r"^replay process [01]: RuntimeError: no more memory$"):
        replay_recording(pipeline_settings.kafka, recording, processes=2, topic=target)


def test_the_command_refuses_several_processes_for_stdin_or_a_paced_replay(tmp_path):
    recording = tmp_path / "r.ndjson"
    recording.write_text("")
    for args, says in (
        (["-", "--processes", "2"], "stdin"),
        ([str(recording), "--processes", "2", "--rate", "10/s"], "--rate and --speed"),
    ):
        result = run_pipeline("replay", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and says in errors[0], result.stderr


def test_ctrl_c_while_sending_stops_every_process_and_the_summary_counts_what_arrived(
    pipeline_settings, new_topic, tmp_path
):
    source, target = new_topic(partitions=4), new_topic(partitions=4)
    produce(
        pipeline_settings,
        source,
        [
            (None, f"k{n % 50}".encode(), b"x" * 100, [("n", str(n).encode())])
            for n in range(20_000)
        ],
    )
    recording = record(pipeline_settings, source, tmp_path / "r.ndjson")

    def ctrl_c(_count):
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(ReplayInterrupted) as interrupted:
        replay_recording(
            pipeline_settings.kafka, recording, processes=2, topic=target, on_progress=ctrl_c
        )

    assert type(interrupted.value.interrupt) is KeyboardInterrupt
    arrived = sum(map(len, partitions_of(pipeline_settings, target).values()))
    assert interrupted.value.summary.sent == arrived
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.mark.parametrize("processes_count", [1, 2], ids=["one-process", "two-read-again"])
def test_lines_added_to_the_file_after_the_check_are_not_sent(
    pipeline_settings, new_topic, unique_name, tmp_path, monkeypatch, processes_count
):
    # With two processes and little room, the parent reads the file again past what they kept.
    monkeypatch.setattr(processes, "KEEP_BYTES", 1_000)
    monkeypatch.setattr(processes, "_BATCH_BYTES", 500)
    target = new_topic(partitions=2, name=f"fixr_{unique_name('grow')}")
    recording = tmp_path / "growing.ndjson"
    line = '{{"topic":"{0}","key":"k{1}","payload":"{1}"}}\n'
    recording.write_text("".join(line.format(target, n) for n in range(200)))

    def grow(found, _processes):  # after the check, before the sending
        assert found.messages == 200
        with recording.open("a") as more:
            more.write("".join(line.format(target, n) for n in range(200, 250)) + "not json\n")

    summary = replay_recording(
        pipeline_settings.kafka,
        recording,
        processes=processes_count,
        on_checked=grow,
    )

    assert summary.sent == 200
    held = partitions_of(pipeline_settings, target)
    assert sorted(int(value) for partition in held.values() for _, value, _ in partition) == list(
        range(200)
    )
