"""The adapters turn each older benchmark's JSON (samples shaped like the committed
bench/results/*.json) into rows of the common format, inventing no figure."""

from __future__ import annotations

import statistics

import pytest

from bench.suite.adapters import AdapterError, rows_of
from tests.support.bench_rows import assert_common_format, by_case, of_rounds

PRODUCER = {
    "records": 50000,
    "events_per_s": {
        "raw confluent-kafka": 80000.0,
        "EventProducer (encoded)": 70000.0,
        "EventProducer + envelope": 52000.0,
        "bare loop (NDJSON)": 50000.0,
        "pipeline produce": 30000.0,
        "kcat": 380000.0,
    },
    "samples": {
        "raw confluent-kafka": [78000.0, 80000.0, 84000.0],
        "EventProducer (encoded)": [70000.0, 69000.0, 71000.0],
        "EventProducer + envelope": [52000.0, 50000.0, 53000.0],
        "bare loop (NDJSON)": [50000.0, 49000.0, 51000.0],
        "pipeline produce": [30000.0, 29000.0, 31000.0],
        "kcat": [380000.0, 370000.0, 390000.0],
    },
    "baselines": {
        "raw confluent-kafka": "raw confluent-kafka",
        "EventProducer (encoded)": "raw confluent-kafka",
        "EventProducer + envelope": "raw confluent-kafka",
        "kafka-producer-perf-test": "raw confluent-kafka",
        "bare loop (NDJSON)": "bare loop (NDJSON)",
        "pipeline produce": "bare loop (NDJSON)",
        "kcat": "bare loop (NDJSON)",
    },
}


def test_producer_rows_compare_each_producer_with_the_baseline_of_its_group():
    rows = by_case(rows_of("producer_throughput", PRODUCER))
    assert_common_format(list(rows.values()), "producer_throughput")
    produce = rows["pipeline produce"]
    assert produce["stage"] == "producing" and produce["unit"] == "events/s"
    assert produce["baseline"] == "bare loop (NDJSON)"
    assert produce["ratio"] == pytest.approx(
        of_rounds([30000, 29000, 31000], [50000, 49000, 51000])
    )
    assert (produce["goal_ratio"], produce["goal_met"]) == (0.8, False)
    envelope = rows["EventProducer + envelope"]
    assert envelope["baseline"] == "raw confluent-kafka"
    assert (envelope["goal_ratio"], envelope["goal_met"]) == (0.6, True)
    raw = rows["raw confluent-kafka"]
    assert (raw["baseline"], raw["ratio"], raw["goal_ratio"]) == (None, None, None)


def test_producer_rounds_are_the_samples_and_the_spread_is_max_minus_min_over_median():
    raw = by_case(rows_of("producer_throughput", PRODUCER))["raw confluent-kafka"]
    assert raw["rounds"] == [78000.0, 80000.0, 84000.0]
    assert raw["value"] == 80000.0
    assert raw["spread_pct"] == pytest.approx((84000 - 78000) / 80000 * 100)


def test_figures_a_benchmark_does_not_measure_stay_null():
    raw = by_case(rows_of("producer_throughput", PRODUCER))["raw confluent-kafka"]
    assert raw["cpu_ms_per_event"] is None
    assert raw["latency_ms"] is None
    assert raw["load_pct"] is None and raw["processes"] is None


def test_one_round_gives_no_spread():
    data = {
        **PRODUCER,
        "samples": {name: [rate] for name, rate in PRODUCER["events_per_s"].items()},
    }
    raw = by_case(rows_of("producer_throughput", data))["raw confluent-kafka"]
    assert raw["rounds"] == [80000.0]
    assert raw["spread_pct"] is None


def _attack(server, kind, rate, requests, accepted, cpu, p50, p99):
    return {
        "server": server,
        "kind": kind,
        "rate": rate,
        "requests": requests,
        "accepted_per_s": accepted,
        "cpu_ms_per_accepted": cpu,
        "success": 1.0,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": p99 * 2,
        "status_codes": {"202": requests},
        "errors": [],
    }


def _server(name, processes, saturation, half_rates, p50s, p99s, goal_met):
    rounds = [
        [
            _attack(name, "saturation", 0, int(s * 5), s, 0.1, 10.0, 30.0),
            _attack(name, "half rate", r, r * 5, r * 0.99, 0.3, p50, p99),
        ]
        for s, r, p50, p99 in zip(saturation, half_rates, p50s, p99s, strict=True)
    ]
    return {
        "server": name,
        "processes": processes,
        "accepted_per_s": statistics.median(saturation),
        "cpu_ms_per_accepted": 0.15 if name.startswith("baseline") else 1.07,
        "saturation_p99_ms": 30.0,
        "half_rate_per_s": statistics.median(half_rates),
        "half_rate_p50_ms": statistics.median(p50s),
        "half_rate_p99_ms": statistics.median(p99s),
        "rounds": rounds,
        "goal_met": goal_met,
    }


GATEWAY = {
    "benchmark": "gateway_load",
    "repeat": 3,
    "goal": {"accepted_per_s": 3000, "half_rate_p99_ms": 50.0},
    "rows": [
        _server(
            "baseline, 1 process",
            1,
            [4100, 4300, 3300],
            [344, 354, 296],
            [0.5, 0.6, 0.7],
            [2.5, 17.6, 3.7],
            True,
        ),
        _server(
            "gateway, 1 worker",
            1,
            [688, 709, 593],
            [344, 354, 296],
            [32.0, 64.0, 31.0],
            [207.0, 1910.0, 378.0],
            False,
        ),
        _server(
            "baseline, 2 processes",
            2,
            [4578, 4391, 3328],
            [545, 625, 559],
            [0.4, 0.3, 0.4],
            [4.8, 2.4, 2.5],
            True,
        ),
        _server(
            "gateway, 2 workers",
            2,
            [1090, 1251, 1118],
            [545, 625, 559],
            [678.0, 55.0, 62.0],
            [2552.0, 1531.0, 885.0],
            False,
        ),
    ],
    "gateway_202s": 100,
    "messages_in_kafka": 100,
}


def test_gateway_saturation_rows_compare_with_the_baseline_of_as_many_processes():
    rows = by_case(rows_of("gateway_load", GATEWAY))
    assert_common_format(list(rows.values()), "gateway_load")
    two = rows["gateway, 2 workers, saturation"]
    assert two["kind"] == "throughput" and two["unit"] == "requests/s"
    assert two["baseline"] == "baseline, 2 processes, saturation"
    base = rows["baseline, 2 processes, saturation"]
    assert two["ratio"] == pytest.approx(of_rounds(two["rounds"], base["rounds"]))
    assert two["rounds"] == [1090.0, 1251.0, 1118.0]
    assert two["cpu_ms_per_event"] == 1.07
    assert two["processes"] == 2
    assert two["goal_met"] is False and "3,000 req/s" in two["goal"]
    assert rows["baseline, 1 process, saturation"]["goal_met"] is None


def test_gateway_latency_rows_hold_the_half_rate_percentiles_and_no_p999():
    rows = by_case(rows_of("gateway_load", GATEWAY))
    half = rows["gateway, 1 worker, at half the gateway's saturation rate"]
    assert half["kind"] == "latency"
    assert half["latency_ms"] == {
        "p50": 32.0,
        "p99": 378.0,
        "p999": None,
        "samples": 344 * 5 + 354 * 5 + 296 * 5,
    }
    assert half["rounds"] == pytest.approx([344 * 0.99, 354 * 0.99, 296 * 0.99])
    # The same rate for both: the latencies compare, not the rates.
    assert half["baseline"] == "baseline, 1 process, at half the gateway's saturation rate"
    assert half["ratio"] is None
    assert half["p99_vs_baseline"] == pytest.approx(378.0 / 3.7)
    assert half["goal_met"] is False


OUTBOX = {
    "rows": 100000,
    "events_per_s": {
        "EventProducer": 15770.0,
        "1 relay": 4623.0,
        "2 relays": 6509.0,
        "1 relay, nothing kept": 5310.0,
    },
    "samples": {
        "EventProducer": [15770.0, 28649.0, 13042.0],
        "1 relay": [4623.0, 4280.0, 4789.0],
        "2 relays": [6509.0, 6070.0, 8997.0],
        "1 relay, nothing kept": [5310.0, 5120.0, 5770.0],
    },
    "ratio_vs_event_producer": {"EventProducer": 1.0, "1 relay": 0.29, "2 relays": 0.41},
    "latency_rate_per_s": 1000,
    "latency": {
        "LISTEN/NOTIFY": {
            "events": 15000,
            "achieved_rate_per_s": 571.5,
            "p50_ms": 12.3,
            "p99_ms": 374.1,
            "max_ms": 559.0,
        },
        "poll only (1 s)": {
            "events": 15000,
            "achieved_rate_per_s": 860.8,
            "p50_ms": 676.1,
            "p99_ms": 1410.9,
            "max_ms": 1502.9,
        },
    },
}


def test_outbox_one_relay_against_event_producer_and_two_relays_against_one():
    rows = by_case(rows_of("outbox_relay", OUTBOX))
    assert_common_format(list(rows.values()), "outbox_relay")
    one, two = rows["1 relay"], rows["2 relays"]
    assert (one["baseline"], one["goal_ratio"], one["goal_met"]) == ("EventProducer", 0.5, False)
    assert one["ratio"] == pytest.approx(of_rounds([4623, 4280, 4789], [15770, 28649, 13042]))
    assert (two["baseline"], two["goal_ratio"], two["goal_met"]) == ("1 relay", 1.3, True)
    assert two["ratio"] == pytest.approx(of_rounds([6509, 6070, 8997], [4623, 4280, 4789]))
    kept_none = rows["1 relay, nothing kept"]
    assert (kept_none["baseline"], kept_none["goal_ratio"]) == ("EventProducer", 0.5)
    assert kept_none["ratio"] == pytest.approx(of_rounds([5310, 5120, 5770], [15770, 28649, 13042]))


def test_outbox_latency_is_one_measurement_without_spread_or_baseline():
    row = by_case(rows_of("outbox_relay", OUTBOX))["commit to Kafka, LISTEN/NOTIFY"]
    assert row["kind"] == "latency" and row["stage"] == "outbox relay"
    assert row["value"] == 571.5 and row["rounds"] == [571.5] and row["spread_pct"] is None
    assert row["latency_ms"] == {"p50": 12.3, "p99": 374.1, "p999": None, "samples": 15000}
    assert row["baseline"] is None and row["ratio"] is None


LOGS = {
    "records": 100000,
    "logs_per_s": {"direct streaming_bulk": 8727.0, "log shipper (Kafka -> ES)": 9956.0},
    "samples": {
        "direct streaming_bulk": [6974.0, 12440.0, 8727.0],
        "log shipper (Kafka -> ES)": [9700.0, 10689.0, 9956.0],
    },
    "ratio_vs_direct": {"direct streaming_bulk": 1.0, "log shipper (Kafka -> ES)": 1.14},
    "goal_ratio": 0.8,
}


def test_log_shipper_against_direct_bulk_with_its_goal():
    rows = by_case(rows_of("log_shipping", LOGS))
    assert_common_format(list(rows.values()), "log_shipping")
    shipper = rows["log shipper (Kafka -> ES)"]
    assert shipper["unit"] == "logs/s" and shipper["stage"] == "log shipping"
    assert shipper["baseline"] == "direct streaming_bulk"
    assert shipper["ratio"] == pytest.approx(of_rounds([9700, 10689, 9956], [6974, 12440, 8727]))
    assert (shipper["goal_ratio"], shipper["goal_met"]) == (0.8, True)
    assert rows["direct streaming_bulk"]["goal_ratio"] is None


SAGAS = {
    "rates": [5.0, 40.0],
    "seconds": 15.0,
    "sagas": [
        {
            "offered_per_s": 5.0,
            "sagas": 75,
            "completed": 75,
            "completed_per_s": 5.18,
            "latency_p50_s": 5.02,
            "latency_p99_s": 6.87,
            "cpu_ms_per_saga": {"kafka": 55.0, "postgresql": 25.0, "orders-service": 20.0},
        },
        {
            "offered_per_s": 40.0,
            "sagas": 600,
            "completed": 600,
            "completed_per_s": 7.17,
            "latency_p50_s": 52.8,
            "latency_p99_s": 61.5,
            "cpu_ms_per_saga": {"kafka": 16.0},
        },
    ],
    "baseline": [
        {
            "offered_per_s": 5.0,
            "sagas": 75,
            "completed_per_s": 4.88,
            "latency_p50_s": 0.602,
            "latency_p99_s": 1.148,
        },
        {
            "offered_per_s": 40.0,
            "sagas": 600,
            "completed_per_s": 37.6,
            "latency_p50_s": 0.884,
            "latency_p99_s": 1.501,
        },
    ],
}


def test_sagas_each_level_against_the_raw_round_trips_at_the_same_offered_load():
    rows = by_case(rows_of("sagas", SAGAS))
    assert_common_format(list(rows.values()), "sagas")
    saga = rows["CreateOrder saga, 40 offered/s"]
    assert saga["kind"] == "latency" and saga["unit"] == "sagas/s"
    assert saga["baseline"] == "raw confluent-kafka round trips, 40 offered/s"
    assert saga["ratio"] is None, "a ratio of rates at one offered load says ~1"
    assert saga["p99_vs_baseline"] == pytest.approx(61.5 / 1.501)
    assert saga["latency_ms"] == {
        "p50": pytest.approx(52800),
        "p99": pytest.approx(61500),
        "p999": None,
        "samples": 600,
    }
    assert saga["rounds"] == [7.17] and saga["spread_pct"] is None
    assert saga["goal_met"] is False and "500 sagas/s" in saga["goal"]


def test_sagas_cpu_per_saga_is_the_sum_over_every_process():
    saga = by_case(rows_of("sagas", SAGAS))["CreateOrder saga, 5 offered/s"]
    assert saga["cpu_ms_per_event"] == pytest.approx(100.0)
    baseline = by_case(rows_of("sagas", SAGAS))["raw confluent-kafka round trips, 5 offered/s"]
    assert baseline["cpu_ms_per_event"] is None


REPLAY = {
    "records": 200000,
    "rounds": 3,
    "record_messages_per_s": {"kcat -C -J": 127704.0, "record_topics (library)": 89826.0},
    "record_seconds": {
        "kcat -C -J": [1.566, 0.897, 1.698],
        "record_topics (library)": [2.226, 2.063, 2.285],
    },
    "replay_messages_per_s": {
        "kcat -P": 603052.0,
        "kcat -P, no headers": 1178084.0,
        "produce() loop, pre-decoded (Python's floor)": 210903.0,
        "pipeline replay (command)": 93787.0,
    },
    "replay_seconds": {
        "kcat -P": [0.254, 0.331, 0.413],
        "kcat -P, no headers": [0.149, 0.169, 0.181],
        "produce() loop, pre-decoded (Python's floor)": [0.948, 0.915, 0.982],
        "pipeline replay (command)": [2.122, 2.132, 2.337],
    },
}


def test_replay_rounds_are_records_over_each_rounds_seconds():
    rows = by_case(rows_of("replay", REPLAY))
    assert_common_format(list(rows.values()), "replay")
    library = rows["record_topics (library)"]
    assert library["stage"] == "record" and library["unit"] == "messages/s"
    assert library["rounds"] == pytest.approx([200000 / 2.226, 200000 / 2.063, 200000 / 2.285])
    assert library["baseline"] == "kcat -C -J"
    assert (library["goal_ratio"], library["goal_met"]) == (0.5, True)


def test_replay_compares_with_kcat_producing_and_kcat_variants_have_no_goal():
    rows = by_case(rows_of("replay", REPLAY))
    command = rows["pipeline replay (command)"]
    assert command["stage"] == "replay" and command["baseline"] == "kcat -P"
    # rates are records over seconds: a round's ratio is kcat's seconds over its own
    assert command["ratio"] == pytest.approx(
        of_rounds([0.254, 0.331, 0.413], [2.122, 2.132, 2.337])
    )
    assert command["goal_met"] is False
    assert rows["kcat -P, no headers"]["goal_ratio"] is None
    assert rows["produce() loop, pre-decoded (Python's floor)"]["goal_ratio"] is None


NATIVE_ROW = {
    "benchmark": "e2e_latency",
    "case": "gateway 202 to processed, 50% load",
    "stage": "end-to-end",
    "kind": "latency",
    "unit": "events/s",
    "value": 120.0,
    "rounds": [118.0, 120.0, 121.0],
    "spread_pct": 2.5,
    "baseline": None,
    "ratio": None,
    "goal_ratio": None,
    "goal_met": None,
    "cpu_ms_per_event": None,
    "latency_ms": {"p50": 12.0, "p99": 80.0, "p999": 150.0, "samples": 3000},
    "load_pct": 50,
    "processes": None,
}


def test_a_benchmark_writing_the_common_format_keeps_its_rows():
    data = {"benchmark": "e2e_latency", "quick": True, "rows": [NATIVE_ROW]}
    assert rows_of("e2e_latency", data) == [NATIVE_ROW]


def test_a_native_row_lacking_a_field_of_the_format_is_refused():
    row = {k: v for k, v in NATIVE_ROW.items() if k != "rounds"}
    with pytest.raises(AdapterError, match="rounds"):
        rows_of("e2e_latency", {"rows": [row]})


def test_json_of_an_unexpected_shape_is_an_adapter_error_not_a_crash():
    with pytest.raises(AdapterError, match="KeyError"):
        rows_of("processing", {"cases": [{"case": "A. x", "samples": [1.0]}]})
    with pytest.raises(AdapterError, match="no measurement"):
        rows_of("processing", {"cases": [{"case": "A. x", "samples": []}]})
    with pytest.raises(AdapterError):
        rows_of("log_shipping", {"records": 1})
    with pytest.raises(AdapterError):
        rows_of("scale_out", {"something": "else"})


def test_replay_cpu_per_message_is_taken_where_the_bench_measured_it():
    data = {
        **REPLAY,
        "record_cpu_us_per_message": {"kcat -C -J": 4.5, "record_topics (library)": 9.0},
        "replay_cpu_us_per_message": {"kcat -P": 1.5},
    }
    rows = by_case(rows_of("replay", data))
    assert rows["record_topics (library)"]["cpu_ms_per_event"] == pytest.approx(0.009)
    assert rows["kcat -P"]["cpu_ms_per_event"] == pytest.approx(0.0015)
    assert rows["pipeline replay (command)"]["cpu_ms_per_event"] is None
    assert by_case(rows_of("replay", REPLAY))["kcat -P"]["cpu_ms_per_event"] is None


def test_a_replay_row_for_information_has_no_goal():
    data = {
        **REPLAY,
        "replay_messages_per_s": {
            "kcat -P": 603052.0,
            "pipeline replay --processes 1, for information": 90000.0,
        },
        "replay_seconds": {
            "kcat -P": [0.25, 0.33, 0.41],
            "pipeline replay --processes 1, for information": [2.2, 2.1, 2.3],
        },
    }
    row = by_case(rows_of("replay", data))["pipeline replay --processes 1, for information"]
    assert (row["goal_ratio"], row["goal_met"]) == (None, None)


def test_producer_cpu_per_event_and_goals_come_from_the_bench_where_it_writes_them():
    data = {
        **PRODUCER,
        "cpu_us_per_event": {"raw confluent-kafka": 5.4, "pipeline produce": 16.8},
        "goals": {"pipeline produce": {"ratio": 0.5, "met": True}},
    }
    rows = by_case(rows_of("producer_throughput", data))
    assert rows["raw confluent-kafka"]["cpu_ms_per_event"] == pytest.approx(0.0054)
    assert rows["kcat"]["cpu_ms_per_event"] is None
    produce = rows["pipeline produce"]
    assert (produce["goal_ratio"], produce["goal_met"]) == (0.5, True)


def test_gateway_answers_other_than_202_at_half_rate_are_reported_and_fail_the_goal():
    servers = [
        {**s, "half_rate_not_202": 7} if s["server"] == "gateway, 1 worker" else s
        for s in GATEWAY["rows"]
    ]
    rows = by_case(rows_of("gateway_load", {**GATEWAY, "rows": servers}))
    half = rows["gateway, 1 worker, at half the gateway's saturation rate"]
    assert half["failure"] == "7 answers not 202 at half rate" and half["goal_met"] is False
    assert "failure" not in rows["gateway, 2 workers, saturation"]


def test_sagas_that_ended_other_than_completed_mark_the_level_failed():
    levels = [{**SAGAS["sagas"][0], "ended_otherwise": {"compensated": 2}}, SAGAS["sagas"][1]]
    rows = by_case(rows_of("sagas", {**SAGAS, "sagas": levels}))
    assert rows["CreateOrder saga, 5 offered/s"]["failure"] == "not completed: 2 compensated"
    assert "failure" not in rows["CreateOrder saga, 40 offered/s"]
