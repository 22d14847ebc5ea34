"""Producer throughput: our EventProducer vs raw confluent-kafka vs Kafka's own perf tool.

All three produce the same number of records of the same size to fresh 6-partition topics on
the local broker, with the same settings (idempotent, acks=all, lz4, linger.ms=5):

1. ``raw``: confluent-kafka's Producer, a produce loop with the same pre-encoded bytes and
   headers, counting deliveries in a callback (the least a careful program does);
2. ``wrapper``: EventProducer.send with the same pre-encoded messages;
3. ``wrapper+envelope``: EventProducer.send with Event objects (building and encoding each);
4. ``kafka-producer-perf-test``: org.apache.kafka.tools.ProducerPerformance from the broker's jars.

Run: ``.venv/bin/python bench/producer_throughput.py [--records 200000]``. Results go to
bench/results/producer_throughput.{json,md}; each figure is the median of ``--repeat``
interleaved rounds, and the ratios are against ``raw``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from rich.console import Console
from rich.table import Table

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.kafka.clients import build_admin, event_producer_config, producer_config
from pipeline.kafka.producer import build_event_producer
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from pipeline.stack.preflight import find_java

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 6
KEYS = 1_000


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


def _topic(settings: PipelineSettings, name: str) -> str:
    topic = f"bench.{name}-{uuid.uuid4().hex[:8]}"
    admin = build_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    return topic


def _delete(settings: PipelineSettings, topics: list[str]) -> None:
    admin = build_admin(settings.kafka)
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        future.result(30)


def run_raw(settings: PipelineSettings, topic: str, messages: list[KafkaMessage]) -> float:
    config = producer_config(settings.kafka, **event_producer_config(settings.producer))
    config.pop("statistics.interval.ms")
    producer = Producer(config)
    delivered = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

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
    return len(messages) / elapsed


def run_wrapper(
    settings: PipelineSettings, topic: str, items: list[KafkaMessage] | list[Event]
) -> float:
    producer = build_event_producer(settings.kafka, settings.producer)
    began = time.perf_counter()
    with producer:
        for item in items:
            producer.send(topic, item)
    elapsed = time.perf_counter() - began
    assert producer.counters.sent == len(items), "wrapper: not every event was acknowledged"
    return len(items) / elapsed


def run_perf_tool(settings: PipelineSettings, topic: str, records: int, size: int) -> float:
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
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    final = re.findall(r"(\d+) records sent, ([\d.]+) records/sec", output.stdout)
    if not final:
        raise RuntimeError(f"unexpected perf tool output: {output.stdout[-500:]}")
    return float(final[-1][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--record-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; median kept")
    args = parser.parse_args()
    settings = PipelineSettings()
    StackManager(settings).up()
    console = Console()

    with console.status("building events"):
        events = _events(args.records, args.record_size)
        messages = [encode(event) for event in events]
    value_size = sum(len(m.value or b"") for m in messages) / len(messages)

    runs: dict[str, Callable[[str], float]] = {
        "raw confluent-kafka": lambda t: run_raw(settings, t, messages),
        "EventProducer (encoded)": lambda t: run_wrapper(settings, t, messages),
        "EventProducer + envelope": lambda t: run_wrapper(
            settings, t, _events(args.records, args.record_size)
        ),
        "kafka-producer-perf-test": lambda t: run_perf_tool(
            settings, t, args.records, int(value_size)
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in runs}
    topics = []
    # Interleaved rounds, so a noisy moment on a 2-core machine hits every contender alike.
    for round_number in range(1, args.repeat + 1):
        for name, run in runs.items():
            topic = _topic(settings, re.sub(r"[^a-z]+", "-", name.lower()).strip("-"))
            topics.append(topic)
            with console.status(f"round {round_number}/{args.repeat}, {name}"):
                samples[name].append(run(topic))
    _delete(settings, topics)
    results = {name: statistics.median(rates) for name, rates in samples.items()}

    baseline = results["raw confluent-kafka"]
    table = Table(title=f"producer throughput, {args.records:,} records of ~{value_size:.0f} B")
    for column in ("producer", "events/s", "ratio vs raw"):
        table.add_column(column, justify="right" if column != "producer" else "left")
    for name, rate in results.items():
        table.add_row(name, f"{rate:,.0f}", f"{rate / baseline:.2f}x")
    console.print(table)

    RESULTS.mkdir(exist_ok=True)
    report = {
        "records": args.records,
        "value_bytes": value_size,
        "events_per_s": results,
        "samples": samples,
        "ratio_vs_raw": {name: rate / baseline for name, rate in results.items()},
    }
    (RESULTS / "producer_throughput.json").write_text(json.dumps(report, indent=2))
    lines = ["| producer | events/s | ratio vs raw |", "|---|---:|---:|"]
    lines += [f"| {n} | {r:,.0f} | {r / baseline:.2f}x |" for n, r in results.items()]
    (RESULTS / "producer_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
