"""End-to-end latency at 25%, 50% and 90% of measured capacity, for three paths, each against
a baseline measured in the same run at the same offered rate.

(a) ``gateway``: from the gateway's 202 (the wall-clock time the client has the answer, i.e.
    the event is acknowledged by Kafka) to the processed effect: a ``pipeline process``
    processor (bench/effect_rows.py: async handler, inbox on, PostgreSQL, no wait) wrote the
    event's effect row in its transaction; the row holds the time it was written (the group
    commit follows within a few ms, not counted). Requests: place_order bodies to
    ``bench.gateway_load serve-gateway`` (the gateway app as ``pipeline gateway`` builds it,
    routed to this run's topic, Idempotency-Keys in memory), sent by an aiohttp client on an
    open-model schedule (at most 64 in flight). Baseline: raw confluent-kafka, from the
    broker's acknowledgement (the delivery report, as the producing program has it) to a
    plain consumer having the message; one consumed before its delivery report was served
    counts 0 ms (never negative), and how many did is reported
    (``raw_hop_consumed_before_ack``; latency_baselines.ack_spans says why).
(b) ``saga``: from a CreateOrder saga's start (its row's creation in the order service's
    transaction) to its completion (its last transition), the demo's services as in
    bench/sagas.py (orders, orchestrator, inventory, payments, shipping, the outbox relay,
    PostgreSQL), PlaceOrder requests produced to the order service at the offered rate.
    Baseline: bench/sagas.py's, six sequential request/reply round trips with raw
    confluent-kafka between two threads (each taking a message as soon as it is there).
(c) ``logs``: from a log call (the project's Kafka log handler, as ``configure_logging`` sets
    it up) to the line being found by an Elasticsearch search (polled every 50 ms), through
    ``pipeline logs ship``. Baseline: the same lines bulk-indexed straight into Elasticsearch
    (a request every 20 ms, an index from the same template, default 1 s refresh), found by
    the same search.

Every path's processes start first, and all are ready before anything is measured. Then, path
after path: the capacity (a short saturation run: a burst of requests, sagas or lines sent as
fast as they go; the rate of completions since the first start, taken after each third of them,
the median of the three: conservative, as it includes filling the pipeline), then open-model
levels at 25/50/90% of it for ``--seconds`` each (longer where that would give fewer than
2 x ``--repeat`` samples), each with its baseline at the same rate: at the same time for (a)
and (b), whose baselines are light beside them (the same conditions for both), and right
after for (c), as both load the same Elasticsearch node. A latency row's ``value`` is the
achieved rate, the median of its ``rounds``: the rates at which the samples entered the path
(202s received, saga rows created, log calls made) in ``--repeat`` consecutive parts of the
level; its percentiles pool the level's samples (nearest rank; with fewer than 1,000 samples
p99.9 is the largest).
A latency row compares latency with its baseline: its ``p99_vs_baseline`` is the ratio of the
p99 latencies, and its ``ratio`` stays empty (a ratio of rates achieved at one offered load is
about 1 whatever the latency). A sample lost (an answer other than 202, an effect not written
in 120 s, a line not found in 60 s, a saga not completed, a baseline message never consumed)
stops the benchmark with an error: no percentile of the survivors is reported. Every process
uses topics, groups, databases and indices of this run's own.

Run: ``.venv/bin/python bench/e2e_latency.py [--seconds 10] [--repeat 3] [--paths a,b,c]``;
``--quick`` (0.5 s levels, 2 s for sagas, small bursts) for ``make bench QUICK=1``. Results:
bench/results/e2e_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from child_processes import free_port, group_stable, start, stop, terminate_all, wait_for
from latency_baselines import (
    DirectIndex,
    RawHop,
    RequestReplyChain,
    SearchWatcher,
    create_topics,
    delete_topics,
    pace,
)
from paced_load import (
    LostSamples,
    all_samples,
    capacity_row,
    latency_rows,
    pacing_schedule,
    with_ratios,
    write_results,
)
from sagas import (
    _place_order,
    namespace_topics,
    new_namespace,
    services,
    wait_until_ended,
    wait_until_ready,
)
from topic_namespace import topic as namespaced

from pipeline.kafka.producer import build_event_producer
from pipeline.logs import configure_logging
from pipeline.logs.elasticsearch import build_elasticsearch
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from pipeline.stack.postgres_node import create_database, database_url, drop_database
from pipeline.topics.catalogue import REQUESTS_ORDERS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PIPELINE = str(ROOT / ".venv" / "bin" / "pipeline")
LOADS = (25, 50, 90)
NAME = "e2e_latency"
STAGE = "end-to-end"


# --- the rows ---------------------------------------------------------------------------------


# --- (a) gateway 202 -> processed effect ------------------------------------------------------


class GatewayPath:
    """The gateway and one ``pipeline process`` processor on this run's topic and database."""

    def __init__(self, settings: PipelineSettings, run: str, url: str, logs: Path) -> None:
        self.settings, self.url = settings, url
        self.topic = f"bench.e2e-{run}.requests"
        self.group = f"bench-e2e-{run}-effects"
        self.port = free_port()
        self.topics = [self.topic, f"{self.topic}.dlq", f"bench.e2e-{run}.service-logs"]
        create_topics(settings, self.topics[:1], 6)
        create_topics(settings, self.topics[1:], 1)
        env = {
            "PIPELINE_DATABASE__URL": url,
            "PIPELINE_LOGS__TOPIC": f"bench.e2e-{run}.service-logs",
            "PIPELINE_GATEWAY__IDEMPOTENCY_STORE": "memory",
            "PIPELINE_GATEWAY__RATE_PER_S": "1e9",
            "PIPELINE_GATEWAY__BURST": "1000000000",
            "BENCH_EFFECTS_TOPIC": self.topic,
            "BENCH_EFFECTS_GROUP": self.group,
        }
        self.logs = logs
        self.children = [
            start("e2e-processor", [PIPELINE, "process", "bench.effect_rows:processor"], env, logs),
            start(
                "e2e-gateway",
                [
                    sys.executable,
                    str(BENCH / "gateway_load.py"),
                    "serve-gateway",
                    "--port",
                    str(self.port),
                    "--topic",
                    self.topic,
                ],
                env,
                logs,
            ),
        ]
        self.engine = sa.create_engine(url)

    def ready(self) -> bool:
        log = (self.logs / "e2e-gateway.log").read_text(errors="replace")
        return "gateway listening" in log and group_stable(self.settings, self.group)

    def run(self, offsets: Sequence[float], concurrency: int = 64) -> list[tuple[float, float]]:
        """(202 received, effect written) wall-clock times of each request of the schedule;
        LostSamples when an answer was not 202 or an effect was not written in 120 s."""
        accepted, refused = asyncio.run(self._send(offsets, concurrency))
        if refused:
            statuses = ", ".join(f"{n:,} x {code}" for code, n in sorted(Counter(refused).items()))
            raise LostSamples(
                f"gateway path: {len(refused):,} of {len(offsets):,} answers not 202 ({statuses})"
            )
        wanted = dict(accepted)
        effects: dict[str, float] = {}
        deadline = time.monotonic() + 120
        since = min(wanted.values()) - 5 if wanted else 0.0
        while len(effects) < len(wanted) and time.monotonic() < deadline:
            time.sleep(0.2)
            with self.engine.connect() as connection:
                for event_id, handled_at in connection.execute(
                    sa.text(
                        "SELECT event_id, handled_at FROM bench_effects WHERE handled_at >= :s"
                    ),
                    {"s": since},
                ):
                    if event_id in wanted:
                        effects[event_id] = handled_at
        spans = sorted((wanted[e], effects[e]) for e in effects)
        return all_samples("gateway path: effects written in 120 s", spans, len(offsets))

    async def _send(
        self, offsets: Sequence[float], concurrency: int
    ) -> tuple[list[tuple[str, float]], list[int]]:
        """The (event id, 202 received) of each request answered 202, and the statuses of
        the others."""
        url = f"http://127.0.0.1:{self.port}/v1/requests/place_order"
        prefix = uuid.uuid4().hex[:8]
        limit = asyncio.Semaphore(concurrency)
        out: list[tuple[str, float]] = []
        refused: list[int] = []

        async def one(session: aiohttp.ClientSession, n: int) -> None:
            order = f"e2e-{prefix}-{n}"
            body = {
                "order_id": order,
                "customer_id": f"customer-{n % 97}",
                "lines": [{"sku": "sku-1", "quantity": 1, "unit_price": "1.00"}],
            }
            async with (
                limit,
                session.post(url, json=body, headers={"Idempotency-Key": order}) as response,
            ):
                if response.status == 202:
                    answer = await response.json()
                    out.append((answer["event_id"], time.time()))
                else:
                    refused.append(response.status)

        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)
        ) as session:
            began = loop.time()
            tasks = []
            for n, offset in enumerate(offsets):
                pause = began + offset - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                tasks.append(asyncio.create_task(one(session, n)))
            await asyncio.gather(*tasks)
        return out, refused

    def close(self) -> None:
        stop(self.children)
        self.engine.dispose()
        delete_topics(self.settings, self.topics)


# --- (c) log call -> searchable ---------------------------------------------------------------


class LogPath:
    """``pipeline logs ship`` from this run's logs topic to this run's alias."""

    def __init__(self, settings: PipelineSettings, run: str, logs: Path) -> None:
        self.settings = settings
        self.topic = f"bench.e2e-{run}.logs"
        self.alias = f"bench-e2e-{run}-logs"
        self.direct_alias = f"bench-e2e-{run}-direct"  # outside the pattern <alias>-*
        self.group = f"bench-e2e-{run}-shipper"
        create_topics(settings, [self.topic], 3)
        create_topics(settings, [f"{self.topic}.dlq"], 1)
        env = {
            "PIPELINE_LOGS__TOPIC": self.topic,
            "PIPELINE_LOGS__DLQ_TOPIC": f"{self.topic}.dlq",
            "PIPELINE_LOGS__INDEX_ALIAS": self.alias,
        }
        self.children = [
            start("e2e-shipper", [PIPELINE, "logs", "ship", "--group", self.group], env, logs)
        ]
        self.es = build_elasticsearch(settings.elasticsearch)
        # The handler's buffer holds a whole capacity burst: it drops (to its fallback stream)
        # what does not fit, which measured its drop policy, not the path (a 40,000-line burst
        # lost 6,068 lines above the default 10,000 on a slow host).
        logs_settings = settings.logs.model_copy(
            update={"topic": self.topic, "buffer_size": max(settings.logs.buffer_size, 100_000)}
        )
        handler = configure_logging(
            settings.model_copy(update={"logs": logs_settings}),
            "bench-e2e-latency",
            console="json",
            stream=io.StringIO(),
        )
        root = logging.getLogger()
        for old in list(root.handlers):  # the handlers configure_logging put on the root
            root.removeHandler(old)
        self.logger = logging.getLogger("bench.e2e.probe")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        assert handler is not None
        self.logger.addHandler(handler)
        self.handler = handler
        self.direct = DirectIndex(self.es, self.direct_alias)

    def ready(self) -> bool:
        return group_stable(self.settings, self.group)

    def run(self, offsets: Sequence[float], direct: bool = False) -> list[tuple[float, float]]:
        """(log call, first found by a search) wall-clock times of each line of the schedule."""
        run = uuid.uuid4().hex[:8]
        called: dict[int, float] = {}
        index = self.direct_alias if direct else self.alias

        def log(n: int) -> None:
            if direct:
                called[n] = self.direct.send(run, n)
            else:
                called[n] = time.time()
                self.logger.info(
                    "e2e latency probe", extra={"bench_run": run, "bench_seq": f"{n:09d}"}
                )

        with SearchWatcher(self.es, index, run, len(offsets)) as watcher:
            pace(offsets, log)
            watcher.wait(60)
        spans = sorted((called[n], watcher.found[n]) for n in watcher.found if n in called)
        what = "direct bulk index" if direct else "log path"
        if not direct and self.handler.counters.dropped:
            raise LostSamples(
                f"log path: the log handler dropped {self.handler.counters.dropped:,} lines "
                "(its buffer was full); no percentile of the survivors is reported"
            )
        return all_samples(f"{what}: lines found by a search in 60 s", spans, len(offsets))

    def close(self) -> None:
        self.handler.close()
        stop(self.children)
        self.direct.close()
        self.es.options(ignore_status=404).indices.delete(index=f"{self.alias}-*")
        self.es.options(ignore_status=404).indices.delete_index_template(name=self.alias)
        self.es.close()
        delete_topics(self.settings, [self.topic, f"{self.topic}.dlq"])


# --- (b) saga start -> completion -------------------------------------------------------------


class SagaPath:
    """The demo's saga services (bench/sagas.py) on this run's namespace and database."""

    def __init__(self, settings: PipelineSettings, url: str, logs: Path) -> None:
        self.settings, self.url, self.logs = settings, url, logs
        self.prefix = new_namespace("e2e")
        self.engine = sa.create_engine(url)
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(namespace_topics(settings, self.prefix))
        self.pids = self._stack.enter_context(services(url, logs, self.prefix))

    def wait_ready(self) -> None:
        wait_until_ready(self.settings, self.engine, self.pids, self.prefix)

    def run(self, offsets: Sequence[float]) -> list[tuple[float, float]]:
        """(saga started, saga ended) times of each PlaceOrder of the schedule."""
        run = uuid.uuid4().hex[:8]
        ids = [f"e2e-{run}-{n}" for n in range(len(offsets))]
        with build_event_producer(self.settings.kafka, self.settings.producer) as producer:
            pace(
                offsets,
                lambda n: producer.send(
                    namespaced(self.prefix, REQUESTS_ORDERS), _place_order(ids[n])
                ),
            )
            producer.flush(60)
        rows = wait_until_ended(self.engine, ids, 300, "sagas")
        spans = sorted(
            (r.created_at.timestamp(), r.updated_at.timestamp())
            for r in rows
            if r.status == "completed"
        )
        return all_samples("saga path: sagas completed", spans, len(offsets))

    def close(self) -> None:
        self._stack.close()
        self.engine.dispose()


# --- the run ----------------------------------------------------------------------------------


def _levels(
    capacity: float,
    seconds: float,
    measure: Callable[[Sequence[float]], list[tuple[float, float]]],
    baseline: Callable[[Sequence[float]], list[tuple[float, float]]],
    min_samples: int,
    together: bool,
) -> dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]]:
    """Each load's (measured, baseline) spans; a level lasts ``seconds``, or longer where that
    would give fewer than ``min_samples`` (a slow path's low loads). ``together``: the baseline
    runs at the same time (it is light beside the path); else right after it (it loads the
    same server as the path: two at once would be twice the load)."""
    spans = {}
    for load in LOADS:
        rate = capacity * load / 100
        offsets = pacing_schedule(rate, max(seconds, min_samples / rate))
        if together:
            with ThreadPoolExecutor(1) as pool:
                base = pool.submit(baseline, offsets)
                spans[str(load)] = (measure(offsets), base.result())
        else:
            spans[str(load)] = (measure(offsets), baseline(offsets))
        print(f"  {load}%: {len(offsets)} at {capacity * load / 100:.1f}/s", flush=True)
    return spans


_BEGAN = time.monotonic()


def _progress(what: str) -> None:
    """A progress line with the wall and CPU seconds since the start (stdout, for the suite's
    log)."""
    print(
        f"[{time.monotonic() - _BEGAN:5.1f} s, {time.process_time():5.1f} s CPU] {what}",
        flush=True,
    )


def path_rows(
    path: tuple[str, str, str],
    baseline_case: str,
    burst: list[tuple[float, float]],
    measure: Callable[[Sequence[float]], list[tuple[float, float]]],
    baseline: Callable[[Sequence[float]], list[tuple[float, float]]],
    seconds: float,
    repeat: int,
    together: bool = True,
) -> tuple[float, list[dict[str, Any]]]:
    """One path's capacity (from its saturation burst: the median of the burst's part rates)
    and its rows: the capacity, then each load's baseline and measured rows."""
    name, case, unit = path
    capacity = capacity_row(NAME, STAGE, case, burst, unit, repeat, path=name)
    _progress(f"({name}) burst done")
    print(f"({name}) capacity {capacity['value']:,.1f} {unit}", flush=True)
    levels = _levels(capacity["value"], seconds, measure, baseline, 2 * repeat, together)
    _progress(f"({name}) levels done")
    return capacity["value"], [
        capacity,
        *latency_rows(NAME, STAGE, (case, baseline_case), levels, unit, repeat, path=name),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each level lasts")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (parts) per level, >= 3")
    parser.add_argument("--paths", default="a,b,c", help="which paths: a (gateway), b, c")
    parser.add_argument("--quick", action="store_true", help="short levels, small bursts")
    args = parser.parse_args()
    paths = set(args.paths.split(","))
    seconds = 0.5 if args.quick else args.seconds
    bursts = {"a": 400, "b": 15, "c": 5000} if args.quick else {"a": 4000, "b": 80, "c": 40000}
    started = datetime.now(UTC)
    settings = PipelineSettings()
    StackManager(settings).up()
    run = uuid.uuid4().hex[:8]
    databases = {path: f"bench_e2e_{run}_{path}" for path in ("a", "b")}
    for database in databases.values():
        create_database(settings.stack, database)
    urls = {p: database_url(settings.stack, d, with_password=True) for p, d in databases.items()}
    rows: list[dict[str, Any]] = []
    capacities: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    load_before = os.getloadavg()[0]
    try:
        with contextlib.ExitStack() as stack:
            # Every path's processes start at once, and all are ready before any level runs.
            if "a" in paths:
                gateway = GatewayPath(settings, run, urls["a"], work)
                stack.callback(gateway.close)
                hop = RawHop(settings, run)
                stack.callback(hop.close)
            if "c" in paths:
                logs = LogPath(settings, run, work)
                stack.callback(logs.close)
            if "b" in paths:
                sagas = SagaPath(settings, urls["b"], work)
                stack.callback(sagas.close)
                chain = RequestReplyChain(settings, run)
                stack.callback(chain.close)
            if "a" in paths:
                wait_for("gateway path", gateway.ready, gateway.children, work)
                gateway.run([0.0] * 20)  # the first connections and transactions
            if "c" in paths:
                wait_for("log path", logs.ready, logs.children, work)
                logs.run([0.0] * 20)  # the shipper's first batch, the daily index made
                logs.run([0.0] * 20, direct=True)
            if "b" in paths:
                sagas.wait_ready()
                sagas.run([0.0] * 3)  # the services' first transactions
            _progress("every path ready")
            # Run first at the end: SIGTERM to every process at once, then each path's close
            # waits for its own (they stop in parallel).
            stack.callback(
                terminate_all,
                [
                    *(gateway.children if "a" in paths else []),
                    *(logs.children if "c" in paths else []),
                    *(sagas.pids.values() if "b" in paths else []),
                ],
            )
            if "a" in paths:
                capacities["a"], found = path_rows(
                    ("a", "gateway 202 -> processed effect", "requests/s"),
                    "raw confluent-kafka ack -> consumed",
                    gateway.run([0.0] * bursts["a"]),
                    gateway.run,
                    hop.level,
                    seconds,
                    args.repeat,
                )
                rows += found
            if "c" in paths:
                capacities["c"], found = path_rows(
                    ("c", "log call -> searchable (Kafka handler, log shipper)", "logs/s"),
                    "direct bulk index -> searchable",
                    logs.run([0.0] * bursts["c"]),
                    logs.run,
                    lambda offsets: logs.run(offsets, direct=True),
                    seconds,
                    args.repeat,
                    together=False,  # both would load the same Elasticsearch node
                )
                rows += found
            if "b" in paths:
                capacities["b"], found = path_rows(
                    ("b", "saga start -> completion (CreateOrder, demo services)", "sagas/s"),
                    "raw request/reply chain, 6 round trips",
                    sagas.run([0.0] * bursts["b"]),
                    sagas.run,
                    chain.level,
                    max(seconds, 2.0),  # a few sagas per level at least
                    args.repeat,
                )
                rows += found
            # The raw hop's messages consumed before their ack was served, counted 0 ms
            # (latency_baselines.ack_spans), per load.
            early = (
                dict(zip((f"{load}%" for load in LOADS), hop.consumed_before_ack, strict=False))
                if "a" in paths
                else {}
            )
            _progress("measured; stopping the processes")
        rows = with_ratios(rows)
        path = write_results(
            RESULTS,
            NAME,
            quick=args.quick,
            started=started,
            rows=rows,
            title="End-to-end latency at 25/50/90% of capacity",
            notes=[
                "See the docstring of bench/e2e_latency.py for what each path and baseline "
                "times. `value` is the achieved rate; percentiles in ms pool each level's "
                "samples (p99.9 of fewer than 1,000 samples is their maximum).",
                "",
                f"Capacities: {', '.join(f'({k}) {v:,.1f}/s' for k, v in capacities.items())}. "
                f"Load average before and after: {load_before:.1f}, {os.getloadavg()[0]:.1f}; "
                f"{os.cpu_count()} cores shared with other jobs.",
                *(
                    [
                        "",
                        "Raw hop messages consumed before the producer had their ack (counted "
                        "0 ms): "
                        + ", ".join(f"{n:,} at {load}" for load, n in early.items())
                        + ".",
                    ]
                    if early
                    else []
                ),
            ],
            raw_hop_consumed_before_ack=early,
            capacities=capacities,
            level_seconds=seconds,
            load_average_before=load_before,
            load_average_after=os.getloadavg()[0],
        )
        print(path.with_suffix(".md").read_text())
    finally:
        for database in databases.values():
            try:
                drop_database(settings.stack, database)
            except Exception as error:  # the results are written; a leftover is not fatal
                print(f"could not drop database {database}: {' '.join(str(error).split())[:200]}")


if __name__ == "__main__":
    main()
