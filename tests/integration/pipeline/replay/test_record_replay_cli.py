"""``pipeline record`` and ``pipeline replay`` as subprocesses against the real broker.

What a topic holds is read back with a plain confluent-kafka consumer, partition by partition,
so the comparison does not depend on the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition

from pipeline.kafka.clients import build_consumer, build_producer
from tests.support.stack_cli import PIPELINE, run_pipeline, run_pipeline_to_a_full_disk

# Binary bytes, duplicate header names, null header values, null keys and values, text, and
# a NUL inside a header value that is otherwise text (confluent-kafka cuts text at a NUL).
AWKWARD = [
    (b"\xff\x00key", b"\x80\x81\xfe binary", [("dup", b"1"), ("nul", None), ("dup", b"\xfe")]),
    (None, b'{"order_id": "o-1", "note": "caf\xc3\xa9\\n"}', [("ce_id", b"e-1")]),
    (b"o-2", None, []),
    (None, None, [("only", None)]),
    (
        b"o-3",
        b"",
        [("empty", b""), ("ce_id", b"e-3"), ("ce_type", b"com.example.t"), ("zero", b"a\x00b")],
    ),
]


def produce(settings, topic, messages):
    """Send ``(partition or None, key, value, headers)`` tuples in order, and wait for them."""
    failures = []
    producer = build_producer(
        settings.kafka, on_delivery=lambda error, _m: error and failures.append(error)
    )
    for partition, key, value, headers in messages:
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, value, key, headers=headers, **extra)
    assert producer.flush(60) == 0 and not failures, failures


def partitions_of(settings, topic):
    """Every partition's ``(key, value, headers)`` in offset order."""
    consumer = build_consumer(settings.kafka, "unused", **{"enable.partition.eof": True})
    try:
        count = len(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in range(count)])
        held = {p: [] for p in range(count)}
        ended: set[int] = set()
        deadline = time.monotonic() + 120
        while len(ended) < count and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        ended.add(message.partition())
                    continue
                headers = [tuple(header) for header in message.headers() or []]
                held[message.partition()].append((message.key(), message.value(), headers))
        assert len(ended) == count, "the topic was not read to its end"
        return held
    finally:
        consumer.close()


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def refused(result, says):
    """One ``error:`` line, exit code 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr


def awkward_traffic(partitions):
    """AWKWARD spread over ``partitions`` explicitly (null keys cannot be placed by key)."""
    return [
        (n % partitions, key, value, headers) for n, (key, value, headers) in enumerate(AWKWARD * 4)
    ]


def test_record_then_replay_with_preserved_partitions_keeps_every_partition_exactly(
    pipeline_settings, new_topic, tmp_path
):
    source, target = new_topic(partitions=3), new_topic(partitions=3)
    produce(pipeline_settings, source, awkward_traffic(3))
    recording = tmp_path / "recording.ndjson"

    recorded = ok(
        run_pipeline("record", source, "--from-beginning", "--until-end", "--out", str(recording))
    )
    replayed = ok(
        run_pipeline("replay", str(recording), "--topic", target, "--preserve-partitions")
    )

    original = partitions_of(pipeline_settings, source)
    assert sum(map(len, original.values())) == 20
    assert partitions_of(pipeline_settings, target) == original
    lines = [json.loads(line) for line in recording.read_text().splitlines()]
    assert len(lines) == 20
    assert all(list(line)[:3] == ["topic", "partition", "offset"] for line in lines)
    assert "recorded to" in recorded.stderr and "20" in recorded.stderr
    assert "sent (acknowledged)" in replayed.stderr and "20" in replayed.stderr


def _with_stderr_gone(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``pipeline ARGS 2>&1 | head -1`` at its worst: the reader of stderr gone before the
    command's first line."""
    process = subprocess.Popen(
        [PIPELINE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ
    )
    assert process.stderr is not None
    process.stderr.close()
    out, _ = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, b"")


def test_record_and_replay_finish_their_work_when_the_reader_of_their_stderr_went_away(
    pipeline_settings, new_topic, tmp_path
):
    # Progress and summaries are for a reader: the first line written with none raised a
    # broken pipe, and the replay stopped half-way with exit code 1.
    source, target = new_topic(partitions=3), new_topic(partitions=3)
    produce(pipeline_settings, source, awkward_traffic(3))
    recording = tmp_path / "recording.ndjson"

    recorded = _with_stderr_gone(
        "record", source, "--from-beginning", "--until-end", "--out", str(recording)
    )
    replayed = _with_stderr_gone("replay", str(recording), "--topic", target)

    assert (recorded.returncode, replayed.returncode) == (0, 0)
    assert len(recording.read_text().splitlines()) == 20
    assert sum(map(len, partitions_of(pipeline_settings, target).values())) == 20


def test_replayed_by_key_every_message_lands_where_murmur2_put_it_in_the_same_order(
    pipeline_settings, new_topic, tmp_path
):
    source, target = new_topic(partitions=4), new_topic(partitions=4)
    # Placed by the producer's partitioner (murmur2 of the key), as any Kafka client does.
    produce(
        pipeline_settings,
        source,
        [
            (None, f"k{n % 13}".encode(), f"{n}".encode(), [("n", str(n).encode())])
            for n in range(200)
        ],
    )
    recording = tmp_path / "by-key.ndjson"
    ok(run_pipeline("record", source, "--from-beginning", "--until-end", "-o", str(recording)))

    ok(run_pipeline("replay", str(recording), "--topic", target))

    original = partitions_of(pipeline_settings, source)
    assert sum(1 for held in original.values() if held) > 1  # the keys are really spread
    assert partitions_of(pipeline_settings, target) == original


def test_a_kcat_json_capture_replays_with_its_binary_bytes_and_flat_headers(
    pipeline_settings, new_topic, tmp_path
):
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is needed (make test installs it: apt-get install kcat)"
    source, target = new_topic(partitions=2), new_topic(partitions=2)
    produce(pipeline_settings, source, awkward_traffic(2))
    capture = tmp_path / "capture.json"
    with capture.open("wb") as out:
        brokers = pipeline_settings.kafka.bootstrap_servers
        subprocess.run(
            [kcat, "-b", brokers, "-C", "-t", source, "-J", "-e", "-q", "-o", "beginning"],
            stdout=out,
            check=True,
            timeout=120,
        )
    assert b'"broker":' in capture.read_bytes()  # really kcat's format

    ok(run_pipeline("replay", str(capture), "--topic", target, "--preserve-partitions"))

    assert partitions_of(pipeline_settings, target) == partitions_of(pipeline_settings, source)


def test_replay_into_the_recorded_topics_with_fresh_ids_keeps_everything_else(
    pipeline_settings, new_topic, tmp_path
):
    source = new_topic(partitions=1)
    produce(pipeline_settings, source, awkward_traffic(1))
    recording = tmp_path / "ids.ndjson"
    ok(run_pipeline("record", source, "--from-beginning", "--until-end", "-o", str(recording)))

    ok(run_pipeline("replay", str(recording), "--rewrite-ids"))  # back into source itself

    held = partitions_of(pipeline_settings, source)[0]
    first, again = held[:20], held[20:]
    assert len(again) == 20

    def without_id(headers):
        return [(name, value) for name, value in headers if name != "ce_id"]

    assert [(k, v, without_id(h)) for k, v, h in again] == [
        (k, v, without_id(h)) for k, v, h in first
    ]
    old_ids = {value for _, _, h in first for name, value in h if name == "ce_id"}
    new_ids = [value for _, _, h in again for name, value in h if name == "ce_id"]
    assert len(new_ids) == 8 and len(set(new_ids)) == 8 and not old_ids & set(new_ids)


def test_replay_checks_the_whole_recording_before_sending_anything(
    pipeline_settings, new_topic, tmp_path
):
    source, small = new_topic(partitions=3), new_topic(partitions=2)
    produce(pipeline_settings, source, awkward_traffic(3))
    recording = tmp_path / "r.ndjson"
    ok(run_pipeline("record", source, "--from-beginning", "--until-end", "-o", str(recording)))
    broken = tmp_path / "broken.ndjson"
    broken.write_text(recording.read_text() + '{"topic": "x", "payload": {"base64": "%"}}\n')

    refused(
        run_pipeline("replay", str(recording), "--topic", small, "--preserve-partitions"),
        f"topic {small} has 2 partitions and the recording needs 3",
    )
    refused(run_pipeline("replay", str(broken), "--topic", small), "broken.ndjson:21:")
    refused(
        run_pipeline("replay", str(recording), "--rate", "1/s", "--speed", "2x"),
        "--rate or --speed, not both",
    )

    assert partitions_of(pipeline_settings, small) == {0: [], 1: []}


def test_record_refuses_a_missing_topic_without_writing_a_file(unique_name, tmp_path):
    out = tmp_path / "never.ndjson"
    absent = unique_name("absent")
    refused(run_pipeline("record", absent, "--until-end", "-o", str(out)), f"no topic {absent}")
    assert not out.exists()


def test_a_recording_that_cannot_be_written_is_one_line_not_a_traceback(
    pipeline_settings, new_topic
):
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, [(0, b"k", b"v" * 100, None)] * 50)

    # /dev/full opens, and refuses every write: a full disk.
    result = run_pipeline("record", topic, "--from-beginning", "--until-end", "-o", "/dev/full")

    refused(result, "cannot write /dev/full: No space left on device")


def test_a_recording_to_a_stdout_that_cannot_be_written_is_one_line_too(
    pipeline_settings, new_topic
):
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, [(0, b"k", b"v" * 100, None)] * 50)

    result = run_pipeline_to_a_full_disk(
        "record", topic, "--from-beginning", "--until-end", "-o", "-"
    )

    refused(result, "cannot write to stdout: No space left on device")


def test_a_recording_to_a_closed_stdout_is_one_line_too(pipeline_settings, new_topic):
    # `pipeline record T -o - >&-`: a traceback from asking the closed stdout its descriptor.
    topic = new_topic(partitions=1)
    produce(pipeline_settings, topic, [(0, b"k", b"v", None)] * 5)

    result = subprocess.run(
        [PIPELINE, "record", topic, "--from-beginning", "--until-end", "-o", "-"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )

    refused(result, "cannot write to stdout: it is closed")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_ends_a_recording_with_complete_lines_a_summary_and_its_exit_code(
    pipeline_settings, new_topic, tmp_path, signum, code
):
    topic = new_topic(partitions=2)
    produce(pipeline_settings, topic, awkward_traffic(2))
    out = tmp_path / "live.ndjson"
    process = subprocess.Popen(
        [PIPELINE, "record", topic, "--from-beginning", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_lines(out, 20, process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and "recorded to" in stderr
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 20


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"record ended early: {process.stderr.read() if process.stderr else ''}")
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.2)
    pytest.fail(f"{path} did not get {count} lines")


def test_a_bad_line_on_stdin_stops_the_replay_after_saying_what_was_sent_before_it(new_topic):
    topic = new_topic(partitions=1)
    lines = f'{{"topic":"{topic}","payload":"a"}}\n{{"topic":"{topic}","payload":"b"}}\nbad\n'

    result = subprocess.run(
        [PIPELINE, "replay", "-"],
        input=lines,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )

    refused(result, "stdin:3: not a recorded message")
    assert result.stderr.strip().splitlines()[-1].startswith("error:")  # the error comes last
    sent = [line for line in result.stderr.splitlines() if "sent (acknowledged)" in line]
    assert len(sent) == 1 and sent[0].split("│")[2].strip() == "2"


def _kcat_produce(settings, topic, messages):
    """Send ``(value, headers)`` with kcat, one at a time in order: kcat sends header names
    byte for byte, where confluent-kafka only takes text (``headers`` are ``name=value`` bytes)."""
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is needed (make test installs it: apt-get install kcat)"
    brokers = settings.kafka.bootstrap_servers
    for value, headers in messages:
        args: list[str | bytes] = [kcat, "-P", "-b", brokers, "-t", topic]
        for header in headers:
            args += ["-H", header]
        subprocess.run(args, input=value, check=True, timeout=60)


def test_replay_refuses_a_kcat_captured_header_name_that_is_not_utf8_before_sending_anything(
    pipeline_settings, new_topic, unique_name, tmp_path
):
    # confluent-kafka crashed the replay (SIGSEGV, exit 139) on such a name.
    source = new_topic(partitions=1, name=f"fixr_{unique_name('src')}")
    target = new_topic(partitions=2, name=f"fixr_{unique_name('dst')}")
    _kcat_produce(
        pipeline_settings,
        source,
        [(b"v1", [b"ok=1"]), (b"v2", [b"\xff\xfename=val"]), (b"v3", [])],
    )
    capture = tmp_path / "capture.json"
    with capture.open("wb") as out:
        brokers = pipeline_settings.kafka.bootstrap_servers
        subprocess.run(
            ["kcat", "-b", brokers, "-C", "-t", source, "-J", "-e", "-q", "-o", "beginning"],
            stdout=out,
            check=True,
            timeout=120,
        )
    assert b"\xff\xfename" in capture.read_bytes()

    says = "capture.json:2: the header name b'\\xff\\xfename' is not UTF-8 text"
    for processes in ("1", "2"):
        refused(run_pipeline("replay", str(capture), "-t", target, "-j", processes), says)
    refused(run_pipeline("replay", str(capture), "-t", target, "--rate", "1000/s"), says)

    assert partitions_of(pipeline_settings, target) == {0: [], 1: []}


def test_record_stops_at_a_header_name_that_is_not_utf8_keeping_the_lines_before_it(
    pipeline_settings, new_topic, unique_name, tmp_path
):
    # confluent-kafka cannot read such a name (Message.headers() raised a SystemError; after
    # enough messages for Python to specialise the call, it crashed later instead).
    topic = new_topic(partitions=1, name=f"fixr_{unique_name('rec')}")
    good = [(f"v{n}".encode(), [b"a=1"]) for n in range(200)]
    _kcat_produce(pipeline_settings, topic, [*good, (b"bad", [b"n\xe9=v"]), (b"after", [])])
    out = tmp_path / "r.ndjson"

    refused(
        run_pipeline("record", topic, "--from-beginning", "--until-end", "-o", str(out)),
        f'cannot record {topic} partition 0 offset 200: header name "n\\xe9": not UTF-8 text',
    )

    lines = [json.loads(line) for line in out.read_bytes().decode().splitlines()]
    assert [line["payload"] for line in lines] == [f"v{n}" for n in range(200)]
    assert out.read_bytes().endswith(b"\n")


def test_preserving_partitions_refuses_a_recorded_partition_below_zero_before_sending(
    pipeline_settings, new_topic, unique_name, tmp_path
):
    target = new_topic(partitions=2, name=f"fixr_{unique_name('neg')}")
    recording = tmp_path / "negative.ndjson"
    recording.write_text(
        f'{{"topic":"{target}","partition":0,"key":"good"}}\n'
        f'{{"topic":"{target}","partition":-1,"key":"bad"}}\n'
    )

    for processes in ("1", "2"):
        refused(
            run_pipeline("replay", str(recording), "--preserve-partitions", "-j", processes),
            f"the recording has partition -1 of {target}, and partitions are numbered from 0",
        )

    assert partitions_of(pipeline_settings, target) == {0: [], 1: []}


def test_the_plan_names_only_the_processes_that_have_messages_to_send(
    pipeline_settings, new_topic, tmp_path
):
    # 30 messages all recorded on partition 0, kept there: one process sends them all; the
    # plan said "2 processes" (as many as cores, at most the target's 3 partitions).
    source, target = new_topic(partitions=3), new_topic(partitions=3)
    produce(pipeline_settings, source, [(0, b"k%d" % n, b"v", None) for n in range(30)])
    recording = tmp_path / "one-partition.ndjson"
    recorded = run_pipeline(
        "record", source, "--from-beginning", "--until-end", "-o", str(recording)
    )
    assert recorded.returncode == 0, recorded.stderr

    result = run_pipeline(
        "replay", str(recording), "--topic", target, "--preserve-partitions", "-j", "2"
    )

    assert result.returncode == 0, result.stderr
    plan = next(line for line in result.stderr.splitlines() if line.startswith("replaying"))
    assert plan.endswith("as fast as possible"), plan  # no ", 2 processes" after it
    assert [value for _, value, _ in partitions_of(pipeline_settings, target)[0]] == [b"v"] * 30
