"""Producer throughput: our EventProducer and ``pipeline produce`` against their baselines.

Every contender produces the same number of records to a fresh 6-partition topic on the local
broker, with the same settings (idempotent, acks=all, lz4, linger.ms=5). Events in Python,
against ``raw``:

1. ``raw``: confluent-kafka's Producer, a produce loop with the same pre-encoded bytes and
   headers, counting deliveries in a callback (the least a careful program does);
2. ``wrapper``: EventProducer.send with the same pre-encoded messages;
3. ``wrapper+envelope``: EventProducer.send with Event objects made beforehand (encoding each);
4. ``kafka-producer-perf-test``: org.apache.kafka.tools.ProducerPerformance from the broker's jars.

An NDJSON file of keyed lines (about 125 bytes each) to a topic, each a whole process, against
the ``bare loop``:

5. ``bare loop``: bench/bare_ndjson_loop.py, confluent-kafka alone: parse the key from the JSON,
   a fresh UUID and timestamp per event, the same CloudEvents headers, the line as the value;
6. ``pipeline produce`` (``--key-field id``): every check, the rejects file, the summary;
7. ``kcat``: the same lines, keyed, with static CloudEvents headers.

Besides events/s, each contender's CPU time per event: the process's CPU time (every thread,
librdkafka's included) for the in-process ones, the child process's for the whole processes
(their start included). On a machine shared with other work, CPU per event is the steadier
figure; the rates are compared only within one run.

Every round of every contender is checked: its fresh topic must then hold at least the records
it was given (the perf tool: the count it says it sent), counted by the partitions' watermarks
(high - low). A round with fewer is marked failed, and the run exits non-zero after writing its
results (the suite records the benchmark failed).

Run: ``.venv/bin/python bench/producer_throughput.py [--records 200000]``. Results go to
bench/results/producer_throughput.{json,md}; each rate is the median of ``--repeat``
interleaved rounds. Each ratio to a baseline is the median of the per-round ratios (round i of a
contender ran beside round i of its baseline, so a slow spell of the machine cancels out in it),
not the ratio of the two medians, which is shown for information; the goals of issue 16 are
judged on it: ``pipeline produce`` 0.8x of the bare loop, ``EventProducer + envelope`` 0.6x of
raw.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
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

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench.suite importable
    sys.path.insert(0, str(ROOT))

from bench.suite.rows import paired_ratio  # noqa: E402
from bench.topic_counts import messages_in  # noqa: E402
from pipeline.envelope import Event, KafkaMessage, encode  # noqa: E402
from pipeline.kafka.clients import (  # noqa: E402
    build_admin,
    event_producer_config,
    producer_config,
)
from pipeline.kafka.producer import build_event_producer  # noqa: E402
from pipeline.settings import PipelineSettings  # noqa: E402
from pipeline.stack.manager import StackManager  # noqa: E402
from pipeline.stack.preflight import find_java  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BARE_LOOP = Path(__file__).parent / "bare_ndjson_loop.py"
PIPELINE = Path(sys.executable).parent / "pipeline"
PARTITIONS = 6
KEYS = 1_000
RAW = "raw confluent-kafka"
BARE = "bare loop (NDJSON)"
PYTHON_EVENTS = (
    RAW,
    "EventProducer (encoded)",
    "EventProducer + envelope",
    "kafka-producer-perf-test",
)
NDJSON_FILE = (BARE, "pipeline produce", "kcat")
#: Issue 16's goals: the least ratio to the baseline of its group.
GOALS = {"EventProducer + envelope": 0.6, "pipeline produce": 0.8}


class _Cpu:
    """CPU seconds used while the block runs: this process's, and its finished children's.

    The objects made before the block (the events and messages every in-process contender is
    given) are frozen out of the garbage collector's scans while it runs, so that no contender
    pays for scanning the benchmark's own input (and the one that gets a fresh list of events,
    for more of it than the others).
    """

    def __enter__(self) -> _Cpu:
        gc.collect()
        gc.freeze()
        self._own = time.process_time()
        self._children = self._children_now()
        return self

    def __exit__(self, *_: object) -> None:
        self.own_s = time.process_time() - self._own
        self.children_s = self._children_now() - self._children
        gc.unfreeze()

    @staticmethod
    def _children_now() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


def _events(count: int, record_size: int) -> list[Event]:
    filler = "x" * max(0, record_size - 40)
    return [
        Event(
            source="/bench",
            type="com.example.bench",
            partitionkey=f"key-{n % KEYS}",
            data={"n": n, "pad": filler},
        )
        for n in range(count)
    ]


def _ndjson_lines(count: int) -> list[bytes]:
    """Keyed lines of about 125 bytes, as ``pipeline produce --key-field id`` reads them."""
    return [
        json.dumps(
            {
                "id": f"order-{n % KEYS:06d}",
                "seq": n,
                "customer": f"customer-{n % 97:04d}",
                "amount": 12.5 + n % 100,
                "currency": "EUR",
                "note": "ndjson benchmark line",
            }
        ).encode()
        for n in range(count)
    ]


def _topic(settings: PipelineSettings, name: str) -> str:
    topic = f"bench.{name}-{uuid.uuid4().hex[:8]}"
    admin = build_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    return topic


def _delete(settings: PipelineSettings, topics: list[str]) -> None:
    admin = build_admin(settings.kafka)
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        future.result(30)


def round_failure(found: int, sent: int) -> str | None:
    """Why a round failed its check, or None: its topic must hold at least what was sent."""
    if found < sent:
        return f"{found:,} of {sent:,} messages in the topic"
    return None


#: What one contender's run measured: events/s, CPU seconds per event, and how many records it
#: sent (those it was given; the perf tool: the count it says it sent), which its topic must hold.
Measured = tuple[float, float, int]


def run_raw(settings: PipelineSettings, topic: str, messages: list[KafkaMessage]) -> Measured:
    config = producer_config(settings.kafka, **event_producer_config(settings.producer))
    config.pop("statistics.interval.ms")
    producer = Producer(config)
    delivered = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

    with _Cpu() as cpu:
        began = time.perf_counter()
        for message in messages:
            while True:
                try:
                    producer.produce(
                        topic,
                        value=message.value,
                        key=message.key,
                        headers=[*message.headers],
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(120)
        elapsed = time.perf_counter() - began
    assert delivered == len(messages), f"raw: {delivered} of {len(messages)} delivered"
    return len(messages) / elapsed, cpu.own_s / len(messages), len(messages)


def run_wrapper(
    settings: PipelineSettings, topic: str, items: list[KafkaMessage] | list[Event]
) -> Measured:
    producer = build_event_producer(settings.kafka, settings.producer)
    with _Cpu() as cpu:
        began = time.perf_counter()
        with producer:
            for item in items:
                producer.send(topic, item)
        elapsed = time.perf_counter() - began
    assert producer.counters.sent == len(items), "wrapper: not every event was acknowledged"
    return len(items) / elapsed, cpu.own_s / len(items), len(items)


def _config_for_processes(settings: PipelineSettings) -> dict[str, Any]:
    config = producer_config(settings.kafka, **event_producer_config(settings.producer))
    config.pop("statistics.interval.ms")
    return {name: value for name, value in config.items() if not callable(value)}


def run_bare_loop(settings: PipelineSettings, topic: str, path: Path, records: int) -> Measured:
    config = json.dumps(_config_for_processes(settings))
    with _Cpu() as cpu:
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(BARE_LOOP), config, topic, str(path), "id"],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        elapsed = time.perf_counter() - began
    assert int(done.stdout) == records, f"bare loop: {done.stdout.strip()} of {records}"
    return records / elapsed, cpu.children_s / records, records


def run_pipeline_produce(
    settings: PipelineSettings, topic: str, path: Path, records: int
) -> Measured:
    rejects = path.with_name(f"{topic}.rejects.ndjson")
    command = [str(PIPELINE), "produce", topic, str(path), "--key-field", "id"]
    with _Cpu() as cpu:
        began = time.perf_counter()
        done = subprocess.run(
            [*command, "--rejects", str(rejects)], capture_output=True, text=True, timeout=600
        )
        elapsed = time.perf_counter() - began
    sent = re.search(r"sent \(acknowledged\)\D*([\d,]+)", done.stderr)
    if done.returncode != 0 or sent is None or int(sent[1].replace(",", "")) != records:
        raise RuntimeError(f"pipeline produce failed ({done.returncode}): {done.stderr[-800:]}")
    return records / elapsed, cpu.children_s / records, records


def run_kcat(settings: PipelineSettings, topic: str, keyed: Path, records: int) -> Measured:
    options = {
        "enable.idempotence": "true",
        "acks": "all",
        "compression.type": settings.producer.compression,
        "linger.ms": str(int(settings.producer.linger_ms)),
    }
    headers = {
        "ce_source": "/pipeline/cli",
        "ce_type": "com.example.event",
        "ce_specversion": "1.0",
        "ce_id": "0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b",
        "ce_time": "2024-07-15T13:45:35.022000Z",
        "content-type": "application/json",
    }
    command = ["kcat", "-P", "-b", settings.kafka.bootstrap_servers, "-t", topic, "-K", "\t"]
    for name, value in options.items():
        command += ["-X", f"{name}={value}"]
    for name, value in headers.items():
        command += ["-H", f"{name}={value}"]
    with _Cpu() as cpu:
        began = time.perf_counter()
        subprocess.run([*command, "-l", str(keyed)], check=True, capture_output=True, timeout=600)
        elapsed = time.perf_counter() - began
    return records / elapsed, cpu.children_s / records, records


def run_perf_tool(settings: PipelineSettings, topic: str, records: int, size: int) -> Measured:
    libs = StackManager(settings).dist_dir / f"kafka-{settings.stack.kafka_version}" / "libs"
    command = [
        str(find_java().executable),
        "-Xmx512m",
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic,
        "--num-records", str(records),
        "--record-size", str(size),
        "--throughput", "-1",
        "--producer-props",
        f"bootstrap.servers={settings.kafka.bootstrap_servers}",
        "acks=all",
        "enable.idempotence=true",
        f"compression.type={settings.producer.compression}",
        f"linger.ms={int(settings.producer.linger_ms)}",
    ]  # fmt: skip
    with _Cpu() as cpu:
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    final = re.findall(r"(\d+) records sent, ([\d.]+) records/sec", output.stdout)
    if not final:
        raise RuntimeError(f"unexpected perf tool output: {output.stdout[-500:]}")
    # Its own count of what it sent, which the topic must hold (the JVM's start in the CPU).
    return float(final[-1][1]), cpu.children_s / records, int(final[-1][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--record-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; median kept")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[*PYTHON_EVENTS[1:], *NDJSON_FILE[1:]],
        help="leave a contender out (repeatable); the baselines always run",
    )
    args = parser.parse_args()
    settings = PipelineSettings()
    StackManager(settings).up()
    console = Console()

    with console.status("building events"):
        events = _events(args.records, args.record_size)
        messages = [encode(event) for event in events]
    value_size = sum(len(m.value or b"") for m in messages) / len(messages)
    workdir = Path(tempfile.mkdtemp(prefix="producer-bench-"))
    lines = _ndjson_lines(args.records)
    ndjson = workdir / "lines.ndjson"
    ndjson.write_bytes(b"\n".join(lines) + b"\n")
    keyed = workdir / "keyed.txt"
    keyed.write_bytes(
        b"".join(json.loads(line)["id"].encode() + b"\t" + line + b"\n" for line in lines)
    )
    line_size = sum(map(len, lines)) / len(lines)

    runs: dict[str, Callable[[str], Measured]] = {
        RAW: lambda t: run_raw(settings, t, messages),
        "EventProducer (encoded)": lambda t: run_wrapper(settings, t, messages),
        "EventProducer + envelope": lambda t: run_wrapper(
            settings, t, _events(args.records, args.record_size)
        ),
        "kafka-producer-perf-test": lambda t: run_perf_tool(
            settings, t, args.records, int(value_size)
        ),
        BARE: lambda t: run_bare_loop(settings, t, ndjson, args.records),
        "pipeline produce": lambda t: run_pipeline_produce(settings, t, ndjson, args.records),
        "kcat": lambda t: run_kcat(settings, t, keyed, args.records),
    }
    for name in args.skip:
        del runs[name]
    samples: dict[str, list[float]] = {name: [] for name in runs}
    cpu_samples: dict[str, list[float]] = {name: [] for name in runs}
    in_topic: dict[str, list[int]] = {name: [] for name in runs}
    failures: dict[str, list[str]] = {name: [] for name in runs}
    load_before = os.getloadavg()[0]
    topics = []
    # Interleaved rounds, so a noisy moment on a 2-core machine hits every contender alike.
    for round_number in range(1, args.repeat + 1):
        for name, run in runs.items():
            topic = _topic(settings, re.sub(r"[^a-z]+", "-", name.lower()).strip("-"))
            topics.append(topic)
            with console.status(f"round {round_number}/{args.repeat}, {name}"):
                rate, cpu_s, sent = run(topic)
                found = messages_in(settings, topic, PARTITIONS)
            samples[name].append(rate)
            cpu_samples[name].append(cpu_s)
            in_topic[name].append(found)
            if sent != args.records:  # the perf tool's own count
                failures[name].append(f"round {round_number}: sent {sent:,} of {args.records:,}")
            problem = round_failure(found, sent)
            if problem is not None:
                failures[name].append(f"round {round_number}: {problem}")
                console.print(f"[red]{name}, round {round_number}: {problem}[/red]")
    load_after = os.getloadavg()[0]
    _delete(settings, topics)
    shutil.rmtree(workdir)
    results = {name: statistics.median(rates) for name, rates in samples.items()}
    cpu_us = {name: statistics.median(cpu) * 1e6 for name, cpu in cpu_samples.items()}

    groups = {
        f"events in Python, {args.records:,} records of ~{value_size:.0f} B": (PYTHON_EVENTS, RAW),
        f"NDJSON file to topic (whole process), {args.records:,} lines of ~{line_size:.0f} B": (
            NDJSON_FILE,
            BARE,
        ),
    }
    ratios: dict[str, float] = {}
    ratios_of_medians: dict[str, float] = {}
    round_ratios: dict[str, list[float]] = {}
    goals: dict[str, dict[str, Any]] = {}
    markdown: list[str] = []
    columns = (
        "producer", "events/s", "vs {} (of medians)", "median round ratio", "CPU us/event", "goal"
    )  # fmt: skip
    for title, (names, baseline_name) in groups.items():
        baseline = results[baseline_name]
        table = Table(title=title)
        headers = [column.format(baseline_name) for column in columns]
        for column in headers:
            table.add_column(column, justify="left" if column == "producer" else "right")
        markdown += [f"**{title}**", "", f"| {' | '.join(headers)} |"]
        markdown.append("|---|" + "---:|" * (len(headers) - 1))
        for name in names:
            if name not in results:
                continue
            ratios_of_medians[name] = results[name] / baseline
            # Each round's ratio to the baseline's rate in the same round, which ran beside it;
            # their median is the ratio (the goal is judged on it), as the suite's.
            pairs = zip(samples[name], samples[baseline_name], strict=True)
            round_ratios[name] = [rate / base for rate, base in pairs]
            official = paired_ratio(samples[name], samples[baseline_name])
            ratios[name] = ratios_of_medians[name] if official is None else official
            goal = ""
            if name in GOALS:
                failed = bool(failures[name] or failures[baseline_name])
                met = ratios[name] >= GOALS[name] and not failed
                goals[name] = {"ratio": GOALS[name], "met": met}
                goal = f">= {GOALS[name]:.1f}x: {'met' if met else 'not met'}"
                goal += " (failed rounds)" if failed else ""
            row = [
                name,
                f"{results[name]:,.0f}",
                f"{ratios_of_medians[name]:.2f}x",
                f"{ratios[name]:.2f}x",
                f"{cpu_us[name]:.1f}",
                goal,
            ]
            table.add_row(*row)
            markdown.append(f"| {' | '.join(row)} |")
        markdown.append("")
        console.print(table)
    conditions = (
        f"{args.repeat} interleaved rounds (events/s: medians); load average {load_before:.1f} "
        f"before, {load_after:.1f} after, on {os.cpu_count()} cores; niceness {os.nice(0)}. "
        "The ratio to the baseline is the median round ratio (each round's rate over its "
        "baseline's in the same round, run beside it): the goals are judged on it; the ratio "
        "of the two medians is for information. CPU per event: process CPU time (all threads) "
        "over events; for whole processes, the child's, start included. Every round's topic "
        "was counted (watermarks): at least the records sent, or the round failed."
    )
    console.print(conditions)
    markdown.append(conditions)
    failed_rounds = [f"{name}, {line}" for name, lines in failures.items() for line in lines]
    if failed_rounds:
        said = "FAILED rounds: " + "; ".join(failed_rounds)
        console.print(f"[red]{said}[/red]")
        markdown += ["", said]

    RESULTS.mkdir(exist_ok=True)
    report = {
        "records": args.records,
        "value_bytes": value_size,
        "ndjson_line_bytes": line_size,
        "events_per_s": results,
        "samples": samples,
        "ratio_vs_baseline": ratios,
        "ratio_of_medians_vs_baseline": ratios_of_medians,
        "round_ratios_vs_baseline": round_ratios,
        "messages_in_topic": in_topic,
        "failures": failures,
        "cpu_us_per_event": cpu_us,
        "cpu_s_per_event_samples": cpu_samples,
        "goals": goals,
        "load_average": {"before": load_before, "after": load_after},
        "niceness": os.nice(0),
        "baselines": {name: baseline for _, (names, baseline) in groups.items() for name in names},
    }
    (RESULTS / "producer_throughput.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "producer_throughput.md").write_text("\n".join(markdown) + "\n")
    if failed_rounds:  # after the results are written, so they can be read; the run failed
        raise SystemExit("producer_throughput: " + "; ".join(failed_rounds))


if __name__ == "__main__":
    main()
