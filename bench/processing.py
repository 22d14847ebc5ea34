"""Processing throughput: our processor runtime vs a plain Faust agent vs a plain poll loop.

Every contender reads a pre-filled topic with ONE partition (N events keyed over 100 keys,
each event's data carrying its sequence number within its key, produced up-front with
``pipeline.envelope.encode``), with a fresh consumer group, in a subprocess of its own
(bench/processing_worker.py). "events/s" runs from the first handler call to the end of the
last one, so start-up and group join are not counted. Every contender decodes the envelope and
hands the event to the same handler; the handler records ``(key, seq)``, and the order per key
is checked (each key's events must arrive as seq 0, 1, 2, ...: a reorder, a gap or a repeat is
a violation).

A. I/O-bound: a handler that waits 2 ms.

1. ``runtime, async handler``: ``pipeline.processing.faust.app.run_processor`` (what ``pipeline
   process`` runs) with ``ordering=key`` and the inbox on, the default ``max_in_flight``
   (``processing.max_in_flight``, 16), an ``async`` handler that awaits ``asyncio.sleep``
   (the group path: inbox look-ups and commits for many events at once), on SQLite (the
   embedded default) and on PostgreSQL, on the runtime's default uvloop and on asyncio's own loop;
2. ``runtime, sync handler``: the same with a plain function calling ``time.sleep`` in worker
   threads, ``max_in_flight`` 32, with the default group commit of synchronous handlers
   (``processing.sync_group_wait_ms``: the events handled together run one after another in
   one transaction);
3. ``plain Faust agent``: ``async for event in stream``, one at a time, ``await asyncio.sleep``,
   on asyncio's loop and on uvloop; the ratios use the faster of the two as the baseline;
4. ``plain poll loop``: confluent-kafka ``poll``, ``time.sleep`` per event, an asynchronous
   commit every 100 events.

B. Overhead, with a handler that does nothing (async): the runtime with ``ordering=key`` +
inbox (SQLite) against the same runtime with ``ordering=none`` + inbox off (both with the
default ``max_in_flight``), and the plain Faust agent for reference.

A round that fails (no result from its worker) or any order violation makes the run exit
non-zero after writing its results (the suite records the benchmark failed).

Run: ``.venv/bin/python bench/processing.py [--repeat 3] [--only 'A. runtime|B.' [--save]]``.
Results go to bench/results/processing.{json,md} (for a run of every case, or with ``--save``);
each figure is the median of ``--repeat`` interleaved rounds (the order of the contenders
rotates from round to round); each ratio is the median of the per-round ratios (a case's round
i over its baseline's round i, run in the same round; rounds one of them lost are left out),
the ratio of the medians only where no round pairs up. ``--rounds-in-one-run`` (the suite's
quick profile) starts each contender once with ``--repeat`` times its events and takes each
consecutive part of that run as a round: one start and group join per case instead of
``--repeat`` (they are most of a small round's time); its first round includes the warm-up.
Those parts of two cases did not run side by side (one case's whole run, then the next's): the
ratios are then of medians. Topics are produced uncompressed, like the earlier runs of this
bench. The results name what they measured: the commit, a hash of each runtime source (the
worker's too) and whether the tree had uncommitted changes (``uncommitted_changes``, as the
suite's latest.json).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench.suite importable
    sys.path.insert(0, str(ROOT))

from bench.suite.machine import uncommitted_changes  # noqa: E402
from bench.suite.rows import paired_ratio  # noqa: E402
from pipeline.envelope import Event  # noqa: E402
from pipeline.kafka.clients import build_admin  # noqa: E402
from pipeline.kafka.producer import build_event_producer  # noqa: E402
from pipeline.settings import PipelineSettings  # noqa: E402
from pipeline.stack.manager import StackManager  # noqa: E402
from pipeline.stack.postgres_node import create_database, database_url, drop_database  # noqa: E402
from pipeline.topics.spec import dlq_name  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WORKER = Path(__file__).with_name("processing_worker.py")
KEYS = 100
#: Each run's database is this with a suffix of its own, so two runs never share one.
BENCH_DATABASE = "pipeline_bench_processing"
#: The runtime's sources: the tree changes under the bench, so results name what they measured.
RUNTIME_SOURCES = [
    "pipeline/processing/engine.py",
    "pipeline/processing/group_commit.py",
    "pipeline/processing/attempt.py",
    "pipeline/processing/processor.py",
    "pipeline/processing/lanes.py",
    "pipeline/processing/offsets.py",
    "pipeline/processing/inbox.py",
    "pipeline/database.py",
    "pipeline/processing/faust/app.py",
    "pipeline/processing/faust/binding.py",
    "pipeline/processing/faust/internals.py",
    "pipeline/envelope/binary_mode.py",
    "pipeline/envelope/event.py",
    "pipeline/envelope/json_data.py",
    "bench/processing_worker.py",  # what every contender runs
]


def _fingerprint() -> dict[str, str]:
    """The git commit (read only) and a short hash of each runtime source as it is on disk."""
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    sources = {
        name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest()[:12]
        for name in RUNTIME_SOURCES
        if (ROOT / name).exists()
    }
    return {"commit": found.stdout.strip() or "unknown", **sources}


@dataclass
class Case:
    """One contender of one scenario."""

    scenario: str  # "A" (2 ms I/O-bound) or "B" (no-op)
    name: str
    kind: str  # processing_worker.py's KIND
    count: int
    env: dict[str, str] = field(default_factory=dict)
    database: str | None = None  # "sqlite" (a fresh file per round) or "postgres"
    handler: str = "async"  # runtime: "async" or "sync"
    loop: str = "uvloop"  # plain Faust agent: "uvloop" or "asyncio" (the runtime: env)
    rates: list[float] = field(default_factory=list)
    #: The round each of ``rates`` came from (a failed round has none), to pair them.
    rounds_of: list[int] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    violations: list[int] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.scenario}. {self.name}"

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


def case_ratio(case: Case, base: Case | None, paired: bool = True) -> float | None:
    """``case`` against ``base``: the median of the per-round ratios over the rounds both have
    (run in the same round, so a slow spell of the machine hits both); the ratio of their
    medians when no round pairs up or the rounds are not ``paired`` (``--rounds-in-one-run``:
    consecutive parts of each case's own run, not side by side). None without a base figure."""
    if base is None or not base.rate:
        return None
    if paired:
        theirs = dict(zip(base.rounds_of, base.rates, strict=True))
        common = [(rate, theirs[n]) for n, rate in zip(case.rounds_of, case.rates, strict=True)
                  if n in theirs]  # fmt: skip
        ratio = paired_ratio([mine for mine, _ in common], [base for _, base in common])
        if ratio is not None:
            return ratio
    return case.rate / base.rate


def _runtime_env(
    ordering: str, inbox: bool, max_in_flight: int | None = None, loop: str = "uvloop"
) -> dict[str, str]:
    """The runtime's settings of a case; ``max_in_flight`` None keeps the product's default
    (``processing.max_in_flight``), what ``pipeline process`` runs."""
    env = {
        "PIPELINE_PROCESSING__ORDERING": ordering,
        "PIPELINE_PROCESSING__INBOX": "true" if inbox else "false",
        "PIPELINE_PROCESSING__EVENT_LOOP": loop,
    }
    if max_in_flight is not None:
        env["PIPELINE_PROCESSING__MAX_IN_FLIGHT"] = str(max_in_flight)
    return env


def cases(io_count: int, thread_count: int, plain_count: int, noop_count: int) -> list[Case]:
    """Every contender. The async runtime cases run the default ``max_in_flight``; the
    synchronous one sets its own, and its name says so."""
    grouped = _runtime_env("key", True)
    return [
        Case("A", "runtime, async handler, key + inbox, SQLite, uvloop", "runtime", io_count,
             grouped, "sqlite"),
        Case("A", "runtime, async handler, key + inbox, PostgreSQL, uvloop", "runtime",
             io_count, grouped, "postgres"),
        Case("A", "runtime, async handler, key + inbox, SQLite, asyncio loop", "runtime",
             io_count, _runtime_env("key", True, loop="asyncio"), "sqlite"),
        Case("A", "runtime, sync handler (thread), key + inbox, SQLite, 32 in flight",
             "runtime", thread_count, _runtime_env("key", True, 32), "sqlite", handler="sync"),
        Case("A", "plain Faust agent (one at a time), asyncio loop", "faust", plain_count,
             loop="asyncio"),
        Case("A", "plain Faust agent (one at a time), uvloop", "faust", plain_count),
        Case("A", "plain confluent-kafka poll loop", "poll", plain_count),
        Case("B", "runtime, async handler, key + inbox, SQLite", "runtime", noop_count,
             grouped, "sqlite"),
        Case("B", "runtime, async handler, ordering none, no inbox", "runtime", noop_count,
             _runtime_env("none", False), "sqlite"),
        Case("B", "plain Faust agent (one at a time), uvloop", "faust", noop_count),
    ]  # fmt: skip


def _fill(settings: PipelineSettings, name: str, count: int) -> str:
    """A fresh one-partition topic (and its .dlq) holding ``count`` events over KEYS keys."""
    topic = f"bench.processing-{name}-{uuid.uuid4().hex[:8]}"
    admin = build_admin(settings.kafka)
    futures = admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dlq_name(topic), 1, 1)])
    for future in futures.values():
        future.result(30)
    # Uncompressed: aiokafka (under Faust) cannot read lz4 unless the lz4 package is installed.
    producer_settings = settings.producer.model_copy(update={"compression": "none"})
    producer = build_event_producer(settings.kafka, producer_settings)
    with producer:
        for n in range(count):
            event = Event(
                source="/bench/processing",
                type="com.example.bench.Tick",
                partitionkey=f"key-{n % KEYS}",
                data={"seq": n // KEYS, "n": n},
            )
            producer.send(topic, event)
    assert producer.counters.sent == count, f"{topic}: not every event was acknowledged"
    return topic


def _postgres(settings: PipelineSettings, name: str) -> tuple[str, str]:
    """A fresh database ``name`` of our own on the stack's PostgreSQL: (URL without password,
    password)."""
    stack = settings.stack
    create_database(stack, name)
    return database_url(stack, name), stack.postgres_password.get_secret_value()


def run_case(
    case: Case,
    topic: str,
    sleep_ms: float,
    scratch: Path,
    postgres: tuple[str, str],
    profile_dir: Path | None = None,
    segments: int = 1,
) -> dict[str, Any]:
    """One run of ``case`` in a worker process: its report (processing_worker.py's JSON). With
    ``segments`` > 1 the worker handles that many times ``case.count`` events and times each
    ``case.count`` on its own too."""
    run_id = uuid.uuid4().hex[:8]
    out = scratch / f"{run_id}.json"
    env = {**os.environ, **case.env}
    if "PIPELINE_PROCESSING__MAX_IN_FLIGHT" not in case.env:  # the default, not the caller's
        env.pop("PIPELINE_PROCESSING__MAX_IN_FLIGHT", None)
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in case.label).strip("-")
        env["PROCESSING_BENCH_PROFILE"] = str(profile_dir / f"{slug}-{run_id}.pstat")
    if case.database == "sqlite":
        env["PIPELINE_DATABASE__URL"] = f"sqlite:///{scratch / f'{run_id}.db'}"
    elif case.database == "postgres":
        env["PIPELINE_DATABASE__URL"], env["PIPELINE_DATABASE__PASSWORD"] = postgres
    command = [
        sys.executable, str(WORKER), case.kind,
        "--topic", topic,
        "--group", f"bench-processing-{case.kind}-{run_id}",
        "--count", str(case.count * segments),
        "--segments", str(segments),
        "--sleep-ms", str(sleep_ms),
        "--handler", case.handler,
        "--loop", case.loop,
        "--out", str(out),
    ]  # fmt: skip
    log = scratch / f"{run_id}.log"
    with log.open("w") as stderr, contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(command, env=env, stdout=stderr, stderr=stderr, timeout=150, check=False)
    if not out.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"{case.label}: no result ({tail[-300:]})")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; median kept")
    parser.add_argument(
        "--io-events", type=int, default=20_000, help="A: events per async-handler runtime run"
    )
    parser.add_argument(
        "--thread-events", type=int, default=4_000, help="A: events per sync-handler runtime run"
    )
    parser.add_argument("--plain-events", type=int, default=1_000, help="A: per plain run")
    parser.add_argument("--noop-events", type=int, default=20_000, help="B: events per run")
    parser.add_argument("--sleep-ms", type=float, default=2.0, help="A: the handler's wait")
    parser.add_argument(
        "--only",
        default="",
        help="run only cases whose name ('A. runtime, ...', as in the table) has one of these "
        "texts (separated by '|'); the results are left alone unless --save",
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help="write bench/results/processing.* for a run with --only too (the suite's quick "
        "profile: the cases of issue 16's goals and their baselines)",
    )
    parser.add_argument(
        "--rounds-in-one-run",
        action="store_true",
        help="one run per case, of --repeat times its events, each round a consecutive part "
        "of it (the suite's quick profile: one worker start per case instead of --repeat)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="save a yappi CPU profile (pstat) of each run's measured window in this folder "
        "(needs yappi importable; the profiler slows every contender)",
    )
    args = parser.parse_args()
    settings = PipelineSettings()
    fingerprint = _fingerprint()
    dirty = uncommitted_changes(ROOT)
    StackManager(settings).up({"kafka", "postgres"})
    console = Console(width=max(Console().width, 150))
    began = time.monotonic()

    all_cases = [
        c
        for c in cases(args.io_events, args.thread_events, args.plain_events, args.noop_events)
        if any(text in f"{c.scenario}. {c.label}" for text in args.only.split("|"))
    ]
    if not all_cases:
        parser.error(f"--only {args.only!r} matches no case (names such as 'B. runtime')")
    segments = args.repeat if args.rounds_in_one_run else 1
    runs = 1 if args.rounds_in_one_run else args.repeat
    with console.status("creating and filling the topics"):
        topics = {
            scenario: _fill(
                settings,
                name,
                max(c.count for c in all_cases if c.scenario == scenario) * segments,
            )
            for scenario, name in (("A", "io"), ("B", "noop"))
            if any(c.scenario == scenario for c in all_cases)
        }
        database = f"{BENCH_DATABASE}_{uuid.uuid4().hex[:8]}"
        postgres = _postgres(settings, database)
    sleep_of = {"A": args.sleep_ms, "B": 0.0}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-processing-") as scratch_dir:
            scratch = Path(scratch_dir)
            # Interleaved rounds, rotated, so a noisy moment on a 2-core machine shared with other
            # work hits every contender alike.
            for round_number in range(runs):
                shift = round_number % len(all_cases)
                for case in all_cases[shift:] + all_cases[:shift]:
                    with console.status(f"round {round_number + 1}/{runs}: {case.label}"):
                        try:
                            result = run_case(
                                case,
                                topics[case.scenario],
                                sleep_of[case.scenario],
                                scratch,
                                postgres,
                                args.profile,
                                segments,
                            )
                        except RuntimeError as error:
                            case.failures.append(str(error))
                            console.print(f"[red]{error}[/red]")
                            continue
                    figures = result["segments"] if segments > 1 else [result]
                    case.rates += [figure["events_per_s"] for figure in figures]
                    case.rounds_of += list(range(len(figures))) if segments > 1 else [round_number]
                    case.cpu_ms += [figure["cpu_ms_per_event"] for figure in figures]
                    case.violations.append(result["order_violations"])
                    case.startup_s.append(result["startup_s"])
        admin = build_admin(settings.kafka)
        doomed = [*topics.values(), *(dlq_name(t) for t in topics.values())]
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(30)
    finally:  # a failed run leaves no database behind either
        drop_database(settings.stack, database)
    duration = time.monotonic() - began
    sources_after = {k: v for k, v in _fingerprint().items() if k != "commit"}
    if sources_after != {k: v for k, v in fingerprint.items() if k != "commit"}:
        console.print("[yellow]the runtime's sources changed during the bench[/yellow]")
        fingerprint["changed_during_run"] = "yes"
    report(console, all_cases, args, duration, fingerprint, dirty)
    problems = run_problems(all_cases)
    if problems:  # after the results are written, so they can be read; the run failed
        raise SystemExit("processing: " + "; ".join(problems))


def run_problems(all_cases: list[Case]) -> list[str]:
    """What makes the run's figures untrustworthy, one line per case: rounds that failed, or
    events out of order per key. Empty when every round of every case succeeded in order."""
    problems = []
    for case in all_cases:
        found = []
        if case.failures:
            found.append(f"{len(case.failures)} failed round(s): {case.failures[0]}")
        if any(case.violations):
            found.append(f"{sum(case.violations):,} order violations")
        if found:
            problems.append(f"{case.label}: {', '.join(found)}")
    return problems


def report(
    console: Console,
    all_cases: list[Case],
    args: argparse.Namespace,
    duration: float,
    fingerprint: dict[str, str],
    dirty: bool = False,
) -> None:
    def find(scenario: str, kind: str) -> Case | None:
        """The contender of that kind; of several (the agent on two loops), the fastest."""
        found = [c for c in all_cases if c.scenario == scenario and c.kind == kind]
        return max(found, key=lambda c: c.rate) if found else None

    baselines = {
        "A": (find("A", "faust"), find("A", "poll")),
        "B": (find("B", "faust"), None),
    }
    # B's own ratio: the runtime with key ordering and the inbox against the same runtime
    # with neither (its overhead), and against the plain agent.
    b_bare = next((c for c in all_cases if c.scenario == "B" and "none" in c.name), None)

    # Consecutive parts of one run per case did not run beside the other cases' parts.
    paired = not args.rounds_in_one_run

    def ratio(case: Case, base: Case | None) -> float | None:
        return case_ratio(case, base, paired)

    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}x"

    rows: list[dict[str, Any]] = []
    for case in all_cases:
        agent, poll = baselines[case.scenario]
        rows.append(
            {
                "case": case.label,
                "scenario": case.scenario,
                "events": case.count,
                "events_per_s": case.rate,
                "samples": case.rates,
                "cpu_ms_per_event": statistics.median(case.cpu_ms) if case.cpu_ms else None,
                "order_violations": case.violations,
                "order_kept": bool(case.violations) and not any(case.violations),
                "startup_s": case.startup_s,
                "failures": case.failures,
                "ratio_vs_plain_agent": ratio(case, agent),
                "ratio_vs_poll_loop": ratio(case, poll),
                "ratio_vs_runtime_bare": ratio(case, b_bare) if case.scenario == "B" else None,
            }
        )

    columns = ("case", "events/s", "CPU ms/event", "order per key", "vs plain agent",
               "vs poll loop", "vs runtime bare (B)")  # fmt: skip
    table = Table(
        title=f"processing throughput, 1 partition, {KEYS} keys, "
        f"median of {args.repeat} rounds (A: {args.sleep_ms:g} ms handler, B: no-op)"
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "case" else "right")
    lines = ["| " + " | ".join(columns) + " |", "|---" + "|---:" * (len(columns) - 1) + "|"]
    for row in rows:
        order = (
            "kept"
            if row["order_kept"]
            else ("n/a" if not row["order_violations"] else f"{max(row['order_violations'])} off")
        )
        cells = [
            row["case"],
            f"{row['events_per_s']:,.0f}",
            "" if row["cpu_ms_per_event"] is None else f"{row['cpu_ms_per_event']:.2f}",
            order,
            fmt(row["ratio_vs_plain_agent"]),
            fmt(row["ratio_vs_poll_loop"]),
            fmt(row["ratio_vs_runtime_bare"]),
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    machine = (
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end (shared machine), "
        f"bench took {duration:.0f} s"
    )
    console.print(machine)
    if (args.only and not args.save) or args.profile is not None:
        console.print("a partial or profiled run: bench/results/processing.* left as they were")
        return

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "processing.json").write_text(
        json.dumps(
            {
                "partitions": 1,
                "keys": KEYS,
                "sleep_ms": args.sleep_ms,
                "repeat": args.repeat,
                "rounds_in_one_run": args.rounds_in_one_run,
                "machine": machine,
                "runtime_sources": fingerprint,
                "uncommitted_changes": dirty,
                "ratios": "median of per-round ratios" if paired else "ratio of medians",
                "what": __doc__,
                "cases": rows,
            },
            indent=2,
        )
    )
    notes = [
        "",
        (
            f"Median of {args.repeat} rounds, each a consecutive part of one run per case "
            "(--rounds-in-one-run: one start per case); "
            if args.rounds_in_one_run
            else f"Median of {args.repeat} interleaved rounds; "
        )
        + f"one partition, {KEYS} keys; events/s from "
        "the first handler call to the end of the last; CPU ms/event is the contender's "
        "process CPU time over that window divided by the events. A: the handler waits "
        f"{args.sleep_ms:g} ms (runtime, async handler: `await asyncio.sleep`, on the event "
        "loop, group commit; runtime, sync handler: `time.sleep` in worker threads, group "
        "commit of synchronous handlers (the default `sync_group_wait_ms`); plain agent: "
        "`await asyncio.sleep`; poll loop: `time.sleep`). "
        + (
            "Each ratio is the median of the per-round ratios (round i against the baseline's "
            "round i). "
            if paired
            else "Each ratio is of the medians (the parts of one run per case did not run "
            "side by side). "
        )
        + "'vs plain agent' divides by the faster of the plain agent's two loops. B: the "
        "handler does nothing. 'order per key' checks every key's events came as seq 0, 1, "
        "2, ... in every round.",
        "",
        f"Machine: {machine}.",
        "",
        "Runtime measured (commit, sha256 prefix of each source as on disk): "
        + ", ".join(f"{name} {value}" for name, value in fingerprint.items())
        + (
            "; the tree had UNCOMMITTED CHANGES (the code measured is not exactly the commit's)."
            if dirty
            else "; no uncommitted changes."
        ),
        "",
    ]
    (RESULTS / "processing.md").write_text("\n".join(lines + notes))


if __name__ == "__main__":
    main()
