"""The request gateway with 1 and 2 workers and the shared PostgreSQL Idempotency-Key store:
accepted requests/s at saturation, and p50/p99 latency at half that rate, against a bare
aiohttp baseline, in one run.

    .venv/bin/python bench/gateway_load.py [--repeat 3] [--duration 5] [--warmup 1]
        [--concurrency 64]

1. build vegeta (the HTTP load generator) with scripts/install-vegeta.sh; make Kafka and the
   stack's PostgreSQL answer (started when they do not, and stopped at the end if this run
   started them and no test session uses them); create a database of its own (migrated, so
   it holds the shared Idempotency-Key table) and a topic of its own (6 partitions, like
   ``requests.orders``), so shared topics and databases get no bench traffic;
2. start the servers, each process listening with ``SO_REUSEPORT`` beside its siblings, as
   ``pipeline gateway --workers N`` runs them:
   - ``baseline`` (1 and 2 processes): a bare aiohttp endpoint that reads the body and
     answers a fixed 202, without authentication, validation, idempotency or producing;
   - ``gateway`` (1 and 2 workers): ``create_app`` + ``serve`` with the Idempotency-Key store
     in PostgreSQL (as ``pipeline gateway`` builds it), routed to that topic, logging a line
     per request at INFO to a file, the rate limit set out of reach (it still runs);
3. ``--repeat`` rounds; in each, for 1 then 2 processes, the baseline and the gateway in turn
   (interleaved, so a slow moment of the shared machine hits both alike):
   - *saturation*, after a warm-up: vegeta sends as fast as ``--concurrency`` connections
     allow (``-rate=0``) for ``--duration``: accepted requests/s = answers 202 / (attack +
     wait for the last answers);
   - *half rate*: the gateway's saturation figure of the round, halved, as a fixed rate for
     ``--duration``, to the baseline and to the gateway: p50 / p99 latency at the same load;
   every request is a distinct valid ``place_order`` with its own Idempotency-Key;
4. the median of the rounds per server; ratios against the baseline with as many processes:
   accepted req/s and CPU per request, the median of the per-round ratios (each round's
   figure over the baseline's in the same round, measured right before it), not the ratio of
   the medians; the p99 at half rate, of the medians (as the suite's ``p99_vs_baseline``);
5. check that the topic holds exactly one message per 202 the gateways gave (warm-ups too);
6. write bench/results/gateway_load.json and .md and print a table; stop the servers
   (SIGTERM: the gateway's clean shutdown flushes its producer), drop the topic and database.

The goal of issue 15 is 3,000 accepted requests/s with p99 under 50 ms at half that rate,
every request at half rate answered 202 (vegeta's p99 is of every answer, errors too: the
count of others is reported, and any makes the goal not met). The
machine is shared with Kafka, PostgreSQL and vegeta itself (2 CPUs here): read the ratios first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.gateway_attacks import Attack, Attacker, installed_vegeta, slug  # noqa: E402
from bench.suite.rows import paired_ratio  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PARTITIONS = 6
GOAL_PER_S = 3_000
GOAL_P99_MS = 50.0


# ---- the servers (each runs in a process of its own) -----------------------------------------


def serve_gateway(port: int, topic: str) -> None:
    """The gateway as ``pipeline gateway --worker`` runs it, but sending every request to
    ``topic``; its Idempotency-Keys in the PostgreSQL of ``PIPELINE_DATABASE__URL`` (the
    bench sets ``PIPELINE_GATEWAY__IDEMPOTENCY_STORE=postgres``)."""
    import logging

    from pipeline.cli.gateway import shared_idempotency_store
    from pipeline.database import build_engine
    from pipeline.kafka.producer import build_event_producer
    from pipeline.settings import PipelineSettings
    from producers.gateway import create_app, serve
    from producers.gateway.server import run_event_loop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = PipelineSettings()
    engine = build_engine(settings.database)
    store = shared_idempotency_store(settings, settings.gateway, engine)  # None: in memory
    with build_event_producer(settings.kafka, settings.producer) as producer:
        app = create_app(
            settings.gateway, producer, topic_for=lambda _type: topic, idempotency=store
        )
        if store is not None:
            app.cleanup_ctx.append(store.lifetime)
        run_event_loop(serve(app, "127.0.0.1", port, producer=producer, reuse_port=True))
    engine.dispose()


def serve_baseline(port: int) -> None:
    """The same HTTP stack (aiohttp, on uvloop as the gateway) doing nothing: read the body,
    answer a fixed 202."""
    import uvloop
    from aiohttp import web

    answer = json.dumps(
        {"event_id": "0" * 36, "topic": "baseline", "partition": 0, "offset": 0}
    ).encode()

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=answer, content_type="application/json")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/requests/{type}", accept)
    app.router.add_get("/healthz", healthz)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        # run_app prints once its sockets listen: the line the bench waits for.
        print=lambda _message: print("baseline listening", flush=True),
        reuse_port=True,
        loop=uvloop.new_event_loop(),
    )


# ---- running them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """One server under test: ``processes`` processes of ``command`` on one port."""

    name: str
    command: str
    processes: int
    port: int
    pids: list[int] = field(default_factory=list, compare=False)

    def cpu_s(self) -> float:
        """CPU time (user + system) its processes have used so far."""
        import psutil

        return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in self.pids)

    @property
    def baseline(self) -> str:
        return f"baseline, {self.processes} process{'' if self.processes == 1 else 'es'}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _servers() -> list[Server]:
    return [
        Server("baseline, 1 process", "serve-baseline", 1, _free_port()),
        Server("gateway, 1 worker", "serve-gateway", 1, _free_port()),
        Server("baseline, 2 processes", "serve-baseline", 2, _free_port()),
        Server("gateway, 2 workers", "serve-gateway", 2, _free_port()),
    ]


@contextlib.contextmanager
def _running(servers: list[Server], topic: str, env: dict[str, str], work: Path) -> Iterator[None]:
    """Every server's processes, all started at once, returned once each one listens; SIGTERM
    to each after."""
    environment = {
        **os.environ,
        # The limiter still runs on every request, it just never refuses one.
        "PIPELINE_GATEWAY__RATE_PER_S": "1e9",
        "PIPELINE_GATEWAY__BURST": "1000000000",
        **env,
    }
    processes: list[tuple[Server, subprocess.Popen[bytes], Path]] = []
    try:
        for server in servers:
            args = [server.command, "--port", str(server.port)]
            if server.command == "serve-gateway":
                args += ["--topic", topic]
            for number in range(server.processes):
                log_path = work / f"{slug(server.name)}-{number}.log"
                with log_path.open("wb") as log:
                    process = subprocess.Popen(
                        [sys.executable, __file__, *args], stdout=log, stderr=subprocess.STDOUT,
                        env=environment,
                    )  # fmt: skip
                processes.append((server, process, log_path))
                server.pids.append(process.pid)
        for server, process, log_path in processes:
            _wait_listening(server, process, log_path)
        yield
    finally:
        for _, process, _ in processes:
            process.send_signal(signal.SIGTERM)
        for server, process, log_path in processes:
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code != 0:
                print(f"warning: a {server.name} process exited with {code}; see {log_path}")


def _wait_listening(server: Server, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the process's log says it listens (each process of a server on its own: with
    SO_REUSEPORT a connection would only show that one of them does)."""
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"a {server.name} process exited early; see {log_path}")
        if re.search(r"(gateway|baseline) listening", log_path.read_text(errors="replace")):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"a {server.name} process did not listen; see {log_path}")
        time.sleep(0.2)


# ---- the stack, the topic and the database ---------------------------------------------------


@contextlib.contextmanager
def _stack_topic_and_database() -> Iterator[tuple[str, str]]:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from pipeline.database import build_engine, migrate
    from pipeline.kafka.clients import build_admin
    from pipeline.settings import DatabaseSettings, PipelineSettings
    from pipeline.stack.manager import StackManager
    from pipeline.stack.postgres_node import create_database, database_url, drop_database

    settings = PipelineSettings()
    manager = StackManager(settings)
    started = manager.up(only={"kafka", "postgres"})
    name = f"bench_gateway_{uuid.uuid4().hex[:8]}"
    topic = f"bench.gateway-{uuid.uuid4().hex[:8]}"
    admin = build_admin(settings.kafka)
    try:
        create_database(settings.stack, name)
        url = database_url(settings.stack, name, with_password=True)
        engine = build_engine(DatabaseSettings(url=url), pool_size=1)
        migrate(engine)
        engine.dispose()
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
        yield topic, url
    finally:
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
        with contextlib.suppress(Exception):
            drop_database(settings.stack, name)
        if started and not _test_sessions(manager.state_dir):
            manager.down(only=started)


def _test_sessions(state_dir: Path) -> list[Path]:
    """Test sessions signed in to use the stack (pipeline.testing.fixtures), still alive."""
    import psutil

    return [
        path
        for folder in ("test-sessions", "test-sessions-postgres")
        if (state_dir / folder).is_dir()
        for path in (state_dir / folder).iterdir()
        if path.name.isdigit() and psutil.pid_exists(int(path.name))
    ]


def _messages_in(topic: str) -> int:
    from confluent_kafka import TopicPartition

    from pipeline.kafka.clients import build_consumer
    from pipeline.settings import PipelineSettings

    consumer = build_consumer(PipelineSettings().kafka, f"bench-gateway-{os.getpid()}")
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


# ---- the report -------------------------------------------------------------------------------


def _summary(server: Server, rounds: list[tuple[Attack, Attack]]) -> dict[str, Any]:
    def median(kind: int, field: str) -> float:
        return statistics.median(getattr(attacks[kind], field) for attacks in rounds)

    return {
        "server": server.name,
        "processes": server.processes,
        "accepted_per_s": median(0, "accepted_per_s"),
        "cpu_ms_per_accepted": median(0, "cpu_ms_per_accepted"),
        "saturation_p99_ms": median(0, "p99_ms"),
        "half_rate_per_s": median(1, "rate"),
        "half_rate_p50_ms": median(1, "p50_ms"),
        "half_rate_p99_ms": median(1, "p99_ms"),
        # Every answer at half rate must be 202: vegeta's p99 is of every answer, errors too.
        "half_rate_not_202": sum(not_202(attacks[1]) for attacks in rounds),
        "half_rate_success": min(attacks[1].success for attacks in rounds),
        "rounds": [[asdict(attack) for attack in attacks] for attacks in rounds],
    }


def not_202(attack: Attack) -> int:
    """The requests of an attack not answered 202 (errors and other statuses alike)."""
    return attack.requests - attack.status_codes.get("202", 0)


def goal_met(row: dict[str, Any]) -> bool:
    """Issue 15's goal: GOAL_PER_S accepted at saturation, and at half that rate a p99 under
    GOAL_P99_MS with every request answered 202 (a p99 of errors and 202s is no p99 of the
    gateway's work)."""
    return (
        row["accepted_per_s"] >= GOAL_PER_S
        and row["half_rate_p99_ms"] < GOAL_P99_MS
        and row["half_rate_not_202"] == 0
    )


def _round_ratio(row: dict[str, Any], base: dict[str, Any], field: str) -> float:
    """The median of the per-round ratios of a saturation figure (round i of the server
    against round i of its baseline, measured one right after the other); of the medians
    where the rounds do not pair up."""
    paired = paired_ratio(
        [attacks[0][field] for attacks in row["rounds"]],
        [attacks[0][field] for attacks in base["rounds"]],
    )
    # The summary holds the median of the figure under the same name.
    return float(row[field] / base[field]) if paired is None else paired


def _with_ratios(rows: list[dict[str, Any]], servers: list[Server]) -> list[dict[str, Any]]:
    by_name = {row["server"]: row for row in rows}
    for server, row in zip(servers, rows, strict=True):
        base = by_name[server.baseline]
        row["accepted_ratio"] = _round_ratio(row, base, "accepted_per_s")
        row["cpu_ratio"] = _round_ratio(row, base, "cpu_ms_per_accepted")
        # Of the medians: the suite's p99_vs_baseline, which has no round's p99 to pair, is.
        row["p99_ratio"] = row["half_rate_p99_ms"] / base["half_rate_p99_ms"]
        row["goal_met"] = goal_met(row)
    return rows


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Request gateway: saturation and latency at half of it, 1 and 2 workers",
        "",
        f"{result['started']} · {result['machine']} · vegeta {result['vegeta']} · median of "
        f"{result['repeat']} interleaved rounds · {result['duration_s']:g} s per attack after "
        f"a {result['warmup_s']:g} s warm-up · {result['concurrency']} connections at "
        "saturation · every request a distinct valid place_order with its own Idempotency-Key, "
        "kept in PostgreSQL · load average "
        f"{result['load_average_1min']['before']:.1f} before, "
        f"{result['load_average_1min']['after']:.1f} after, niceness {result['niceness']}",
        "",
        "| server | accepted req/s at saturation | vs baseline | CPU ms per request "
        "| vs baseline | p99 ms at saturation | half rate req/s | p50 ms | p99 ms "
        "| p99 vs baseline | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        baseline = row["server"].startswith("baseline")
        lines.append(
            f"| {row['server']} | {row['accepted_per_s']:,.0f} "
            f"| {row['accepted_ratio']:.2f}x | {row['cpu_ms_per_accepted']:.3f} "
            f"| {row['cpu_ratio']:.2f}x | {row['saturation_p99_ms']:.1f} "
            f"| {row['half_rate_per_s']:,.0f} | {row['half_rate_p50_ms']:.2f} "
            f"| {row['half_rate_p99_ms']:.2f} | {row['p99_ratio']:.2f}x "
            f"| {'' if baseline else ('met' if row['goal_met'] else 'not met')}"
            f"{_not_202_note(row)} |"
        )
    lines += [
        "",
        "Baseline, N processes: a bare aiohttp endpoint on one port (`SO_REUSEPORT`) that "
        "reads the body and answers 202, without authentication, validation, idempotency or "
        "Kafka; each gateway row is compared with the baseline of as many processes. Accepted "
        "req/s: answers 202 per second of the attack and its wait for the last answers, with "
        "vegeta sending as fast as the connections allow. Half rate: a fixed rate of half the "
        "gateway's figure of the round, sent to the gateway and to its baseline. Goal "
        f"(issue 15): {GOAL_PER_S:,} accepted req/s and p99 under "
        f"{GOAL_P99_MS:g} ms at half that rate, every answer at half rate a 202. vegeta, "
        "Kafka and PostgreSQL share the machine "
        "with the servers. CPU ms per request: the CPU time of the server's processes during "
        "the saturation attack, per answer 202 (what the machine's other load disturbs least; "
        "3,000 req/s need 3,000 times that in CPU seconds per second, besides vegeta, Kafka "
        "and PostgreSQL).",
        "",
        f"Messages in the bench topic: {result['messages_in_kafka']:,} for "
        f"{result['gateway_202s']:,} answers 202 (warm-ups included): "
        f"{'equal' if result['messages_in_kafka'] == result['gateway_202s'] else 'DIFFERENT'}.",
        "",
    ]
    return "\n".join(lines)


def _not_202_note(row: dict[str, Any]) -> str:
    count = row["half_rate_not_202"]
    return f" ({count:,} answers not 202 at half rate)" if count else ""


def _print_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from pipeline.cli.console import stdout_console

    table = Table(title="request gateway: saturation, and latency at half of it (vegeta)")
    columns = (
        "server", "accepted/s", "vs baseline", "CPU ms/req", "half rate/s", "p50 ms", "p99 ms",
        "goal",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("server", "goal") else "right")
    for row in result["rows"]:
        baseline = row["server"].startswith("baseline")
        table.add_row(
            row["server"],
            f"{row['accepted_per_s']:,.0f}",
            f"{row['accepted_ratio']:.2f}x",
            f"{row['cpu_ms_per_accepted']:.3f}",
            f"{row['half_rate_per_s']:,.0f}",
            f"{row['half_rate_p50_ms']:.2f}",
            f"{row['half_rate_p99_ms']:.2f}",
            ("" if baseline else ("met" if row["goal_met"] else "not met")) + _not_202_note(row),
        )
    console = stdout_console()
    console.print(table)
    console.print(
        f"messages in Kafka: {result['messages_in_kafka']:,}, "
        f"gateway 202s: {result['gateway_202s']:,}"
    )


def run(repeat: int, duration_s: float, warmup_s: float, concurrency: int) -> dict[str, Any]:
    vegeta, version = installed_vegeta()
    work = RESULTS / "gateway_load"
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()[0]
    servers = _servers()
    attacker = Attacker(vegeta, work, duration_s, concurrency)
    rounds: dict[str, list[tuple[Attack, Attack]]] = {server.name: [] for server in servers}
    with _stack_topic_and_database() as (topic, url):
        env = {"PIPELINE_DATABASE__URL": url, "PIPELINE_GATEWAY__IDEMPOTENCY_STORE": "postgres"}
        with _running(servers, topic, env, work):
            for number in range(1, repeat + 1):
                for baseline, gateway in zip(servers[::2], servers[1::2], strict=True):
                    for name, (saturation, half) in attacker.round(
                        baseline, gateway, warmup_s
                    ).items():
                        rounds[name].append((saturation, half))
                        print(
                            f"round {number}/{repeat}: {name}: "
                            f"{saturation.accepted_per_s:,.0f} accepted/s "
                            f"({saturation.cpu_ms_per_accepted:.3f} CPU ms each); "
                            f"at {half.rate:,}/s "
                            f"p50 {half.p50_ms:.2f} ms, p99 {half.p99_ms:.2f} ms",
                            flush=True,
                        )
        in_kafka = _messages_in(topic)
    rows = _with_ratios([_summary(server, rounds[server.name]) for server in servers], servers)
    result = {
        "benchmark": "gateway_load",
        "started": started,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "vegeta": version,
        "repeat": repeat,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "concurrency": concurrency,
        # The machine's other work (other benches, tests) and this run's niceness, which the
        # servers and vegeta inherit: the context of the absolute figures.
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "niceness": os.nice(0),
        "goal": {"accepted_per_s": GOAL_PER_S, "half_rate_p99_ms": GOAL_P99_MS},
        "rows": rows,
        "gateway_202s": attacker.gateway_202s,
        "messages_in_kafka": in_kafka,
    }
    (RESULTS / "gateway_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "gateway_load.md").write_text(_markdown(result))
    _print_table(result)
    print(f"results: {RESULTS / 'gateway_load.json'}, {RESULTS / 'gateway_load.md'}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    gateway = sub.add_parser("serve-gateway", help=argparse.SUPPRESS)
    gateway.add_argument("--port", type=int, required=True)
    gateway.add_argument("--topic", required=True)
    baseline = sub.add_parser("serve-baseline", help=argparse.SUPPRESS)
    baseline.add_argument("--port", type=int, required=True)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; median kept")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per attack")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="connections at saturation (vegeta workers)"
    )
    args = parser.parse_args(argv)
    if args.command == "serve-gateway":
        serve_gateway(args.port, args.topic)
    elif args.command == "serve-baseline":
        serve_baseline(args.port)
    else:
        result = run(args.repeat, args.duration, args.warmup, args.concurrency)
        if result["messages_in_kafka"] != result["gateway_202s"]:
            raise SystemExit("the topic does not hold exactly one message per 202")


if __name__ == "__main__":
    main()
