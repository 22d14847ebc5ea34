"""The ratio of a row to its baseline (bench/suite/rows.py ``compared``): the median of the
per-round ratios where the rounds pair up, the ratio of the values where they do not; the goal
judged on it."""

from __future__ import annotations

import statistics

import pytest

from bench.suite.rows import compared, latency, measurement, paired_ratio, round_ratios

RAW = [226_000.0, 332_000.0, 205_000.0]
ENVELOPE = [195_000.0, 176_000.0, 112_000.0]


def _row(case, rounds, value=None, kind="throughput"):
    value = statistics.median(rounds) if value is None and rounds else (value or 0.0)
    return measurement("producer_throughput", case, "producing", "events/s", value, rounds,
                       kind=kind)  # fmt: skip


def test_the_ratio_of_paired_rounds_is_the_median_of_each_rounds_ratio_and_judges_the_goal():
    raw = _row("raw", RAW)
    envelope = _row("EventProducer + envelope", ENVELOPE)
    made = compared(envelope, raw, 0.6)
    # 195/226 = 0.86, 176/332 = 0.53, 112/205 = 0.55: their median, not 176/226 = 0.78
    assert made["ratio"] == pytest.approx(112 / 205)
    assert round(made["ratio"], 2) == 0.55
    assert made["value"] / raw["value"] == pytest.approx(0.78, abs=0.005)  # what it was
    assert (made["baseline"], made["goal_ratio"], made["goal_met"]) == ("raw", 0.6, False)


def test_a_goal_is_met_when_the_median_round_ratio_reaches_it():
    made = compared(_row("ours", [90.0, 50.0, 80.0]), _row("base", [100.0, 100.0, 100.0]), 0.8)
    assert made["ratio"] == pytest.approx(0.8)
    assert made["goal_met"] is True


def test_rounds_that_do_not_pair_up_fall_back_to_the_ratio_of_the_values():
    base = _row("base", [100.0, 300.0, 200.0])
    lost_a_round = _row("ours", [150.0, 50.0])
    assert compared(lost_a_round, base)["ratio"] == pytest.approx(100.0 / 200.0)
    zero_round = _row("base", [0.0, 300.0, 200.0], value=200.0)
    assert compared(_row("ours", [10.0, 20.0, 30.0]), zero_round)["ratio"] == pytest.approx(0.1)
    no_rounds = _row("ours", [], value=50.0)
    assert compared(no_rounds, base)["ratio"] == pytest.approx(0.25)


def test_rounds_said_not_paired_take_the_ratio_of_the_values():
    made = compared(_row("ours", ENVELOPE), _row("raw", RAW), 0.6, paired=False)
    assert made["ratio"] == pytest.approx(176 / 226)
    assert made["goal_met"] is True


def test_a_zero_baseline_gives_no_ratio_when_the_rounds_do_not_pair_up():
    made = compared(_row("ours", [10.0, 20.0]), _row("base", [0.0], value=0.0), 0.5)
    assert made["ratio"] is None and made["baseline"] is None and made["goal_met"] is None


def test_a_baseline_row_and_a_latency_row_keep_no_ratio():
    base = _row("base", RAW)
    assert compared(base, base, 0.6)["ratio"] is None
    slow = _row("slow", ENVELOPE, kind="latency")
    slow = {**slow, "latency_ms": latency(5.0, 40.0)}
    quick = {**_row("quick", RAW, kind="latency"), "latency_ms": latency(1.0, 10.0)}
    made = compared(slow, quick)
    assert made["ratio"] is None
    assert made["p99_vs_baseline"] == pytest.approx(4.0)


def test_round_ratios_pair_round_i_with_round_i():
    assert round_ratios([2.0, 9.0], [1.0, 3.0]) == [2.0, 3.0]
    assert round_ratios([2.0], [1.0, 3.0]) is None
    assert round_ratios([], []) is None
    assert round_ratios([2.0], [0.0]) is None
    assert paired_ratio(ENVELOPE, RAW) == pytest.approx(112 / 205)
    assert paired_ratio([1.0], []) is None
