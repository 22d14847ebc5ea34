"""The processing adapter: bench/processing.py's cases as rows of the common format, scenario A
against the faster plain agent, scenario B against the bare runtime, failures marked."""

from __future__ import annotations

import pytest

from bench.suite.adapters import rows_of
from tests.support.bench_rows import assert_common_format, by_case, of_rounds


def _case(label, rate, samples, cpu):
    return {
        "case": label,
        "scenario": label[0],
        "events": 1000,
        "events_per_s": rate,
        "samples": samples,
        "cpu_ms_per_event": cpu,
        "order_violations": [0, 0, 0],
        "order_kept": True,
        "startup_s": [2.0, 2.0, 2.0],
        "failures": [],
    }


PROCESSING = {
    "partitions": 1,
    "repeat": 3,
    "cases": [
        _case(
            "A. runtime, async handler, key + inbox, SQLite, uvloop",
            4987.0,
            [4908.0, 5115.0, 4987.0],
            0.199,
        ),
        _case(
            "A. runtime, async handler, key + inbox, PostgreSQL, uvloop",
            3862.0,
            [3965.0, 3862.0, 3757.0],
            0.207,
        ),
        _case(
            "A. runtime, sync handler (thread), key + inbox, SQLite, 32 in flight",
            1085.0,
            [1098.0, 1085.0, 1066.0],
            1.08,
        ),
        _case(
            "A. plain Faust agent (one at a time), asyncio loop", 445.0, [443.0, 446.0, 445.0], 0.58
        ),
        _case("A. plain Faust agent (one at a time), uvloop", 465.0, [465.0, 465.0, 464.0], 0.43),
        _case("A. plain confluent-kafka poll loop", 471.0, [471.0, 471.0, 469.0], 0.069),
        _case(
            "B. runtime, async handler, key + inbox, SQLite",
            7299.0,
            [7303.0, 7166.0, 7299.0],
            0.135,
        ),
        _case(
            "B. runtime, async handler, ordering none, no inbox",
            8290.0,
            [8290.0, 8295.0, 8269.0],
            0.120,
        ),
        _case(
            "B. plain Faust agent (one at a time), uvloop", 5982.0, [6093.0, 5982.0, 5911.0], 0.171
        ),
        {**_case("B. a case that failed every round", 0.0, [], None), "failures": ["boom"]},
    ],
}


def test_processing_scenario_a_compares_with_the_faster_plain_agent_with_the_issue_goals():
    rows = by_case(rows_of("processing", PROCESSING))
    assert_common_format(list(rows.values()), "processing")
    postgres = rows["A. runtime, async handler, key + inbox, PostgreSQL, uvloop"]
    assert postgres["baseline"] == "A. plain Faust agent (one at a time), uvloop"
    assert postgres["ratio"] == pytest.approx(of_rounds([3965, 3862, 3757], [465, 465, 464]))
    assert (postgres["goal_ratio"], postgres["goal_met"]) == (10.0, False)
    assert postgres["cpu_ms_per_event"] == 0.207
    sync = rows["A. runtime, sync handler (thread), key + inbox, SQLite, 32 in flight"]
    assert (sync["goal_ratio"], sync["goal_met"]) == (5.0, False)
    assert rows["A. runtime, async handler, key + inbox, SQLite, uvloop"]["goal_ratio"] is None
    assert rows["A. plain Faust agent (one at a time), uvloop"]["baseline"] is None


def test_processing_scenario_b_compares_with_the_bare_runtime():
    rows = by_case(rows_of("processing", PROCESSING))
    inbox = rows["B. runtime, async handler, key + inbox, SQLite"]
    assert inbox["baseline"] == "B. runtime, async handler, ordering none, no inbox"
    assert inbox["ratio"] == pytest.approx(of_rounds([7303, 7166, 7299], [8290, 8295, 8269]))
    assert (inbox["goal_ratio"], inbox["goal_met"]) == (0.8, True)


def test_processing_without_the_bare_runtime_compares_scenario_b_with_the_plain_agent():
    data = {"cases": [c for c in PROCESSING["cases"] if "ordering none" not in c["case"]]}
    inbox = by_case(rows_of("processing", data))["B. runtime, async handler, key + inbox, SQLite"]
    assert inbox["baseline"] == "B. plain Faust agent (one at a time), uvloop"


def test_processing_marks_a_case_without_a_successful_round_failed_without_a_figure():
    failed = by_case(rows_of("processing", PROCESSING))["B. a case that failed every round"]
    assert failed["rounds"] == [] and failed["ratio"] is None
    assert failed["failure"] == "no successful round"


def _with_case(data, label, **changes):
    return {
        **data,
        "cases": [{**c, **changes} if c["case"] == label else c for c in data["cases"]],
    }


def test_processing_order_violations_mean_the_goal_is_not_met_and_say_why():
    postgres = "A. runtime, async handler, key + inbox, PostgreSQL, uvloop"
    data = _with_case(
        {**PROCESSING, "cases": [c for c in PROCESSING["cases"] if c["samples"]]},
        postgres,
        events_per_s=50000.0,
        order_violations=[0, 3, 0],
    )
    row = by_case(rows_of("processing", data))[postgres]
    assert row["goal_met"] is False and row["failure"] == "3 order violations"


def test_processing_a_failed_round_means_the_goal_is_not_met():
    inbox = "B. runtime, async handler, key + inbox, SQLite"
    data = _with_case(PROCESSING, inbox, failures=["no result"])
    row = by_case(rows_of("processing", data))[inbox]
    assert row["ratio"] == pytest.approx(of_rounds([7303, 7166, 7299], [8290, 8295, 8269]))
    assert row["goal_met"] is False and row["failure"] == "1 failed round"


def test_processing_a_failed_baseline_is_not_replaced_by_another_agent():
    uvloop = "A. plain Faust agent (one at a time), uvloop"
    data = _with_case(PROCESSING, uvloop, failures=["no result"])
    rows = by_case(rows_of("processing", data))
    sync = rows["A. runtime, sync handler (thread), key + inbox, SQLite, 32 in flight"]
    assert sync["baseline"] is None and sync["ratio"] is None
    assert sync["goal_met"] is False
    assert sync["failure"] == f"baseline {uvloop} failed: 1 failed round"


def test_processing_rounds_of_one_run_per_case_are_compared_by_their_medians():
    # The quick profile (--rounds-in-one-run): a case's rounds are parts of one run, not run
    # beside the other cases' rounds, so they are not paired.
    inbox = "B. runtime, async handler, key + inbox, SQLite"
    bare = "B. runtime, async handler, ordering none, no inbox"
    data = _with_case(
        _with_case(PROCESSING, inbox, events_per_s=7000.0, samples=[9000.0, 7000.0, 5000.0]),
        bare,
        events_per_s=8000.0,
        samples=[8000.0, 6000.0, 10000.0],
    )
    paired = by_case(rows_of("processing", data))[inbox]
    one_run = by_case(rows_of("processing", {**data, "rounds_in_one_run": True}))[inbox]
    assert paired["ratio"] == pytest.approx(of_rounds([9000, 7000, 5000], [8000, 6000, 10000]))
    assert one_run["ratio"] == pytest.approx(7000 / 8000)
    assert paired["ratio"] != pytest.approx(one_run["ratio"])
