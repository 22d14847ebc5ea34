"""Ctrl-C exits 130 and SIGTERM 143, after the summary: pipeline consume and produce."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.support.stack_cli import PIPELINE, first_said

SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


def _stop(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, stderr


def _end_offset(settings, topic: str, partitions: int = 1) -> int:
    """The sum of the end offsets of the topic's ``partitions`` first partitions."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "x"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=["ctrl-c", "sigterm"])
def test_consume_follow_prints_its_summary_then_exits_with_the_signal_code(new_topic, signum, code):
    topic = new_topic(partitions=1, prefix="interrupt")
    process = subprocess.Popen(
        [PIPELINE, "consume", topic, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    first = first_said(process.stderr)  # said once it is reading
    assert first.startswith(f"following {topic}"), first

    returncode, stderr = _stop(process, signum)

    assert returncode == code, stderr
    assert stderr.splitlines()[-2:] == ["interrupted", "printed 0 messages"], stderr


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=["ctrl-c", "sigterm"])
def test_produce_from_stdin_prints_its_summary_then_exits_with_the_signal_code(
    new_topic, pipeline_settings, signum, code
):
    topic = new_topic(partitions=1, prefix="interrupt")
    process = subprocess.Popen(
        [PIPELINE, "produce", topic, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write('{"n": 1}\n')
    process.stdin.flush()  # stdin stays open: produce waits for more
    deadline = time.monotonic() + 60
    while _end_offset(pipeline_settings, topic) < 1:  # the line was sent: it is reading
        assert time.monotonic() < deadline and process.poll() is None, "the line was not sent"
        time.sleep(0.2)

    returncode, stderr = _stop(process, signum)

    assert returncode == code, stderr
    assert "interrupted after line 1; waiting for what was sent" in stderr
    assert "sent (acknowledged)" in stderr  # the summary
    summary = " ".join(stderr.split())
    assert "sent (acknowledged) │ 1 │" in summary, stderr


def test_produce_interrupted_reading_a_fifo_says_what_it_says_for_stdin(
    new_topic, pipeline_settings, tmp_path
):
    # A named pipe cannot be read again: `tail -n +2 FIFO` would wait for a new writer.
    topic = new_topic(partitions=1, prefix="interrupt")
    fifo = tmp_path / "ff2"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [PIPELINE, "produce", topic, str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with open(fifo, "w") as writer:  # opened once produce opens it to read
            writer.write('{"n": 1}\n')
            writer.flush()  # the FIFO stays open: produce waits for more
            deadline = time.monotonic() + 60
            while _end_offset(pipeline_settings, topic) < 1:
                assert time.monotonic() < deadline and process.poll() is None, "not sent"
                time.sleep(0.2)

            returncode, stderr = _stop(process, signal.SIGINT)
    finally:
        process.kill()

    assert returncode == 130, stderr
    assert "interrupted after line 1; waiting for what was sent\n" in stderr, stderr
    assert "tail -n" not in stderr


@pytest.mark.parametrize(("signum", "code"), SIGNALS, ids=["ctrl-c", "sigterm"])
def test_produce_interrupted_mid_file_counts_exactly_the_lines_it_sent(
    new_topic, pipeline_settings, tmp_path, signum, code
):
    # The interrupt used to land between reading a line and counting it: "lines read N",
    # "sent N-1", and Kafka held N (a delivery report cut short) or N-1 (line N never sent,
    # counted nowhere). Then nobody can say where to resume.
    topic = new_topic(partitions=3, prefix="interrupt")
    lines = tmp_path / "many.ndjson"
    lines.write_text("".join(f'{{"id": "k{n % 97}", "n": {n}}}\n' for n in range(2_000_000)))
    process = subprocess.Popen(
        [PIPELINE, "produce", topic, str(lines), "--key-field", "id"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while _end_offset(pipeline_settings, topic, 3) < 50_000:  # well into the file
        assert time.monotonic() < deadline and process.poll() is None, "nothing was sent"
        time.sleep(0.1)

    returncode, stderr = _stop(process, signum)

    assert returncode == code, stderr
    summary = " ".join(stderr.split())
    [read] = re.findall(r"lines read │ ([\d,]+) │", summary)
    [sent] = re.findall(r"sent \(acknowledged\) │ ([\d,]+) │", summary)
    assert f"interrupted after line {read};" in summary
    rest = int(read.replace(",", "")) + 1
    assert f"(the rest: tail -n +{rest} " in summary  # a number a shell reads, no separators
    assert read == sent, stderr
    assert int(sent.replace(",", "")) < 2_000_000, "it ended before the signal"
    assert _end_offset(pipeline_settings, topic, 3) == int(sent.replace(",", ""))


def _interrupted_while_the_reader_pauses(topic: str, pause_s: float) -> tuple[bytes, str, int]:
    """``pipeline consume`` interrupted while it waits for a reader that pauses ``pause_s``
    after the signal: what reached the reader, stderr and the exit code."""
    import threading

    process = subprocess.Popen(
        [PIPELINE, "consume", topic, "--from-beginning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.read(100)  # it is writing; the pipe then fills as nobody reads
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)  # while it waits for the reader, in the middle of a batch
    time.sleep(pause_s)
    rest: list[bytes] = []
    reader = threading.Thread(target=lambda: rest.append(process.stdout.read()))
    reader.start()
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    reader.join(timeout=60)
    return first + rest[0], stderr, process.returncode


@pytest.fixture
def big_lines(new_topic, pipeline_settings) -> str:
    """A topic of 3,000 messages that print as lines of about 500 bytes."""
    import json

    from pipeline.kafka.clients import build_producer

    topic = new_topic(partitions=1, prefix="interrupt")
    producer = build_producer(pipeline_settings.kafka)
    for n in range(3_000):
        producer.produce(topic, json.dumps({"n": n, "pad": "x" * 200}).encode(), b"k")
        producer.poll(0)
    assert producer.flush(60) == 0
    return topic


def test_consume_interrupted_while_its_reader_lags_prints_whole_lines_and_counts_them(big_lines):
    import json

    out, stderr, returncode = _interrupted_while_the_reader_pauses(big_lines, 0.7)  # < the hold

    lines = out.decode().splitlines()
    assert returncode == 130, stderr
    assert lines and lines[-1].endswith("}"), (len(lines), lines[-1][-80:], stderr)
    assert all(json.loads(line)["topic"] == big_lines for line in lines)  # none cut off
    assert f"printed {len(lines):,} messages" in stderr, (len(lines), stderr)


def test_consume_whose_reader_pauses_past_the_hold_counts_the_whole_lines_it_got(big_lines):
    import json

    out, stderr, returncode = _interrupted_while_the_reader_pauses(big_lines, 3.5)  # > 2 s

    whole = out.count(b"\n")
    assert returncode == 130, stderr
    for line in out.split(b"\n")[:whole]:
        assert json.loads(line)["topic"] == big_lines
    assert f"printed {whole:,} messages, {whole:,} of them not valid events" in stderr, (
        whole,
        stderr,
    )
