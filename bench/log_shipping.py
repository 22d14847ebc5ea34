"""Log shipping throughput: the shipper (Kafka -> acknowledged in Elasticsearch) vs direct bulk.

Both index the same kind of ECS log documents (~500 B, new event ids per round) into fresh
daily indices behind an alias of their own on the same local Elasticsearch node, with the same
chunk size:

1. ``direct streaming_bulk``: ``elasticsearch.helpers.streaming_bulk`` of the documents (Python
   dicts already in memory) with ``_id`` = event id; the least a Python program does to index;
2. ``log shipper``: the documents are first produced to a fresh 3-partition topic (not timed),
   then :class:`consumers.log_shipper.LogShipper`, with the product's default settings (its
   batch size, 2,000, is the chunk size above), consumes, plans, bulk-indexes, and commits
   offsets; timed from just before its first fetch (the start of the ``consume()`` that
   brought its first records, or its partitions' assignment if that came during it: the
   group join is left out, the first fetch is not) until Elasticsearch acknowledged the last
   document, as the direct path is timed from before its first document.

Run: ``.venv/bin/python bench/log_shipping.py [--records 100000]``. Results go to
bench/results/log_shipping.{json,md}; each figure is the median of ``--repeat`` interleaved
rounds, and the ratio is against direct bulk (goal: 0.8x): the median of the per-round ratios
(the shipper's rate over direct bulk's in the same round, run right before it), not the ratio
of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench.suite importable
    sys.path.insert(0, str(ROOT))

from bench.suite.rows import paired_ratio  # noqa: E402
from consumers.log_shipper import LogShipper  # noqa: E402
from pipeline.ids import new_event_id  # noqa: E402
from pipeline.kafka.clients import build_admin, build_consumer, build_producer  # noqa: E402
from pipeline.logs.elasticsearch import build_elasticsearch  # noqa: E402
from pipeline.logs.schema import ensure_index_template, index_for  # noqa: E402
from pipeline.settings import LogSettings, PipelineSettings  # noqa: E402
from pipeline.stack.manager import StackManager  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 3
CHUNK = 2_000
# An old day, so the bench never writes into today's indices.
STAMP = "2000-01-01T12:00:00.000Z"


def _documents(count: int) -> list[dict[str, Any]]:
    return [
        {
            "@timestamp": STAMP,
            "log": {
                "level": "info",
                "logger": "bench.orders",
                "origin": {"file": {"name": "orders.py", "line": 42}, "function": "handle"},
            },
            "message": f"handled order o-{n} for customer c-{n % 997} in 12 ms",
            "ecs": {"version": "8.11.0"},
            "event": {"id": new_event_id(), "action": "processed", "outcome": "success"},
            "service": {"name": "bench"},
            "host": {"hostname": "bench-host"},
            "process": {"pid": 1234, "name": "MainProcess", "thread": {"name": "worker-1"}},
            "pipeline": {
                "event_id": new_event_id(),
                "correlation_id": f"req-{n % 5000}",
                "topic": "requests.orders",
                "partition": n % 6,
                "offset": n,
            },
        }
        for n in range(count)
    ]


def _alias() -> str:
    return f"bench-logs-{uuid.uuid4().hex[:8]}"


def _cleanup(es: Elasticsearch, alias: str) -> None:
    es.options(ignore_status=404).indices.delete(index=f"{alias}-*")
    es.options(ignore_status=404).indices.delete_index_template(name=alias)


def run_direct(es: Elasticsearch, count: int) -> float:
    documents = _documents(count)
    alias = _alias()
    ensure_index_template(es, alias=alias)
    try:
        began = time.perf_counter()
        index = None
        actions = []
        for document in documents:
            if index is None:
                index = index_for(_parse(document["@timestamp"]), alias=alias)
            actions.append({"_index": index, "_id": document["event"]["id"], "_source": document})
        ok = sum(
            1
            for success, _ in streaming_bulk(
                es, actions, chunk_size=CHUNK, raise_on_error=False, max_retries=0
            )
            if success
        )
        elapsed = time.perf_counter() - began
        assert ok == count, f"direct: {ok} of {count} acknowledged"
        return count / elapsed
    finally:
        _cleanup(es, alias)


def _parse(stamp: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class FetchClock:
    """When the shipper's fetching began: the start of the ``consume()`` call that brought its
    first records or, when its partitions were assigned during that call (the group join),
    the assignment. Fed by :class:`_TimedConsumer` and the shipper's assignment callback."""

    def __init__(self) -> None:
        self.started: float | None = None
        self._assigned_at: float | None = None
        self._call_at: float | None = None

    def assigned(self, now: float) -> None:
        self._assigned_at = now

    def calling(self, now: float) -> None:
        self._call_at = now

    def returned(self, records: int) -> None:
        if self.started is None and records and self._call_at is not None:
            self.started = max(self._call_at, self._assigned_at or self._call_at)


class _TimedConsumer:
    """The shipper's consumer, telling the clock when each ``consume()`` starts and what it
    brought; everything else passes through."""

    def __init__(self, consumer: Any, clock: FetchClock) -> None:
        self._consumer, self._clock = consumer, clock

    def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
        self._clock.calling(time.perf_counter())
        records: list[Any] = self._consumer.consume(*args, **kwargs)
        self._clock.returned(len(records))
        return records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def run_shipper(settings: PipelineSettings, es: Elasticsearch, count: int) -> float:
    topic = f"bench.logs-{uuid.uuid4().hex[:8]}"
    admin = build_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    alias = _alias()
    producer = build_producer(settings.kafka, **{"linger.ms": 20, "compression.type": "lz4"})
    for document in _documents(count):
        while True:
            try:
                producer.produce(topic, key=b"bench", value=json.dumps(document).encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    consumer = build_consumer(settings.kafka, f"bench-{uuid.uuid4().hex[:8]}")
    dlq = build_producer(settings.kafka)
    # The product's defaults (the batch timeout among them); the batch size is the default
    # too, named so that both paths plainly use the same chunk.
    config = LogSettings(shipper_batch_size=CHUNK)
    stop = threading.Event()
    clock = FetchClock()
    shipper = LogShipper(_TimedConsumer(consumer, clock), es, dlq, config, topic=topic,
                         alias=alias, stop=stop, report=lambda _line: None)  # fmt: skip
    marks: dict[str, float] = {}
    ship_batch = shipper.ship_batch
    assigned_cb = shipper._assigned_cb

    def timed_assignment(client: Any, partitions: Any) -> None:
        clock.assigned(time.perf_counter())
        assigned_cb(client, partitions)

    def timed_batch(records: Any) -> Any:
        positions = ship_batch(records)
        if shipper.counters.shipped + shipper.counters.dead_lettered >= count:
            marks["last"] = time.perf_counter()
            stop.set()
        return positions

    shipper.ship_batch = timed_batch  # type: ignore[method-assign]
    shipper._assigned_cb = timed_assignment  # type: ignore[method-assign]
    try:
        counters = shipper.run()
    finally:
        consumer.close()
        _cleanup(es, alias)
        admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    assert counters.shipped == count, f"shipper: {counters.shipped} of {count} acknowledged"
    assert clock.started is not None, "shipper: no fetch brought records"
    return count / (marks["last"] - clock.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; median kept")
    args = parser.parse_args()
    settings = PipelineSettings()
    StackManager(settings).up()
    console = Console()
    es = build_elasticsearch(settings.elasticsearch)
    value_size = sum(len(json.dumps(d)) for d in _documents(1000)) / 1000

    runs: dict[str, Callable[[], float]] = {
        "direct streaming_bulk": lambda: run_direct(es, args.records),
        "log shipper (Kafka -> ES)": lambda: run_shipper(settings, es, args.records),
    }
    samples: dict[str, list[float]] = {name: [] for name in runs}
    # Interleaved rounds, so a noisy moment on a 2-core machine hits every contender alike.
    for round_number in range(1, args.repeat + 1):
        for name, run in runs.items():
            with console.status(f"round {round_number}/{args.repeat}, {name}"):
                samples[name].append(run())
    results = {name: statistics.median(rates) for name, rates in samples.items()}

    baseline = results["direct streaming_bulk"]
    # The median of the per-round ratios (round i of both ran one after the other).
    ratios: dict[str, float] = {}
    for name, rates in samples.items():
        paired = paired_ratio(rates, samples["direct streaming_bulk"])
        ratios[name] = results[name] / baseline if paired is None else paired
    table = Table(title=f"log shipping, {args.records:,} documents of ~{value_size:.0f} B")
    for column in ("path", "logs/s", "ratio vs direct"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, rate in results.items():
        table.add_row(name, f"{rate:,.0f}", f"{ratios[name]:.2f}x")
    console.print(table)

    RESULTS.mkdir(exist_ok=True)
    report = {
        "records": args.records,
        "document_bytes": value_size,
        "chunk_size": CHUNK,
        "logs_per_s": results,
        "samples": samples,
        "ratio_vs_direct": ratios,
        "goal_ratio": 0.8,
    }
    (RESULTS / "log_shipping.json").write_text(json.dumps(report, indent=2))
    lines = ["| path | logs/s | ratio vs direct |", "|---|---:|---:|"]
    lines += [f"| {n} | {r:,.0f} | {ratios[n]:.2f}x |" for n, r in results.items()]
    lines += ["", "logs/s: medians of the rounds; ratio: the median of the per-round ratios."]
    (RESULTS / "log_shipping.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
