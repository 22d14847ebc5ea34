"""Sagas end to end: completed sagas/s and saga latency at increasing offered load, and the CPU
time per saga of every process, against a plain confluent-kafka request/reply chain.

The saga: the demo's CreateOrder (consumers/order_saga.py), five steps (validate, reserve as a
try, charge, ship, approve) plus the reservation's confirm, with no injected failure. Every
process runs on this machine: the order service, the saga orchestrator, inventory, payments and
shipping (``pipeline process`` each), one ``pipeline outbox relay``, PostgreSQL (a fresh
database), Kafka and Elasticsearch (the log shipper is not run; the log lines still go to the
``logs`` topic).

For each offered load (sagas started per second, for ``--seconds``), PlaceOrder requests are
produced at that rate to ``requests.orders``; a saga's latency runs from its row's creation
(inside the order service's transaction) to its last transition; completed/s is the level's
completed sagas over the time from just before the first PlaceOrder is sent to the last
completion (the baseline's clock starts before its first send too); sagas that end otherwise
(compensated, ...: none is made to fail) are reported by status (``ended_otherwise``), not
counted. p50/p99: the nearest rank (paced_load.percentile, as every benchmark). CPU: user +
system time of each process (and of all PostgreSQL backends, and the Kafka broker) during the
level, per saga.

Baseline, in the same run: the same six sequential round trips per saga made with raw
confluent-kafka between two threads over two topics (no database, no outbox, no inbox): what
Kafka alone costs for the saga's message exchange on this machine, measured right after each
level (not interleaved with it). Each level's baseline runs on fresh topics with a fresh
producer and consumers, so it is warmed up first, as the saga services are by the time a level
is measured (started, joined and running since the start): ``WARMUP_CHAINS`` chains at the
level's rate before its measured window, waited for and not counted (measured cold, its p99 at
5-20/s was ~425 ms beside a p50 of ~21 ms, and ~33 ms at 40/s: a few slow first chains, it
seemed, which are the p99 of a level of few sagas). Compared by p99 latency (saga/baseline):
at one offered load both complete at about that rate. One measurement per level, no rounds:
the ratio is of the two p99s.

Every process runs on topics and consumer groups of the run's own (``bench-sagas-<run>.`` before
each catalogue name and group, bench/topic_namespace.py), made at the start and deleted at the
end: a bench run and the demo (or CI's e2e test of it) on the same stack share no partition.

Run: ``.venv/bin/python bench/sagas.py [--rates 5,10,20,40,60] [--seconds 20]``; ``--quick``
runs two short levels. Results: bench/results/sagas.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from consumer_groups import stable_members
from paced_load import percentile
from process_cpu import cpu_by_pid, cpu_spent
from topic_namespace import group, namespaced_catalogue, service_environment, topic

from pipeline.cli.demo_sagas import SAGA_GROUP_TOPICS, SAGA_SERVICES
from pipeline.cli.demo_services import PROCESSOR_NAME, PROCESSOR_SPEC
from pipeline.envelope import Event
from pipeline.kafka.clients import build_admin, consumer_config, producer_config
from pipeline.kafka.producer import build_event_producer
from pipeline.sagas.state import TERMINAL
from pipeline.sagas.store import sagas_table
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from pipeline.stack.postgres_node import create_database, database_url, drop_database
from pipeline.topics.admin import apply_plan, describe_cluster_topics
from pipeline.topics.catalogue import REQUESTS_ORDERS, saga_commands_topic
from pipeline.topics.plan import build_plan

RESULTS = Path(__file__).parent / "results"
PIPELINE = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "pipeline")
LAUNCHER = str(Path(__file__).with_name("topic_namespace.py"))
#: Round trips of one CreateOrder saga without failures: five steps and the confirm.
ROUND_TRIPS = 6
#: Chains the baseline makes at each level before its measured window (not counted): its first
#: chains on fresh topics and clients are slow, and the saga services are warm.
WARMUP_CHAINS = 12
GROUP_TOPICS = {
    PROCESSOR_NAME: [REQUESTS_ORDERS, saga_commands_topic("orders")],
    **SAGA_GROUP_TOPICS,
}


def new_namespace(kind: str = "sagas") -> str:
    """A fresh prefix for one run's topics and groups: ``bench-sagas-1a2b3c4d.``."""
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}."


def group_topics(prefix: str) -> dict[str, list[str]]:
    """The consumer groups of the saga services under ``prefix``, with the topics each reads."""
    return {
        group(prefix, name): [topic(prefix, name) for name in topics]
        for name, topics in GROUP_TOPICS.items()
    }


@contextmanager
def namespace_topics(settings: PipelineSettings, prefix: str) -> Iterator[list[str]]:
    """The catalogue's topics under ``prefix``, made now and deleted after."""
    admin = build_admin(settings.kafka)
    catalogue = namespaced_catalogue(prefix)
    apply_plan(admin, build_plan(catalogue, describe_cluster_topics(admin, catalogue.names)))
    try:
        yield sorted(catalogue.names)
    finally:
        for future in admin.delete_topics(sorted(catalogue.names)).values():
            try:
                future.result(30)
            except Exception as error:  # a leftover topic is not fatal to the results
                print(f"could not delete a bench topic: {' '.join(str(error).split())[:200]}")


def level_figures(
    began: datetime, ended: Sequence[tuple[str, datetime, datetime]]
) -> dict[str, Any]:
    """A level's figures from its sagas' (status, created_at, updated_at), ``began`` being
    just before its first PlaceOrder was sent: completed sagas per second from then to the
    last completion (the baseline's clock also starts before its first send), p50/p99 of the
    completed sagas' latencies (paced_load.percentile, the nearest rank, as every benchmark),
    and how many ended otherwise, by status (none is made to fail: they are reported, not
    counted as done)."""
    completed = [(created, updated) for status, created, updated in ended if status == "completed"]
    otherwise: dict[str, int] = {}
    for status, _, _ in ended:
        if status != "completed":
            otherwise[status] = otherwise.get(status, 0) + 1
    if not completed:
        raise SystemExit(f"no saga completed: {otherwise}")
    latencies = [(updated - created).total_seconds() for created, updated in completed]
    span = max((max(updated for _, updated in completed) - began).total_seconds(), 1e-9)
    return {
        "sagas": len(ended),
        "completed": len(completed),
        "ended_otherwise": otherwise,
        "completed_per_s": len(completed) / span,
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p99_s": percentile(latencies, 0.99),
    }


# --- the saga services ------------------------------------------------------------------------


@contextmanager
def services(url: str, log_dir: Path, prefix: str) -> Iterator[dict[str, int]]:
    """Every saga process started on the topics and groups of ``prefix`` (and stopped after);
    their pids by name."""
    env = {
        **os.environ,
        **service_environment(prefix),
        "PIPELINE_DATABASE__URL": url,
        "PIPELINE_DEMO__STOCK_PER_SKU": "100000000",
        "PIPELINE_DEMO__DECLINE_ABOVE_CENTS": "100000000",
        "PIPELINE_DEMO__SLOW_SHIPPING_SHARE": "0",
        "PIPELINE_DEMO__FLAKY_REFUND_SHARE": "0",
    }
    commands = {
        PROCESSOR_NAME: [sys.executable, LAUNCHER, prefix, PROCESSOR_SPEC],
        **{name: [sys.executable, LAUNCHER, prefix, spec] for name, spec in SAGA_SERVICES},
        "outbox-relay": [PIPELINE, "outbox", "relay"],
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, args in commands.items():
            with (log_dir / f"sagas-{name}.log").open("wb") as log:
                children[name] = subprocess.Popen(
                    args, env=env, stdout=log, stderr=subprocess.STDOUT
                )
        yield {name: child.pid for name, child in children.items()}
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()


def wait_until_ready(
    settings: PipelineSettings,
    engine: sa.Engine,
    pids: dict[str, int],
    prefix: str,
    timeout_s: float = 300.0,
    orchestrators: int = 1,
) -> None:
    """Until the services migrated the database and every consumer group is stable with a
    member, the orchestrators' with ``orchestrators`` (a loaded machine takes far longer than
    a fixed pause to start them)."""
    admin = build_admin(settings.kafka)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, pid in pids.items():
            if not psutil.pid_exists(pid):
                raise SystemExit(f"{name} exited while starting: see {RESULTS}/sagas-{name}.log")
        if sa.inspect(engine).has_table(sagas_table.name):
            members = stable_members(admin, list(group_topics(prefix)))
            wanted = {name: 1 for name in group_topics(prefix)}
            wanted[group(prefix, "saga-orchestrator")] = orchestrators
            if members is not None and all(members[name] >= n for name, n in wanted.items()):
                time.sleep(1)  # the members' first fetches
                return
        time.sleep(0.3)
    raise SystemExit(f"the saga services were not ready after {timeout_s:.0f} s")


def _place_order(order_id: str) -> Event:
    return Event(
        source="/bench/sagas",
        type="com.example.requests.place_order",
        partitionkey=order_id,
        data={
            "order_id": order_id,
            "customer_id": "bench",
            "lines": [
                {"sku": f"bench-sku-{hash(order_id) % 50}", "quantity": 1, "unit_price": "1.00"}
            ],
        },
    )


def saga_level(
    settings: PipelineSettings,
    engine: sa.Engine,
    pids: dict[str, int],
    rate: float,
    seconds: float,
    prefix: str,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    count = max(1, int(rate * seconds))
    ids = [f"bench-{run}-{n}" for n in range(count)]
    before = cpu_by_pid(pids)
    with build_event_producer(settings.kafka, settings.producer) as producer:
        # The clock starts before the first send, as the baseline's (its ``began``): the
        # time to the first saga row is part of the level.
        began = datetime.now(UTC)
        started = time.monotonic()
        for n, order_id in enumerate(ids):
            pause = started + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            producer.send(topic(prefix, REQUESTS_ORDERS), _place_order(order_id))
        producer.flush(60)
    rows = wait_until_ended(engine, ids, max(300.0, seconds * 10), f"rate {rate}")
    spent = cpu_spent(before, cpu_by_pid(pids))
    figures = level_figures(began, [(row.status, row.created_at, row.updated_at) for row in rows])
    return {
        "offered_per_s": rate,
        **figures,
        "cpu_ms_per_saga": {name: seconds * 1000 / count for name, seconds in spent.items()},
    }


def wait_until_ended(
    engine: sa.Engine, ids: Sequence[str], timeout_s: float, what: str
) -> Sequence[sa.Row[Any]]:
    """Until every saga of ``ids`` has a row in a terminal state: their (status, created_at,
    updated_at) rows; SystemExit after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(
                    sagas_table.c.status, sagas_table.c.created_at, sagas_table.c.updated_at
                ).where(sagas_table.c.saga_id.in_(ids))
            ).all()
        if len(rows) == len(ids) and all(row.status in TERMINAL for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{what}: {len(rows)} of {len(ids)} sagas started, not all ended "
                f"in {timeout_s:.0f} s"
            )
        time.sleep(0.2)


# --- the baseline: the same round trips with raw confluent-kafka ------------------------------


def baseline_level(settings: PipelineSettings, rate: float, seconds: float) -> dict[str, Any]:
    """Sagas of ROUND_TRIPS sequential request/reply exchanges between two threads, after
    WARMUP_CHAINS chains at ``rate`` that are waited for and not counted."""
    admin = build_admin(settings.kafka)
    run = uuid.uuid4().hex[:8]
    requests, replies = f"bench.saga-requests.{run}", f"bench.saga-replies.{run}"
    futures = admin.create_topics([NewTopic(t, 6, 1) for t in (requests, replies)])
    for future in futures.values():
        future.result(30)
    count = max(1, int(rate * seconds))
    started_at: dict[str, float] = {}
    latencies: list[float] = []
    done = threading.Event()
    producer = Producer(producer_config(settings.kafka, **{"linger.ms": 1}))

    joined = threading.Semaphore(0)
    warmed = threading.Semaphore(0)  # a warm-up chain finished

    def consumer(topic: str, group: str) -> Consumer:
        client = Consumer(
            consumer_config(settings.kafka, group, **{"auto.offset.reset": "earliest"})
        )
        client.subscribe([topic], on_assign=lambda *_: joined.release())
        return client

    def responder() -> None:
        client = consumer(requests, f"bench-responder-{run}")
        while not done.is_set():
            # poll returns as soon as a message is there; consume(500, 0.1) waited out its
            # timeout whenever fewer than 500 were waiting: up to 100 ms a hop
            message = client.poll(0.1)
            if message is not None and message.error() is None:
                producer.produce(replies, key=message.key(), value=message.value())
            producer.poll(0)
        client.close()

    def driver() -> None:
        client = consumer(replies, f"bench-driver-{run}")
        finished = 0
        while finished < count and not done.is_set():
            message = client.poll(0.1)
            if message is not None and message.error() is None:
                key = (message.key() or b"").decode()
                step = int(message.value() or b"0") + 1
                if step < ROUND_TRIPS:
                    producer.produce(requests, key=message.key(), value=str(step).encode())
                elif key.startswith("w"):  # a warm-up chain: not counted
                    warmed.release()
                else:
                    latencies.append(time.monotonic() - started_at[key])
                    finished += 1
            producer.poll(0)
        client.close()

    threads = [threading.Thread(target=responder), threading.Thread(target=driver)]
    for thread in threads:
        thread.start()
    for _ in threads:  # both consumers have their partitions (each polls to join)
        if not joined.acquire(timeout=60):
            done.set()
            raise SystemExit("the baseline's consumers did not join their groups in 60 s")
    warm_began = time.monotonic()
    for n in range(WARMUP_CHAINS):  # at the level's rate, before the clock starts
        pause = warm_began + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        producer.produce(requests, key=f"w{n}".encode(), value=b"0")
        producer.poll(0)
    for _ in range(WARMUP_CHAINS):
        if not warmed.acquire(timeout=60):
            done.set()
            raise SystemExit("the baseline's warm-up chains did not finish in 60 s")
    began = time.monotonic()
    for n in range(count):
        pause = began + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        key = f"s{n}"
        started_at[key] = time.monotonic()
        producer.produce(requests, key=key.encode(), value=b"0")
        producer.poll(0)
    threads[1].join(600)
    elapsed = time.monotonic() - began
    done.set()
    threads[0].join(30)
    producer.flush(30)
    for future in admin.delete_topics([requests, replies]).values():
        future.result(30)
    if len(latencies) != count:  # the driver gave up: no figures of the survivors
        raise SystemExit(f"baseline: {count - len(latencies)} of {count} chains not finished")
    return {
        "offered_per_s": rate,
        "sagas": count,
        "completed_per_s": count / elapsed,
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p99_s": percentile(latencies, 0.99),
    }


# --- the report -----------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    lines = [
        "# Sagas: completed/s and latency at offered load",
        "",
        f"CreateOrder, {ROUND_TRIPS} round trips per saga, every process on this machine "
        f"({os.cpu_count()} cores). Baseline: the same round trips with raw confluent-kafka.",
        "",
        f"Load average (1 min) of the machine before and after the run: "
        f"{results.get('load_average_before', float('nan')):.1f} and "
        f"{results.get('load_average_after', float('nan')):.1f} (other work shares these cores).",
        "",
        "| offered sagas/s | completed sagas/s | p50 | p99 | baseline sagas/s | baseline p50 | "
        "baseline p99 | p99 vs baseline |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    # One measurement per level, no rounds to pair: the ratio is of the two p99s.
    for saga, base in zip(results["sagas"], results["baseline"], strict=True):
        lines.append(
            f"| {saga['offered_per_s']:g} | {saga['completed_per_s']:.1f} | "
            f"{saga['latency_p50_s'] * 1000:.0f} ms | {saga['latency_p99_s'] * 1000:.0f} ms | "
            f"{base['completed_per_s']:.1f} | {base['latency_p50_s'] * 1000:.0f} ms | "
            f"{base['latency_p99_s'] * 1000:.0f} ms | "
            f"{saga['latency_p99_s'] / base['latency_p99_s']:.2f}x |"
        )
    lines += ["", "CPU ms per saga, by process:", ""]
    names = sorted({name for saga in results["sagas"] for name in saga["cpu_ms_per_saga"]})
    lines.append("| offered sagas/s | " + " | ".join(names) + " | total |")
    lines.append("|---:|" + "---:|" * (len(names) + 1))
    for saga in results["sagas"]:
        cpu = saga["cpu_ms_per_saga"]
        cells = " | ".join(f"{cpu.get(name, 0.0):.1f}" for name in names)
        lines.append(f"| {saga['offered_per_s']:g} | {cells} | {sum(cpu.values()):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="5,10,20,40,60", help="offered sagas/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each level lasts")
    parser.add_argument("--quick", action="store_true", help="two short levels")
    args = parser.parse_args()
    rates = [5.0, 10.0] if args.quick else [float(r) for r in args.rates.split(",")]
    seconds = 8.0 if args.quick else args.seconds
    settings = PipelineSettings()
    StackManager(settings).up()
    prefix = new_namespace()
    RESULTS.mkdir(exist_ok=True)
    name = f"bench_sagas_{uuid.uuid4().hex[:8]}"
    create_database(settings.stack, name)
    url = database_url(settings.stack, name, with_password=True)
    engine = sa.create_engine(url)
    results: dict[str, Any] = {
        "rates": rates,
        "seconds": seconds,
        "load_average_before": os.getloadavg()[0],
        "sagas": [],
        "baseline": [],
    }
    try:
        with namespace_topics(settings, prefix), services(url, RESULTS, prefix) as pids:
            wait_until_ready(settings, engine, pids, prefix)
            for rate in rates:
                results["sagas"].append(saga_level(settings, engine, pids, rate, seconds, prefix))
                results["baseline"].append(baseline_level(settings, rate, seconds))
                print(
                    json.dumps({"sagas": results["sagas"][-1], "baseline": results["baseline"][-1]})
                )
        results["load_average_after"] = os.getloadavg()[0]
        (RESULTS / "sagas.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "sagas.md").write_text(report(results))
        print(report(results))
    finally:
        engine.dispose()
        try:
            drop_database(settings.stack, name)
        except Exception as error:  # the results are written; a leftover database is not fatal
            print(f"could not drop database {name}: {' '.join(str(error).split())[:200]}")


if __name__ == "__main__":
    main()
