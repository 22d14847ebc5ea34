"""The pure parts of the benchmark scripts that the suite's adapters do not cover: which
settings a processing contender runs with and when its run failed, the gateway's goal, the
sagas' level figures, the raw hop's spans, the log shipper's clock, and the one percentile
method every benchmark uses."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
MAX_IN_FLIGHT = "PIPELINE_PROCESSING__MAX_IN_FLIGHT"

# Importing the benches imports urllib3 (through elasticsearch), which probes IPv6 with a socket.
pytestmark = pytest.mark.filterwarnings("ignore:A test tried to use socket")


def _bench(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the bench scripts import their siblings by name
    return importlib.import_module(f"bench.{name}")


def test_async_runtime_contenders_run_the_default_max_in_flight(monkeypatch):
    processing = _bench(monkeypatch, "processing")
    cases = processing.cases(10, 10, 10, 10)
    runtime = [c for c in cases if c.kind == "runtime" and c.handler == "async"]
    assert len(runtime) == 5
    assert all(MAX_IN_FLIGHT not in c.env for c in runtime)
    (sync,) = [c for c in cases if c.handler == "sync"]
    assert sync.env[MAX_IN_FLIGHT] == "32" and "32 in flight" in sync.name


def test_a_processing_run_with_a_failed_round_or_order_violations_has_problems(monkeypatch):
    processing = _bench(monkeypatch, "processing")
    fine = processing.Case("A", "fine", "runtime", 10, violations=[0, 0, 0])
    broken = processing.Case("A", "broken", "runtime", 10, violations=[0, 2])
    failed = processing.Case("B", "failed", "faust", 10, failures=["no result (boom)"])
    assert processing.run_problems([fine]) == []
    assert processing.run_problems([fine, broken, failed]) == [
        "A. broken: 2 order violations",
        "B. failed: 1 failed round(s): no result (boom)",
    ]


def test_the_gateway_goal_needs_every_half_rate_answer_to_be_202(monkeypatch):
    gateway = _bench(monkeypatch, "gateway_load")
    row = {"accepted_per_s": 3500.0, "half_rate_p99_ms": 20.0, "half_rate_not_202": 0}
    assert gateway.goal_met(row)
    assert not gateway.goal_met({**row, "half_rate_not_202": 1})
    attack = gateway.Attack(
        "gateway", "half rate", 1750, 100, 1700.0, 0.2, 0.97, 5.0, 9.0, 30.0,
        {"202": 97, "500": 2, "0": 1}, ["timeout"],
    )  # fmt: skip
    assert gateway.not_202(attack) == 3


def test_a_saga_levels_rate_runs_from_before_the_first_send_and_counts_completed_only(
    monkeypatch,
):
    sagas = _bench(monkeypatch, "sagas")
    began = datetime(2026, 1, 1, tzinfo=UTC)
    created = began + timedelta(seconds=1)  # the first row comes a second after the send
    ended = [("completed", created, created + timedelta(milliseconds=n + 1)) for n in range(99)]
    ended += [("completed", created, created + timedelta(seconds=1))]  # the last, at 2 s
    ended += [("compensated", created, created + timedelta(milliseconds=5))]
    figures = sagas.level_figures(began, ended)
    assert figures["completed"] == 100 and figures["sagas"] == 101
    assert figures["ended_otherwise"] == {"compensated": 1}
    assert figures["completed_per_s"] == pytest.approx(100 / 2.0)
    # nearest rank: p99 of 100 is the 99th value, not the largest
    assert figures["latency_p99_s"] == pytest.approx(0.099)
    assert figures["latency_p50_s"] == pytest.approx(0.050)


def test_every_benchmark_takes_its_percentiles_from_paced_load(monkeypatch):
    import sys

    sagas = _bench(monkeypatch, "sagas")
    outbox = _bench(monkeypatch, "outbox_relay")
    shared = sys.modules["paced_load"].percentile
    assert sagas.percentile is shared and outbox.percentile is shared


def test_a_message_consumed_before_its_ack_was_served_counts_zero_and_is_counted(monkeypatch):
    baselines = _bench(monkeypatch, "latency_baselines")
    acked = {b"a": 10.0, b"b": 20.0, b"c": 30.0}
    consumed = {b"a": 10.5, b"b": 19.9993, b"lost": 40.0}
    spans, early = baselines.ack_spans(acked, consumed)
    assert spans == [(10.0, 10.5), (20.0, 20.0)]
    assert early == 1
    assert all(end >= start for start, end in spans)


def test_the_shippers_clock_starts_before_the_fetch_that_brought_its_first_records(
    monkeypatch,
):
    log_shipping = _bench(monkeypatch, "log_shipping")
    clock = log_shipping.FetchClock()
    clock.calling(1.0)  # the group join: nothing yet
    clock.returned(0)
    clock.assigned(1.5)
    clock.calling(2.0)
    clock.returned(2000)  # the first records: the clock ran from this call's start
    clock.calling(3.0)
    clock.returned(2000)
    assert clock.started == 2.0

    joined_during_the_call = log_shipping.FetchClock()
    joined_during_the_call.calling(1.0)
    joined_during_the_call.assigned(1.4)
    joined_during_the_call.returned(500)
    assert joined_during_the_call.started == 1.4
