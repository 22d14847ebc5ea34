"""Scale-out: events/s of the processing stage with 1, 2 and 4 processor processes in one
consumer group on a 12-partition topic, and sagas/s of the saga stage with 1 and 2
orchestrators, with the CPU time per event and the load average, to show how the design scales
with consumer groups and where this machine's cores stop it.

Processing stage: ``pipeline process bench.effect_rows:processor`` (the runtime as it ships:
key ordering, inbox, group commit on PostgreSQL, 16 events in flight), an I/O-bound async
handler that waits 2 ms (``--sleep-ms``; a call to another service) then writes the event's
effect row; in the full run also a no-op handler (the effect row only, ``--noop``), where the
cores, not the waits, set the pace. Each count is a consumer group of its own on a topic of its
own (1, 2 and 4 members, of the runtime and of the poll loop below: every process starts at
once, and every group is stable before the first round); the groups not being measured sit
idle, with no events on their topics. A round
produces ``--events`` events (keyed over 1,000 keys) at once and times them from the first
event handled to the last (effect rows written; the poll loops note their own times), as
bench/processing.py does, so the group's fetch start is not counted; CPU is the processors'
user + system time over the round, per event (PostgreSQL's and Kafka's are not counted).
Baselines: the 1-process figure (ratio 1.0; 2 and 4 processes are ratios to it), and a plain
confluent-kafka poll loop (bench/scale_poll_worker.py: decode, ``time.sleep`` 2 ms, one event
at a time) with the same process counts, measured the same way (``vs_poll_loop`` on the
runtime's rows: runtime / poll loop at the same count).

Saga stage: the demo's CreateOrder saga and services (bench/sagas.py: orders, inventory,
payments, shipping, one outbox relay, PostgreSQL) with 1 then 2 saga orchestrators in their
group. A round is a burst of ``--sagas`` PlaceOrders; sagas/s = sagas / (last saga's end - first
saga's start); CPU is every saga process's time per saga. Baseline: 1 orchestrator.

With 2 cores (shared with Kafka, PostgreSQL, Elasticsearch and other jobs), a stage scales
while its processes wait (the 2 ms handler) and stops where the cores are busy: the CPU ms per
event and the load average in each row say which. Every process uses topics, groups and a
database of this run's own. ``--quick`` (fewer events, no warm-up rounds in either stage, the
saga services started while the processing stage runs) for ``make bench QUICK=1``.

Run: ``.venv/bin/python bench/scale_out.py [--events 4000] [--sagas 40] [--repeat 3]``.
Results: bench/results/scale_out.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from child_processes import stop as stop_children
from consumer_groups import stable_members
from effect_rows import tables as effect_tables
from latency_baselines import create_topics, delete_topics
from paced_load import row, with_ratios, write_results
from sagas import (
    LAUNCHER,
    _place_order,
    namespace_topics,
    new_namespace,
    services,
    wait_until_ended,
    wait_until_ready,
)
from topic_namespace import service_environment
from topic_namespace import topic as namespaced

from pipeline.cli.demo_sagas import SAGA_SERVICES
from pipeline.database import build_engine
from pipeline.envelope import Event
from pipeline.kafka.clients import build_admin
from pipeline.kafka.producer import EventProducer, build_event_producer
from pipeline.settings import DatabaseSettings, PipelineSettings
from pipeline.stack.manager import StackManager
from pipeline.stack.postgres_node import create_database, database_url, drop_database
from pipeline.topics.catalogue import REQUESTS_ORDERS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PIPELINE = str(ROOT / ".venv" / "bin" / "pipeline")
NAME = "scale_out"
STAGE = "scale-out"
PARTITIONS = 12
PROCESS_COUNTS = (1, 2, 4)
ORCHESTRATOR_COUNTS = (1, 2)
KEYS = 1_000
#: Every group member's session timeout (processing.session_timeout_s's smallest allowed
#: value; heartbeats every fifth of it).
SESSION_TIMEOUT_S = 6
#: A pause before each processing round: the previous round's last commits are done before
#: the next one's events arrive (rounds back to back measured the runtime ~15% slower).
SETTLE_S = 0.3


def _progress(began: float, what: str) -> None:
    print(f"[{time.monotonic() - began:5.1f} s] {what}", flush=True)


def _cpu_s(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def _members(settings: PipelineSettings, group: str) -> int:
    members = stable_members(build_admin(settings.kafka), [group])
    return 0 if members is None else members[group]


def _wait_members(
    settings: PipelineSettings, group: str, count: int, children: Sequence[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 300
    while _members(settings, group) != count:
        if any(child.poll() is not None for child in children):
            raise SystemExit(f"{group}: a process exited while starting")
        if time.monotonic() > deadline:
            raise SystemExit(f"{group}: not {count} stable members after 300 s")
        time.sleep(0.3)


# --- the processing stage ---------------------------------------------------------------------


class Contender:
    """``count`` processes of one kind in one group of their own, on a topic of their own."""

    def __init__(
        self,
        kind: str,
        count: int,
        sleep_ms: float,
        topic: str,
        group: str,
        env: dict[str, str],
        work: Path,
    ):
        self.kind, self.count, self.sleep_ms = kind, count, sleep_ms
        self.topic, self.group, self.env, self.work = topic, group, env, work
        self.children: list[subprocess.Popen[bytes]] = []

    @property
    def slug(self) -> str:
        """What names this contender's files in ``work``: each contender's are its own (the
        full profile runs every kind and count with two handler waits at once)."""
        return f"{self.kind}-{self.sleep_ms:g}ms-{self.count}p"

    def report_path(self, n: int) -> Path:
        """Where process ``n`` of a poll-loop contender writes its report."""
        return self.work / f"{self.slug}-{n}.json"

    def log_path(self, n: int) -> Path:
        return self.work / f"{self.slug}-{n}.log"

    def start(self) -> None:
        """Start the processes (without waiting for them: see :meth:`wait_ready`)."""
        for n in range(self.count):
            if self.kind == "runtime":
                args = [PIPELINE, "process", "bench.effect_rows:processor"]
            else:
                args = [
                    sys.executable,
                    str(BENCH / "scale_poll_worker.py"),
                    self.topic,
                    self.group,
                    str(self.sleep_ms),
                    str(self.report_path(n)),
                ]
            with self.log_path(n).open("wb") as log:
                self.children.append(
                    subprocess.Popen(
                        args,
                        env={**os.environ, **self.env},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )

    def wait_ready(self, settings: PipelineSettings) -> None:
        _wait_members(settings, self.group, self.count, self.children)

    def poll_state(self, run: str) -> tuple[int, float, float]:
        """The poll loops' events of round ``run`` handled so far, and the first and last
        time one was handled."""
        handled, first, last = 0, float("inf"), 0.0
        for n in range(len(self.children)):
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                report = json.loads(self.report_path(n).read_text())
                if run in report["rounds"]:
                    begun, ended, count = report["rounds"][run]
                    handled += count
                    first, last = min(first, begun), max(last, ended)
        return handled, first, last


def processing_round(
    producer: EventProducer,
    contender: Contender,
    engine: sa.Engine,
    events: int,
) -> tuple[float, float]:
    """One round: ``events`` produced at once; (events/s from the first event handled to the
    last, CPU ms per event)."""
    run = uuid.uuid4().hex[:6]
    pids = [child.pid for child in contender.children]
    time.sleep(SETTLE_S)
    cpu_before = _cpu_s(pids)
    began = time.time()
    for n in range(events):
        producer.send(
            contender.topic,
            Event(
                source="/bench/scale-out",
                type="Effect",
                partitionkey=f"k{n % KEYS}",
                data={"run": run, "seq": n},
            ),
        )
    producer.flush(60)
    deadline = time.monotonic() + 300
    while True:
        time.sleep(0.1)
        if contender.kind == "runtime":
            with engine.connect() as connection:
                done, first, last = connection.execute(
                    sa.text(
                        "SELECT count(*), min(handled_at), max(handled_at) FROM bench_effects "
                        "WHERE handled_at >= :t"
                    ),
                    {"t": began},
                ).one()
        else:
            done, first, last = contender.poll_state(run)
        if done >= events:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{contender.kind}: {done} of {events} handled after 300 s")
    cpu = _cpu_s(pids) - cpu_before
    # events - 1 intervals between the first handled event and the last (processing.py's way)
    return (events - 1) / (float(last) - float(first)), cpu * 1000 / events


def processing_stage(
    settings: PipelineSettings, run: str, url: str, work: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        sleeps = [args.sleep_ms, 0.0] if args.noop and args.sleep_ms else [args.sleep_ms]
        # A group per kind and count, each on a topic of its own, all started together and
        # all stable before the first round: one start-up and join for every process instead
        # of a member added at a time. The groups not being measured sit idle (no events on
        # their topics: a fetch request now and then).
        contenders = []
        for sleep_ms, kind, count in [
            (ms, kind, count)
            for ms in sleeps
            for kind in ("runtime", "poll")
            for count in PROCESS_COUNTS
        ]:
            name = f"{run}.{kind}-{sleep_ms:g}ms-{count}p"
            topic = f"bench.scale-{name}"
            group = f"bench-scale-{name}"
            contenders.append(
                Contender(
                    kind,
                    count,
                    sleep_ms,
                    topic,
                    group,
                    {
                        "PIPELINE_DATABASE__URL": url,
                        "PIPELINE_LOGS__TOPIC": f"bench.scale-{run}.service-logs",
                        "BENCH_EFFECTS_TOPIC": topic,
                        "BENCH_EFFECTS_GROUP": group,
                        "BENCH_EFFECTS_SLEEP_MS": str(sleep_ms),
                    },
                    work,
                )
            )
        topics = [c.topic for c in contenders]
        create_topics(settings, topics, PARTITIONS)
        create_topics(settings, [f"{t}.dlq" for t in topics], 1)
        producer = build_event_producer(settings.kafka, settings.producer)  # every round's
        try:
            for contender in contenders:
                contender.start()
            for contender in contenders:
                contender.wait_ready(settings)
            time.sleep(1)  # the members' first fetches
            _progress(began, f"processing: {len(contenders)} groups ready")
            for contender in contenders:
                if not args.quick:  # --quick: the median of 3 rounds copes with a slow first
                    processing_round(producer, contender, engine, max(50, args.events // 10))
                results = [
                    processing_round(producer, contender, engine, args.events)
                    for _ in range(args.repeat)
                ]
                rows.append(
                    _processing_row(contender.kind, contender.count, results, contender.sleep_ms)
                )
                _progress(began, f"  {rows[-1]['case']}: {rows[-1]['value']:,.0f} events/s")
        finally:
            producer.flush()
            stop_children([child for contender in contenders for child in contender.children])
            delete_topics(settings, [*topics, *(f"{t}.dlq" for t in topics)])
    finally:
        engine.dispose()
    return _vs_poll_loop(rows)


def _case(kind: str, count: int, sleep_ms: float) -> str:
    what = "pipeline process (runtime)" if kind == "runtime" else "plain poll loop"
    noun = "process" if count == 1 else "processes"
    handler = f"{sleep_ms:g} ms I/O handler" if sleep_ms else "no-op handler"
    return f"processing, {what}, {handler}, {count} {noun}"


def _processing_row(
    kind: str, count: int, results: list[tuple[float, float]], sleep_ms: float
) -> dict[str, Any]:
    cpu = sorted(c for _, c in results)[len(results) // 2]
    return row(
        NAME,
        _case(kind, count, sleep_ms),
        stage=STAGE,
        kind="throughput",
        unit="events/s",
        rounds=[rate for rate, _ in results],
        baseline=None if count == 1 else _case(kind, 1, sleep_ms),
        cpu_ms_per_event=cpu,
        processes=count,
        load_average=round(os.getloadavg()[0], 2),
        partitions=PARTITIONS,
        handler_sleep_ms=sleep_ms,
    )


def _vs_poll_loop(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``vs_poll_loop`` on each runtime row: its value / the poll loop's with as many
    processes and the same handler."""
    polls = {
        (r["processes"], r["handler_sleep_ms"]): r["value"]
        for r in rows
        if "poll loop" in r["case"]
    }
    for r in rows:
        poll = polls.get((r["processes"], r["handler_sleep_ms"]))
        if "runtime" in r["case"] and poll:
            r["vs_poll_loop"] = round(r["value"] / poll, 3)
    return rows


# --- the saga stage ---------------------------------------------------------------------------


def saga_round(
    producer: EventProducer, engine: sa.Engine, prefix: str, pids: Sequence[int], sagas: int
) -> tuple[float, float]:
    """One burst of ``sagas`` PlaceOrders; (sagas/s, CPU ms per saga of every saga process)."""
    run = uuid.uuid4().hex[:8]
    ids = [f"scale-{run}-{n}" for n in range(sagas)]
    cpu_before = _cpu_s(pids)
    for order_id in ids:
        producer.send(namespaced(prefix, REQUESTS_ORDERS), _place_order(order_id))
    producer.flush(60)
    found = wait_until_ended(engine, ids, 300, "sagas")
    cpu = _cpu_s(pids) - cpu_before
    span = max(r.updated_at for r in found) - min(r.created_at for r in found)
    return sagas / span.total_seconds(), cpu * 1000 / sagas


@contextlib.contextmanager
def saga_services(
    settings: PipelineSettings, url: str, work: Path
) -> Iterator[tuple[str, dict[str, int]]]:
    prefix = new_namespace("scale")
    with namespace_topics(settings, prefix), services(url, work, prefix) as pids:
        yield prefix, pids


def saga_stage(
    settings: PipelineSettings,
    url: str,
    work: Path,
    prefix: str,
    pids: dict[str, int],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    producer = build_event_producer(settings.kafka, settings.producer)  # every round's
    began = time.monotonic()
    rows = []
    extra: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        **service_environment(prefix),
        "PIPELINE_DATABASE__URL": url,
        "PIPELINE_DEMO__STOCK_PER_SKU": "100000000",
        "PIPELINE_DEMO__DECLINE_ABOVE_CENTS": "100000000",
        "PIPELINE_DEMO__SLOW_SHIPPING_SHARE": "0",
        "PIPELINE_DEMO__FLAKY_REFUND_SHARE": "0",
    }
    try:
        for count in ORCHESTRATOR_COUNTS:
            while len(extra) + 1 < count:
                spec = dict(SAGA_SERVICES)["saga-orchestrator"]
                with (work / f"saga-orchestrator-{len(extra) + 2}.log").open("wb") as log:
                    extra.append(
                        subprocess.Popen(
                            [sys.executable, LAUNCHER, prefix, spec],
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            cwd=ROOT,
                        )
                    )
            wait_until_ready(
                settings,
                engine,
                {**pids, **{f"extra-{p.pid}": p.pid for p in extra}},
                prefix,
                orchestrators=count,
            )
            _progress(began, f"sagas: {count} orchestrators ready")
            every = [*pids.values(), *(p.pid for p in extra)]
            if not args.quick:  # --quick: the median of 3 rounds copes with a slow first
                saga_round(producer, engine, prefix, every, 3)  # the first transactions
            results = [
                saga_round(producer, engine, prefix, every, args.sagas) for _ in range(args.repeat)
            ]
            noun = "orchestrator" if count == 1 else "orchestrators"
            base = "sagas, CreateOrder, 1 orchestrator"
            rows.append(
                row(
                    NAME,
                    f"sagas, CreateOrder, {count} {noun}",
                    stage=STAGE,
                    kind="throughput",
                    unit="sagas/s",
                    rounds=[rate for rate, _ in results],
                    baseline=None if count == 1 else base,
                    cpu_ms_per_event=sorted(c for _, c in results)[len(results) // 2],
                    processes=count,
                    load_average=round(os.getloadavg()[0], 2),
                )
            )
            _progress(began, f"  {rows[-1]['value']:,.1f} sagas/s")
    finally:
        producer.flush()
        stop_children(extra)
        engine.dispose()
    return rows


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events per processing round")
    parser.add_argument("--sagas", type=int, default=40, help="sagas per saga round")
    parser.add_argument("--sleep-ms", type=float, default=2.0, help="the handler's wait")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per figure (>= 3)")
    parser.add_argument(
        "--noop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also a no-op handler (default: in the full run, not with --quick)",
    )
    parser.add_argument("--stages", default="processing,sagas", help="which stages")
    parser.add_argument("--quick", action="store_true", help="small rounds, overlapped start")
    args = parser.parse_args()
    if args.quick:
        args.events, args.sagas = min(args.events, 400), min(args.sagas, 10)
    if args.noop is None:
        args.noop = not args.quick
    stages = set(args.stages.split(","))
    started = datetime.now(UTC)
    # Every process of the run (processors, saga services: they inherit the environment)
    # takes the smallest session timeout the settings allow, so members learn of a
    # rebalance at the next heartbeat, within 1.2 s instead of 2 s: adding a member waits
    # less; steady throughput does not change (the poll loops take the same, in their file).
    os.environ["PIPELINE_PROCESSING__SESSION_TIMEOUT_S"] = str(SESSION_TIMEOUT_S)
    settings = PipelineSettings()
    StackManager(settings).up()
    run = uuid.uuid4().hex[:8]
    databases = {stage: f"bench_scale_{run}_{stage}" for stage in ("processing", "sagas")}
    for database in databases.values():
        create_database(settings.stack, database)
    urls = {s: database_url(settings.stack, d, with_password=True) for s, d in databases.items()}
    # The effects table before the processes start: their start hooks creating it at once
    # raced on PostgreSQL's catalogue (a duplicate pg_type row ended one of them).
    effects_engine = build_engine(DatabaseSettings(url=urls["processing"]), pool_size=1)
    effect_tables.create_all(effects_engine)
    effects_engine.dispose()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    load_before = os.getloadavg()[0]
    create_topics(settings, [f"bench.scale-{run}.service-logs"], 1)
    rows: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            early: Callable[[], tuple[str, dict[str, int]]] | None = None
            if "sagas" in stages and args.quick:  # they start while the processing stage runs
                started_sagas = stack.enter_context(saga_services(settings, urls["sagas"], work))
                early = lambda: started_sagas  # noqa: E731
            if "processing" in stages:
                rows += processing_stage(settings, run, urls["processing"], work, args)
            if "sagas" in stages:
                prefix, pids = (
                    early()
                    if early
                    else stack.enter_context(saga_services(settings, urls["sagas"], work))
                )
                rows += saga_stage(settings, urls["sagas"], work, prefix, pids, args)
        rows = with_ratios(rows)
        path = write_results(
            RESULTS,
            NAME,
            quick=args.quick,
            started=started,
            rows=rows,
            title="Scale-out: processors and orchestrators in one consumer group",
            notes=[
                f"Processing: a {PARTITIONS}-partition topic, a {args.sleep_ms:g} ms I/O-bound "
                f"handler, {args.events:,} events a round; sagas: bursts of {args.sagas}. "
                "Ratios are to 1 process of the same kind; `vs_poll_loop` in the JSON compares "
                "the runtime with the plain poll loop at the same count. See the docstring of "
                "bench/scale_out.py.",
                "",
                f"Load average before and after: {load_before:.1f}, {os.getloadavg()[0]:.1f}; "
                f"{os.cpu_count()} cores shared with Kafka, PostgreSQL, Elasticsearch and "
                "other jobs.",
            ],
            load_average_before=load_before,
            load_average_after=os.getloadavg()[0],
            sleep_ms=args.sleep_ms,
            events_per_round=args.events,
            sagas_per_round=args.sagas,
        )
        print(path.with_suffix(".md").read_text())
    finally:
        delete_topics(settings, [f"bench.scale-{run}.service-logs"])
        for database in databases.values():
            try:
                drop_database(settings.stack, database)
            except Exception as error:  # the results are written; a leftover is not fatal
                print(f"could not drop database {database}: {' '.join(str(error).split())[:200]}")


if __name__ == "__main__":
    main()
