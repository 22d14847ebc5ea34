"""The request gateway under load at fixed request rates, against a trivial baseline, in one run.

    .venv/bin/python bench/gateway_load.py [--rates 200,500,1000] [--duration 10] [--warmup 2]

1. build vegeta (the fixed-rate HTTP load generator) with scripts/install-vegeta.sh;
2. create a topic of its own on the local Kafka (6 partitions, like requests.orders), so the
   shared ``requests.*`` topics get no bench traffic;
3. start the servers, each in a process of its own:
   - ``baseline``: a bare aiohttp endpoint that reads the body and answers a fixed 202, without
     validating, idempotency or producing;
   - ``gateway``: ``create_app`` + ``serve`` as ``pipeline gateway`` runs them (settings from
     the environment, INFO log line per request to a file), routed to that topic, with the rate
     limit set out of reach (it still runs on every request);
   - ``gateway linger.ms=0``: the same without the producer's batching delay, which tells how
     much of the latency is the configured linger rather than work;
4. for each rate, for each server: a warm-up attack, then the measured one; every request is a
   distinct valid ``place_order`` with its own Idempotency-Key;
5. check that the topic holds exactly one message per 202 the gateways gave;
6. write bench/results/gateway_load.json and .md and print a table; stop the servers (SIGTERM:
   the gateway's clean shutdown flushes its producer) and delete the topic.

The ratios to the baseline at the same rate are the cost of validation + idempotency + produce +
broker acknowledgement. The machine is shared with Kafka and vegeta itself: read the ratios, not
the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
PARTITIONS = 6


# ---- the two servers (each runs in a process of its own) -------------------------------------


def serve_gateway(port: int, topic: str) -> None:
    """The gateway as ``pipeline gateway`` runs it, but sending every request to ``topic``."""
    import logging

    from pipeline.kafka.producer import build_event_producer
    from pipeline.settings import PipelineSettings
    from producers.gateway import create_app, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = PipelineSettings()
    with build_event_producer(settings.kafka, settings.producer) as producer:
        app = create_app(settings.gateway, producer, topic_for=lambda _type: topic)
        asyncio.run(serve(app, "127.0.0.1", port))


def serve_baseline(port: int) -> None:
    """The same HTTP stack doing nothing: read the body, answer a fixed 202."""
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
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---- the driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """One measured attack, from ``vegeta report -type=json``."""

    server: str
    rate: int
    duration_s: float
    requests: int
    achieved_rate: float
    throughput: float
    success: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_codes: dict[str, int]
    errors: list[str]


def _slug(name: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _install_vegeta() -> str:
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-vegeta.sh")], check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Server:
    """One server under test: its name, its sub-command and its environment on top of ours."""

    name: str
    command: str
    env: dict[str, str]
    port: int


@contextlib.contextmanager
def _server(server: Server, topic: str, log_path: Path) -> Iterator[int]:
    """A server process of ours; yields its pid once /healthz answers, SIGTERMs it after."""
    name, port = server.name, server.port
    args = [server.command, "--port", str(port)]
    if server.command == "serve-gateway":
        args += ["--topic", topic]
    env = {
        **os.environ,
        # The limiter still runs on every request, it just never refuses one.
        "PIPELINE_GATEWAY__RATE_PER_S": "1e9",
        "PIPELINE_GATEWAY__BURST": "1000000000",
        **server.env,
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"the {name} server exited early; see {log_path}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        message = f"the {name} server did not answer; see {log_path}"
                        raise SystemExit(message) from None
                    time.sleep(0.2)
            yield process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code != 0:
                print(f"warning: the {name} server exited with {code}; see {log_path}")


def _targets(path: Path, port: int, prefix: str, count: int) -> Path:
    """``count`` distinct place_order requests, as vegeta JSON targets."""
    url = f"http://127.0.0.1:{port}/v1/requests/place_order"
    with path.open("w") as out:
        for number in range(count):
            order = f"{prefix}-{number}"
            body = {
                "order_id": order,
                "customer_id": f"customer-{number % 97}",
                "lines": [
                    {"sku": "sku-1", "quantity": 2, "unit_price": "12.50"},
                    {"sku": "sku-2", "quantity": 1, "unit_price": "3.99"},
                ],
            }
            target = {
                "method": "POST",
                "url": url,
                "header": {"Content-Type": ["application/json"], "Idempotency-Key": [order]},
                "body": base64.b64encode(json.dumps(body).encode()).decode(),
            }
            out.write(json.dumps(target) + "\n")
    return path


def _attack(vegeta: str, targets: Path, rate: int, duration_s: float, out: Path) -> dict[str, Any]:
    with out.open("wb") as results:
        subprocess.run(
            [
                vegeta,
                "attack",
                "-format=json",
                f"-targets={targets}",
                f"-rate={rate}/s",
                f"-duration={duration_s}s",
                "-timeout=30s",
            ],
            stdout=results,
            check=True,
        )
    report = subprocess.run(
        [vegeta, "report", "-type=json", str(out)], check=True, capture_output=True, text=True
    )
    parsed: dict[str, Any] = json.loads(report.stdout)
    return parsed


def _measure(
    vegeta: str, server: str, port: int, rate: int, duration_s: float, warmup_s: float, work: Path
) -> Attack:
    tag = f"{_slug(server)}-{rate}-{int(time.time() * 1000)}"
    if warmup_s > 0:
        warm = _targets(work / f"{tag}-warm.json", port, f"warm-{tag}", int(rate * warmup_s) + 1)
        _attack(vegeta, warm, rate, warmup_s, work / f"{tag}-warm.bin")
    targets = _targets(work / f"{tag}.json", port, tag, int(rate * duration_s) + 1)
    report = _attack(vegeta, targets, rate, duration_s, work / f"{tag}.bin")
    for bulky in work.glob(f"{tag}*"):  # targets and raw results: megabytes, not needed after
        bulky.unlink()
    latency = report["latencies"]
    return Attack(
        server=server,
        rate=rate,
        duration_s=duration_s,
        requests=int(report["requests"]),
        achieved_rate=float(report["rate"]),
        throughput=float(report["throughput"]),
        success=float(report["success"]),
        p50_ms=latency["50th"] / 1e6,
        p90_ms=latency["90th"] / 1e6,
        p99_ms=latency["99th"] / 1e6,
        max_ms=latency["max"] / 1e6,
        status_codes={str(k): int(v) for k, v in (report.get("status_codes") or {}).items()},
        errors=list(report.get("errors") or [])[:5],
    )


def _accepted_in_kafka(topic: str) -> int:
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


@contextlib.contextmanager
def _bench_topic() -> Iterator[str]:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from pipeline.kafka.clients import build_admin
    from pipeline.settings import PipelineSettings

    admin = build_admin(PipelineSettings().kafka)
    name = f"bench.gateway-{int(time.time())}-{os.getpid()}"
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(timeout=30)
    try:
        yield name
    finally:
        for future in admin.delete_topics([name], operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Request gateway under fixed-rate load",
        "",
        f"{result['started']} · {result['machine']} · vegeta {result['vegeta']} · "
        f"{result['duration_s']:g} s per attack after a {result['warmup_s']:g} s warm-up · "
        "every request a distinct valid place_order with its own Idempotency-Key",
        "",
        "| rate/s | server | achieved req/s | ok req/s | success | p50 ms | p90 ms | p99 ms "
        "| max ms | p50 ratio | p99 ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        baseline = row["server"] == "baseline"
        lines.append(
            f"| {row['rate']} | {row['server']} | {row['achieved_rate']:.1f} "
            f"| {row['throughput']:.1f} | {row['success']:.2%} "
            f"| {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['max_ms']:.2f} "
            f"| {'' if baseline else format(row['p50_ratio'], '.2f') + 'x'} "
            f"| {'' if baseline else format(row['p99_ratio'], '.2f') + 'x'} |"
        )
    lines += [
        "",
        "Baseline: the same aiohttp stack answering 202 after reading the body, without "
        "validation, idempotency or Kafka. Ratio: latency / baseline latency at the same rate. "
        "`ok req/s` is vegeta's throughput: successful answers per second of the attack and "
        "its wait for the last answers.",
        "",
        f"Messages in the bench topic: {result['messages_in_kafka']} for "
        f"{result['gateway_202s']} answers 202 (warm-ups included): "
        f"{'equal' if result['messages_in_kafka'] == result['gateway_202s'] else 'DIFFERENT'}.",
        "",
    ]
    return "\n".join(lines)


def _print_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from pipeline.cli.console import stdout_console

    table = Table(title="request gateway at fixed rates (vegeta), against the baseline")
    for column in ("rate/s", "server", "achieved/s", "ok/s", "success", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "server" else "right")
    table.add_column("p50 / p99 vs baseline", justify="right")
    for row in result["rows"]:
        versus = ""
        if row["server"] != "baseline":
            versus = f"{row['p50_ratio']:.2f}x / {row['p99_ratio']:.2f}x"
        table.add_row(
            str(row["rate"]),
            row["server"],
            f"{row['achieved_rate']:.1f}",
            f"{row['throughput']:.1f}",
            f"{row['success']:.2%}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            versus,
        )
    console = stdout_console()
    console.print(table)
    console.print(
        f"messages in Kafka: {result['messages_in_kafka']}, gateway 202s: {result['gateway_202s']}"
    )


def _servers() -> list[Server]:
    return [
        Server("baseline", "serve-baseline", {}, _free_port()),
        Server("gateway", "serve-gateway", {}, _free_port()),
        # The same gateway without the producer's batching delay (linger.ms 5 by default):
        # how much of the latency is the configured linger rather than work.
        Server(
            "gateway linger.ms=0",
            "serve-gateway",
            {"PIPELINE_PRODUCER__LINGER_MS": "0"},
            _free_port(),
        ),
    ]


def run(rates: list[int], duration_s: float, warmup_s: float) -> dict[str, Any]:
    vegeta = _install_vegeta()
    version = subprocess.run(
        [vegeta, "-version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "gateway_load"
    work.mkdir(exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    servers = _servers()
    logs = {server.name: work / f"{_slug(server.name)}.log" for server in servers}
    attacks: list[Attack] = []
    with _bench_topic() as topic:
        with contextlib.ExitStack() as running:
            for server in servers:
                running.enter_context(_server(server, topic, logs[server.name]))
            for rate in rates:
                for server in servers:
                    attacks.append(
                        _measure(vegeta, server.name, server.port, rate, duration_s, warmup_s, work)
                    )
        # Warm-ups count too: count every 202 the gateways logged.
        gateway_202s = sum(
            logs[server.name].read_text().count(" -> 202 ")
            for server in servers
            if server.command == "serve-gateway"
        )
        in_kafka = _accepted_in_kafka(topic)
    baselines = {attack.rate: attack for attack in attacks if attack.server == "baseline"}
    rows = [
        {
            **asdict(attack),
            "p50_ratio": attack.p50_ms / baselines[attack.rate].p50_ms,
            "p99_ratio": attack.p99_ms / baselines[attack.rate].p99_ms,
        }
        for attack in attacks
    ]
    result = {
        "benchmark": "gateway_load",
        "started": started,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "vegeta": version.removeprefix("Version: ").strip() or "unknown",
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "rows": rows,
        "gateway_202s": gateway_202s,
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
    parser.add_argument("--rates", default="200,500,1000", help="requests/s, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per attack")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    args = parser.parse_args(argv)
    if args.command == "serve-gateway":
        serve_gateway(args.port, args.topic)
    elif args.command == "serve-baseline":
        serve_baseline(args.port)
    else:
        rates = [int(rate) for rate in args.rates.split(",") if rate.strip()]
        result = run(rates, args.duration, args.warmup)
        if result["messages_in_kafka"] != result["gateway_202s"]:
            raise SystemExit("the topic does not hold exactly one message per 202")


if __name__ == "__main__":
    main()
