"""The arithmetic of bench/e2e_latency.py and bench/scale_out.py (bench/paced_load.py):
nearest-rank percentiles, the open-model pacing schedule, the rates cut from one level or one
burst, and the rows of the suite's common format with their ratios."""

from __future__ import annotations

import json

import pytest

from bench.paced_load import (
    LostSamples,
    all_samples,
    capacity_row,
    cumulative_rates,
    latency_rows,
    latency_summary,
    markdown_table,
    pacing_schedule,
    percentile,
    row,
    start_rates,
    with_ratios,
    write_results,
)


def test_percentile_is_the_nearest_rank():
    values = [float(n) for n in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile(values, 1.0) == 100.0


def test_percentile_ignores_the_order_of_the_values():
    assert percentile([9.0, 1.0, 5.0], 0.5) == 5.0


def test_p999_of_fewer_than_a_thousand_samples_is_the_largest():
    values = [float(n) for n in range(999)]
    assert percentile(values, 0.999) == 998.0


def test_percentile_refuses_no_values_and_a_q_out_of_range():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0.0)


def test_latency_summary_gives_the_three_percentiles_and_the_sample_count():
    summary = latency_summary([float(n) for n in range(1, 2001)])
    assert summary == {"p50": 1000.0, "p99": 1980.0, "p999": 1998.0, "samples": 2000}


def test_pacing_schedule_sends_at_the_rate_for_the_duration():
    offsets = pacing_schedule(4.0, 2.0)
    assert offsets == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def test_pacing_schedule_sends_at_least_once():
    assert pacing_schedule(0.1, 1.0) == [0.0]


def test_pacing_schedule_refuses_a_rate_or_duration_that_is_not_positive():
    with pytest.raises(ValueError):
        pacing_schedule(0.0, 1.0)
    with pytest.raises(ValueError):
        pacing_schedule(1.0, -1.0)


def test_start_rates_are_each_parts_count_over_its_time():
    # 9 samples started 0.1 s apart: each part of 3 spans 0.2 s plus one interval.
    spans = [(n * 0.1, n * 0.1 + 5.0) for n in range(9)]
    assert start_rates(spans, 3) == pytest.approx([10.0, 10.0, 10.0])


def test_start_rates_show_a_part_that_entered_slower():
    starts = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 1.5, 2.0]
    rates = start_rates([(s, s + 1.0) for s in starts], 3)
    assert rates[0] > rates[2]


def test_start_rates_need_two_samples_and_a_sample_per_part():
    with pytest.raises(ValueError):
        start_rates([(0.0, 1.0)], 1)
    with pytest.raises(ValueError):
        start_rates([(0.0, 1.0), (1.0, 2.0)], 3)


def test_cumulative_rates_are_completed_so_far_over_the_time_since_the_first_start():
    spans = [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 4.0)]
    assert cumulative_rates(spans, 2) == [2 / 2.0, 4 / 4.0]
    assert cumulative_rates(spans, 4) == [1.0, 1.0, 1.0, 1.0]


def test_row_takes_the_median_of_its_rounds_and_their_spread():
    made = row(
        "scale_out",
        "sagas, 2 orchestrators",
        stage="scale-out",
        kind="throughput",
        unit="sagas/s",
        rounds=[9.0, 10.0, 12.0],
        baseline="sagas, 1 orchestrator",
        processes=2,
        cpu_ms_per_event=1.23456,
        load_average=3.2,
    )
    assert made["value"] == 10.0
    assert made["spread_pct"] == 30.0
    assert made["cpu_ms_per_event"] == 1.2346
    assert made["processes"] == 2 and made["load_average"] == 3.2
    assert made["ratio"] is None and made["latency_ms"] is None and made["load_pct"] is None


def test_a_row_of_one_round_has_no_spread_as_the_suites_rows():
    made = row("b", "one", stage="s", kind="throughput", unit="events/s", rounds=[100.0])
    assert made["spread_pct"] is None


def test_with_ratios_divides_by_the_baseline_rows_value_and_marks_the_goal():
    base = row("b", "base", stage="s", kind="throughput", unit="events/s", rounds=[100.0])
    measured = row(
        "b",
        "ours",
        stage="s",
        kind="throughput",
        unit="events/s",
        rounds=[50.0],
        baseline="base",
        goal_ratio=0.8,
    )
    done = with_ratios([base, measured])
    assert done[0]["ratio"] is None
    assert done[1]["ratio"] == 0.5 and done[1]["goal_met"] is False


def test_with_ratios_refuses_a_baseline_that_is_not_in_the_run():
    orphan = row("b", "x", stage="s", kind="throughput", unit="u", rounds=[1.0], baseline="y")
    with pytest.raises(ValueError, match="no row 'y'"):
        with_ratios([orphan])


def test_latency_rows_give_the_baseline_then_the_path_at_each_load():
    path = [(n * 0.1, n * 0.1 + 0.010 * (n + 1)) for n in range(10)]
    base = [(n * 0.1, n * 0.1 + 0.001 * (n + 1)) for n in range(10)]
    rows = latency_rows(
        "e2e_latency", "end-to-end", ("gateway", "raw hop"), {"25": (path, base)}, "requests/s", 3
    )
    assert [r["case"] for r in rows] == ["raw hop, 25%", "gateway, 25%"]
    baseline, measured = rows
    assert measured["baseline"] == "raw hop, 25%" and baseline["baseline"] is None
    assert measured["kind"] == "latency" and measured["load_pct"] == 25
    assert measured["latency_ms"] == {"p50": 50.0, "p99": 100.0, "p999": 100.0, "samples": 10}
    assert measured["p99_vs_baseline"] == 10.0
    assert len(measured["rounds"]) == 3
    assert measured["value"] == pytest.approx(10.0)


def test_capacity_row_is_a_throughput_row_of_the_burst():
    burst = [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
    made = capacity_row("e2e_latency", "end-to-end", "saga", burst, "sagas/s", 3, path="b")
    assert made["case"] == "saga: capacity (saturation run)"
    assert made["kind"] == "throughput" and made["baseline"] is None
    assert made["rounds"] == [1.0, 1.0, 1.0] and made["path"] == "b"


def test_markdown_table_has_a_line_per_row_with_the_ratio_and_percentiles():
    base = row(
        "b",
        "hop, 50%",
        stage="s",
        kind="latency",
        unit="requests/s",
        rounds=[99.0],
        latency_ms={"p50": 1.0, "p99": 2.0, "p999": 3.0, "samples": 100},
        load_pct=50,
    )
    ours = row(
        "b",
        "path, 50%",
        stage="s",
        kind="latency",
        unit="requests/s",
        rounds=[98.0],
        baseline="hop, 50%",
        latency_ms={"p50": 5.0, "p99": 9.5, "p999": 12.0, "samples": 100},
        load_pct=50,
    )

    table = markdown_table(with_ratios([base, ours]))
    lines = table.splitlines()
    assert len(lines) == 4
    assert "| path, 50% | 50% |" in lines[3] and "p99 4.75x of hop, 50%" in lines[3]
    assert "| 5.0 | 9.5 | 12.0 | 100 |" in lines[3]


def test_write_results_writes_the_suites_json_and_the_markdown(tmp_path):
    from datetime import UTC, datetime

    made = row("e2e_latency", "x", stage="s", kind="throughput", unit="u", rounds=[1.0, 2.0, 3.0])
    path = write_results(
        tmp_path,
        "e2e_latency",
        quick=True,
        started=datetime.now(UTC),
        rows=[made],
        title="T",
        notes=["a note"],
        capacities={"a": 1.0},
    )
    written = json.loads(path.read_text())
    assert written["benchmark"] == "e2e_latency" and written["quick"] is True
    assert written["rows"] == [made] and written["capacities"] == {"a": 1.0}
    assert {"cpus", "python", "load_average"} <= set(written["machine"])
    assert (tmp_path / "e2e_latency.md").read_text().startswith("# T\n\na note\n")


def _latency_row(case, p99, baseline=None, rate=50.0):
    figures = {"p50": 1.0, "p99": p99, "p999": p99, "samples": 9}
    return row(
        "e2e",
        case,
        stage="s",
        kind="latency",
        unit="requests/s",
        rounds=[rate],
        baseline=baseline,
        latency_ms=figures,
    )


def test_with_ratios_compares_a_latency_row_by_p99_not_by_the_rates_achieved():
    base = _latency_row("hop", 2.0)
    ours = _latency_row("path", 26.8, baseline="hop", rate=49.9)
    made = with_ratios([base, ours])[1]
    assert made["ratio"] is None
    assert made["p99_vs_baseline"] == 13.4


def test_with_ratios_judges_the_goal_on_the_exact_ratio():
    base = row("b", "base", stage="s", kind="throughput", unit="x", rounds=[10000.0])
    ours = row("b", "ours", stage="s", kind="throughput", unit="x", rounds=[4999.6],
               baseline="base", goal_ratio=0.5)  # fmt: skip
    made = with_ratios([base, ours])[1]
    assert made["ratio"] == 0.5 and made["goal_met"] is False


def test_all_samples_fails_the_benchmark_when_one_is_lost():
    spans = [(0.0, 1.0), (1.0, 2.0)]
    assert all_samples("gateway path", spans, 2) == spans
    with pytest.raises(LostSamples, match="gateway path: 1 of 3 samples lost") as lost:
        all_samples("gateway path", spans, 3)
    assert isinstance(lost.value, SystemExit) and lost.value.code != 0
