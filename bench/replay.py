"""Record and replay throughput against kcat, reading and writing the same topics in the same run.

A source topic (6 partitions) is filled once with ``--records`` CloudEvents of ~``--record-size``
bytes (keyed by 1,000 entity ids, 7 headers each). Then, in interleaved rounds:

Recording, every message of the source to a file (messages/s from start to the file closed):

1. ``kcat -C -J -e``: kcat's JSON envelope, to a file (the baseline);
2. ``record_topics`` + ``RecordingWriter``: what ``pipeline record`` runs, in this process;
3. ``pipeline record --from-beginning --until-end``: the command, start-up included.

Replaying the recording into a fresh 6-partition topic, to acknowledged messages:

1. ``kcat -P -K -H``: kcat producing the same keys and values (one ``key<TAB>value`` line
   each) with the same producer settings as the replay (idempotent, acks=all, lz4,
   linger.ms=20). kcat cannot read its own JSON back nor send per-message headers, so it
   sends the first message's 7 headers (``-H``) with every message: the same amount of header
   bytes (the baseline);
2. ``kcat -P -K`` without headers, for information: what headers cost kcat;
3. a bare confluent-kafka ``produce`` loop over messages decoded (and a producer connected)
   before the clock starts, with the replay's producer settings: the floor of one Python
   process, for information;
4. ``replay_into_kafka(read_recording_for_replay(...))``: one process, parsing included, no
   check of the whole file first (for information: what one Python process does);
5. ``replay_recording(..., processes=N)``: what ``pipeline replay FILE`` runs, in this process
   and its N forked ones: the whole file checked first, then sent by N processes each owning
   whole partitions (N: the default, as many as cores and at most the partitions);
6. ``pipeline replay --topic``: the command, start-up and its check of the whole file
   included, with its default number of processes;
7. ``pipeline replay --topic --processes 1``: the command in one process, for information.

Every run is verified: the file holds every message, the target topic's partitions add up to
the count. Each figure is the median of ``--repeat`` interleaved rounds; the ratios are against
kcat (goal: 0.5x or better), each the median of the per-round ratios (a round's rate over kcat's
rate in the same round), not the ratio of the medians. Beside each rate, the CPU time each
contender spent per message (its processes and threads, kcat's included; the broker's not),
median of the rounds.

Run: ``.venv/bin/python bench/replay.py [--records 200000] [--repeat 3]``. Needs kcat
(``apt-get install kcat``) and the stack's Kafka (started when it does not answer). Results go
to bench/results/replay.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench.suite importable
    sys.path.insert(0, str(ROOT))

from bench.suite.rows import paired_ratio  # noqa: E402
from pipeline.envelope import Event, encode  # noqa: E402
from pipeline.kafka.clients import build_admin, build_consumer, build_producer  # noqa: E402
from pipeline.replay.bounds import Stop  # noqa: E402
from pipeline.replay.processes import replay_recording  # noqa: E402
from pipeline.replay.recorder import record_topics  # noqa: E402
from pipeline.replay.recording import (  # noqa: E402
    RecordingWriter,
    read_recording,
    read_recording_for_replay,
)
from pipeline.replay.replayer import PRODUCER_SETTINGS as REPLAY_PRODUCER  # noqa: E402
from pipeline.replay.replayer import replay_into_kafka  # noqa: E402
from pipeline.replay.shares import default_processes  # noqa: E402
from pipeline.settings import PipelineSettings  # noqa: E402
from pipeline.stack.manager import StackManager  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PIPELINE = str(Path(sys.executable).parent / "pipeline")
PARTITIONS = 6
KEYS = 1_000
#: The replay's producer settings (pipeline/replay/replayer.py), given to kcat too.
KCAT_PRODUCER = [
    "-X", "enable.idempotence=true",
    "-X", "acks=all",
    "-X", "compression.type=lz4",
    "-X", "linger.ms=20",
    "-X", "partitioner=murmur2_random",
]  # fmt: skip


# --- topics ---------------------------------------------------------------------------------


def _topic(settings: PipelineSettings, name: str) -> str:
    topic = f"bench.replay-{name}-{uuid.uuid4().hex[:8]}"
    admin = build_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    return topic


def _delete(settings: PipelineSettings, topics: list[str]) -> None:
    if topics:
        admin = build_admin(settings.kafka)
        for future in admin.delete_topics(topics, operation_timeout=60).values():
            future.result(60)


def _count(settings: PipelineSettings, topic: str) -> int:
    consumer = build_consumer(settings.kafka, "bench-replay-count")
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def _fill(settings: PipelineSettings, topic: str, records: int, record_size: int) -> None:
    filler = "x" * max(0, record_size - 40)
    producer = build_producer(settings.kafka, **{"linger.ms": 20, "compression.type": "lz4"})
    for n in range(records):
        message = encode(
            Event(
                source="/bench",
                type="com.example.bench",
                partitionkey=f"order-{n % KEYS}",
                data={"n": n, "pad": filler},
            )
        )
        while True:
            try:
                producer.produce(topic, message.value, message.key, headers=message.headers)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0


# --- recording --------------------------------------------------------------------------------


def _lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for _ in lines)


def record_kcat(settings: PipelineSettings, source: str, out: Path) -> float:
    brokers = settings.kafka.bootstrap_servers
    began = time.perf_counter()
    with out.open("wb") as file:
        subprocess.run(
            ["kcat", "-b", brokers, "-C", "-t", source, "-J", "-e", "-q", "-o", "beginning"],
            stdout=file,
            check=True,
        )
    return time.perf_counter() - began


def record_library(settings: PipelineSettings, source: str, out: Path) -> float:
    began = time.perf_counter()
    with out.open("wb") as file:
        writer = RecordingWriter(file)
        for message in record_topics(
            settings.kafka, [source], start="beginning", stop=Stop(at_end=True)
        ):
            writer.write(message)
    return time.perf_counter() - began


def record_cli(settings: PipelineSettings, source: str, out: Path) -> float:
    began = time.perf_counter()
    subprocess.run(
        [PIPELINE, "record", source, "--from-beginning", "--until-end", "-o", str(out)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


# --- replaying --------------------------------------------------------------------------------


def kcat_input(recording: Path, out: Path) -> list[str]:
    """``key<TAB>value`` lines of the recording's messages, for ``kcat -P -K '\\t'``; and the
    ``-H name=value`` options of the first message's headers."""
    options: list[str] = []
    with out.open("wb") as file:
        for message in read_recording(recording):
            if not options:
                for name, value in message.headers:
                    options += ["-H", f"{name}={(value or b'').decode()}"]
            assert message.key is not None and message.value is not None
            assert b"\t" not in message.key + message.value
            assert b"\n" not in message.key + message.value
            file.write(message.key + b"\t" + message.value + b"\n")
    return options


def replay_kcat(settings: PipelineSettings, tsv: Path, target: str, headers: list[str]) -> float:
    brokers = settings.kafka.bootstrap_servers
    began = time.perf_counter()
    with tsv.open("rb") as lines:
        subprocess.run(
            ["kcat", "-b", brokers, "-P", "-t", target, "-K", "\t", *KCAT_PRODUCER, *headers],
            stdin=lines,
            check=True,
        )
    return time.perf_counter() - began


def replay_library(settings: PipelineSettings, recording: Path, target: str) -> float:
    began = time.perf_counter()
    replay_into_kafka(settings.kafka, read_recording_for_replay(recording), topic=target)
    return time.perf_counter() - began


def replay_processes(
    settings: PipelineSettings, recording: Path, target: str, processes: int
) -> float:
    began = time.perf_counter()
    summary = replay_recording(settings.kafka, recording, topic=target, processes=processes)
    seconds = time.perf_counter() - began
    assert summary.sent == _lines(recording)
    return seconds


def replay_floor(
    settings: PipelineSettings, messages: list[tuple[str, str, list[Any]]], target: str
) -> float:
    """The least one Python process can do: confluent-kafka's ``produce`` for messages already
    decoded, by a producer already connected (both before the clock starts), with the
    replay's producer settings, then a flush."""
    producer = build_producer(settings.kafka, **REPLAY_PRODUCER)
    producer.list_topics(target, timeout=15)  # connected before the clock starts
    time.sleep(0.6)  # and its idempotent producer id asked again (librdkafka: after 500 ms)
    produce, poll = producer.produce, producer.poll
    began = time.perf_counter()
    for n, (key, value, headers) in enumerate(messages):
        while True:
            try:
                # Positional, as the replay calls it (a keyword costs confluent-kafka's parser
                # a look-up of every name).
                produce(target, value, key, -1, None, None, 0, headers)
                break
            except BufferError:
                poll(0.05)
        if not n % 500:
            poll(0)
    assert producer.flush(120) == 0
    return time.perf_counter() - began


def decoded(recording: Path) -> list[tuple[str, str, list[Any]]]:
    """The recording's keys, values and headers as text, for :func:`replay_floor`."""
    out = []
    for message in read_recording_for_replay(recording):
        assert isinstance(message.key, str) and isinstance(message.value, str)
        out.append((message.key, message.value, list(message.headers or ())))
    return out


def replay_cli(settings: PipelineSettings, recording: Path, target: str, *options: str) -> float:
    began = time.perf_counter()
    subprocess.run(
        [PIPELINE, "replay", str(recording), "--topic", target, *options],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def _cpu_s() -> float:
    """CPU time of this process (all its threads) and of its children waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- main -------------------------------------------------------------------------------------


def ratios_to(seconds: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Each contender's ratio to ``baseline``: the median of the per-round ratios (rounds are
    interleaved: round i of each ran beside the others' round i; with the same records each
    round, a round's ratio of rates is the baseline's seconds over the contender's), or of
    the medians where the rounds do not pair up."""
    ratios: dict[str, float] = {}
    for name, own in seconds.items():
        theirs = seconds[baseline]
        paired = paired_ratio([1 / s for s in own], [1 / s for s in theirs])
        ratios[name] = (
            statistics.median(theirs) / statistics.median(own) if paired is None else paired
        )
    return ratios


def _table(
    console: Console,
    title: str,
    rates: dict[str, float],
    ratios: dict[str, float],
    cpu_us: dict[str, float],
    baseline: str,
) -> None:
    table = Table(title=title)
    for column in ("tool", "messages/s", f"ratio vs {baseline}", "CPU µs/message"):
        table.add_column(column, justify="left" if column == "tool" else "right")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.0f}", f"{ratios[name]:.2f}x", f"{cpu_us[name]:.1f}")
    console.print(table)


def _markdown(
    title: str,
    rates: dict[str, float],
    ratios: dict[str, float],
    cpu_us: dict[str, float],
    baseline: str,
) -> list[str]:
    return [
        title,
        "",
        f"| tool | messages/s | ratio vs {baseline} | CPU µs/message |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {r:,.0f} | {ratios[n]:.2f}x | {cpu_us[n]:.1f} |" for n, r in rates.items()),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--record-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; median kept")
    parser.add_argument(
        "--no-one-process-command",
        action="store_true",
        help="leave out 7. (the command in one process, for information; the suite's quick "
        "profile)",
    )
    args = parser.parse_args()
    if shutil.which("kcat") is None:
        raise SystemExit("kcat is needed for the baseline: apt-get install kcat")
    settings = PipelineSettings()
    StackManager(settings).up(only={"kafka"})
    console = Console()
    records = args.records
    source = _topic(settings, "source")
    topics = [source]
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        with console.status(f"filling {source} with {records:,} events"):
            _fill(settings, source, records, args.record_size)
        assert _count(settings, source) == records
        recording = work / "recording.ndjson"
        record_library(settings, source, recording)
        tsv = work / "kcat-input.tsv"
        headers = kcat_input(recording, tsv)
        in_memory = decoded(recording)
        processes = default_processes(PARTITIONS)  # what the command chooses by default

        recorders: dict[str, Callable[[Path], float]] = {
            "kcat -C -J": lambda out: record_kcat(settings, source, out),
            "record_topics (library)": lambda out: record_library(settings, source, out),
            "pipeline record (command)": lambda out: record_cli(settings, source, out),
        }
        replayers: dict[str, Callable[[str], float]] = {
            "kcat -P": lambda target: replay_kcat(settings, tsv, target, headers),
            "kcat -P, no headers": lambda target: replay_kcat(settings, tsv, target, []),
            "produce() loop, pre-decoded (Python's floor)": lambda target: replay_floor(
                settings, in_memory, target
            ),
            "replay_into_kafka, one process, no check first (library)": (
                lambda target: replay_library(settings, recording, target)
            ),
            f"replay_recording, {processes} processes (library)": lambda target: replay_processes(
                settings, recording, target, processes
            ),
            f"pipeline replay, {processes} processes (command)": lambda target: replay_cli(
                settings, recording, target
            ),
            "pipeline replay --processes 1, for information": lambda target: replay_cli(
                settings, recording, target, "--processes", "1"
            ),
        }
        if args.no_one_process_command:
            del replayers["pipeline replay --processes 1, for information"]
        record_s: dict[str, list[float]] = {name: [] for name in recorders}
        replay_s: dict[str, list[float]] = {name: [] for name in replayers}
        record_cpu: dict[str, list[float]] = {name: [] for name in recorders}
        replay_cpu: dict[str, list[float]] = {name: [] for name in replayers}
        # Every round's targets made, and given a moment, before any contender runs: none
        # pays for a new partition's first moments (leader elected, log opened).
        round_targets = [
            {name: _topic(settings, "target") for name in replayers} for _ in range(args.repeat)
        ]
        topics += [target for targets in round_targets for target in targets.values()]
        time.sleep(2)
        # Interleaved rounds, so a noisy moment on a shared machine hits every contender alike.
        for round_number, targets in enumerate(round_targets, start=1):
            for name, record in recorders.items():
                out = work / "round.out"
                with console.status(f"round {round_number}/{args.repeat}: record, {name}"):
                    cpu = _cpu_s()
                    seconds = record(out)
                    record_cpu[name].append((_cpu_s() - cpu) / records * 1e6)
                assert _lines(out) == records, f"{name} wrote {_lines(out):,} lines"
                record_s[name].append(seconds)
                console.print(f"round {round_number}: record, {name}: {records / seconds:,.0f}/s")
            for name, replay in replayers.items():
                target = targets[name]
                with console.status(f"round {round_number}/{args.repeat}: replay, {name}"):
                    cpu = _cpu_s()
                    seconds = replay(target)
                    replay_cpu[name].append((_cpu_s() - cpu) / records * 1e6)
                assert _count(settings, target) == records, f"{name}: not every message arrived"
                replay_s[name].append(seconds)
                console.print(f"round {round_number}: replay, {name}: {records / seconds:,.0f}/s")
    finally:
        _delete(settings, topics)
        shutil.rmtree(work, ignore_errors=True)

    recording_rates = {n: records / statistics.median(s) for n, s in record_s.items()}
    replay_rates = {n: records / statistics.median(s) for n, s in replay_s.items()}
    record_us = {n: statistics.median(c) for n, c in record_cpu.items()}
    replay_us = {n: statistics.median(c) for n, c in replay_cpu.items()}
    record_ratios = ratios_to(record_s, "kcat -C -J")
    replay_ratios = ratios_to(replay_s, "kcat -P")
    size = args.record_size
    _table(
        console,
        f"recording {records:,} messages (~{size} B)",
        recording_rates,
        record_ratios,
        record_us,
        "kcat -C -J",
    )
    _table(
        console,
        f"replaying {records:,} messages (~{size} B)",
        replay_rates,
        replay_ratios,
        replay_us,
        "kcat -P",
    )

    RESULTS.mkdir(exist_ok=True)
    report = {
        "records": records,
        "record_size": size,
        "partitions": PARTITIONS,
        "rounds": args.repeat,
        "record_messages_per_s": recording_rates,
        "record_ratio_vs_kcat": record_ratios,
        "record_seconds": record_s,
        "record_cpu_us_per_message": record_us,
        "replay_messages_per_s": replay_rates,
        "replay_ratio_vs_kcat": replay_ratios,
        "replay_seconds": replay_s,
        "replay_cpu_us_per_message": replay_us,
        "replay_processes": processes,
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
    }
    (RESULTS / "replay.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"{records:,} CloudEvents of ~{size} B (7 headers each) on {PARTITIONS} partitions; "
        f"median of {args.repeat} interleaved rounds, ratios against kcat in the same run "
        "(each the median of the per-round ratios); "
        f"{os.cpu_count()} cores shared with the broker, load average "
        f"{os.getloadavg()[0]:.1f} at the end. CPU: the contender's processes and threads, "
        "not the broker's.",
        "",
        *_markdown(
            "Recording (topic to file):", recording_rates, record_ratios, record_us, "kcat -C -J"
        ),
        *_markdown(
            "Replaying (file to acknowledged messages; kcat sends the first message's headers "
            "with every message, and once none):",
            replay_rates,
            replay_ratios,
            replay_us,
            "kcat -P",
        ),
    ]
    (RESULTS / "replay.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
