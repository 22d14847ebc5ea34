"""Adapters: each older benchmark's own JSON (bench/results/<name>.json) as rows of the common
format, one pure function per benchmark. The newer benchmarks write rows themselves
(:func:`native_rows`).

Honesty rules: a figure the benchmark did not measure stays None (no CPU time, no p99.9, no
spread from one round); the rounds are the benchmark's own per-round figures (its "samples",
"rounds" or per-round seconds); the value is the benchmark's own median.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.suite.rows import (
    Row,
    compared,
    latency,
    measurement,
    missing_fields,
    with_failure,
    with_goal,
)

Json = Mapping[str, Any]
Adapter = Callable[[Json], list[Row]]


class AdapterError(ValueError):
    """The JSON is not shaped as this benchmark writes it."""


# ---- goals of the issues, by benchmark and case ---------------------------------------------

#: Issue 16: ``pipeline produce`` 0.8x of the bare loop, EventProducer with Event objects 0.6x
#: of raw confluent-kafka with pre-encoded bytes.
PRODUCER_GOALS = {"pipeline produce": 0.8, "EventProducer + envelope": 0.6}
#: Issue 16: one relay 0.5x of EventProducer, two relays 1.3x of one.
OUTBOX_GOALS = {"1 relay": 0.5, "2 relays": 1.3, "1 relay, nothing kept": 0.5}
#: The log shipper 0.8x of direct streaming_bulk (bench/log_shipping.py's goal_ratio).
LOG_SHIPPING_GOAL = 0.8
#: Issue 13: record and replay 0.5x of kcat or better (kcat's variants are for information).
REPLAY_GOAL = 0.5
#: Issue 12: 500 sagas/s with p99 under 1 s.
SAGA_GOAL_PER_S = 500.0
SAGA_GOAL_P99_MS = 1_000.0


def _processing_goal(case: str) -> float | None:
    """Issue 16: async handlers on PostgreSQL 10x the plain agent, synchronous handlers 5x,
    ordering plus inbox with a no-op handler 0.8x of the bare runtime."""
    if case.startswith("A.") and "async handler" in case and "PostgreSQL" in case:
        return 10.0
    if case.startswith("A.") and "sync handler" in case and "async" not in case:
        return 5.0
    if case.startswith("B.") and "key + inbox" in case:
        return 0.8
    return None


# ---- helpers --------------------------------------------------------------------------------


def _field(data: Json, name: str) -> Any:
    try:
        return data[name]
    except (KeyError, TypeError) as error:
        raise AdapterError(f"no {name!r} in its JSON") from error


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _by_case(rows: list[Row]) -> dict[str, Row]:
    return {row["case"]: row for row in rows}


# ---- the adapters ---------------------------------------------------------------------------


def producer_throughput(data: Json) -> list[Row]:
    """bench/producer_throughput.py: events/s per producer; each against the baseline of its
    group ("baselines": raw confluent-kafka, or the bare NDJSON loop); CPU per event where the
    bench measured it (its process and the children it waited for); the goals it marks."""
    rates: Mapping[str, float] = _field(data, "events_per_s")
    samples: Mapping[str, list[float]] = _field(data, "samples")
    baselines: Mapping[str, str] = _field(data, "baselines")
    cpu_us: Mapping[str, float] = data.get("cpu_us_per_event") or {}
    goals: Mapping[str, Mapping[str, Any]] = data.get("goals") or {}
    rows = [
        measurement(
            "producer_throughput",
            name,
            "producing",
            "events/s",
            rate,
            samples[name],
            cpu_ms_per_event=cpu_us[name] / 1000 if name in cpu_us else None,
        )
        for name, rate in rates.items()
    ]
    found = _by_case(rows)
    return [
        compared(
            row,
            found.get(baselines.get(row["case"], "")),
            goals.get(row["case"], {}).get("ratio", PRODUCER_GOALS.get(row["case"])),
        )
        for row in rows
    ]


def gateway_load(data: Json) -> list[Row]:
    """bench/gateway_load.py: per server, accepted requests/s at saturation (with CPU ms per
    request) and, as a latency row, p50/p99 at half the gateway's saturation rate (medians of
    the rounds' percentiles; vegeta's p99.9 is not kept), the baseline's at the same rate
    beside it. Saturation against the bare aiohttp baseline with as many processes; issue
    15's goal (3,000/s, p99 < 50 ms) marked."""
    goal = _field(data, "goal")
    goal_text = (
        f"{goal['accepted_per_s']:,} req/s, p99 < {goal['half_rate_p99_ms']:g} ms at half rate"
    )
    saturation: list[Row] = []
    half: list[Row] = []
    goal_met: dict[str, bool] = {}
    not_202: dict[str, int] = {}
    for server in _field(data, "rows"):
        rounds = server["rounds"]
        name = server["server"]
        saturation.append(
            measurement(
                "gateway_load",
                f"{name}, saturation",
                "gateway",
                "requests/s",
                server["accepted_per_s"],
                [attacks[0]["accepted_per_s"] for attacks in rounds],
                cpu_ms_per_event=server["cpu_ms_per_accepted"],
                processes=server["processes"],
            )
        )
        achieved = [attacks[1]["accepted_per_s"] for attacks in rounds]
        half.append(
            measurement(
                "gateway_load",
                f"{name}, at half the gateway's saturation rate",
                "gateway",
                "requests/s",
                _median(achieved),
                achieved,
                kind="latency",
                latency_ms=latency(
                    server["half_rate_p50_ms"],
                    server["half_rate_p99_ms"],
                    samples=sum(attacks[1]["requests"] for attacks in rounds),
                ),
                processes=server["processes"],
            )
        )
        for row in (saturation[-1], half[-1]):
            goal_met[row["case"]] = bool(server["goal_met"])
        not_202[half[-1]["case"]] = int(server.get("half_rate_not_202") or 0)
    rows: list[Row] = []
    baselines = {
        (row["kind"], row["processes"]): row
        for row in saturation + half
        if _is_gateway_baseline(row)
    }
    for row in saturation + half:
        if _is_gateway_baseline(row):
            rows.append(row)
            continue
        # At half rate both servers get the same fixed rate: their latencies compare (a ratio
        # of the two rates would say nothing), so the latency row's comparison is of p99.
        row = compared(row, baselines.get((row["kind"], row["processes"])))
        row = with_goal(row, goal_text, goal_met[row["case"]])
        if not_202.get(row["case"]):
            row = with_failure(row, f"{not_202[row['case']]:,} answers not 202 at half rate")
        rows.append(row)
    return rows


def _is_gateway_baseline(row: Row) -> bool:
    return row["case"].startswith("baseline")


def outbox_relay(data: Json) -> list[Row]:
    """bench/outbox_relay.py: relay throughput, one relay against EventProducer and two relays
    against one (issue 16's goals); commit-to-Kafka latency (one measurement each, p50/p99,
    with LISTEN/NOTIFY on and off) as latency rows without a baseline."""
    rates: Mapping[str, float] = _field(data, "events_per_s")
    samples: Mapping[str, list[float]] = _field(data, "samples")
    rows = [
        measurement("outbox_relay", name, "outbox relay", "events/s", rate, samples[name])
        for name, rate in rates.items()
    ]
    found = _by_case(rows)
    baseline_of = {
        "1 relay": "EventProducer",
        "2 relays": "1 relay",
        "1 relay, nothing kept": "EventProducer",  # outbox.retention_s 0: the same goal
    }
    result = [
        compared(row, found.get(baseline_of.get(row["case"], "")), OUTBOX_GOALS.get(row["case"]))
        for row in rows
    ]
    for wake_up, figures in _field(data, "latency").items():
        result.append(
            measurement(
                "outbox_relay",
                f"commit to Kafka, {wake_up}",
                "outbox relay",
                "events/s",
                figures["achieved_rate_per_s"],
                [figures["achieved_rate_per_s"]],
                kind="latency",
                latency_ms=latency(figures["p50_ms"], figures["p99_ms"], samples=figures["events"]),
            )
        )
    return result


def log_shipping(data: Json) -> list[Row]:
    """bench/log_shipping.py: logs/s of the shipper against direct ``streaming_bulk``."""
    rates: Mapping[str, float] = _field(data, "logs_per_s")
    samples: Mapping[str, list[float]] = _field(data, "samples")
    rows = [
        measurement("log_shipping", name, "log shipping", "logs/s", rate, samples[name])
        for name, rate in rates.items()
    ]
    baseline = next((row for row in rows if row["case"].startswith("direct")), None)
    goal = data.get("goal_ratio", LOG_SHIPPING_GOAL)
    return [compared(row, baseline, None if row is baseline else goal) for row in rows]


def _case_problem(case: Json) -> str | None:
    """What makes a processing case's figures untrustworthy: rounds that failed, keys whose
    order was broken; None when nothing did."""
    problems = []
    failures = case.get("failures") or []
    if not case.get("samples"):
        problems.append("no successful round")
    elif failures:
        problems.append(f"{len(failures)} failed round{'s' if len(failures) > 1 else ''}")
    violations = sum(case.get("order_violations") or [])
    if violations:
        problems.append(f"{violations:,} order violations")
    return ", ".join(problems) or None


def processing(data: Json) -> list[Row]:
    """bench/processing.py: events/s per case (with CPU ms per event). Scenario A (2 ms
    handler) against the faster plain Faust agent, as the bench does; scenario B (no-op)
    against the bare runtime (ordering none, no inbox), or the plain agent when the bare
    runtime was not run. A case with failed rounds or order violations is marked failed (its
    goal not met), a case without a successful round too (with no figure); a baseline that
    failed is not replaced by another: the cases compared with it get no ratio and are
    marked."""
    cases: list[Json] = list(_field(data, "cases"))
    if not any(case.get("samples") for case in cases):
        return []  # nothing measured (rows_of says so)
    problem = {case["case"]: _case_problem(case) for case in cases}
    rows: dict[str, Row] = {}
    for case in cases:
        rows[case["case"]] = measurement(
            "processing",
            case["case"],
            "processing",
            "events/s",
            case["events_per_s"] if case.get("samples") else 0.0,
            case.get("samples") or [],
            cpu_ms_per_event=case.get("cpu_ms_per_event"),
        )

    def chosen(candidates: list[str]) -> tuple[Row | None, str | None]:
        """The fastest of the candidates, or why there is none (one of them failed)."""
        broken = [name for name in candidates if problem[name]]
        if broken:
            return None, f"baseline {broken[0]} failed: {problem[broken[0]]}"
        found = [rows[name] for name in candidates]
        return (max(found, key=lambda r: r["value"]) if found else None), None

    def agents(scenario: str) -> list[str]:
        return [n for n in rows if n.startswith(f"{scenario}.") and "plain Faust agent" in n]

    bare_b = [n for n in rows if n.startswith("B.") and "ordering none" in n]
    baselines = {"A": chosen(agents("A")), "B": chosen(bare_b or agents("B"))}
    candidates = {"A": agents("A"), "B": bare_b or agents("B")}
    # --rounds-in-one-run (the quick profile): a case's rounds are consecutive parts of one
    # run, not run beside the other cases' rounds: compared by their medians, not by round.
    paired = not data.get("rounds_in_one_run", False)
    result = []
    for name, row in rows.items():
        scenario = name[:1]
        baseline, missing = baselines.get(scenario, (None, None))
        goal = _processing_goal(name)
        if problem[name] and not row["rounds"]:
            made = compared(row, None, goal)  # no figure to compare
        else:
            made = compared(row, baseline, goal, paired=paired)
        own = problem[name]
        reasons = [own] if own else []
        if missing and name not in candidates.get(scenario, []):
            reasons.append(missing)
        result.append(with_failure(made, "; ".join(reasons)) if reasons else made)
    return result


def sagas(data: Json) -> list[Row]:
    """bench/sagas.py: per offered load, completed sagas/s with p50/p99 latency and the CPU ms
    per saga of every process together (services, relay, PostgreSQL, Kafka); the baseline, the
    same round trips with raw confluent-kafka, at the same offered load, compared by p99 (the
    rates at one offered load say little). One measurement per level (the bench has no
    rounds). Sagas that ended other than completed (none is made to fail) mark the row
    failed."""
    rows: list[Row] = []
    goal = f"{SAGA_GOAL_PER_S:,.0f} sagas/s, p99 < {SAGA_GOAL_P99_MS / 1000:g} s"
    for saga, base in zip(_field(data, "sagas"), _field(data, "baseline"), strict=True):
        offered = saga["offered_per_s"]
        baseline = measurement(
            "sagas",
            f"raw confluent-kafka round trips, {offered:g} offered/s",
            "sagas",
            "sagas/s",
            base["completed_per_s"],
            [base["completed_per_s"]],
            kind="latency",
            latency_ms=latency(
                base["latency_p50_s"] * 1000, base["latency_p99_s"] * 1000, samples=base["sagas"]
            ),
        )
        cpu = saga.get("cpu_ms_per_saga")
        row = measurement(
            "sagas",
            f"CreateOrder saga, {offered:g} offered/s",
            "sagas",
            "sagas/s",
            saga["completed_per_s"],
            [saga["completed_per_s"]],
            kind="latency",
            cpu_ms_per_event=sum(cpu.values()) if cpu else None,
            latency_ms=latency(
                saga["latency_p50_s"] * 1000,
                saga["latency_p99_s"] * 1000,
                samples=saga.get("completed", saga["sagas"]),
            ),
        )
        met = (
            saga["completed_per_s"] >= SAGA_GOAL_PER_S
            and saga["latency_p99_s"] * 1000 < SAGA_GOAL_P99_MS
        )
        made = with_goal(compared(row, baseline), goal, met)
        otherwise: Mapping[str, int] = saga.get("ended_otherwise") or {}
        if otherwise:
            ended = ", ".join(f"{count:,} {status}" for status, count in otherwise.items())
            made = with_failure(made, f"not completed: {ended}")
        rows += [baseline, made]
    return rows


def _replay_goal(case: str) -> float | None:
    """The goal is ours: the library and the command; kcat's variants and the bare produce()
    loop are for information."""
    return REPLAY_GOAL if "(library)" in case or "(command)" in case else None


def replay(data: Json) -> list[Row]:
    """bench/replay.py: recording against ``kcat -C -J`` and replaying against ``kcat -P``,
    messages/s; a round's figure is the records over that round's seconds. CPU per message
    where the bench measured it (its process and the children it waited for, such as kcat)."""
    records = _field(data, "records")
    rows: list[Row] = []
    for stage, baseline_name in (("record", "kcat -C -J"), ("replay", "kcat -P")):
        rates: Mapping[str, float] = _field(data, f"{stage}_messages_per_s")
        seconds: Mapping[str, list[float]] = _field(data, f"{stage}_seconds")
        cpu_us: Mapping[str, float] = data.get(f"{stage}_cpu_us_per_message") or {}
        group = [
            measurement(
                "replay",
                name,
                stage,
                "messages/s",
                rate,
                [records / s for s in seconds[name]],
                cpu_ms_per_event=cpu_us[name] / 1000 if name in cpu_us else None,
            )
            for name, rate in rates.items()
        ]
        baseline = _by_case(group).get(baseline_name)
        rows += [compared(row, baseline, _replay_goal(row["case"])) for row in group]
    return rows


def native_rows(data: Json) -> list[Row]:
    """A benchmark that writes rows of the common format itself: its rows, checked for the
    format's fields."""
    rows: list[Row] = list(_field(data, "rows"))
    if not rows:
        raise AdapterError("its JSON holds no rows")
    for row in rows:
        missing = missing_fields(dict(row))
        if missing:
            raise AdapterError(f"a row lacks {', '.join(missing)}")
    return rows


def writes_native_rows(data: Json) -> bool:
    """Whether the JSON holds rows of the common format (rather than the bench's own shape)."""
    rows = data.get("rows") if isinstance(data, Mapping) else None
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(isinstance(r, Mapping) and "stage" in r and "kind" in r for r in rows)
    )


ADAPTERS: dict[str, Adapter] = {
    "producer_throughput": producer_throughput,
    "gateway_load": gateway_load,
    "outbox_relay": outbox_relay,
    "log_shipping": log_shipping,
    "processing": processing,
    "sagas": sagas,
    "replay": replay,
}


def rows_of(name: str, data: Json) -> list[Row]:
    """The rows of benchmark ``name`` from its JSON: its own rows when it writes the common
    format, otherwise through its adapter. AdapterError when neither fits."""
    if writes_native_rows(data):
        return native_rows(data)
    adapter = ADAPTERS.get(name)
    if adapter is None:
        raise AdapterError("its JSON has no rows of the common format")
    try:
        rows = adapter(data)
    except AdapterError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, StopIteration) as error:
        raise AdapterError(
            f"its JSON is not shaped as expected ({type(error).__name__}: {error})"
        ) from error
    if not rows:
        raise AdapterError("its JSON holds no measurement")
    return rows
