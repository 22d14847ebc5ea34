"""The Markdown table of the suite's rows: one line per row with the figures formatted, the
baseline named, empty cells where a figure was not measured, and the goals marked."""

from __future__ import annotations

from bench.suite.rows import compared, latency, measurement, with_failure, with_goal
from bench.suite.table import latest_markdown, markdown_table, number


def _rows():
    baseline = measurement(
        "log_shipping",
        "direct streaming_bulk",
        "log shipping",
        "logs/s",
        8727.8,
        [6974.7, 12440.8, 8727.8],
    )
    shipper = measurement(
        "log_shipping",
        "log shipper",
        "log shipping",
        "logs/s",
        9956.8,
        [9700.9, 10689.4, 9956.8],
        cpu_ms_per_event=0.1342,
    )
    saga = measurement(
        "sagas",
        "CreateOrder saga, 5 offered/s",
        "sagas",
        "sagas/s",
        5.1856,
        [5.1856],
        kind="latency",
        latency_ms=latency(5022.1, 6878.4, None, 75),
    )
    return [
        compared(baseline, None),
        compared(shipper, baseline, 0.8),
        with_goal(saga, "500 sagas/s, p99 < 1 s", False),
    ]


def test_numbers_keep_as_many_digits_as_they_deserve():
    assert [number(v) for v in (9956.8, 45.34, 2.314, 0.13421, None)] == [
        "9,957",
        "45.3",
        "2.31",
        "0.134",
        "",
    ]


def test_the_table_has_a_header_and_one_line_per_row():
    lines = markdown_table(_rows())
    assert lines[0] == (
        "| stage | case | rate | vs baseline | spread | p50 ms | p99 ms | p99.9 ms | "
        "CPU ms/event | goal |"
    )
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    assert len(lines) == 2 + 3


def test_a_compared_row_shows_its_ratio_and_baseline_spread_cpu_and_goal():
    line = markdown_table(_rows())[3]
    assert line == (
        "| log shipping | log shipper | 9,957 logs/s | 1.14x direct streaming_bulk | 9.9% "
        "|  |  |  | 0.134 | ≥ 0.8x: met |"
    )


def test_a_baseline_row_says_so_and_leaves_unmeasured_figures_empty():
    line = markdown_table(_rows())[2]
    assert line == (
        "| log shipping | direct streaming_bulk | 8,728 logs/s | baseline | 62.6% |  |  |  |  |  |"
    )


def test_a_latency_row_shows_its_percentiles_one_round_and_a_goal_not_met():
    line = markdown_table(_rows())[4]
    assert line == (
        "| sagas | CreateOrder saga, 5 offered/s | 5.19 sagas/s |  | 1 round "
        "| 5,022 | 6,878 |  |  | 500 sagas/s, p99 < 1 s: not met |"
    )


def test_a_pipe_in_a_case_is_escaped():
    row = measurement("x", "a | b", "producing", "events/s", 1.0, [1.0, 1.0, 1.0])
    assert "a \\| b" in markdown_table([row])[2]


def _latest(benchmarks):
    return {
        "schema": 1,
        "started": "2026-12-03T09:00:00+00:00",
        "finished": "2026-12-03T09:04:10+00:00",
        "quick": True,
        "commit": "abc1234",
        "uncommitted_changes": False,
        "machine": {
            "cpus": 2,
            "cpu_model": "Some CPU",
            "memory_gb": 15.6,
            "python": "3.11.7",
            "platform": "Linux-x86_64",
            "load_average_before": 1.5,
            "load_average_after": 2.25,
        },
        "benchmarks": benchmarks,
    }


def test_latest_markdown_names_the_run_and_every_failed_benchmark_with_its_error():
    rows = _rows()
    text = latest_markdown(
        _latest(
            [
                {
                    "name": "log_shipping",
                    "command": [],
                    "seconds": 18.2,
                    "status": "ok",
                    "error": None,
                    "rows": rows[:2],
                },
                {
                    "name": "scale_out",
                    "command": [],
                    "seconds": 0.0,
                    "status": "failed",
                    "error": "bench/scale_out.py does not exist",
                    "rows": [],
                },
            ]
        )
    )
    assert "quick profile" in text and "commit `abc1234`" in text and "2 CPUs" in text
    assert "load average 1.5 before, 2.25 after" in text
    assert "Benchmarks (1 failed):" in text
    assert "- `scale_out`: **failed** after 0 s: bench/scale_out.py does not exist" in text
    assert "- `log_shipping`: 18 s, 2 rows" in text
    assert "| log shipping | log shipper |" in text


def _ratio_row(ratio, goal_ratio):
    row = measurement("x", "ours", "producing", "events/s", ratio, [ratio, ratio])
    return {**row, "baseline": "theirs", "ratio": ratio, "goal_ratio": goal_ratio,
            "goal_met": ratio >= goal_ratio}  # fmt: skip


def test_a_ratio_two_decimals_would_round_onto_its_goal_shows_the_decimals_that_tell():
    line = markdown_table([_ratio_row(0.497, 0.5)])[2]
    assert "| 0.497x theirs |" in line and "≥ 0.5x: not met" in line
    assert "| 0.4999x theirs |" in markdown_table([_ratio_row(0.4999, 0.5)])[2]
    # far enough from the goal, two decimals tell
    assert "| 0.50x theirs |" in markdown_table([_ratio_row(0.5, 0.5)])[2]
    assert "| 0.49x theirs |" in markdown_table([_ratio_row(0.4912, 0.5)])[2]


def test_a_met_ratio_two_decimals_would_round_under_its_goal_shows_more_decimals():
    line = markdown_table([_ratio_row(0.8004, 0.8004)])[2]
    assert "| 0.8004x theirs |" in line and "≥ 0.8004x: met" in line


def test_a_latency_row_compares_its_p99_with_its_baselines_not_the_rates():
    base = measurement("s", "raw hop", "end-to-end", "requests/s", 100.0, [100.0],
                       kind="latency", latency_ms=latency(1.0, 2.0, None, 100))  # fmt: skip
    ours = measurement("s", "gateway", "end-to-end", "requests/s", 99.5, [99.5],
                       kind="latency", latency_ms=latency(10.0, 26.8, None, 100))  # fmt: skip
    made = compared(ours, base)
    assert made["ratio"] is None and made["p99_vs_baseline"] == 13.4
    assert "| p99 13.4x raw hop |" in markdown_table([base, made])[3]


def test_a_failed_row_says_why_beside_its_goal_and_does_not_meet_it():
    shipper = with_failure(_rows()[1], "2 order violations")
    assert shipper["goal_met"] is False
    assert markdown_table([shipper])[2].endswith("| ≥ 0.8x: not met (2 order violations) |")
    baseline = with_failure(_rows()[0], "1 failed round")
    assert baseline["goal_met"] is None
    assert markdown_table([baseline])[2].endswith("| failed: 1 failed round |")
