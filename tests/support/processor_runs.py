"""Running ``pipeline process`` on the effects processor in subprocesses, and checking its effects.

The processor is tests/support/effects_processor.py: each event's effect is a row of
``test_effects`` (key, seq, event id, pid). The helpers here produce its events, start and stop
its processes (their stderr goes to a file), read their metrics lines and check the rows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer, TopicPartition
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.processing.inbox import inbox_table
from pipeline.settings import PipelineSettings
from tests.support.effects_processor import effects, effects_metadata
from tests.support.stack_cli import PIPELINE

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = "tests.support.effects_processor:processor"


def wait_until(
    condition: Callable[[], Any], *, timeout_s: float, what: str, every_s: float = 0.25
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned), or fail saying ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


# --- events ------------------------------------------------------------------------------------


def effect_event(key: str, seq: int, **data: Any) -> Event:
    return Event(source="/test", type="Effect", partitionkey=key, data={"seq": seq, **data})


def keyed_events(keys: int, per_key: int, prefix: str = "k") -> list[Event]:
    """``per_key`` events for each of ``keys`` keys, interleaved: seq 0 of every key, then 1..."""
    return [effect_event(f"{prefix}{k}", seq) for seq in range(per_key) for k in range(keys)]


def produce(
    settings: PipelineSettings,
    topic: str,
    messages: Iterable[KafkaMessage | Event],
    producer: Producer | None = None,
) -> None:
    """Write ``messages`` (events are encoded) to ``topic``; every one acknowledged."""
    producer = producer or build_producer(settings.kafka)
    for n, item in enumerate(messages):
        message = encode(item) if isinstance(item, Event) else item
        while True:
            try:
                producer.produce(
                    topic, key=message.key, value=message.value, headers=message.headers
                )
                break
            except BufferError:
                producer.poll(0.1)
        if n % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} message(s) to {topic} not acknowledged"


def committed_total(settings: PipelineSettings, topic: str, group: str, partitions: int) -> int:
    """The sum of ``group``'s committed offsets on ``topic`` (read without joining the group)."""
    consumer = build_consumer(settings.kafka, group)
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=30
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in found)


# --- the processor's processes -----------------------------------------------------------------


def processor_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``pipeline process`` of a test's own processor (importable from
    the repository's root), on ``database_url``, its console lines text; ``extra`` on top."""
    python_path = os.pathsep.join(
        part for part in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if part
    )
    return {
        **os.environ,
        "PIPELINE_DATABASE__URL": database_url,
        "PIPELINE_LOGS__CONSOLE": "text",
        "PYTHONPATH": python_path,
        **extra,
    }


def effects_env(
    *, topic: str, group: str, database_url: str, **extra: str | int | float
) -> dict[str, str]:
    """The environment of ``pipeline process tests.support.effects_processor:processor``.

    The group session timeout is ``processing.session_timeout_s`` (10 s by default), so a
    killed member leaves the group in seconds.
    """
    env = processor_env(
        database_url,
        EFFECTS_TOPIC=topic,
        EFFECTS_GROUP=group,
        PIPELINE_PROCESSING__METRICS_LOG_INTERVAL_S="1",
    )
    for name in ("EFFECTS_FAIL_MARKER", "EFFECTS_HANDLER", "EFFECTS_SLEEP_MS", "EFFECTS_WRITE"):
        env.pop(name, None)  # only what the test asks for
    env.update({name: str(value) for name, value in extra.items()})
    return env


_SUMMARY = re.compile(
    r": ([\d,]+) processed.*?, ([\d,]+) duplicates skipped, ([\d,]+) dead-lettered, "
    r"([\d,]+) retries, (\d+) in flight, lag ([\d,]+)"
)


@dataclass(frozen=True)
class Summary:
    """One metrics line of a processor (its counts since it started)."""

    processed: int
    duplicates: int
    dead_lettered: int
    retries: int
    in_flight: int
    lag: int


def summaries(log: str) -> list[Summary]:
    found = []
    for match in _SUMMARY.finditer(log):
        numbers = [int(group.replace(",", "")) for group in match.groups()]
        found.append(Summary(*numbers))
    return found


class ProcessorProcess:
    """One ``pipeline process`` subprocess; its stderr goes to ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, spec: str = SPEC) -> None:
        self.log_path = log_path
        self.started_at = time.monotonic()
        with log_path.open("w") as log:
            self.popen = subprocess.Popen(
                [PIPELINE, "process", spec],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd=REPO_ROOT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def assert_alive(self) -> None:
        assert self.alive(), (
            f"processor {self.pid} exited by itself (code {self.popen.returncode}):\n{self.tail()}"
        )

    def summaries(self) -> list[Summary]:
        return summaries(self.log())

    def settled_summary(self, processed: int, timeout_s: float = 60) -> Summary:
        """Wait until its last metrics line shows ``processed`` events, none in flight and no
        lag (it stays alive meanwhile); that line."""

        def settled() -> Summary | None:
            self.assert_alive()
            lines = self.summaries()
            last = lines[-1] if lines else None
            if last and last.processed == processed and not last.in_flight and last.lag == 0:
                return last
            return None

        summary: Summary = wait_until(
            settled, timeout_s=timeout_s, what=f"the metrics to show {processed:,} processed"
        )
        return summary

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def terminate(self, timeout_s: float = 90) -> int:
        """SIGTERM (a graceful stop); its exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=30)
            raise AssertionError(
                f"processor {self.pid} did not stop within {timeout_s:.0f} s of SIGTERM:\n"
                f"{self.tail()}"
            ) from None

    def stop_quietly(self) -> None:
        """For cleanup: whatever state it is in, it is gone afterwards."""
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=30)


# --- effects -----------------------------------------------------------------------------------


def effects_database(database_url: str) -> Engine:
    """An engine on the test database, with ``test_effects`` created."""
    engine = create_engine(database_url, pool_pre_ping=True)
    effects_metadata.create_all(engine)
    return engine


def effects_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(effects)).scalar_one())


def effect_rows(engine: Engine) -> list[tuple[int, str, int, str, int]]:
    """Every effect as ``(id, key, seq, event_id, pid)``, in insertion (id) order."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                effects.c.id, effects.c.key, effects.c.seq, effects.c.event_id, effects.c.pid
            ).order_by(effects.c.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def inbox_count(engine: Engine, group: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count())
                .select_from(inbox_table)
                .where(inbox_table.c.consumer_group == group)
            ).scalar_one()
        )


def exactly_once_in_order_problems(
    rows: list[tuple[int, str, int, str, int]], expected: list[Event]
) -> list[str]:
    """What is wrong with ``rows`` against the ``expected`` events (nothing: ``[]``).

    Every expected event has exactly one effect and nothing else has one; each key's effects,
    in insertion order, have the key's seq numbers in the order they were produced.
    """
    problems: list[str] = []
    ids = [row[3] for row in rows]
    wanted = {event.id for event in expected}
    counts: dict[str, int] = defaultdict(int)
    for event_id in ids:
        counts[event_id] += 1
    twice = sorted(event_id for event_id, count in counts.items() if count > 1)
    missing = sorted(wanted - counts.keys())
    unexpected = sorted(counts.keys() - wanted)
    if len(rows) != len(expected):
        problems.append(f"{len(rows):,} effects for {len(expected):,} events")
    if twice:
        problems.append(f"{len(twice):,} event(s) with more than one effect, e.g. {twice[:3]}")
    if missing:
        problems.append(f"{len(missing):,} event(s) without an effect, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected):,} effect(s) of unknown events, e.g. {unexpected[:3]}")
    produced: dict[str, list[int]] = defaultdict(list)
    for event in expected:
        produced[event.partitionkey or ""].append(int(event.data["seq"]))
    applied: dict[str, list[int]] = defaultdict(list)
    for _, key, seq, _, _ in rows:
        applied[key].append(seq)
    disordered = [key for key in produced if applied.get(key, []) != produced[key]]
    for key in disordered[:3]:
        problems.append(f"key {key}: effects in seq order {applied.get(key, [])[:20]}...")
    if disordered:
        problems.append(f"{len(disordered):,} key(s) not applied exactly in their order")
    return problems


def wait_for_effects(
    engine: Engine,
    target: int,
    processes: Iterable[ProcessorProcess],
    *,
    stall_s: float = 90,
    every_s: float = 1,
) -> int:
    """Wait until ``target`` effects exist; fail when the count stops growing for ``stall_s``.

    A deadline that moves with progress: a loaded machine makes the processors slow, not
    stuck. Every process in ``processes`` must stay alive meanwhile.
    """
    watched = list(processes)
    best, since = -1, time.monotonic()
    while True:
        for process in watched:
            process.assert_alive()
        count = effects_count(engine)
        if count >= target:
            return count
        if count > best:
            best, since = count, time.monotonic()
        elif time.monotonic() - since > stall_s:
            tails = "\n\n".join(f"{p.pid}:\n{p.tail(15)}" for p in watched)
            raise AssertionError(
                f"{count:,} of {target:,} effects, and no new one for {stall_s:.0f} s:\n{tails}"
            )
        time.sleep(every_s)
