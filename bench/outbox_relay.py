"""Outbox relay on PostgreSQL: throughput (one and two relays) and commit-to-Kafka latency.

1. Throughput, events/s from committed rows to acknowledged Kafka messages: ``--rows`` rows are
   committed in one transaction while the relays (``pipeline outbox relay`` subprocesses,
   started and listening beforehand) wait; the time runs from that commit to the last row's
   ``published_at`` (stamped after the broker acknowledged it). Baseline, in the same run:
   ``EventProducer.send`` of the very same encoded messages (value, key, headers) read back
   from the table, then ``flush``, by a producer connected (one message acknowledged) before
   the clock starts, as the relays are (the relay's ceiling: no database). ``--repeat``
   interleaved rounds (each: the baseline, one relay, two relays, then one relay that keeps
   nothing: ``outbox.retention_s`` 0, each row deleted as it is published; the relays start
   again each round), medians of the rates; each ratio against the baseline is the median of
   the per-round ratios (a round's rate over the baseline's rate of the same round), not the
   ratio of the medians. With nothing kept there is no ``published_at`` to read: the time runs
   to the first moment the table is seen empty (looked at every 20 ms, so up to that much later
   than the last delete).

   After each round, what reached Kafka is checked: the round's topic (a fresh one) must hold at
   least one message per row (the baseline: and its warm-up message), counted by the
   partitions' watermarks (high - low); the messages beyond that are recorded as duplicates
   (the relay publishes at least once). With two relays the topic is also read back and each
   aggregate's messages must come in the order of their rows (the ``n`` in the data grows per
   key; a duplicate of a message already seen is not counted as out of order). A round with
   fewer messages or one out of order is marked failed, and the run exits non-zero after
   writing its results (the suite records the benchmark failed).

   Where the time goes: each round's CPU seconds by process (bench/process_cpu.py), from the
   commit to the table drained (the baseline: around its publishing): the publishing process
   (the relays together, or this one), every PostgreSQL process and the Kafka broker, per 1,000
   rows, and the share of the machine's cores they kept busy (the drain is looked at every
   20 ms, so the stretch ends at most that much after the last row).
2. Latency, commit to Kafka: events committed at a steady ``--rate`` (10 per transaction) for
   ``--seconds``; a topic with ``message.timestamp.type=LogAppendTime`` gives the moment the
   broker appended each one; p50/p99 of (append time - commit time), with LISTEN/NOTIFY on and
   off (off: the relay polls every ``outbox.poll_interval_s``, 1 s by default).

Run: ``.venv/bin/python bench/outbox_relay.py [--rows 100000] [--repeat 3]``. Needs the stack's
PostgreSQL and Kafka (started when they do not answer). Results go to
bench/results/outbox_relay.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from paced_load import all_samples, percentile
from process_cpu import cpu_by_pid, cpu_per_thousand, cpu_spent, cpu_table
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench.suite importable
    sys.path.insert(0, str(ROOT))

from bench.suite.rows import paired_ratio  # noqa: E402
from bench.topic_counts import (  # noqa: E402
    keyed_sequence,
    messages_in,
    order_violations,
    round_problems,
)
from pipeline.database import build_engine, migrate  # noqa: E402
from pipeline.envelope import Event, KafkaMessage  # noqa: E402
from pipeline.kafka.clients import build_admin, build_consumer  # noqa: E402
from pipeline.kafka.producer import build_event_producer  # noqa: E402
from pipeline.kafka.readback import end_offsets  # noqa: E402
from pipeline.outbox.table import RECORD_COLUMNS, Outbox, outbox_table, record_of  # noqa: E402
from pipeline.settings import DatabaseSettings, PipelineSettings  # noqa: E402
from pipeline.stack.manager import StackManager  # noqa: E402
from pipeline.stack.postgres_node import create_database, database_url, drop_database  # noqa: E402
from producers.outbox_relay import relay_subprocess  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 6
AGGREGATES = 1_000
PER_TRANSACTION = 10
#: One relay with ``outbox.retention_s`` 0: each row deleted as it is published.
NOTHING_KEPT = "1 relay, nothing kept"


# --- the database -------------------------------------------------------------------------


@contextmanager
def bench_database(settings: PipelineSettings) -> Iterator[str]:
    """A fresh database on the stack's PostgreSQL, dropped at the end; its URL."""
    stack = settings.stack
    name = f"bench_outbox_{uuid.uuid4().hex[:8]}"

    create_database(stack, name)
    try:
        yield database_url(stack, name, with_password=True)
    finally:
        drop_database(stack, name)


def _rows(count: int, topic: str, size: int) -> list[dict[str, Any]]:
    outbox = Outbox()
    filler = "x" * max(0, size - 40)
    rows = []
    for n in range(count):
        aggregate = f"order-{n % AGGREGATES}"
        event = Event(
            source="/bench",
            type="com.example.bench",
            partitionkey=aggregate,
            data={"n": n, "pad": filler},
        )
        rows.append(outbox.row(event, aggregate_type="order", aggregate_id=aggregate, topic=topic))
    return rows


def _reset(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE pipeline_outbox"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE pipeline_outbox"))


def _topic(settings: PipelineSettings, prefix: str, **configs: str) -> str:
    topic = f"bench.{prefix}-{uuid.uuid4().hex[:8]}"
    admin = build_admin(settings.kafka)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config=configs)])[topic].result(30)
    return topic


def _delete_topics(settings: PipelineSettings, topics: list[str]) -> None:
    admin = build_admin(settings.kafka)
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        future.result(30)


# --- relays as subprocesses ---------------------------------------------------------------


@contextmanager
def relays(
    url: str, count: int, *, listen: bool, log: Path, running: int = 0, keep: bool = True
) -> Iterator[list[int]]:
    """``count`` more relay processes (beside ``running`` ones already started), their pids
    given once each one LISTENs (or has run its first batch when not listening); stopped with
    SIGTERM at the end. Without ``keep``, they delete each row as they publish it (retention
    0)."""
    args = [] if listen else ["--no-listen"]
    env = {"PIPELINE_DATABASE__URL": url, "PIPELINE_OUTBOX__LOG_INTERVAL_S": "0"}
    if not keep:
        env["PIPELINE_OUTBOX__RETENTION_S"] = "0"
    with log.open("ab") as out:
        started = [
            relay_subprocess(args, env=env, stdout=out, stderr=subprocess.STDOUT)
            for _ in range(count)
        ]
    try:
        _wait_ready(url, started, listen=listen, expected=running + count)
        yield [process.pid for process in started]
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(60)


def _wait_ready(
    url: str, started: list[subprocess.Popen[bytes]], *, listen: bool, expected: int
) -> None:
    engine = build_engine(DatabaseSettings(url=url), pool_size=1)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in started):
                raise RuntimeError("a relay exited while starting (see the relay log)")
            with engine.connect() as connection:
                if listen:
                    ready = connection.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND query LIKE 'LISTEN %pipeline_outbox%'"
                        )
                    ).scalar_one()
                else:  # polling relays have a connection each in their pools
                    ready = connection.execute(
                        sa.text(
                            "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND pid <> pg_backend_pid()"
                        )
                    ).scalar_one()
            if ready >= expected:
                time.sleep(0.5)
                return
            time.sleep(0.1)
        raise RuntimeError("the relays did not start in time")
    finally:
        engine.dispose()


# --- throughput ---------------------------------------------------------------------------


def relay_throughput(
    url: str, rows: list[dict[str, Any]], relay_pids: list[int], *, keep: bool = True
) -> tuple[float, dict[str, float], float]:
    """One round with the relays running (idle, listening): ``rows`` committed at once, and
    the rate from that commit to the last row published (without ``keep``: to the table seen
    empty); with the CPU seconds by process (the relays, PostgreSQL, Kafka) from the commit
    to the table drained, and that stretch's wall seconds."""
    engine = build_engine(DatabaseSettings(url=url), pool_size=1)
    try:
        _reset(engine)
        with engine.begin() as connection:
            connection.execute(sa.insert(outbox_table), rows)
        committed = datetime.now(UTC)
        pids = {f"relay {n}": pid for n, pid in enumerate(relay_pids)}
        before, began = cpu_by_pid(pids), time.monotonic()
        _drain(engine, timeout_s=600, every_s=0.02)
        wall = time.monotonic() - began
        spent = _relays_as_one(cpu_spent(before, cpu_by_pid(pids)))
        if not keep:
            return len(rows) / (datetime.now(UTC) - committed).total_seconds(), spent, wall
        with engine.connect() as connection:
            last = connection.execute(
                sa.select(sa.func.max(outbox_table.c.published_at))
            ).scalar_one()
        return len(rows) / (last - committed).total_seconds(), spent, wall
    finally:
        engine.dispose()


def _relays_as_one(spent: dict[str, float]) -> dict[str, float]:
    """CPU seconds by process with the relays' added up under "publishing"."""
    merged = {name: s for name, s in spent.items() if not name.startswith("relay ")}
    merged["publishing"] = sum(s for name, s in spent.items() if name.startswith("relay "))
    return merged


def stored_messages(url: str) -> list[tuple[str, KafkaMessage]]:
    engine = build_engine(DatabaseSettings(url=url), pool_size=1)
    try:
        with engine.connect() as connection:
            records = connection.execute(
                sa.select(*RECORD_COLUMNS).order_by(outbox_table.c.position)
            ).all()
        return [(r.topic, r.message()) for r in map(record_of, records)]
    finally:
        engine.dispose()


def producer_throughput(
    settings: PipelineSettings, topic: str, messages: list[tuple[str, KafkaMessage]]
) -> tuple[float, dict[str, float], float]:
    """The baseline's rate, with the CPU seconds by process (this one as "publishing",
    PostgreSQL, Kafka) over its publishing alone, and that stretch's wall seconds."""
    producer = build_event_producer(settings.kafka, settings.producer)
    # Connected, with its idempotent producer id, before the clock starts, as the relays are
    # (idle and listening before each commit): one message more, acknowledged first. Without
    # it the baseline's figure held a new producer's first ~0.5 s, most of a 10,000-row round.
    producer.send_and_wait(topic, messages[0][1])
    pids = {"publishing": os.getpid()}
    before = cpu_by_pid(pids)
    began = time.perf_counter()
    with producer:
        for _, message in messages:
            producer.send(topic, message)
    elapsed = time.perf_counter() - began
    spent = cpu_spent(before, cpu_by_pid(pids))
    assert producer.counters.sent == len(messages) + 1, "not every event was acknowledged"
    return len(messages) / elapsed, spent, elapsed


# --- latency ------------------------------------------------------------------------------


def commit_to_kafka_latency(
    settings: PipelineSettings, url: str, *, rate: int, seconds: float
) -> dict[str, float]:
    """Events committed at ``rate`` for ``seconds`` while a relay runs: (append - commit) times."""
    topic = _topic(settings, "latency", **{"message.timestamp.type": "LogAppendTime"})
    engine = build_engine(DatabaseSettings(url=url), pool_size=2)
    committed: dict[str, float] = {}
    try:
        _reset(engine)
        outbox = Outbox()
        total = int(rate * seconds)
        began = time.monotonic()
        for start in range(0, total, PER_TRANSACTION):
            batch = []
            with engine.begin() as connection:
                for n in range(start, min(start + PER_TRANSACTION, total)):
                    aggregate = f"order-{n % AGGREGATES}"
                    event = Event(
                        source="/bench",
                        type="com.example.bench",
                        partitionkey=aggregate,
                        data={"n": n},
                    )
                    outbox.add(
                        connection,
                        event,
                        aggregate_type="order",
                        aggregate_id=aggregate,
                        topic=topic,
                    )
                    batch.append(event.id)
            at = time.time()
            committed.update((event_id, at) for event_id in batch)
            ahead = (start + PER_TRANSACTION) / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        writing_s = time.monotonic() - began
        _drain(engine)
        appended = _append_times(settings, topic, set(committed))
    finally:
        engine.dispose()
        _delete_topics(settings, [topic])
    spans = all_samples(
        "commit to Kafka: events found in the topic",
        [(committed[i], appended[i]) for i in committed if i in appended],
        len(committed),
    )
    latencies = sorted((end - start) * 1000 for start, end in spans)
    return {
        "events": len(latencies),
        "achieved_rate_per_s": total / writing_s,
        # The nearest rank, as every benchmark (paced_load.percentile).
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
    }


def _drain(engine: sa.Engine, timeout_s: float = 120, every_s: float = 0.1) -> None:
    """Until the relays have published every row (looked at every ``every_s``: whether one is
    left, the head of the unpublished index); RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    left = True
    unpublished = sa.exists().where(outbox_table.c.published_at.is_(None))
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            left = connection.execute(sa.select(unpublished)).scalar_one()
        if not left:
            return
        time.sleep(every_s)
    raise RuntimeError("the relays did not drain the outbox: rows still unpublished")


def _append_times(settings: PipelineSettings, topic: str, wanted: set[str]) -> dict[str, float]:
    consumer = build_consumer(settings.kafka, f"bench-{uuid.uuid4().hex[:8]}")
    try:
        ends = end_offsets(consumer, topic)
        consumer.assign([TopicPartition(topic, p.partition, 0) for p in ends])
        found: dict[str, float] = {}
        deadline = time.monotonic() + 120
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                event_id = dict(message.headers() or [])["ce_id"].decode()
                _kind, millis = message.timestamp()
                found.setdefault(event_id, millis / 1000)
        return found
    finally:
        consumer.close()


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--record-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per contender; median kept")
    parser.add_argument("--rate", type=int, default=1_000, help="latency: events/s committed")
    parser.add_argument("--seconds", type=float, default=15.0, help="latency: how long")
    parser.add_argument(
        "--no-poll-latency",
        action="store_true",
        help="latency with LISTEN/NOTIFY only, not also polling (the suite's quick profile: one "
        "relay start fewer)",
    )
    args = parser.parse_args()
    settings = PipelineSettings()
    StackManager(settings).up(only={"kafka", "postgres"})
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "outbox_relay.log"
    log.write_bytes(b"")

    with bench_database(settings) as url:
        engine = build_engine(DatabaseSettings(url=url), pool_size=1)
        migrate(engine)
        engine.dispose()
        samples: dict[str, list[float]] = {
            "EventProducer": [],
            "1 relay": [],
            "2 relays": [],
            NOTHING_KEPT: [],
        }
        in_topic: dict[str, list[int]] = {name: [] for name in samples}
        duplicates: dict[str, list[int]] = {name: [] for name in samples}
        out_of_order: dict[str, list[int]] = {"2 relays": []}
        failures: dict[str, list[str]] = {name: [] for name in samples}
        #: CPU seconds by process (the publisher: this process or the relays) and wall seconds.
        cpu: dict[str, list[tuple[dict[str, float], float]]] = {name: [] for name in samples}
        topics: list[str] = []

        def measure(name: str, round_number: int, relay_pids: list[int] | None = None) -> None:
            topic = _topic(settings, "throughput")
            topics.append(topic)
            with console.status(f"round {round_number}/{args.repeat}: {name}"):
                rows = _rows(args.rows, topic, args.record_size)
                if name == "EventProducer":
                    engine = build_engine(DatabaseSettings(url=url), pool_size=1)
                    _reset(engine)
                    with engine.begin() as connection:
                        connection.execute(sa.insert(outbox_table), rows)
                    engine.dispose()
                    rate, spent, wall = producer_throughput(settings, topic, stored_messages(url))
                else:
                    rate, spent, wall = relay_throughput(
                        url, rows, relay_pids or [], keep=name != NOTHING_KEPT
                    )
            samples[name].append(rate)
            cpu[name].append((spent, wall))
            # What reached Kafka: a message per row at least (the baseline's warm-up message
            # besides), and with two relays each aggregate's rows in order.
            expected = len(rows) + (1 if name == "EventProducer" else 0)
            found = messages_in(settings, topic, PARTITIONS)
            in_topic[name].append(found)
            duplicates[name].append(max(0, found - expected))
            violations = None
            if name in out_of_order:
                violations = order_violations(keyed_sequence(settings, topic))
                out_of_order[name].append(violations)
            problems = round_problems(found, expected, violations)
            if problems:
                failures[name].append(f"round {round_number}: {', '.join(problems)}")
            console.print(
                f"round {round_number}: {name}: {rate:,.0f} events/s, {found:,} messages "
                f"({duplicates[name][-1]:,} duplicates){'; FAILED: ' if problems else ''}"
                + ", ".join(problems)
            )

        # Interleaved rounds, so that a slow spell of this shared machine hits every contender
        # alike (run contender by contender, one relay once measured 25,000 events/s against
        # 41,000-48,000 in other runs, and two relays looked 1.36x as fast as one): each
        # round the baseline (no relay running: it reads its rows from the table), then one
        # relay, then two. The relays start again each round; their start-up is not in the
        # figures (they are idle and listening before each commit).
        rounds = range(1, args.repeat + 1)
        latency: dict[str, dict[str, float]] = {}
        for round_number in rounds:
            measure("EventProducer", round_number)
            with relays(url, 1, listen=True, log=log) as first:
                measure("1 relay", round_number, first)
                with relays(url, 1, listen=True, log=log, running=1) as second:
                    measure("2 relays", round_number, first + second)
            with relays(url, 1, listen=True, log=log, keep=False) as alone:
                measure(NOTHING_KEPT, round_number, alone)
        with relays(url, 1, listen=True, log=log), console.status("latency, LISTEN/NOTIFY"):
            latency["LISTEN/NOTIFY"] = commit_to_kafka_latency(
                settings, url, rate=args.rate, seconds=args.seconds
            )
        _delete_topics(settings, topics)
        throughput = {name: statistics.median(rates) for name, rates in samples.items()}
        if not args.no_poll_latency:
            with relays(url, 1, listen=False, log=log), console.status("latency, poll only"):
                latency["poll only (1 s)"] = commit_to_kafka_latency(
                    settings, url, rate=args.rate, seconds=args.seconds
                )

    baseline = throughput["EventProducer"]
    # The median of the per-round ratios: the rounds are interleaved, each contender's round i
    # run right after the baseline's round i.
    ratios: dict[str, float] = {}
    for name, rates in samples.items():
        paired = paired_ratio(rates, samples["EventProducer"])
        ratios[name] = throughput[name] / baseline if paired is None else paired
    failed_rounds = [f"{name}, {line}" for name, lines in failures.items() for line in lines]
    cpu_figures = {name: cpu_per_thousand(rounds, args.rows) for name, rounds in cpu.items()}
    columns = ("publisher", "events/s", "ratio vs EventProducer", "duplicates", "failed rounds")
    table = Table(title=f"outbox relay throughput, {args.rows:,} rows committed at once")
    for column in columns:
        table.add_column(column, justify="left" if column == "publisher" else "right")
    for name, rate in throughput.items():
        table.add_row(
            name,
            f"{rate:,.0f}",
            f"{ratios[name]:.2f}x",
            f"{sum(duplicates[name]):,}",
            f"{len(failures[name])}",
        )
    console.print(table)
    if failed_rounds:
        console.print("[red]FAILED rounds: " + "; ".join(failed_rounds) + "[/red]")
    lat_table = Table(title=f"commit to Kafka at {args.rate:,} events/s")
    for column in ("relay wake-up", "p50 ms", "p99 ms", "max ms", "achieved rate"):
        lat_table.add_column(column, justify="left" if column == "relay wake-up" else "right")
    for name, figures in latency.items():
        lat_table.add_row(
            name,
            f"{figures['p50_ms']:.1f}",
            f"{figures['p99_ms']:.1f}",
            f"{figures['max_ms']:.1f}",
            f"{figures['achieved_rate_per_s']:,.0f}/s",
        )
    console.print(lat_table)

    report = {
        "rows": args.rows,
        "events_per_s": throughput,
        "samples": samples,
        "ratio_vs_event_producer": ratios,
        "messages_in_topic": in_topic,
        "duplicates": duplicates,
        "order_violations": out_of_order,
        "failures": failures,
        "latency_rate_per_s": args.rate,
        "latency": latency,
        "cpu_ms_per_1000_rows": {name: f.by_name for name, f in cpu_figures.items()},
        "cpu_ms_per_1000_rows_total": {name: f.total for name, f in cpu_figures.items()},
        "cores_busy": {name: f.cores_busy for name, f in cpu_figures.items()},
    }
    (RESULTS / "outbox_relay.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"Throughput: {args.rows:,} rows committed at once, to acknowledged Kafka messages "
        f"(median of {args.repeat} rounds; each ratio the median of the per-round ratios). "
        "Every round's topic checked: at least a message per row (duplicates: the messages "
        "beyond, over the rounds), and with two relays each aggregate's messages in order.",
        "",
        "| publisher | events/s | ratio vs EventProducer | duplicates | failed rounds |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {n} | {r:,.0f} | {ratios[n]:.2f}x | {sum(duplicates[n]):,} | {len(failures[n])} |"
            for n, r in throughput.items()
        ),
        *(["", "FAILED rounds: " + "; ".join(failed_rounds)] if failed_rounds else []),
        "",
        f"CPU ms per 1,000 rows by process, from the commit to the table drained (the "
        f"baseline: its publishing), median of the rounds: publishing (this benchmark's "
        f"process for EventProducer, the relays together), every PostgreSQL process and the "
        f"Kafka broker of the machine; cores busy: their CPU over the stretch's wall time and "
        f"the machine's {os.cpu_count()} cores.",
        "",
        *cpu_table(cpu_figures, "publisher"),
        "",
        f"Latency from commit to Kafka (broker append time) at {args.rate:,} events/s:",
        "",
        "| relay wake-up | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {n} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {f['max_ms']:.1f} |"
            for n, f in latency.items()
        ),
    ]
    (RESULTS / "outbox_relay.md").write_text("\n".join(lines) + "\n")
    if failed_rounds:  # after the results are written, so they can be read; the run failed
        raise SystemExit("outbox_relay: " + "; ".join(failed_rounds))


if __name__ == "__main__":
    main()
