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

Run: ``.venv/bin/python bench/producer_throughput.py [--records 200000]``. Results go to
bench/results/producer_throughput.{json,md}; each figure is the median of ``--repeat``
interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import re
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

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.kafka.clients import build_admin, event_producer_config, producer_config
from pipeline.kafka.producer import build_event_producer
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from pipeline.stack.preflight import find_java

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


def _config_for_processes(settings: PipelineSettings) -> dict[str, Any]:
    config = producer_config(settings.kafka, **event_producer_config(settings.producer))
    config.pop("statistics.interval.ms")
    return {name: value for name, value in config.items() if not callable(value)}


def run_bare_loop(settings: PipelineSettings, topic: str, path: Path, records: int) -> float:
    config = json.dumps(_config_for_processes(settings))
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
    return records / elapsed


def run_pipeline_produce(settings: PipelineSettings, topic: str, path: Path, records: int) -> float:
    rejects = path.with_name(f"{topic}.rejects.ndjson")
    command = [str(PIPELINE), "produce", topic, str(path), "--key-field", "id"]
    began = time.perf_counter()
    done = subprocess.run(
        [*command, "--rejects", str(rejects)], capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - began
    sent = re.search(r"sent \(acknowledged\)\D*([\d,]+)", done.stderr)
    if done.returncode != 0 or sent is None or int(sent[1].replace(",", "")) != records:
        raise RuntimeError(f"pipeline produce failed ({done.returncode}): {done.stderr[-800:]}")
    return records / elapsed


def run_kcat(settings: PipelineSettings, topic: str, keyed: Path, records: int) -> float:
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
    began = time.perf_counter()
    subprocess.run([*command, "-l", str(keyed)], check=True, capture_output=True, timeout=600)
    return records / (time.perf_counter() - began)


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

    runs: dict[str, Callable[[str], float]] = {
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
    topics = []
    # Interleaved rounds, so a noisy moment on a 2-core machine hits every contender alike.
    for round_number in range(1, args.repeat + 1):
        for name, run in runs.items():
            topic = _topic(settings, re.sub(r"[^a-z]+", "-", name.lower()).strip("-"))
            topics.append(topic)
            with console.status(f"round {round_number}/{args.repeat}, {name}"):
                samples[name].append(run(topic))
    _delete(settings, topics)
    shutil.rmtree(workdir)
    results = {name: statistics.median(rates) for name, rates in samples.items()}

    groups = {
        f"events in Python, {args.records:,} records of ~{value_size:.0f} B": (PYTHON_EVENTS, RAW),
        f"NDJSON file to topic (whole process), {args.records:,} lines of ~{line_size:.0f} B": (
            NDJSON_FILE,
            BARE,
        ),
    }
    ratios: dict[str, float] = {}
    markdown: list[str] = []
    for title, (names, baseline_name) in groups.items():
        baseline = results[baseline_name]
        table = Table(title=title)
        for column in ("producer", "events/s", f"vs {baseline_name}"):
            table.add_column(column, justify="right" if column != "producer" else "left")
        markdown += [f"**{title}**", "", f"| producer | events/s | vs {baseline_name} |"]
        markdown.append("|---|---:|---:|")
        for name in names:
            if name in results:
                ratios[name] = results[name] / baseline
                table.add_row(name, f"{results[name]:,.0f}", f"{ratios[name]:.2f}x")
                markdown.append(f"| {name} | {results[name]:,.0f} | {ratios[name]:.2f}x |")
        markdown.append("")
        console.print(table)

    RESULTS.mkdir(exist_ok=True)
    report = {
        "records": args.records,
        "value_bytes": value_size,
        "ndjson_line_bytes": line_size,
        "events_per_s": results,
        "samples": samples,
        "ratio_vs_baseline": ratios,
        "baselines": {name: baseline for _, (names, baseline) in groups.items() for name in names},
    }
    (RESULTS / "producer_throughput.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "producer_throughput.md").write_text("\n".join(markdown))


if __name__ == "__main__":
    main()
