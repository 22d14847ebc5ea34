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


def test_processing_ratios_pair_the_rounds_both_cases_have(monkeypatch):
    processing = _bench(monkeypatch, "processing")
    base = processing.Case("A", "agent", "faust", 10, rates=[100.0, 200.0, 250.0],
                           rounds_of=[0, 1, 2])  # fmt: skip
    # round 1 failed for this case: rounds 0 and 2 pair up, 300 / 100 and 500 / 250
    case = processing.Case("A", "runtime", "runtime", 10, rates=[300.0, 500.0], rounds_of=[0, 2])
    assert processing.case_ratio(case, base) == pytest.approx(2.5)
    # of the medians (400 / 200) when the rounds did not run side by side
    assert processing.case_ratio(case, base, paired=False) == pytest.approx(2.0)
    full = processing.Case("A", "runtime", "runtime", 10, rates=[100.0, 900.0, 100.0],
                           rounds_of=[0, 1, 2])  # fmt: skip
    base.rates = [50.0, 200.0, 100.0]  # rounds 2.0, 4.5, 1.0; medians 100 / 100
    assert processing.case_ratio(full, base) == pytest.approx(2.0)
    assert processing.case_ratio(full, base, paired=False) == pytest.approx(1.0)
    alone = processing.Case("A", "runtime", "runtime", 10, rates=[300.0], rounds_of=[3])
    assert processing.case_ratio(alone, base) == pytest.approx(3.0)  # no round pairs up
    assert processing.case_ratio(case, None) is None


def test_processing_fingerprints_its_worker_too(monkeypatch):
    processing = _bench(monkeypatch, "processing")
    assert "bench/processing_worker.py" in processing.RUNTIME_SOURCES
    assert all((processing.ROOT / name).is_file() for name in processing.RUNTIME_SOURCES)


def test_the_outbox_bench_counts_missing_messages_and_order_per_aggregate(monkeypatch):
    outbox = _bench(monkeypatch, "topic_counts")
    assert outbox.round_problems(1000, 1000, None) == []
    assert outbox.round_problems(1003, 1000, 0) == []  # duplicates are not a failure
    assert outbox.round_problems(999, 1000, 2) == [
        "999 of 1,000 messages in the topic",
        "2 messages out of order per aggregate",
    ]
    in_order = [(b"a", 0), (b"b", 1), (b"a", 2), (b"b", 3)]
    assert outbox.order_violations(in_order) == 0
    # a batch sent again (at least once): duplicates, not disorder
    assert outbox.order_violations([(b"a", 0), (b"a", 2), (b"a", 0), (b"a", 2), (b"a", 4)]) == 0
    assert outbox.order_violations([(b"a", 0), (b"a", 4), (b"b", 1), (b"a", 2)]) == 1


def test_a_producer_round_fails_when_its_topic_holds_fewer_messages_than_sent(monkeypatch):
    producer = _bench(monkeypatch, "producer_throughput")
    assert producer.round_failure(200_000, 200_000) is None
    assert producer.round_failure(200_001, 200_000) is None
    assert producer.round_failure(199_999, 200_000) == "199,999 of 200,000 messages in the topic"


def test_replay_ratios_are_the_median_of_the_rounds_ratios(monkeypatch):
    replay = _bench(monkeypatch, "replay")
    seconds = {"kcat -P": [1.0, 4.0, 1.0], "ours": [2.0, 4.0, 4.0]}
    ratios = replay.ratios_to(seconds, "kcat -P")
    assert ratios["kcat -P"] == pytest.approx(1.0)
    # a round's ratio of rates is kcat's seconds over ours: 0.5, 1.0, 0.25; of the medians 1 / 4
    assert ratios["ours"] == pytest.approx(0.5)


def test_the_gateway_saturation_ratio_is_the_median_of_the_rounds_ratios(monkeypatch):
    gateway = _bench(monkeypatch, "gateway_load")

    def summary(name, accepted, cpu):
        rounds = [[{"accepted_per_s": a, "cpu_ms_per_accepted": c}, {}] for a, c in zip(
            accepted, cpu, strict=True)]  # fmt: skip
        return {"server": name, "accepted_per_s": sorted(accepted)[1],
                "cpu_ms_per_accepted": sorted(cpu)[1], "half_rate_p99_ms": 10.0,
                "half_rate_not_202": 0, "rounds": rounds}  # fmt: skip

    servers = [gateway.Server("baseline, 1 process", "serve-baseline", 1, 1),
               gateway.Server("gateway, 1 worker", "serve-gateway", 1, 2)]  # fmt: skip
    rows = gateway._with_ratios(
        [summary("baseline, 1 process", [1000.0, 4000.0, 2000.0], [0.1, 0.2, 0.1]),
         summary("gateway, 1 worker", [800.0, 1000.0, 400.0], [0.4, 0.6, 0.2])],
        servers,
    )  # fmt: skip
    # rounds 0.8, 0.25, 0.2 -> 0.25; of the medians 800 / 2000 = 0.4
    assert rows[1]["accepted_ratio"] == pytest.approx(0.25)
    assert rows[1]["cpu_ratio"] == pytest.approx(3.0)  # 4, 3, 2; of the medians 0.4 / 0.1
    assert rows[0]["accepted_ratio"] == pytest.approx(1.0)


def test_the_bare_ndjson_loop_tunes_the_collector_as_pipeline_produce(monkeypatch):
    from pipeline.gc_tuning import THRESHOLD_WHILE_SENDING

    bare = _bench(monkeypatch, "bare_ndjson_loop")
    assert bare.GC_THRESHOLD == THRESHOLD_WHILE_SENDING


def test_processing_results_say_whether_the_tree_had_uncommitted_changes(monkeypatch, tmp_path):
    import argparse
    import json

    from rich.console import Console

    processing = _bench(monkeypatch, "processing")
    monkeypatch.setattr(processing, "RESULTS", tmp_path)
    agent = processing.Case("A", "plain Faust agent (one at a time), uvloop", "faust", 10,
                            rates=[100.0, 300.0], rounds_of=[0, 1], violations=[0, 0])  # fmt: skip
    ours = processing.Case("A", "runtime, async handler", "runtime", 10, rates=[500.0, 600.0],
                           rounds_of=[0, 1], violations=[0, 0])  # fmt: skip
    args = argparse.Namespace(repeat=2, sleep_ms=2.0, only="", save=False, profile=None,
                              rounds_in_one_run=False)  # fmt: skip
    fingerprint = {"commit": "abc1234", "bench/processing_worker.py": "0123456789ab"}
    processing.report(Console(quiet=True), [agent, ours], args, 1.0, fingerprint, True)
    written = json.loads((tmp_path / "processing.json").read_text())
    assert written["uncommitted_changes"] is True
    assert written["runtime_sources"]["bench/processing_worker.py"] == "0123456789ab"
    (row,) = [case for case in written["cases"] if case["scenario"] == "A" and "runtime" in
              case["case"]]  # fmt: skip
    assert row["ratio_vs_plain_agent"] == pytest.approx(3.5)  # rounds 5.0, 2.0; medians 2.75
    assert "UNCOMMITTED CHANGES" in (tmp_path / "processing.md").read_text()
    processing.report(Console(quiet=True), [agent, ours], args, 1.0, fingerprint, False)
    assert json.loads((tmp_path / "processing.json").read_text())["uncommitted_changes"] is False
    assert "no uncommitted changes" in (tmp_path / "processing.md").read_text()


def test_cpu_by_process_adds_up_between_readings_and_over_rounds(monkeypatch):
    cpu = _bench(monkeypatch, "process_cpu")
    before = {1: ("relay 0", 1.0), 2: ("postgresql", 5.0), 3: ("postgresql", 2.0)}
    after = {1: ("relay 0", 1.5), 2: ("postgresql", 5.25), 3: ("postgresql", 2.25),
             4: ("postgresql", 0.5), 5: ("kafka", 0.75)}  # fmt: skip
    # a backend that started in between counts whole; none goes below what it had
    spent = cpu.cpu_spent(before, after)
    assert spent == {"relay 0": 0.5, "postgresql": 1.0, "kafka": 0.75}
    assert cpu.cores_busy(spent, wall_s=1.0, cores=2) == pytest.approx(1.125)
    assert cpu.cores_busy(spent, wall_s=0.0, cores=2) == 0.0
    rounds = [({"publishing": 1.0, "kafka": 0.5}, 1.0), ({"publishing": 3.0}, 2.0),
              ({"publishing": 2.0, "kafka": 1.5}, 4.0)]  # fmt: skip
    figures = cpu.cpu_per_thousand(rounds, events=10_000, cores=2)
    # ms per 1,000 events (1 s over 10,000 events is 100 ms), the median over the rounds; a
    # process absent from a round spent nothing in it
    assert figures.by_name == {"kafka": pytest.approx(50.0), "publishing": pytest.approx(200.0)}
    # the rounds' totals: 150, 300, 350 ms per 1,000: their median, not the sum of the above
    assert figures.total == pytest.approx(300.0)
    # cores busy by round: 1.5 / (1 s x 2), 3 / (2 s x 2), 3.5 / (4 s x 2): the median
    assert figures.cores_busy == pytest.approx(0.75)
    table = cpu.cpu_table({"1 relay": figures}, "publisher")
    assert table[0] == "| publisher | kafka | publishing | total | cores busy |"
    assert table[2] == "| 1 relay | 50 | 200 | 300 | 75% |"
